//! Orchard: a caching proxy for package registries. See `docs/architecture.md`.

// The shared core (configuration, source specs, credentials, database, cache, metrics),
// under the paths the server has always used.
pub use orchard_core::{cache, config, credentials, db, metrics};

pub mod access_log;
pub mod deps;
pub mod error;
pub mod file_url;
pub mod http_client;
pub mod lifecycle;
pub mod protocols;
pub mod proxy;
pub mod routes;
pub mod sources;
pub mod state;
pub mod storage;
pub mod worker_pool;
