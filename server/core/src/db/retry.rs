//! Database calls that survive a connection lost under them: every repository call whose
//! error says the database connection is gone (`DbError::is_unavailable`: a Postgres
//! restart, a network cut, a pool that cannot connect) is sent once more — the pool
//! checks a connection before handing it out (`repo.rs`), so the second try runs on a
//! live or new one. A second failure goes up as it is, and the HTTP layer answers
//! 503 with `Retry-After`.

use async_trait::async_trait;

use super::{
    Artifact, ArtifactRepository, CachedUrl, DbError, Dependency, NewDependency, PoolState, Purged,
    Quarantined, UpstreamSourceRow,
};
use crate::metrics::metrics;

pub struct Retrying<R>(pub R);

macro_rules! once_more {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        match $self.0.$method($($arg),*).await {
            Err(e) if e.is_unavailable() => {
                tracing::debug!(error = %e, call = stringify!($method), "database connection lost; trying once more");
                metrics().db_retries.inc();
                $self.0.$method($($arg),*).await
            }
            other => other,
        }
    }};
}

#[async_trait]
impl<R: ArtifactRepository> ArtifactRepository for Retrying<R> {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn pool_state(&self) -> PoolState {
        self.0.pool_state()
    }
    fn statements(&self) -> u64 {
        self.0.statements()
    }
    async fn ping(&self) -> Result<(), DbError> {
        // a health check reports what it finds
        self.0.ping().await
    }
    async fn get_or_create_artifact(&self, artifact: &Artifact) -> Result<Artifact, DbError> {
        once_more!(self.get_or_create_artifact(artifact))
    }
    async fn upsert_cached_url(&self, url: &CachedUrl) -> Result<(), DbError> {
        once_more!(self.upsert_cached_url(url))
    }
    async fn get_cached_url_with_artifact(
        &self,
        protocol: &str,
        source: &str,
        path: &str,
    ) -> Result<Option<(CachedUrl, Artifact)>, DbError> {
        once_more!(self.get_cached_url_with_artifact(protocol, source, path))
    }
    async fn list_cached_paths(
        &self,
        protocol: &str,
        source: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, DbError> {
        once_more!(self.list_cached_paths(protocol, source, prefix))
    }
    async fn cached_urls_of(&self, artifact_sha256: &str) -> Result<Vec<CachedUrl>, DbError> {
        once_more!(self.cached_urls_of(artifact_sha256))
    }
    async fn batch_upsert_dependencies(
        &self,
        artifact_sha256: &str,
        deps: &[NewDependency],
    ) -> Result<usize, DbError> {
        once_more!(self.batch_upsert_dependencies(artifact_sha256, deps))
    }
    async fn dependencies_of(&self, artifact_sha256: &str) -> Result<Vec<Dependency>, DbError> {
        once_more!(self.dependencies_of(artifact_sha256))
    }
    async fn upsert_source(&self, source: &UpstreamSourceRow) -> Result<(), DbError> {
        once_more!(self.upsert_source(source))
    }
    async fn delete_source(&self, name: &str) -> Result<bool, DbError> {
        once_more!(self.delete_source(name))
    }
    async fn upsert_source_owned(
        &self,
        source: &UpstreamSourceRow,
        owner: &str,
    ) -> Result<bool, DbError> {
        once_more!(self.upsert_source_owned(source, owner))
    }
    async fn delete_source_owned(&self, name: &str, owner: &str) -> Result<bool, DbError> {
        once_more!(self.delete_source_owned(name, owner))
    }
    async fn list_sources(&self) -> Result<Vec<UpstreamSourceRow>, DbError> {
        once_more!(self.list_sources())
    }
    async fn quarantine(&self, entry: &Quarantined) -> Result<(), DbError> {
        once_more!(self.quarantine(entry))
    }
    async fn unquarantine(&self, sha256: &str) -> Result<bool, DbError> {
        once_more!(self.unquarantine(sha256))
    }
    async fn quarantined(&self) -> Result<Vec<Quarantined>, DbError> {
        once_more!(self.quarantined())
    }
    async fn purge_artifact(&self, sha256: &str) -> Result<Purged, DbError> {
        once_more!(self.purge_artifact(sha256))
    }
}
