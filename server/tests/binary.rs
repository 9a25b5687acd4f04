//! The `orchard` binary as a user runs it: the embedded default with no configuration,
//! production backends, bad configuration, an unreachable database, and SIGTERM.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_orchard");

struct Orchard {
    child: Child,
    log: PathBuf,
    admin: String,
    listen: String,
    _dir: tempfile::TempDir,
}

impl Orchard {
    /// Starts `orchard serve` in a fresh directory with only `vars` set (plus PATH/HOME).
    fn start(vars: &[(&str, String)]) -> Orchard {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("orchard.log");
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let admin = get("ORCHARD_ADMIN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:9090".into())
            .replace("0.0.0.0", "127.0.0.1");
        let listen = get("ORCHARD_LISTEN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .replace("0.0.0.0", "127.0.0.1");
        let child = command(dir.path(), vars)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn orchard");
        Orchard {
            child,
            log,
            admin: format!("http://{admin}"),
            listen: format!("http://{listen}"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers with `status`; returns the body.
    async fn wait_for(&self, url: &str, status: u16) -> String {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(url).send().await {
                if r.status().as_u16() == status {
                    return r.text().await.unwrap();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{url} never answered {status}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ready(&self) -> serde_json::Value {
        serde_json::from_str(&self.wait_for(&format!("{}/readyz", self.admin), 200).await).unwrap()
    }

    /// SIGTERM, then the exit status (waits at most 60 s).
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "orchard did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Orchard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(dir: &Path, vars: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().current_dir(dir);
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

fn ports() -> Vec<(&'static str, String)> {
    vec![
        (
            "ORCHARD_LISTEN_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        (
            "ORCHARD_ADMIN_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_with_no_configuration() {
    // Literally nothing set: default ports, ./orchard-data, SQLite, in-process cache.
    let orchard = Orchard::start(&[]);
    let ready = orchard.ready().await;
    let c = &ready["components"];
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        (
            c["database"]["backend"].as_str(),
            c["database"]["status"].as_str()
        ),
        (Some("sqlite"), Some("up"))
    );
    assert_eq!(c["cache"]["backend"], "in-process");
    assert_eq!(c["storage"]["backend"], "local");
    assert_eq!(c["http_pool"]["max"], 100);
    assert_eq!(c["worker_pool"]["max"], 32);
    assert!(orchard._dir.path().join("orchard-data/orchard.db").exists());
    assert!(orchard._dir.path().join("orchard-data/artifacts").is_dir());

    let body = orchard.wait_for(&format!("{}/", orchard.listen), 200).await;
    assert!(body.contains("\"name\":\"orchard\""), "{body}");
    assert_eq!(
        orchard
            .wait_for(&format!("{}/healthz", orchard.admin), 200)
            .await,
        r#"{"status":"ok"}"#
    );
    let metrics = orchard
        .wait_for(&format!("{}/metrics", orchard.admin), 200)
        .await;
    assert!(metrics.contains(r#"orchard_http_requests_total{cache="bypass",protocol="other",route="/",status="200"} 1"#), "{metrics}");
    assert!(
        metrics.contains("orchard_db_pool_connections{state=\"max\"} 50"),
        "{metrics}"
    );

    let log = orchard.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("starting orchard"))
            .count(),
        1,
        "one configuration line: {log}"
    );
    assert!(log.contains(r#""kind":"in-process""#), "{log}");
    let status = orchard.terminate();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_backends_and_redacted_log() {
    let db = common::fresh_postgres_database();
    let mut vars = ports();
    vars.push((
        "ORCHARD_DATABASE_URL",
        db.replace("postgres@", "postgres:db-password-xyz@"),
    ));
    vars.push((
        "ORCHARD_REDIS_CLUSTER_NODES",
        common::service_var("ORCHARD_TEST_REDIS_CLUSTER_NODES"),
    ));
    vars.extend(common::s3_vars(&common::unique("binary-test")));
    let orchard = Orchard::start(&vars);
    let ready = orchard.ready().await;
    let c = &ready["components"];
    assert_eq!(c["database"]["backend"], "postgres");
    assert_eq!(c["cache"]["backend"], "redis-cluster");
    assert_eq!(c["storage"]["backend"], "s3");
    for name in ["database", "cache", "storage"] {
        assert_eq!(c[name]["status"], "up", "{name}: {ready}");
    }
    let log = orchard.log();
    let secret = common::service_var("ORCHARD_TEST_S3_SECRET_ACCESS_KEY");
    assert!(!log.contains(&secret), "the S3 secret leaked into the log");
    assert!(
        !log.contains("db-password-xyz"),
        "the database password leaked into the log"
    );
    assert!(log.contains("postgres:***@"), "{log}");
    assert!(orchard.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_retried_and_not_ready() {
    let mut vars = ports();
    vars.push((
        "ORCHARD_DATABASE_URL",
        format!(
            "postgres://orchard:pw-abc@127.0.0.1:{}/orchard",
            common::free_port()
        ),
    ));
    let orchard = Orchard::start(&vars);
    let body: serde_json::Value = serde_json::from_str(
        &orchard
            .wait_for(&format!("{}/readyz", orchard.admin), 503)
            .await,
    )
    .unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["components"]["database"]["status"], "down");
    assert_eq!(body["components"]["storage"]["status"], "up");
    orchard
        .wait_for(&format!("{}/healthz", orchard.admin), 200)
        .await;
    // The log says what is wrong, and retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    while orchard.log().matches("database unreachable").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no retry logged:\n{}",
            orchard.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!orchard.log().contains("pw-abc"));
    assert!(orchard.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_still_ready() {
    let mut vars = ports();
    vars.push((
        "ORCHARD_REDIS_CLUSTER_NODES",
        format!("127.0.0.1:{}", common::free_port()),
    ));
    let orchard = Orchard::start(&vars);
    let ready = orchard.ready().await;
    assert_eq!(ready["components"]["cache"]["status"], "down");
    assert_eq!(ready["components"]["cache"]["required"], false);
    orchard.wait_for(&format!("{}/", orchard.listen), 200).await;
    assert!(orchard.terminate().success());
}

fn run(args: &[&str], vars: &[(&str, String)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path(), vars).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    for sub in ["serve", "check-config", "migrate"] {
        let (code, _, err) = run(&[sub], &[("ORCHARD_HTTP_MAX_CONNECTIONS", "abc".into())]);
        assert_eq!(code, 2, "{sub}: {err}");
        assert!(
            err.contains("ORCHARD_HTTP_MAX_CONNECTIONS: cannot parse \"abc\""),
            "{sub}: {err}"
        );
    }
    let (code, _, err) = run(
        &["check-config"],
        &[("ORCHARD_DATABASE_URL", "mysql://u:hunter2@h/db".into())],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("ORCHARD_DATABASE_URL") && err.contains("unknown URL scheme \"mysql\""),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
}

#[test]
fn check_config_prints_the_redacted_configuration() {
    let (code, out, err) = run(
        &["check-config"],
        &[
            (
                "ORCHARD_DATABASE_URL",
                "postgres://o:topsecret@db.internal:5432/orchard".into(),
            ),
            ("ORCHARD_REDIS_PASSWORD", "redis-secret".into()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(
        v["database"]["url"],
        "postgres://o:***@db.internal:5432/orchard"
    );
    assert_eq!(v["cache"]["password"], "***");
    assert!(!out.contains("topsecret") && !out.contains("redis-secret"));
}

#[test]
fn migrate_subcommand_applies_then_finds_nothing() {
    let url = common::fresh_postgres_database();
    let vars = [("ORCHARD_DATABASE_URL", url)];
    let (code, _, err) = run(&["migrate"], &vars);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("20261128000001"),
        "the applied version is logged: {err}"
    );
    let (code, _, err) = run(&["migrate"], &vars);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("applied=[]"), "{err}");
}

#[test]
fn help_text_describes_every_subcommand() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for sub in ["serve", "migrate", "check-config"] {
        assert!(out.contains(sub), "{out}");
    }
}

/// Once ready, a replica whose database goes away stays in the Service as `degraded`
/// (200) — every replica shares the database, and cached traffic can still be served —
/// while what needs the database answers 503 with `Retry-After`, never 500; when the
/// database is back, the replica is `ready` again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_degraded_not_unready_and_503_not_500() {
    let url = common::fresh_postgres_database();
    let relay = common::Relay::start(common::through_relay(&url, 1).1).await;
    let (relayed, _) = common::through_relay(&url, relay.port);
    let mut vars = ports();
    vars.push(("ORCHARD_DATABASE_URL", relayed));
    vars.push(("ORCHARD_DATABASE_POOL_TIMEOUT", "2".into()));
    vars.push(("ORCHARD_DEPS_REQUIRE_TOKEN", "false".into()));
    let orchard = Orchard::start(&vars);
    assert_eq!(orchard.ready().await["status"], "ready");

    relay.open.store(false, std::sync::atomic::Ordering::SeqCst);
    relay.cut_all();
    let body: serde_json::Value = serde_json::from_str(
        &orchard
            .wait_for(&format!("{}/readyz", orchard.admin), 200)
            .await,
    )
    .unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["components"]["database"]["status"], "down");
    let r = reqwest::get(format!(
        "{}/api/v1/artifacts/{}/dependencies",
        orchard.listen,
        "a".repeat(64)
    ))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(r.text().await.unwrap().contains("database_unavailable"));

    relay.open.store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while orchard.ready().await["status"] != "ready" {
        assert!(
            Instant::now() < deadline,
            "not ready again:\n{}",
            orchard.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(orchard.terminate().success());
}
