//! ArtifactRepository: the metadata store, on diesel-async with a bb8 pool — Postgres in
//! production, SQLite (through diesel-async's sync wrapper) in embedded mode.
//!
//! Statement budgets, proven by tests that count statements with diesel's
//! instrumentation (the same counter feeds `orchard_db_statements_total`):
//! `get_or_create_artifact` is one `INSERT … ON CONFLICT … RETURNING`,
//! `batch_upsert_dependencies` one statement for any number of rows (Postgres `UNNEST`
//! of arrays, SQLite `json_each` of one JSON document), `get_cached_url_with_artifact`
//! one joined `SELECT`.

mod migrate;
mod repo;
mod retry;
pub mod schema;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use diesel::prelude::{Insertable, Queryable, Selectable};
use serde::{Deserialize, Serialize};

use crate::config::{DatabaseConfig, DatabaseUrl};

pub use migrate::run_migrations;
pub use repo::{PgRepository, SqliteRepository};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database connection failed: {0}")]
    Connection(#[from] diesel::ConnectionError),
    #[error("no database connection available within the pool timeout")]
    PoolTimeout,
    #[error("database pool: {0}")]
    Pool(String),
    #[error("migrations failed: {0}")]
    Migration(String),
    #[error("invalid value: {0}")]
    Invalid(String),
}

impl DbError {
    /// The database cannot be reached right now (a connection lost or refused, the pool
    /// out of connections, the server shutting down or starting): worth one more try,
    /// and a 503 — not a 500 — when it persists.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            DbError::Connection(_) | DbError::PoolTimeout | DbError::Pool(_) => true,
            DbError::Query(Error::BrokenTransactionManager) => true,
            DbError::Query(Error::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
                ) || {
                    // SQLSTATE 57P01/57P02/57P03 (admin or crash shutdown, cannot connect now)
                    let m = info.message();
                    m.contains("terminating connection") || m.contains("the database system is")
                }
            }
            _ => false,
        }
    }
}

impl From<diesel_async::pooled_connection::PoolError> for DbError {
    fn from(e: diesel_async::pooled_connection::PoolError) -> Self {
        DbError::Pool(e.to_string())
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for DbError {
    fn from(e: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        match e {
            bb8::RunError::TimedOut => DbError::PoolTimeout,
            bb8::RunError::User(e) => DbError::Pool(e.to_string()),
        }
    }
}

#[derive(
    Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize, Deserialize,
)]
#[diesel(table_name = schema::artifacts)]
pub struct Artifact {
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    pub created_at: i64,
}

#[derive(
    Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize, Deserialize,
)]
#[diesel(table_name = schema::cached_urls)]
pub struct CachedUrl {
    pub protocol: String,
    pub source: String,
    pub path: String,
    pub artifact_sha256: String,
    pub upstream_url: String,
    pub created_at: i64,
}

/// An artifact an admin quarantined.
#[derive(
    Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize, Deserialize,
)]
#[diesel(table_name = schema::quarantined_artifacts)]
pub struct Quarantined {
    pub sha256: String,
    pub reason: String,
    pub created_at: i64,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// URL mappings (protocol, source, path) that pointed at the artifact.
    pub urls: usize,
    /// Whether the artifact's row (and its dependencies) went too.
    pub artifact: bool,
}

/// One dependency of an artifact, as extracted from its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = schema::artifact_dependencies)]
pub struct Dependency {
    pub artifact_sha256: String,
    pub position: i32,
    pub protocol: String,
    pub name: String,
    pub requirement: String,
    /// e.g. `runtime`, `optional`, `peer`, `compile`, `test`, `extra:{name}`
    pub kind: String,
    pub optional: bool,
    /// PEP 508 environment marker, empty when none.
    pub marker: String,
}

/// A dependency to store; its position is its index in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDependency {
    pub protocol: String,
    pub name: String,
    pub requirement: String,
    pub kind: String,
    pub optional: bool,
    pub marker: String,
}

#[derive(
    Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize, Deserialize,
)]
#[diesel(table_name = schema::upstream_sources)]
pub struct UpstreamSourceRow {
    pub name: String,
    pub protocol: String,
    pub url: String,
    pub priority: i32,
    pub enabled: bool,
    pub settings: String,
    pub updated_at: i64,
}

/// Pool occupancy, for `/readyz` and metrics.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PoolState {
    pub connections: u32,
    pub idle: u32,
    pub max: u32,
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[async_trait]
pub trait ArtifactRepository: Send + Sync {
    fn kind(&self) -> &'static str;
    fn pool_state(&self) -> PoolState;
    /// Statements this repository has sent since it was built.
    fn statements(&self) -> u64;

    async fn ping(&self) -> Result<(), DbError>;

    /// Returns the artifact row, inserting it if the digest is new (one statement).
    async fn get_or_create_artifact(&self, artifact: &Artifact) -> Result<Artifact, DbError>;

    /// Maps a protocol/source/path to an artifact (one statement).
    async fn upsert_cached_url(&self, url: &CachedUrl) -> Result<(), DbError>;

    /// The cache-hit lookup: the URL mapping joined with its artifact (one statement).
    async fn get_cached_url_with_artifact(
        &self,
        protocol: &str,
        source: &str,
        path: &str,
    ) -> Result<Option<(CachedUrl, Artifact)>, DbError>;

    /// `(path, artifact sha256)` of every cached URL of a source whose path starts with
    /// `prefix` (one statement). `prefix` must not contain `%` or `_`.
    async fn list_cached_paths(
        &self,
        protocol: &str,
        source: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, DbError>;

    /// Every URL mapped to an artifact (one statement).
    async fn cached_urls_of(&self, artifact_sha256: &str) -> Result<Vec<CachedUrl>, DbError>;

    /// Stores all dependencies of one artifact in one statement, whatever their number.
    async fn batch_upsert_dependencies(
        &self,
        artifact_sha256: &str,
        deps: &[NewDependency],
    ) -> Result<usize, DbError>;

    async fn dependencies_of(&self, artifact_sha256: &str) -> Result<Vec<Dependency>, DbError>;

    async fn upsert_source(&self, source: &UpstreamSourceRow) -> Result<(), DbError>;
    async fn delete_source(&self, name: &str) -> Result<bool, DbError>;
    /// Inserts or updates the row unless it exists with another `settings.owner`, in one
    /// statement (so two writers cannot both pass a check and overwrite each other).
    /// `false` = owned by someone else; nothing written.
    async fn upsert_source_owned(
        &self,
        source: &UpstreamSourceRow,
        owner: &str,
    ) -> Result<bool, DbError>;
    /// Deletes the row if it has no owner or `owner` (one statement).
    async fn delete_source_owned(&self, name: &str, owner: &str) -> Result<bool, DbError>;
    /// Every source, highest priority (lowest number) first.
    async fn list_sources(&self) -> Result<Vec<UpstreamSourceRow>, DbError>;

    /// Quarantines an artifact (or updates the reason).
    async fn quarantine(&self, entry: &Quarantined) -> Result<(), DbError>;
    /// Lifts a quarantine; `false` when there was none.
    async fn unquarantine(&self, sha256: &str) -> Result<bool, DbError>;
    async fn quarantined(&self) -> Result<Vec<Quarantined>, DbError>;
    /// Removes every URL mapped to the artifact, then the artifact row and its
    /// dependencies (nothing references it any more), in one transaction.
    async fn purge_artifact(&self, sha256: &str) -> Result<Purged, DbError>;
}

/// Counts statements per repository and in `orchard_db_statements_total`.
#[derive(Clone, Default)]
pub struct StatementCounter(Arc<AtomicU64>);

impl StatementCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn instrumentation(&self) -> impl diesel::connection::Instrumentation {
        let counter = self.0.clone();
        move |event: diesel::connection::InstrumentationEvent<'_>| {
            if let diesel::connection::InstrumentationEvent::StartQuery { .. } = event {
                counter.fetch_add(1, Ordering::Relaxed);
                crate::metrics::metrics().db_statements.inc();
            }
        }
    }
}

/// Connects the repository the URL names. Migrations are separate (`run_migrations`).
pub async fn connect(config: &DatabaseConfig) -> Result<Arc<dyn ArtifactRepository>, DbError> {
    match &config.url {
        DatabaseUrl::Postgres(_) => Ok(Arc::new(retry::Retrying(
            PgRepository::connect(config).await?,
        ))),
        DatabaseUrl::Sqlite(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    DbError::Invalid(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            Ok(Arc::new(retry::Retrying(
                SqliteRepository::connect(config).await?,
            )))
        }
    }
}
