//! Artifact storage against a real S3-compatible server (s3s-fs) and a local
//! directory: streaming in both directions, multipart for large objects, ranges,
//! deduplication, and nothing stored on a hash mismatch or a broken source.

mod common;

use bytes::Bytes;
use futures::{stream, TryStreamExt};
use orchard_server::config::StorageConfig;
use orchard_server::storage::{ArtifactStore, Cleaned, Expected, StorageError, SMALL_OBJECT_LIMIT};
use sha2::{Digest, Sha256};

fn s3_store() -> ArtifactStore {
    let config = common::config_from(&common::s3_vars(&common::unique("storage-test")));
    assert!(matches!(config.storage, StorageConfig::S3(_)));
    ArtifactStore::from_config(&config.storage).expect("s3 store")
}

fn local_store(dir: &tempfile::TempDir) -> ArtifactStore {
    ArtifactStore::from_config(&StorageConfig::Local {
        root: dir.path().join("artifacts"),
    })
    .expect("local store")
}

/// Deterministic pseudo-random bytes, delivered in uneven chunks.
fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn chunks(
    data: &[u8],
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let pieces: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(65_537)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(pieces)
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn read_all(
    store: &ArtifactStore,
    digest: &str,
    range: Option<std::ops::Range<u64>>,
) -> (u64, Vec<u8>) {
    let (total, _, body) = store.get(digest, range).await.expect("get");
    let parts: Vec<Bytes> = body.try_collect().await.expect("read");
    (total, parts.concat())
}

async fn exercise(store: ArtifactStore) {
    store.ping().await.expect("ping");

    // Small object: one PUT.
    let small = content(100_000, 1);
    let stored = store
        .put_stream(chunks(&small), &Expected::sha256(sha(&small)))
        .await
        .expect("put small");
    assert_eq!(
        (stored.sha256.as_str(), stored.size),
        (sha(&small).as_str(), small.len() as u64)
    );
    assert_eq!(
        store.head(&stored.sha256).await.unwrap(),
        small.len() as u64
    );
    assert_eq!(read_all(&store, &stored.sha256, None).await.1, small);

    // Large object: multipart (more than two parts), no declared hash.
    let large = content(SMALL_OBJECT_LIMIT * 2 + 12_345, 2);
    let stored = store
        .put_stream(chunks(&large), &Expected::default())
        .await
        .expect("put large");
    assert_eq!(stored.sha256, sha(&large));
    let (total, bytes) = read_all(&store, &stored.sha256, None).await;
    assert_eq!(total, large.len() as u64);
    assert!(bytes == large, "large object round trip");
    let (_, part) = read_all(
        &store,
        &stored.sha256,
        Some(1_000..SMALL_OBJECT_LIMIT as u64 + 5),
    )
    .await;
    assert!(part == large[1_000..SMALL_OBJECT_LIMIT + 5], "range read");

    // Same bytes again: same key, still one object.
    let again = store
        .put_stream(chunks(&small), &Expected::default())
        .await
        .unwrap();
    assert_eq!(again.sha256, sha(&small));

    // Hash mismatch: refused, counted, nothing stored under either digest, no temp left.
    let before = orchard_server::metrics::metrics().hash_mismatch.get();
    let evil = content(SMALL_OBJECT_LIMIT + 10, 3);
    let declared = sha(b"what the index promised");
    match store
        .put_stream(chunks(&evil), &Expected::sha256(declared.clone()))
        .await
    {
        Err(StorageError::HashMismatch {
            algorithm: "sha256",
            expected,
            actual,
        }) => {
            assert_eq!(expected, declared);
            assert_eq!(actual, sha(&evil));
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    assert!(orchard_server::metrics::metrics().hash_mismatch.get() > before);
    assert!(matches!(
        store.head(&declared).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        store.head(&sha(&evil)).await,
        Err(StorageError::NotFound)
    ));

    // Broken source stream (a truncated upstream body) after a multipart began.
    let mut pieces: Vec<Result<Bytes, std::io::Error>> = evil
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    pieces.push(Err(std::io::Error::other("connection reset")));
    let r = store
        .put_stream(stream::iter(pieces), &Expected::default())
        .await;
    assert!(matches!(r, Err(StorageError::Source(_))), "{r:?}");
    assert!(matches!(
        store.head(&sha(&evil)).await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(
        store.temporary_objects().await.unwrap(),
        0,
        "no temporary object left behind"
    );

    // Bad digests never reach the store.
    assert!(matches!(
        store.head("../../etc/passwd").await,
        Err(StorageError::BadDigest(_))
    ));
    assert!(matches!(
        store
            .put_stream(chunks(b"x"), &Expected::sha256("nope"))
            .await,
        Err(StorageError::BadDigest(_))
    ));

    // npm and Maven declare sha512 / sha1: verified the same way.
    let sha512 = hex::encode(sha2::Sha512::digest(&small));
    let sha1 = hex::encode(sha1::Sha1::digest(&small));
    let both = Expected {
        sha512: Some(sha512.clone()),
        sha1: Some(sha1.clone()),
        ..Default::default()
    };
    assert_eq!(
        store
            .put_stream(chunks(&small), &both)
            .await
            .unwrap()
            .sha256,
        sha(&small)
    );
    let wrong = Expected {
        sha512: Some(sha512),
        sha1: Some("0".repeat(40)),
        ..Default::default()
    };
    assert!(matches!(
        store.put_stream(chunks(&small), &wrong).await,
        Err(StorageError::HashMismatch {
            algorithm: "sha1",
            ..
        })
    ));

    store.delete(&sha(&small)).await.unwrap();
    assert!(matches!(
        store.head(&sha(&small)).await,
        Err(StorageError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_storage() {
    exercise(s3_store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_storage() {
    let dir = tempfile::tempdir().unwrap();
    exercise(local_store(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_fails_the_ping() {
    let mut vars = common::s3_vars("x");
    vars[1].1 = common::unique("no-such-bucket").replace('_', "-");
    let store = ArtifactStore::from_config(&common::config_from(&vars).storage).unwrap();
    assert!(store.ping().await.is_err());
}

/// The cleaner removes temporary objects older than its bound, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_removes_old_temporary_objects_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(&dir);
    let data = content(1000, 3);
    store
        .put_stream(chunks(&data), &Expected::default())
        .await
        .unwrap();
    let tmp = dir.path().join("artifacts/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("left-by-a-killed-fill"), b"partial").unwrap();
    assert_eq!(store.temporary_objects().await.unwrap(), 1);
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(
        store.clean(hour).await.unwrap(),
        Cleaned::default(),
        "too young"
    );
    assert_eq!(
        store.clean(std::time::Duration::ZERO).await.unwrap(),
        Cleaned {
            temporary: 1,
            uploads: 0
        }
    );
    assert_eq!(store.temporary_objects().await.unwrap(), 0);
    assert!(store.head(&sha(&data)).await.is_ok(), "artifacts stay");
}

/// A source that sends `len` bytes and then never another one (a fill whose upstream
/// stalls mid-way).
fn stalls_after(
    len: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    use futures::StreamExt;
    chunks(&content(len, 9)).chain(stream::pending())
}

/// Polls `fill` until the store shows `uploads` journaled multipart uploads.
async fn until_uploads<F: std::future::Future + Unpin>(
    store: &ArtifactStore,
    fill: &mut F,
    uploads: usize,
) {
    for _ in 0..600 {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), &mut *fill).await;
        if store.incomplete_uploads().await.unwrap().len() == uploads {
            return;
        }
    }
    panic!("never saw {uploads} incomplete uploads");
}

/// A fill killed mid-upload (its future leaked: no destructor runs, as when the process
/// dies) leaves an S3 multipart upload that listings do not show; the cleaner aborts it
/// through its journal — the bucket refuses further parts for it — and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_aborts_multipart_uploads_of_killed_fills() {
    use object_store::multipart::MultipartStore;
    let vars = common::s3_vars(&common::unique("storage-test"));
    let store = ArtifactStore::from_config(&common::config_from(&vars).storage).unwrap();
    let anything = Expected::default();
    let mut fill = Box::pin(store.put_stream(stalls_after(SMALL_OBJECT_LIMIT + 1000), &anything));
    until_uploads(&store, &mut fill, 1).await;
    std::mem::forget(fill);
    let uploads = store.incomplete_uploads().await.unwrap();
    let (key, id) = uploads[0].clone();
    assert!(key.contains("/tmp/"), "{key}");

    let var = |name: &str| vars.iter().find(|(k, _)| *k == name).unwrap().1.clone();
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(var("ORCHARD_S3_ENDPOINT"))
        .with_bucket_name(var("ORCHARD_S3_BUCKET"))
        .with_region(var("ORCHARD_S3_REGION"))
        .with_access_key_id(var("ORCHARD_S3_ACCESS_KEY_ID"))
        .with_secret_access_key(var("ORCHARD_S3_SECRET_ACCESS_KEY"))
        .with_allow_http(true)
        .build()
        .unwrap();
    let path: object_store::path::Path = key.as_str().into();
    let late_part = || bucket.put_part(&path, &id, 1, Bytes::from_static(b"late").into());
    late_part().await.expect("the abandoned upload takes parts");

    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(
        store.clean(hour).await.unwrap(),
        Cleaned::default(),
        "too young"
    );
    assert_eq!(
        store.clean(std::time::Duration::ZERO).await.unwrap(),
        Cleaned {
            temporary: 0,
            uploads: 1
        }
    );
    assert!(store.incomplete_uploads().await.unwrap().is_empty());
    let part = late_part().await;
    assert!(part.is_err(), "the upload was not aborted: {part:?}");
}

/// A fill dropped mid-upload (the client went away) aborts its upload at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_fill_aborts_its_upload() {
    let store = s3_store();
    let anything = Expected::default();
    let mut fill = Box::pin(store.put_stream(stalls_after(SMALL_OBJECT_LIMIT + 1000), &anything));
    until_uploads(&store, &mut fill, 1).await;
    drop(fill);
    let mut never = futures::future::pending::<()>();
    until_uploads(&store, &mut never, 0).await;
}
