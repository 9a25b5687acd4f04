//! CacheService against a real 6-node Redis Cluster and a real single Redis node, and
//! its behaviour when Redis is down or silent.

mod common;

use std::time::Duration;

use bytes::Bytes;
use orchard_server::cache::{CacheService, Category};
use orchard_server::metrics::metrics;

async fn connected(vars: Vec<(&str, String)>) -> CacheService {
    let mut vars = vars;
    vars.push(("ORCHARD_CACHE_NAMESPACE", common::unique("t")));
    vars.push(("ORCHARD_REDIS_TIMEOUT_MS", "1000".into()));
    let config = common::config_from(&vars);
    let cache = CacheService::from_config(&config.cache).expect("cache");
    for _ in 0..100 {
        if cache.ping().await.is_ok() {
            return cache;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("redis did not answer");
}

async fn cluster() -> CacheService {
    connected(vec![(
        "ORCHARD_REDIS_CLUSTER_NODES",
        common::service_var("ORCHARD_TEST_REDIS_CLUSTER_NODES"),
    )])
    .await
}

async fn single() -> CacheService {
    let url = url::Url::parse(&common::service_var("ORCHARD_TEST_REDIS_URL")).unwrap();
    connected(vec![
        ("ORCHARD_REDIS_HOST", url.host_str().unwrap().to_string()),
        ("ORCHARD_REDIS_PORT", url.port().unwrap_or(6379).to_string()),
        ("ORCHARD_REDIS_DB", "3".into()),
    ])
    .await
}

async fn exercise(cache: CacheService, backend: &str) {
    assert_eq!(cache.backend_kind(), backend);
    // Many keys: on the cluster they spread over all three masters' slots.
    for i in 0..60 {
        let key = cache.key(Category::ArtifactMetadata, "pypi", &format!("pkg-{i}"));
        assert!(
            cache
                .set(
                    &key,
                    Bytes::from(format!("v{i}")),
                    Category::ArtifactMetadata
                )
                .await
        );
    }
    for i in 0..60 {
        let key = cache.key(Category::ArtifactMetadata, "pypi", &format!("pkg-{i}"));
        assert_eq!(cache.get(&key).await, Some(Bytes::from(format!("v{i}"))));
    }
    let missing = cache.key(Category::PackageIndex, "npm", "nope");
    assert_eq!(cache.get(&missing).await, None);

    // TTL: a short-lived entry expires in Redis itself.
    let short = cache.key(Category::PackageIndex, "pypi", "short");
    assert!(
        cache
            .set_with_ttl(
                &short,
                Bytes::from_static(b"x"),
                Some(Duration::from_millis(300))
            )
            .await
    );
    assert!(cache.get(&short).await.is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(cache.get(&short).await, None, "expired");

    // Delete and JSON helpers.
    let k = cache.key(Category::UpstreamSources, "maven", "list");
    assert!(
        cache
            .set_json(&k, &vec!["a", "b"], Category::UpstreamSources)
            .await
    );
    assert_eq!(
        cache.get_json::<Vec<String>>(&k).await,
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert!(cache.delete(&k).await);
    assert_eq!(cache.get(&k).await, None);

    // Generations: a bump hides the source's old keys from every replica.
    let old = cache
        .source_key(Category::PackageIndex, "pypi", "src", "requests")
        .await;
    cache
        .set(&old, Bytes::from_static(b"page"), Category::PackageIndex)
        .await;
    let first = cache.generation("src").await.expect("Redis answers");
    assert_eq!(cache.bump_generation("src").await, Some(first + 1));
    let new = cache
        .source_key(Category::PackageIndex, "pypi", "src", "requests")
        .await;
    assert_ne!(old, new);
    assert_eq!(cache.get(&new).await, None);
    // A second replica (fresh memo) reads the bumped generation from Redis.
    let other = CacheService::with_backend_of(&cache);
    assert_eq!(other.generation("src").await, Some(first + 1));

    // Locks: exclusive, owned, renewable, expiring.
    let lock = cache.key(Category::ArtifactMetadata, "pypi", "lock/x");
    assert_eq!(
        cache
            .try_lock(&lock, "me", Duration::from_millis(400))
            .await,
        Some(true)
    );
    assert_eq!(
        other.try_lock(&lock, "you", Duration::from_secs(5)).await,
        Some(false)
    );
    other.unlock(&lock, "you").await;
    assert_eq!(
        other.try_lock(&lock, "you", Duration::from_secs(5)).await,
        Some(false),
        "only the owner releases"
    );
    assert_eq!(
        cache
            .extend_lock(&lock, "me", Duration::from_millis(400))
            .await,
        Some(true)
    );
    assert_eq!(
        other
            .extend_lock(&lock, "you", Duration::from_secs(5))
            .await,
        Some(false)
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        other.try_lock(&lock, "you", Duration::from_secs(5)).await,
        Some(true),
        "an expired lock is taken over"
    );
    assert_eq!(
        cache.extend_lock(&lock, "me", Duration::from_secs(5)).await,
        Some(false),
        "the old owner knows it lost the lock"
    );
    other.unlock(&lock, "you").await;
    assert_eq!(
        cache.try_lock(&lock, "me", Duration::from_secs(5)).await,
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_backend() {
    exercise(cluster().await, "redis-cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_backend() {
    exercise(single().await, "redis").await;
}

fn errors(backend: &str) -> u64 {
    ["get", "set"]
        .iter()
        .flat_map(|op| ["not_connected", "timeout", "redis_error"].map(|r| (op, r)))
        .map(|(op, r)| {
            metrics()
                .cache_errors
                .with_label_values(&[backend, op, r])
                .get()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_means_no_cache_not_failure() {
    let port = common::free_port(); // nothing listens there
    let config =
        common::config_from(&[("ORCHARD_REDIS_CLUSTER_NODES", format!("127.0.0.1:{port}"))]);
    let cache = CacheService::from_config(&config.cache).unwrap();
    let before = errors("redis-cluster");
    let key = cache.key(Category::PackageIndex, "pypi", "x");
    assert!(
        !cache
            .set(&key, Bytes::from_static(b"v"), Category::PackageIndex)
            .await
    );
    assert_eq!(cache.get(&key).await, None);
    assert_eq!(cache.generation("s").await, None, "unknown, not 0");
    assert!(cache.ping().await.is_err());
    assert!(
        errors("redis-cluster") >= before + 2,
        "failures are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_redis_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let config = common::config_from(&[
        ("ORCHARD_REDIS_HOST", "127.0.0.1".into()),
        ("ORCHARD_REDIS_PORT", port.to_string()),
        ("ORCHARD_REDIS_TIMEOUT_MS", "200".into()),
    ]);
    let cache = CacheService::from_config(&config.cache).unwrap();
    let before = metrics()
        .cache_errors
        .with_label_values(&["redis", "get", "timeout"])
        .get()
        + metrics()
            .cache_errors
            .with_label_values(&["redis", "get", "redis_error"])
            .get();
    let key = cache.key(Category::PackageIndex, "pypi", "x");
    let got = tokio::time::timeout(Duration::from_secs(10), cache.get(&key))
        .await
        .expect("the call gives up by itself");
    assert_eq!(got, None);
    let after = metrics()
        .cache_errors
        .with_label_values(&["redis", "get", "timeout"])
        .get()
        + metrics()
            .cache_errors
            .with_label_values(&["redis", "get", "redis_error"])
            .get();
    assert_eq!(after, before + 1);
}
