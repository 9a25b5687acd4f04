//! CacheService: index pages, version lists, source configs and immutable metadata,
//! in Redis Cluster, single-node Redis or an in-process map, behind one interface.
//!
//! Keys are `{namespace}:{category}:{protocol}:{identifier}` (namespace `orchard` by
//! default). Keys of a source's mutable data carry that source's generation
//! (`{source}~g{N}/…`): bumping the generation invalidates every such key at once,
//! without `KEYS`/`SCAN` or cross-slot commands. Each replica memoises a generation for
//! one second, so a bump is seen everywhere within a second.
//!
//! The cache is never required: a failed or slow call (past `ORCHARD_REDIS_TIMEOUT_MS`)
//! counts `orchard_cache_errors_total` and the caller goes on as on a miss.

mod memory;
mod redis_backend;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::config::{CacheBackendConfig, CacheConfig};
use crate::metrics::metrics;

pub use memory::InProcessBackend;
pub use redis_backend::RedisBackend;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache backend not connected yet")]
    NotConnected,
    #[error("cache call timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Parse(String),
}

impl CacheError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            CacheError::NotConnected => "not_connected",
            CacheError::Timeout(_) => "timeout",
            CacheError::Redis(_) => "redis_error",
            CacheError::Parse(_) => "parse_error",
        }
    }
}

/// What a key holds; decides its TTL (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    ArtifactMetadata,
    ArtifactDependencies,
    DependencyResolution,
    UpstreamSources,
    PackageIndex,
    PackageVersions,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::ArtifactMetadata => "artifact_metadata",
            Category::ArtifactDependencies => "artifact_dependencies",
            Category::DependencyResolution => "dependency_resolution",
            Category::UpstreamSources => "upstream_sources",
            Category::PackageIndex => "package_index",
            Category::PackageVersions => "package_versions",
        }
    }
}

/// The storage behind the cache. Implementations return errors; `CacheService` turns
/// them into misses.
#[async_trait]
pub trait CacheBackend: Send + Sync {
    fn kind(&self) -> &'static str;
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// `ttl: None` keeps the value until it is deleted (or evicted by memory pressure).
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError>;
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
    /// Gives an existing key a new TTL; `false` when the key does not exist.
    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError>;
    /// Atomically adds one and returns the new value (0 + 1 for a missing key).
    async fn incr(&self, key: &str) -> Result<i64, CacheError>;
    async fn get_i64(&self, key: &str) -> Result<Option<i64>, CacheError>;
    /// Sets `key` to `value` only if it does not exist (a lock); `true` when set.
    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError>;
    /// Deletes `key` only if it still holds `value` (releasing one's own lock).
    async fn delete_if(&self, key: &str, value: &str) -> Result<bool, CacheError>;
    /// Extends `key` only if it still holds `value` (renewing one's own lock).
    async fn expire_if(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError>;
    async fn publish(&self, channel: &str, message: &str) -> Result<(), CacheError>;
    /// Messages published on `channel` from now on, until the connection drops (the
    /// stream then ends; callers subscribe again).
    async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<futures::stream::BoxStream<'static, String>, CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
}

/// Generations seen recently; one second bounds how stale a replica's view can be.
fn generation_memo() -> moka::future::Cache<String, i64> {
    moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(1))
        .build()
}

#[derive(Clone)]
pub struct CacheService {
    backend: Arc<dyn CacheBackend>,
    namespace: String,
    timeout: Duration,
    ttl_index: Duration,
    ttl_versions: Duration,
    ttl_upstream: Duration,
    generations: moka::future::Cache<String, i64>,
}

impl CacheService {
    /// Builds the backend the configuration names. Redis connects in the background;
    /// until it answers, every call is a quick miss.
    pub fn from_config(config: &CacheConfig) -> Result<Self, CacheError> {
        let backend: Arc<dyn CacheBackend> = match &config.backend {
            CacheBackendConfig::InProcess => {
                Arc::new(InProcessBackend::new(config.max_entries, config.max_bytes))
            }
            CacheBackendConfig::Redis { host, port, db } => Arc::new(RedisBackend::single(
                host,
                *port,
                *db,
                config.password.as_ref(),
                config.timeout,
            )?),
            CacheBackendConfig::RedisCluster { nodes } => Arc::new(RedisBackend::cluster(
                nodes,
                config.password.as_ref(),
                config.timeout,
            )?),
        };
        Ok(Self::with_backend(backend, config))
    }

    pub fn with_backend(backend: Arc<dyn CacheBackend>, config: &CacheConfig) -> Self {
        CacheService {
            backend,
            namespace: config.namespace.clone(),
            timeout: config.timeout,
            ttl_index: config.ttl_index,
            ttl_versions: config.ttl_versions,
            ttl_upstream: config.ttl_upstream,
            generations: generation_memo(),
        }
    }

    /// Another service on the same backend with its own generation memo, as a second
    /// replica would have.
    pub fn with_backend_of(other: &CacheService) -> Self {
        CacheService {
            generations: generation_memo(),
            ..other.clone()
        }
    }

    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// `None` = keep forever (immutable data).
    pub fn ttl(&self, category: Category) -> Option<Duration> {
        match category {
            Category::ArtifactMetadata
            | Category::ArtifactDependencies
            | Category::DependencyResolution => None,
            Category::UpstreamSources => Some(self.ttl_upstream),
            Category::PackageIndex => Some(self.ttl_index),
            Category::PackageVersions => Some(self.ttl_versions),
        }
    }

    /// `{namespace}:{category}:{protocol}:{identifier}`.
    pub fn key(&self, category: Category, protocol: &str, identifier: &str) -> String {
        format!(
            "{}:{}:{}:{}",
            self.namespace,
            category.as_str(),
            protocol,
            identifier
        )
    }

    /// A key of a source's data, carrying the source's current generation.
    pub async fn source_key(
        &self,
        category: Category,
        protocol: &str,
        source: &str,
        identifier: &str,
    ) -> String {
        let generation = self.generation(source).await;
        self.key(
            category,
            protocol,
            &format!("{source}~g{generation}/{identifier}"),
        )
    }

    fn generation_key(&self, source: &str) -> String {
        format!("{}:generation:{}", self.namespace, source)
    }

    /// The channel replicas listen on for invalidations.
    pub fn invalidation_channel(&self) -> String {
        format!("{}:invalidate", self.namespace)
    }

    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, CacheError>>,
    ) -> Option<T> {
        let kind = self.backend.kind();
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        };
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                metrics()
                    .cache_errors
                    .with_label_values(&[kind, op, e.metric_label()])
                    .inc();
                tracing::debug!(cache.backend = kind, cache.op = op, error = %e, "cache call failed; going on without the cache");
                None
            }
        }
    }

    pub async fn get(&self, key: &str) -> Option<Bytes> {
        let value = self.call("get", self.backend.get(key)).await.flatten();
        let result = if value.is_some() { "hit" } else { "miss" };
        metrics()
            .cache_operations
            .with_label_values(&[self.backend.kind(), "get", result])
            .inc();
        value
    }

    /// Stores with the category's TTL. Returns whether the backend took it.
    pub async fn set(&self, key: &str, value: Bytes, category: Category) -> bool {
        self.set_with_ttl(key, value, self.ttl(category)).await
    }

    pub async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> bool {
        let ok = self
            .call("set", self.backend.set(key, value, ttl))
            .await
            .is_some();
        metrics()
            .cache_operations
            .with_label_values(&[self.backend.kind(), "set", if ok { "ok" } else { "error" }])
            .inc();
        ok
    }

    pub async fn delete(&self, key: &str) -> bool {
        self.call("delete", self.backend.delete(key))
            .await
            .is_some()
    }

    /// Extends a key's life; `false` when it is gone (or the cache is unreachable).
    pub async fn expire(&self, key: &str, ttl: Duration) -> bool {
        self.call("expire", self.backend.expire(key, ttl))
            .await
            .unwrap_or(false)
    }

    /// Takes a lock: `Some(true)` taken, `Some(false)` held by someone else, `None` when
    /// the cache cannot tell (unreachable): callers go on without the lock.
    pub async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Option<bool> {
        self.call("lock", self.backend.set_nx(key, token, ttl))
            .await
    }

    /// Renews one's own lock; `false` when it was lost.
    pub async fn extend_lock(&self, key: &str, token: &str, ttl: Duration) -> bool {
        self.call("lock_extend", self.backend.expire_if(key, token, ttl))
            .await
            .unwrap_or(false)
    }

    pub async fn unlock(&self, key: &str, token: &str) {
        self.call("unlock", self.backend.delete_if(key, token))
            .await;
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let raw = self.get(key).await?;
        serde_json::from_slice(&raw).ok()
    }

    pub async fn set_json<T: Serialize>(&self, key: &str, value: &T, category: Category) -> bool {
        match serde_json::to_vec(value) {
            Ok(v) => self.set(key, Bytes::from(v), category).await,
            Err(_) => false,
        }
    }

    /// The source's generation (0 when never bumped, or when the cache is unreachable).
    pub async fn generation(&self, source: &str) -> i64 {
        if let Some(g) = self.generations.get(source).await {
            return g;
        }
        let key = self.generation_key(source);
        let g = self
            .call("get_generation", self.backend.get_i64(&key))
            .await
            .flatten()
            .unwrap_or(0);
        self.generations.insert(source.to_string(), g).await;
        g
    }

    /// Invalidates every generation-scoped key of a source and tells the other replicas.
    pub async fn bump_generation(&self, source: &str) -> Option<i64> {
        let key = self.generation_key(source);
        let g = self
            .call("bump_generation", self.backend.incr(&key))
            .await?;
        self.generations.insert(source.to_string(), g).await;
        let message = serde_json::json!({"source": source, "generation": g}).to_string();
        self.call(
            "publish",
            self.backend.publish(&self.invalidation_channel(), &message),
        )
        .await;
        Some(g)
    }

    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<futures::stream::BoxStream<'static, String>, CacheError> {
        self.backend.subscribe(channel).await
    }

    /// Forgets memoised generations (on an invalidation message).
    pub fn forget_generations(&self) {
        self.generations.invalidate_all();
    }

    /// A real round trip to the backend, for `/readyz`.
    pub async fn ping(&self) -> Result<(), CacheError> {
        match tokio::time::timeout(self.timeout, self.backend.ping()).await {
            Ok(r) => r,
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    fn service() -> CacheService {
        let config = Config::from_env(&Env::from_fn(|_| None)).unwrap();
        CacheService::from_config(&config.cache).unwrap()
    }

    #[test]
    fn key_format_and_ttls() {
        let c = service();
        assert_eq!(
            c.key(Category::PackageIndex, "pypi", "requests"),
            "orchard:package_index:pypi:requests"
        );
        assert_eq!(
            c.ttl(Category::PackageIndex),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            c.ttl(Category::UpstreamSources),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(c.ttl(Category::ArtifactMetadata), None);
        assert_eq!(c.ttl(Category::DependencyResolution), None);
    }

    #[tokio::test]
    async fn bumping_a_generation_changes_that_source_keys_only() {
        let c = service();
        let a0 = c.source_key(Category::PackageIndex, "pypi", "a", "x").await;
        let b0 = c.source_key(Category::PackageIndex, "pypi", "b", "x").await;
        assert_eq!(a0, "orchard:package_index:pypi:a~g0/x");
        c.set(&a0, Bytes::from_static(b"page"), Category::PackageIndex)
            .await;
        assert_eq!(c.get(&a0).await.as_deref(), Some(&b"page"[..]));
        assert_eq!(c.bump_generation("a").await, Some(1));
        let a1 = c.source_key(Category::PackageIndex, "pypi", "a", "x").await;
        assert_ne!(a0, a1);
        assert!(c.get(&a1).await.is_none());
        assert_eq!(
            c.source_key(Category::PackageIndex, "pypi", "b", "x").await,
            b0
        );
    }
}
