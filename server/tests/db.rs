//! ArtifactRepository against a real Postgres and a real SQLite file: behaviour and the
//! statement budget of each hot call, counted by diesel's instrumentation.

mod common;

use std::sync::Arc;

use orchard_server::config::Config;
use orchard_server::db::{
    self, Artifact, ArtifactRepository, CachedUrl, NewDependency, UpstreamSourceRow,
};

fn pg_config(url: &str) -> Config {
    common::config_from(&[
        ("ORCHARD_DATABASE_URL", url.to_string()),
        ("ORCHARD_DATABASE_POOL_SIZE", "1".into()),
        ("ORCHARD_DATABASE_MAX_OVERFLOW", "0".into()),
    ])
}

async fn postgres_repo() -> Arc<dyn ArtifactRepository> {
    let config = pg_config(&common::fresh_postgres_database());
    db::run_migrations(&config.database.url)
        .await
        .expect("migrations");
    db::connect(&config.database).await.expect("connect")
}

async fn sqlite_repo(dir: &tempfile::TempDir) -> Arc<dyn ArtifactRepository> {
    let config = common::config_from(&[
        (
            "ORCHARD_DATABASE_URL",
            format!("sqlite://{}/meta/orchard.db", dir.path().display()),
        ),
        ("ORCHARD_DATABASE_POOL_SIZE", "1".into()),
        ("ORCHARD_DATABASE_MAX_OVERFLOW", "0".into()),
    ]);
    db::run_migrations(&config.database.url)
        .await
        .expect("migrations");
    db::connect(&config.database).await.expect("connect")
}

fn artifact(byte: u8, size: i64) -> Artifact {
    Artifact {
        sha256: hex::encode([byte; 32]),
        size,
        content_type: "application/zip".into(),
        created_at: 1_700_000_000,
    }
}

fn deps(n: usize) -> Vec<NewDependency> {
    (0..n)
        .map(|i| NewDependency {
            protocol: "pypi".into(),
            name: format!("dep-{i}"),
            requirement: format!(">={i}.0"),
            kind: if i % 5 == 0 {
                "extra:test".into()
            } else {
                "runtime".into()
            },
            optional: i % 5 == 0,
            marker: if i % 3 == 0 {
                "python_version < \"3.12\" and extra == 'test'".into()
            } else {
                String::new()
            },
        })
        .collect()
}

/// Runs `f` and returns how many statements it sent.
async fn statements<T, F: std::future::Future<Output = T>>(
    repo: &Arc<dyn ArtifactRepository>,
    f: F,
) -> (T, u64) {
    let before = repo.statements();
    let out = f.await;
    (out, repo.statements() - before)
}

async fn exercise(repo: Arc<dyn ArtifactRepository>) {
    // get_or_create_artifact: one statement whether the row is new or not; the first row wins.
    let a = artifact(0xab, 1234);
    let (created, n) = statements(&repo, repo.get_or_create_artifact(&a)).await;
    assert_eq!(created.unwrap(), a);
    assert_eq!(n, 1, "get_or_create_artifact (new) must be one statement");
    let mut again = a.clone();
    again.size = 999;
    again.created_at = 1;
    let (existing, n) = statements(&repo, repo.get_or_create_artifact(&again)).await;
    assert_eq!(
        existing.unwrap(),
        a,
        "an existing artifact row is returned unchanged"
    );
    assert_eq!(
        n, 1,
        "get_or_create_artifact (existing) must be one statement"
    );

    // The cache-hit lookup: one joined query.
    let url = CachedUrl {
        protocol: "pypi".into(),
        source: "upstream-a".into(),
        path: "files/demo-1.0-py3-none-any.whl".into(),
        artifact_sha256: a.sha256.clone(),
        upstream_url: "https://upstream.example/files/demo-1.0-py3-none-any.whl".into(),
        created_at: 1_700_000_001,
    };
    repo.upsert_cached_url(&url).await.unwrap();
    let (hit, n) = statements(
        &repo,
        repo.get_cached_url_with_artifact("pypi", "upstream-a", &url.path),
    )
    .await;
    assert_eq!(hit.unwrap(), Some((url.clone(), a.clone())));
    assert_eq!(n, 1, "get_cached_url_with_artifact must be one statement");
    let (miss, n) = statements(
        &repo,
        repo.get_cached_url_with_artifact("pypi", "upstream-b", &url.path),
    )
    .await;
    assert_eq!(miss.unwrap(), None);
    assert_eq!(n, 1);

    // Re-pointing a URL replaces the mapping.
    let b = artifact(0xcd, 10);
    repo.get_or_create_artifact(&b).await.unwrap();
    repo.upsert_cached_url(&CachedUrl {
        artifact_sha256: b.sha256.clone(),
        ..url.clone()
    })
    .await
    .unwrap();
    let (_, got) = repo
        .get_cached_url_with_artifact("pypi", "upstream-a", &url.path)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b);

    // batch_upsert_dependencies: one statement for 1, 50 and 5000 rows.
    for count in [1usize, 50, 5000] {
        let list = deps(count);
        let (stored, n) = statements(&repo, repo.batch_upsert_dependencies(&a.sha256, &list)).await;
        assert_eq!(stored.unwrap(), count);
        assert_eq!(
            n, 1,
            "batch_upsert_dependencies of {count} rows must be one statement"
        );
    }
    let stored = repo.dependencies_of(&a.sha256).await.unwrap();
    let expected = deps(5000);
    assert_eq!(stored.len(), 5000);
    for (i, (got, want)) in stored.iter().zip(&expected).enumerate() {
        assert_eq!(got.position, i as i32);
        assert_eq!(
            (
                &got.name,
                &got.requirement,
                &got.kind,
                got.optional,
                &got.marker
            ),
            (
                &want.name,
                &want.requirement,
                &want.kind,
                want.optional,
                &want.marker
            )
        );
    }
    let (none, n) = statements(&repo, repo.batch_upsert_dependencies(&a.sha256, &[])).await;
    assert_eq!((none.unwrap(), n), (0, 0), "nothing to store sends nothing");

    // Sources: upsert, list by priority, delete.
    for (name, priority) in [("low", 200), ("high", 10)] {
        repo.upsert_source(&UpstreamSourceRow {
            name: name.into(),
            protocol: "pypi".into(),
            url: format!("https://upstream.example/{name}/simple/"),
            priority,
            enabled: true,
            settings: "{}".into(),
            updated_at: 1,
        })
        .await
        .unwrap();
    }
    let names: Vec<_> = repo
        .list_sources()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["high", "low"]);
    assert!(repo.delete_source("low").await.unwrap());
    assert!(!repo.delete_source("low").await.unwrap());

    // Owned rows: one statement each; another owner's row is neither overwritten nor deleted.
    let owned = |url: &str, owner: &str| UpstreamSourceRow {
        name: "team-src".into(),
        protocol: "npm".into(),
        url: url.into(),
        priority: 5,
        enabled: true,
        settings: format!("{{\"owner\":\"{owner}\"}}"),
        updated_at: 2,
    };
    let (w, n) = statements(
        &repo,
        repo.upsert_source_owned(
            &owned("https://upstream.example/a/", "ns1/team-src"),
            "ns1/team-src",
        ),
    )
    .await;
    assert_eq!((w.unwrap(), n), (true, 1));
    assert!(repo
        .upsert_source_owned(
            &owned("https://upstream.example/b/", "ns1/team-src"),
            "ns1/team-src"
        )
        .await
        .unwrap());
    assert!(!repo
        .upsert_source_owned(
            &owned("https://upstream.example/evil/", "ns2/team-src"),
            "ns2/team-src"
        )
        .await
        .unwrap());
    let row = repo
        .list_sources()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "team-src")
        .unwrap();
    assert_eq!(
        row.url, "https://upstream.example/b/",
        "the other owner's write changed nothing"
    );
    assert!(!repo
        .delete_source_owned("team-src", "ns2/team-src")
        .await
        .unwrap());
    let (d, n) = statements(&repo, repo.delete_source_owned("team-src", "ns1/team-src")).await;
    assert_eq!((d.unwrap(), n), (true, 1));
    // A row without an owner (written by hand) is adopted.
    repo.upsert_source(&UpstreamSourceRow {
        settings: "{}".into(),
        ..owned("https://upstream.example/c/", "")
    })
    .await
    .unwrap();
    assert!(repo
        .upsert_source_owned(
            &owned("https://upstream.example/d/", "ns1/team-src"),
            "ns1/team-src"
        )
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_repository_and_statement_counts() {
    exercise(postgres_repo().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_repository_and_statement_counts() {
    let dir = tempfile::tempdir().unwrap();
    exercise(sqlite_repo(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_once() {
    let config = pg_config(&common::fresh_postgres_database());
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = config.database.url.clone();
            tokio::spawn(async move { db::run_migrations(&url).await })
        })
        .collect();
    let mut applied = Vec::new();
    for r in runs {
        applied.push(
            r.await
                .unwrap()
                .expect("every replica's migration run succeeds"),
        );
    }
    assert_eq!(
        applied.iter().filter(|a| !a.is_empty()).count(),
        1,
        "exactly one run applies: {applied:?}"
    );
    assert!(db::run_migrations(&config.database.url)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_rows_reject_bad_digests() {
    let dir = tempfile::tempdir().unwrap();
    let repo = sqlite_repo(&dir).await;
    let mut bad = artifact(1, 1);
    bad.sha256 = "short".into();
    assert!(
        repo.get_or_create_artifact(&bad).await.is_err(),
        "CHECK (length(sha256) = 64)"
    );
    let url = CachedUrl {
        protocol: "npm".into(),
        source: "s".into(),
        path: "p".into(),
        artifact_sha256: hex::encode([9u8; 32]),
        upstream_url: "https://upstream.example/p".into(),
        created_at: 0,
    };
    assert!(
        repo.upsert_cached_url(&url).await.is_err(),
        "a URL cannot point at a missing artifact"
    );
}

/// `make bench` (scenario 7) runs this with `--ignored --nocapture`: the time to store 50
/// dependencies of one artifact in one statement, next to 50 one-row statements (one per
/// dependency, the naive way) against the same Postgres, in the same run.
#[tokio::test]
#[ignore = "benchmark: run by make bench"]
async fn bench_store_50_dependencies() {
    let repo = postgres_repo().await;
    let rounds: usize = std::env::var("ORCHARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let list = deps(50);
    let mut batch = Vec::with_capacity(rounds);
    let mut per_row = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let a = Artifact {
            sha256: format!("{:064x}", i * 2 + 1),
            ..artifact(0, 1)
        };
        let b = Artifact {
            sha256: format!("{:064x}", i * 2 + 2),
            ..artifact(0, 1)
        };
        repo.get_or_create_artifact(&a).await.unwrap();
        repo.get_or_create_artifact(&b).await.unwrap();
        let t = std::time::Instant::now();
        let (_, n) = statements(&repo, repo.batch_upsert_dependencies(&a.sha256, &list)).await;
        batch.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, 1);
        let t = std::time::Instant::now();
        for d in &list {
            repo.batch_upsert_dependencies(&b.sha256, std::slice::from_ref(d))
                .await
                .unwrap();
        }
        per_row.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
    };
    let (bm, bp) = stats(&mut batch);
    let (rm, rp) = stats(&mut per_row);
    println!("BENCH store50 batch median_ms={bm:.3} p99_ms={bp:.3} statements=1 rounds={rounds}");
    println!(
        "BENCH store50 per_row median_ms={rm:.3} p99_ms={rp:.3} statements=50 rounds={rounds}"
    );
}

/// After a Postgres restart every pooled connection is dead: none may surface as an
/// error (each used to answer one 500); while Postgres is down, the error is one the
/// HTTP layer answers 503 with Retry-After, never 500; and the pool recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_costs_no_request_and_an_outage_is_503() {
    use orchard_server::error::ApiError;
    let url = common::fresh_postgres_database();
    db::run_migrations(&pg_config(&url).database.url)
        .await
        .expect("migrations");
    let target = common::through_relay(&url, 1).1;
    let relay = common::Relay::start(target).await;
    let (relayed, _) = common::through_relay(&url, relay.port);
    let config = common::config_from(&[
        ("ORCHARD_DATABASE_URL", relayed),
        ("ORCHARD_DATABASE_POOL_SIZE", "5".into()),
        ("ORCHARD_DATABASE_MAX_OVERFLOW", "0".into()),
        ("ORCHARD_DATABASE_POOL_TIMEOUT", "2".into()),
    ]);
    let repo = db::connect(&config.database).await.expect("connect");
    // fill the pool with five connections
    let all = futures::future::join_all((0..5).map(|_| repo.list_sources())).await;
    assert!(all.iter().all(|r| r.is_ok()));
    relay.cut_all();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for i in 0..10 {
        repo.list_sources()
            .await
            .unwrap_or_else(|e| panic!("query {i} after the restart failed: {e}"));
    }
    // down: new connections refused, the pooled ones cut
    relay.open.store(false, std::sync::atomic::Ordering::SeqCst);
    relay.cut_all();
    let err = repo.list_sources().await.expect_err("the database is down");
    let api: ApiError = err.into();
    assert!(matches!(api, ApiError::DatabaseUnavailable), "{api:?}");
    // back: recovers without a restart
    relay.open.store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while repo.list_sources().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not recover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Quarantine rows and purges, on both backends.
async fn quarantine_and_purge(repo: Arc<dyn ArtifactRepository>) {
    use orchard_server::db::{Purged, Quarantined};
    let a = artifact(0xab, 10);
    repo.get_or_create_artifact(&a).await.unwrap();
    for path in ["p/a.whl", "q/a.whl"] {
        repo.upsert_cached_url(&CachedUrl {
            protocol: "pypi".into(),
            source: "s".into(),
            path: path.into(),
            artifact_sha256: a.sha256.clone(),
            upstream_url: "https://upstream.example/a.whl".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    }
    repo.batch_upsert_dependencies(&a.sha256, &deps(3))
        .await
        .unwrap();
    let q = Quarantined {
        sha256: a.sha256.clone(),
        reason: "first".into(),
        created_at: 5,
    };
    repo.quarantine(&q).await.unwrap();
    repo.quarantine(&Quarantined {
        reason: "second".into(),
        ..q.clone()
    })
    .await
    .unwrap();
    let listed = repo.quarantined().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].reason, "second",
        "a second quarantine updates the reason"
    );
    assert!(repo.unquarantine(&a.sha256).await.unwrap());
    assert!(!repo.unquarantine(&a.sha256).await.unwrap());
    assert!(repo.quarantined().await.unwrap().is_empty());

    assert_eq!(
        repo.purge_artifact(&a.sha256).await.unwrap(),
        Purged {
            urls: 2,
            artifact: true
        }
    );
    assert!(repo.cached_urls_of(&a.sha256).await.unwrap().is_empty());
    assert!(repo.dependencies_of(&a.sha256).await.unwrap().is_empty());
    assert_eq!(
        repo.purge_artifact(&a.sha256).await.unwrap(),
        Purged {
            urls: 0,
            artifact: false
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_and_purge_on_postgres_and_sqlite() {
    quarantine_and_purge(postgres_repo().await).await;
    let dir = tempfile::tempdir().unwrap();
    quarantine_and_purge(sqlite_repo(&dir).await).await;
}
