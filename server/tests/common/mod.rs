//! Shared helpers of the integration tests. They run against the real services that
//! `make services-up` starts and describes in `$ORCHARD_SERVICES_DIR/env.sh`
//! (`make test` sources it). Each test isolates itself: its own database, cache key
//! namespace and bucket prefix.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;

use diesel::{Connection, PgConnection, RunQueryDsl};
use orchard_server::config::{Config, Env};

/// A variable from the services' env file; a clear failure when it is missing.
pub fn service_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests with `make test` (it starts the services and sources their env.sh)")
    })
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A new, empty Postgres database; returns its URL.
pub fn fresh_postgres_database() -> String {
    let admin_url = service_var("ORCHARD_TEST_DATABASE_URL");
    let name = unique("orchard_test");
    let mut admin = PgConnection::establish(&admin_url).expect("connect to the test Postgres");
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .expect("create database");
    let mut url = url::Url::parse(&admin_url).expect("test database URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A configuration from the given variables only (nothing from the process environment).
pub fn config_from(vars: &[(&str, String)]) -> Config {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Config::from_env(&Env::from_fn(move |k| map.get(k).cloned())).expect("valid test configuration")
}

/// The S3 settings of the test server, under a prefix of the test's own.
pub fn s3_vars(prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "ORCHARD_S3_ENDPOINT",
            service_var("ORCHARD_TEST_S3_ENDPOINT"),
        ),
        ("ORCHARD_S3_BUCKET", service_var("ORCHARD_TEST_S3_BUCKET")),
        ("ORCHARD_S3_REGION", service_var("ORCHARD_TEST_S3_REGION")),
        (
            "ORCHARD_S3_ACCESS_KEY_ID",
            service_var("ORCHARD_TEST_S3_ACCESS_KEY_ID"),
        ),
        (
            "ORCHARD_S3_SECRET_ACCESS_KEY",
            service_var("ORCHARD_TEST_S3_SECRET_ACCESS_KEY"),
        ),
        ("ORCHARD_S3_PREFIX", prefix.to_string()),
    ]
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A TCP relay to Postgres whose connections can all be cut at once (what a Postgres
/// restart does to a pool) and which can refuse new ones (Postgres down).
pub struct Relay {
    pub port: u16,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    pub open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    pub async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> =
            Default::default();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (c, o) = (conns.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay { port, conns, open }
    }

    pub fn cut_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

pub fn through_relay(url: &str, port: u16) -> (String, std::net::SocketAddr) {
    let mut u = url::Url::parse(url).unwrap();
    let target = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(5432));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .unwrap()
        .next()
        .unwrap();
    u.set_host(Some("127.0.0.1")).unwrap();
    u.set_port(Some(port)).unwrap();
    (u.to_string(), addr)
}
