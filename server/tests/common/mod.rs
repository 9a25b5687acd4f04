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
