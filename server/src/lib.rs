//! Orchard: a caching proxy for package registries. See `docs/architecture.md`.

pub mod access_log;
pub mod admin;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod db;
pub mod deps;
pub mod error;
pub mod file_url;
pub mod health;
pub mod http_client;
pub mod lifecycle;
pub mod metrics;
pub mod protocols;
pub mod proxy;
pub mod routes;
pub mod sources;
pub mod state;
pub mod storage;
pub mod worker_pool;
