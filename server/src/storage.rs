//! Artifact bytes, keyed by SHA-256, in an S3-compatible bucket or a local directory
//! (object_store behind one wrapper).
//!
//! Writes stream: the first `SMALL_OBJECT_LIMIT` bytes are buffered; a smaller artifact
//! is one PUT, a larger one becomes a multipart upload with parts of that size, so at
//! most a few parts are in memory whatever the artifact's size. Bytes land under a
//! temporary key while they are hashed; only when the hash is known (and matches the
//! declared one, if any) are they copied to `sha256/{aa}/{sha256}` — a mismatch or an
//! aborted stream leaves nothing under the final key, and the temporary object is
//! deleted.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::StorageConfig;
use crate::metrics::metrics;

/// Objects below this size are written with one PUT; it is also the multipart part size.
pub const SMALL_OBJECT_LIMIT: usize = 8 * 1024 * 1024;
const MULTIPART_CONCURRENCY: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("artifact not found")]
    NotFound,
    #[error("hash mismatch: expected {algorithm} {expected}, got {actual}")]
    HashMismatch {
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("not a sha256 hex digest: {0:?}")]
    BadDigest(String),
    #[error("requested range not satisfiable")]
    BadRange,
    #[error("source stream failed: {0}")]
    Source(String),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("storage configuration: {0}")]
    Config(String),
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    kind: &'static str,
    /// Unix milliseconds of the last failure of the store itself (0: the last call
    /// worked), so that a fill is not started while the store is down (`available`).
    failing_since: Arc<std::sync::atomic::AtomicI64>,
}

/// Digests the stored bytes must match (lowercase hex); all `None` accepts any bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Option<String>,
    pub sha512: Option<String>,
    pub sha1: Option<String>,
}

impl Expected {
    pub fn sha256(hex: impl Into<String>) -> Self {
        Expected {
            sha256: Some(hex.into()),
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<(), StorageError> {
        for (digest, len) in [(&self.sha256, 64), (&self.sha512, 128), (&self.sha1, 40)] {
            if let Some(d) = digest {
                if d.len() != len || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(StorageError::BadDigest(d.clone()));
                }
            }
        }
        Ok(())
    }
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ArtifactStore {
    pub fn from_config(config: &StorageConfig) -> Result<Self, StorageError> {
        match config {
            StorageConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    StorageError::Config(format!("cannot create {}: {e}", root.display()))
                })?;
                let fs = LocalFileSystem::new_with_prefix(root)?;
                Ok(Self::new(Arc::new(fs), "local"))
            }
            StorageConfig::S3(s3) => {
                let store = AmazonS3Builder::new()
                    .with_endpoint(&s3.endpoint)
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(s3.secret_access_key.expose_secret())
                    .with_allow_http(s3.endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false)
                    .build()
                    .map_err(|e| StorageError::Config(e.to_string()))?;
                let store: Arc<dyn ObjectStore> = if s3.prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(PrefixStore::new(store, s3.prefix.as_str()))
                };
                Ok(Self::new(store, "s3"))
            }
        }
    }

    pub fn new(store: Arc<dyn ObjectStore>, kind: &'static str) -> Self {
        ArtifactStore {
            store,
            kind,
            failing_since: Default::default(),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// `sha256/{first two hex digits}/{digest}`; the digest is validated, never raw input.
    pub fn key(sha256: &str) -> Result<Path, StorageError> {
        if !is_sha256_hex(sha256) {
            return Err(StorageError::BadDigest(sha256.to_string()));
        }
        Ok(Path::from(format!("sha256/{}/{}", &sha256[..2], sha256)))
    }

    fn record<T>(&self, op: &str, r: &Result<T, StorageError>) {
        use std::sync::atomic::Ordering;
        match r {
            Err(StorageError::Store(_)) => {
                let now = chrono::Utc::now().timestamp_millis();
                let _ = self.failing_since.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Ok(_) | Err(StorageError::NotFound) => self.failing_since.store(0, Ordering::Relaxed),
            Err(_) => {}
        }
        let result = match r {
            Ok(_) => "ok",
            Err(StorageError::NotFound) => "not_found",
            Err(StorageError::HashMismatch { .. }) => "hash_mismatch",
            Err(_) => "error",
        };
        metrics()
            .storage_operations
            .with_label_values(&[self.kind, op, result])
            .inc();
    }

    /// Streams `body` into storage. Bytes that do not match every `expected` digest are
    /// refused (`HashMismatch`, counted in `orchard_hash_mismatch_total`) and nothing is kept.
    pub async fn put_stream<S, E>(
        &self,
        body: S,
        expected: &Expected,
    ) -> Result<StoredObject, StorageError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        expected.validate()?;
        let r = self.put_stream_inner(body, expected).await;
        if matches!(r, Err(StorageError::HashMismatch { .. })) {
            metrics().hash_mismatch.inc();
        }
        self.record("put", &r);
        r
    }

    async fn put_stream_inner<S, E>(
        &self,
        body: S,
        expected: &Expected,
    ) -> Result<StoredObject, StorageError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let tmp = Path::from(format!("tmp/{}", uuid::Uuid::new_v4()));
        let mut hasher = Sha256::new();
        let mut sha512 = expected.sha512.as_ref().map(|_| sha2::Sha512::new());
        let mut sha1 = expected.sha1.as_ref().map(|_| sha1::Sha1::new());
        let mut size: u64 = 0;
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0usize;
        let mut upload: Option<WriteMultipart> = None;
        let mut body = std::pin::pin!(body);

        let streamed: Result<(), StorageError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StorageError::Source(e.to_string()))?;
                hasher.update(&chunk);
                if let Some(h) = sha512.as_mut() {
                    h.update(&chunk);
                }
                if let Some(h) = sha1.as_mut() {
                    h.update(&chunk);
                }
                size += chunk.len() as u64;
                match upload.as_mut() {
                    Some(w) => {
                        w.wait_for_capacity(MULTIPART_CONCURRENCY).await?;
                        w.put(chunk);
                    }
                    None => {
                        head_len += chunk.len();
                        head.push(chunk);
                        if head_len >= SMALL_OBJECT_LIMIT {
                            let mut w = WriteMultipart::new_with_chunk_size(
                                self.store.put_multipart(&tmp).await?,
                                SMALL_OBJECT_LIMIT,
                            );
                            for b in head.drain(..) {
                                w.put(b);
                            }
                            upload = Some(w);
                        }
                    }
                }
            }
            Ok(())
        }
        .await;

        if let Err(e) = streamed {
            if let Some(w) = upload {
                let _ = w.abort().await;
            }
            return Err(e);
        }
        match upload {
            Some(w) => {
                w.finish().await?;
            }
            None => {
                self.store.put(&tmp, PutPayload::from_iter(head)).await?;
            }
        }

        let actual = hex::encode(hasher.finalize());
        let checks = [
            ("sha256", expected.sha256.as_ref(), Some(actual.clone())),
            (
                "sha512",
                expected.sha512.as_ref(),
                sha512.map(|h| hex::encode(h.finalize())),
            ),
            (
                "sha1",
                expected.sha1.as_ref(),
                sha1.map(|h| hex::encode(h.finalize())),
            ),
        ];
        for (algorithm, want, got) in checks {
            if let (Some(want), Some(got)) = (want, got) {
                if !want.eq_ignore_ascii_case(&got) {
                    let _ = self.store.delete(&tmp).await;
                    return Err(StorageError::HashMismatch {
                        algorithm,
                        expected: want.to_ascii_lowercase(),
                        actual: got,
                    });
                }
            }
        }
        let key = Self::key(&actual)?;
        let committed = match self.store.head(&key).await {
            Ok(_) => Ok(()), // same bytes already stored
            Err(object_store::Error::NotFound { .. }) => self.store.copy(&tmp, &key).await,
            Err(e) => Err(e),
        };
        let _ = self.store.delete(&tmp).await;
        committed?;
        Ok(StoredObject {
            sha256: actual,
            size,
        })
    }

    /// The object's size, or `NotFound`.
    pub async fn head(&self, sha256: &str) -> Result<u64, StorageError> {
        let r = match self.store.head(&Self::key(sha256)?).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(StorageError::NotFound),
            Err(e) => Err(e.into()),
        };
        self.record("head", &r);
        r
    }

    /// Streams the object (or the byte range `range`, end exclusive). Returns the total
    /// size of the object, the range served and the bytes.
    pub async fn get(
        &self,
        sha256: &str,
        range: Option<Range<u64>>,
    ) -> Result<
        (
            u64,
            Range<u64>,
            BoxStream<'static, Result<Bytes, StorageError>>,
        ),
        StorageError,
    > {
        let key = Self::key(sha256)?;
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let r = match self.store.get_opts(&key, options).await {
            Ok(res) => {
                let total = res.meta.size;
                let served = res.range.clone();
                let body = match res.payload {
                    // object_store reads local files 8 KiB per blocking task; read large chunks instead.
                    object_store::GetResultPayload::File(file, _) => {
                        file_stream(file, served.clone())
                    }
                    object_store::GetResultPayload::Stream(s) => {
                        s.map_err(StorageError::from).boxed()
                    }
                };
                Ok((total, served, body))
            }
            Err(object_store::Error::NotFound { .. }) => Err(StorageError::NotFound),
            Err(object_store::Error::NotModified { .. }) => Err(StorageError::BadRange),
            Err(e) if e.to_string().contains("range") => Err(StorageError::BadRange),
            Err(e) => Err(e.into()),
        };
        self.record("get", &r);
        r
    }

    /// Copies an object into a temporary file (archive readers need a seekable file).
    pub async fn to_temp_file(
        &self,
        sha256: &str,
    ) -> Result<tempfile::NamedTempFile, StorageError> {
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| StorageError::Source(format!("temporary file: {e}"));
        let tmp = tempfile::NamedTempFile::new().map_err(io)?;
        let mut file = tokio::fs::File::create(tmp.path()).await.map_err(io)?;
        let (_, _, mut body) = self.get(sha256, None).await?;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(tmp)
    }

    pub async fn delete(&self, sha256: &str) -> Result<(), StorageError> {
        let r = self
            .store
            .delete(&Self::key(sha256)?)
            .await
            .map_err(StorageError::from);
        self.record("delete", &r);
        r
    }

    /// Writes a small named object outside the content-addressed space, replacing it
    /// atomically (one PUT; a local write goes through a temporary file and a rename).
    /// `name` is made of `[a-z0-9/_-]` segments built by Orchard, never by a client.
    pub async fn put_named(&self, name: &str, parts: Vec<Bytes>) -> Result<(), StorageError> {
        let path = Self::named(name)?;
        let r = self
            .store
            .put(&path, PutPayload::from_iter(parts))
            .await
            .map(|_| ())
            .map_err(StorageError::from);
        self.record("put_named", &r);
        r
    }

    /// A named object's bytes, `None` when there is none.
    pub async fn get_named(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        let path = Self::named(name)?;
        let r = match self.store.get(&path).await {
            Ok(res) => res.bytes().await.map(Some).map_err(StorageError::from),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        };
        self.record("get_named", &r);
        r
    }

    fn named(name: &str) -> Result<Path, StorageError> {
        let ok = !name.is_empty()
            && name.split('/').all(|seg| {
                !seg.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    })
            });
        if !ok {
            return Err(StorageError::Config(format!("bad object name {name:?}")));
        }
        Ok(Path::from(name))
    }

    /// Deletes objects under the temporary prefix older than `older_than` (left by fills
    /// killed between the upload and the copy to the final key). Returns how many.
    pub async fn clean_temporary(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let stale: Vec<Path> = self
            .store
            .list(Some(&Path::from("tmp")))
            .try_filter(|meta| std::future::ready(meta.last_modified < cutoff))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        let mut removed = 0;
        for path in stale {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    /// Objects under the temporary prefix (uploads in flight or abandoned).
    pub async fn temporary_objects(&self) -> Result<usize, StorageError> {
        Ok(self
            .store
            .list(Some(&Path::from("tmp")))
            .try_collect::<Vec<_>>()
            .await?
            .len())
    }

    /// Whether a fill may start: the store's last call worked, or a quick round trip
    /// (`ping`, at most 2 s) says it is back. A miss while the store is down is then a
    /// clean 503 instead of a 200 whose body breaks off when the bytes cannot be stored.
    pub async fn available(&self) -> bool {
        if self
            .failing_since
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return true;
        }
        let ok = matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), self.ping()).await,
            Ok(Ok(()))
        );
        if ok {
            self.failing_since
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        ok
    }

    /// A real round trip: listing an (empty) prefix fails when the store is unreachable
    /// or the bucket does not exist.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.store
            .list_with_delimiter(Some(&Path::from("health")))
            .await?;
        Ok(())
    }
}

/// Pieces a local object is handed to the HTTP layer in.
const READ_CHUNK: u64 = 256 * 1024;

/// Bytes of a local file mapped at once (handed out in `READ_CHUNK` slices).
const MAP_WINDOW: u64 = 1024 * 1024;

/// Bytes `range` of a local file, memory-mapped a `MAP_WINDOW` at a time (page tables
/// filled from the page cache in the same call) and handed out in `READ_CHUNK` slices; a
/// window is unmapped once its slices have been written, so a transfer holds about one
/// window — no read call, zeroed buffer or blocking task per piece. Stored objects are
/// content-addressed and written once (temporary file, then rename), never modified in
/// place, so a mapping cannot change under a reader. A window that cannot be mapped is
/// read on the blocking pool instead.
fn file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, StorageError>> {
    let file = Arc::new(file);
    let windows = futures::stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(MAP_WINDOW);
            // SAFETY: see above — the file is never truncated or rewritten while stored.
            let mapped = unsafe {
                memmap2::MmapOptions::new()
                    .offset(pos)
                    .len(want as usize)
                    .populate()
                    .map(&*file)
            };
            let window = match mapped {
                Ok(map) => Bytes::from_owner(map),
                Err(_) => read_piece(file, pos, want as usize).await?,
            };
            Ok::<_, StorageError>(Some((window, pos + want)))
        }
    });
    windows
        .map_ok(|w| {
            let len = w.len();
            futures::stream::iter(
                (0..len)
                    .step_by(READ_CHUNK as usize)
                    .map(move |off| Ok(w.slice(off..(off + READ_CHUNK as usize).min(len)))),
            )
        })
        .try_flatten()
        .boxed()
}

async fn read_piece(
    file: Arc<std::fs::File>,
    pos: u64,
    want: usize,
) -> Result<Bytes, StorageError> {
    let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; want];
        file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    })
    .await
    .map_err(|e| StorageError::Source(e.to_string()))?
    .map_err(|e| StorageError::Source(format!("reading the stored artifact: {e}")))?;
    Ok(Bytes::from(buf))
}

/// Bytes `range` of a local file, read in `READ_CHUNK` pieces on the blocking pool.
#[cfg(test)]
fn read_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, StorageError>> {
    let file = Arc::new(file);
    futures::stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(READ_CHUNK);
            Ok(Some((
                read_piece(file, pos, want as usize).await?,
                pos + want,
            )))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mapped_and_read_streams_give_the_same_bytes() {
        let data: Vec<u8> = (0..(2 * MAP_WINDOW as usize + 3 * READ_CHUNK as usize + 4097))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        let n = data.len() as u64;
        for range in [
            0..n,
            1..n,
            4095..4097,
            1000..(READ_CHUNK + 3),
            (MAP_WINDOW - 10)..(MAP_WINDOW + 10),
            (n - 1)..n,
            5..5,
        ] {
            let collect = |s: BoxStream<'static, Result<Bytes, StorageError>>| async move {
                s.try_collect::<Vec<Bytes>>().await.unwrap().concat()
            };
            let mapped = collect(file_stream(
                std::fs::File::open(f.path()).unwrap(),
                range.clone(),
            ))
            .await;
            let read = collect(read_stream(
                std::fs::File::open(f.path()).unwrap(),
                range.clone(),
            ))
            .await;
            assert_eq!(
                mapped,
                &data[range.start as usize..range.end as usize],
                "{range:?}"
            );
            assert_eq!(read, mapped, "{range:?}");
        }
    }

    #[test]
    fn keys_are_validated_digests() {
        let d = "ab".repeat(32);
        assert_eq!(
            ArtifactStore::key(&d).unwrap().as_ref(),
            format!("sha256/ab/{d}")
        );
        for bad in [
            "",
            "../../etc/passwd",
            &"AB".repeat(32),
            &"ab".repeat(31),
            &format!("{}/x", "a".repeat(62)),
        ] {
            assert!(
                matches!(ArtifactStore::key(bad), Err(StorageError::BadDigest(_))),
                "{bad}"
            );
        }
    }
}
