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
    /// The counter's value; a missing counter is first set to `init` (with `ttl`).
    async fn get_or_init_i64(&self, key: &str, init: i64, ttl: Duration)
        -> Result<i64, CacheError>;
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
    ttl_immutable: Duration,
    /// How long a source's generation key lives after its last bump: longer than any
    /// generation-scoped key (TTL + stale max), so a generation never falls back to 0
    /// while keys of an older one could still be read.
    generation_ttl: Duration,
    generations: moka::future::Cache<String, i64>,
}

/// Keys in this space are never read or written: `source_key` returns one when the
/// source's generation cannot be read, so the request goes on without the cache instead
/// of reading a generation-0 key that an invalidation may have retired.
const UNCACHED: &str = ":uncached:";

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
            ttl_immutable: config.ttl_immutable,
            generation_ttl: (config.ttl_index.max(config.ttl_versions) + config.stale_max) * 2
                + Duration::from_secs(86_400),
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

    /// Every category expires (immutable data after `ORCHARD_CACHE_TTL_IMMUTABLE`).
    pub fn ttl(&self, category: Category) -> Option<Duration> {
        match category {
            Category::ArtifactMetadata
            | Category::ArtifactDependencies
            | Category::DependencyResolution => Some(self.ttl_immutable),
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

    /// A key of a source's data, carrying the source's current generation — or, when the
    /// generation cannot be read, a key the service never reads or writes (a miss).
    pub async fn source_key(
        &self,
        category: Category,
        protocol: &str,
        source: &str,
        identifier: &str,
    ) -> String {
        match self.generation(source).await {
            Some(g) => self.key(category, protocol, &format!("{source}~g{g}/{identifier}")),
            None => format!(
                "{}{UNCACHED}{}:{protocol}:{source}/{identifier}",
                self.namespace,
                category.as_str()
            ),
        }
    }

    /// Whether the service leaves this key alone (see `UNCACHED`).
    fn uncached(&self, key: &str) -> bool {
        key.strip_prefix(self.namespace.as_str())
            .is_some_and(|rest| rest.starts_with(UNCACHED))
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
        if self.uncached(key) {
            return None;
        }
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
        if self.uncached(key) {
            return false;
        }
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
    /// Renews one's own lock: `Some(true)` renewed, `Some(false)` lost (expired or taken
    /// by another), `None` the cache did not answer.
    pub async fn extend_lock(&self, key: &str, token: &str, ttl: Duration) -> Option<bool> {
        self.call("lock_extend", self.backend.expire_if(key, token, ttl))
            .await
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

    /// The source's generation; `None` when the cache cannot say (never memoised: the
    /// next request asks again). A missing generation key (never bumped, expired or
    /// evicted) starts at the current time in milliseconds, so a lost key never brings
    /// back keys of an earlier generation.
    pub async fn generation(&self, source: &str) -> Option<i64> {
        if let Some(g) = self.generations.get(source).await {
            return Some(g);
        }
        let key = self.generation_key(source);
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as i64);
        let g = self
            .call(
                "get_generation",
                self.backend
                    .get_or_init_i64(&key, start, self.generation_ttl),
            )
            .await?;
        self.generations.insert(source.to_string(), g).await;
        Some(g)
    }

    /// Invalidates every generation-scoped key of a source and tells the other replicas.
    pub async fn bump_generation(&self, source: &str) -> Option<i64> {
        let key = self.generation_key(source);
        // a lost key starts again at the time, not at 0 (see `generation`)
        self.generation(source).await?;
        let g = self
            .call("bump_generation", self.backend.incr(&key))
            .await?;
        // bounded like every key, and long enough (see `generation_ttl`)
        self.call(
            "expire_generation",
            self.backend.expire(&key, self.generation_ttl),
        )
        .await;
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
        // every key expires
        assert_eq!(
            c.ttl(Category::ArtifactMetadata),
            Some(Duration::from_secs(604_800))
        );
        assert_eq!(
            c.ttl(Category::DependencyResolution),
            Some(Duration::from_secs(604_800))
        );
    }

    /// The in-process backend, except that reading a generation fails while `fail` is set.
    struct GenerationFails {
        inner: InProcessBackend,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl CacheBackend for GenerationFails {
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
            self.inner.get(key).await
        }
        async fn set(&self, k: &str, v: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
            self.inner.set(k, v, ttl).await
        }
        async fn delete(&self, key: &str) -> Result<(), CacheError> {
            self.inner.delete(key).await
        }
        async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
            self.inner.expire(key, ttl).await
        }
        async fn incr(&self, key: &str) -> Result<i64, CacheError> {
            self.inner.incr(key).await
        }
        async fn get_i64(&self, key: &str) -> Result<Option<i64>, CacheError> {
            self.inner.get_i64(key).await
        }
        async fn get_or_init_i64(
            &self,
            key: &str,
            init: i64,
            ttl: Duration,
        ) -> Result<i64, CacheError> {
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(CacheError::NotConnected);
            }
            self.inner.get_or_init_i64(key, init, ttl).await
        }
        async fn set_nx(&self, k: &str, v: &str, ttl: Duration) -> Result<bool, CacheError> {
            self.inner.set_nx(k, v, ttl).await
        }
        async fn delete_if(&self, k: &str, v: &str) -> Result<bool, CacheError> {
            self.inner.delete_if(k, v).await
        }
        async fn expire_if(&self, k: &str, v: &str, ttl: Duration) -> Result<bool, CacheError> {
            self.inner.expire_if(k, v, ttl).await
        }
        async fn publish(&self, c: &str, m: &str) -> Result<(), CacheError> {
            self.inner.publish(c, m).await
        }
        async fn subscribe(
            &self,
            c: &str,
        ) -> Result<futures::stream::BoxStream<'static, String>, CacheError> {
            CacheBackend::subscribe(&self.inner, c).await
        }
        async fn ping(&self) -> Result<(), CacheError> {
            self.inner.ping().await
        }
    }

    #[tokio::test]
    async fn an_unreadable_generation_is_a_miss_never_generation_0() {
        let config = Config::from_env(&Env::from_fn(|_| None)).unwrap();
        let backend = Arc::new(GenerationFails {
            inner: InProcessBackend::new(100, 1 << 20),
            fail: false.into(),
        });
        let c = CacheService::with_backend(backend.clone(), &config.cache);
        let g0 = c.source_key(Category::PackageIndex, "pypi", "a", "x").await;
        c.set(&g0, Bytes::from_static(b"before"), Category::PackageIndex)
            .await;
        let first = c.generation("a").await.unwrap();
        assert_eq!(c.bump_generation("a").await, Some(first + 1));
        // another replica, whose generation read fails: it must not read the retired page
        let other = CacheService::with_backend_of(&c);
        backend
            .fail
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let key = other
            .source_key(Category::PackageIndex, "pypi", "a", "x")
            .await;
        assert_ne!(key, g0);
        assert!(key.starts_with("orchard:uncached:"), "{key}");
        assert!(other.get(&key).await.is_none());
        assert!(
            !other
                .set(&key, Bytes::from_static(b"x"), Category::PackageIndex)
                .await
        );
        assert!(
            other.get(&key).await.is_none(),
            "nothing is stored under it"
        );
        // once it answers again, the current generation is used (nothing was memoised)
        backend
            .fail
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let g1 = other
            .source_key(Category::PackageIndex, "pypi", "a", "x")
            .await;
        let current = c.generation("a").await.unwrap();
        assert_eq!(g1, format!("orchard:package_index:pypi:a~g{current}/x"));
    }

    #[tokio::test]
    async fn bumping_a_generation_changes_that_source_keys_only() {
        let c = service();
        let a0 = c.source_key(Category::PackageIndex, "pypi", "a", "x").await;
        let b0 = c.source_key(Category::PackageIndex, "pypi", "b", "x").await;
        let g = c.generation("a").await.unwrap();
        assert!(
            g > 1_600_000_000_000,
            "a new generation starts at the time: {g}"
        );
        assert_eq!(a0, format!("orchard:package_index:pypi:a~g{g}/x"));
        c.set(&a0, Bytes::from_static(b"page"), Category::PackageIndex)
            .await;
        assert_eq!(c.get(&a0).await.as_deref(), Some(&b"page"[..]));
        assert_eq!(c.bump_generation("a").await, Some(g + 1));
        let a1 = c.source_key(Category::PackageIndex, "pypi", "a", "x").await;
        assert_ne!(a0, a1);
        assert!(c.get(&a1).await.is_none());
        assert_eq!(
            c.source_key(Category::PackageIndex, "pypi", "b", "x").await,
            b0
        );
    }
}
