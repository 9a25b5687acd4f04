//! Orchard's shared core, used by both binaries (`orchard` and `orchard-operator`):
//! configuration from the environment, upstream source specs, sealed credentials, the
//! database (Postgres or SQLite), the cache (Redis Cluster, Redis or in-process) and the
//! metrics registry. No HTTP server, HTTP client or object storage lives here: the
//! operator links this crate and not the server's HTTP stack.

pub mod cache;
pub mod config;
pub mod credentials;
pub mod db;
pub mod metrics;
pub mod source_spec;
