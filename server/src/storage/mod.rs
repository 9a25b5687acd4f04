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

mod local_read;
mod multipart;

use local_read::file_stream;

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

/// What the cleaner removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub temporary: usize,
    pub uploads: usize,
}

/// Where the bytes of a large object go once it outgrew one PUT.
enum Sink {
    /// S3: an upload with a journal (`multipart`).
    Tracked(multipart::Upload),
    /// A local directory: object_store's staged file.
    Plain(WriteMultipart),
}

impl Sink {
    async fn put(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        match self {
            Sink::Tracked(u) => u.put(chunk).await?,
            Sink::Plain(w) => {
                w.wait_for_capacity(MULTIPART_CONCURRENCY).await?;
                w.put(chunk);
            }
        }
        Ok(())
    }

    async fn finish(self) -> Result<(), StorageError> {
        match self {
            Sink::Tracked(u) => u.finish().await?,
            Sink::Plain(w) => {
                w.finish().await?;
            }
        }
        Ok(())
    }

    async fn abort(self) {
        match self {
            Sink::Tracked(u) => u.abort().await,
            Sink::Plain(w) => {
                let _ = w.abort().await;
            }
        }
    }
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
    /// S3's multipart API, for uploads the cleaner can find again (`multipart`); a local
    /// directory has none and writes large objects through `put_multipart`.
    uploads: Option<multipart::Uploads>,
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
                let uploads = multipart::Uploads::new(Arc::new(store.clone()), &s3.prefix);
                let store: Arc<dyn ObjectStore> = if s3.prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(PrefixStore::new(store, s3.prefix.as_str()))
                };
                Ok(ArtifactStore {
                    uploads: Some(uploads),
                    ..Self::new(store, "s3")
                })
            }
        }
    }

    pub fn new(store: Arc<dyn ObjectStore>, kind: &'static str) -> Self {
        ArtifactStore {
            store,
            kind,
            uploads: None,
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

    async fn start_upload(&self, tmp: &Path) -> Result<Sink, StorageError> {
        Ok(match &self.uploads {
            Some(uploads) => Sink::Tracked(
                uploads
                    .start(
                        self.store.clone(),
                        tmp,
                        SMALL_OBJECT_LIMIT,
                        MULTIPART_CONCURRENCY,
                    )
                    .await?,
            ),
            None => Sink::Plain(WriteMultipart::new_with_chunk_size(
                self.store.put_multipart(tmp).await?,
                SMALL_OBJECT_LIMIT,
            )),
        })
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
        let mut upload: Option<Sink> = None;
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
                    Some(w) => w.put(chunk).await?,
                    None => {
                        head_len += chunk.len();
                        head.push(chunk);
                        if head_len >= SMALL_OBJECT_LIMIT {
                            let mut w = self.start_upload(&tmp).await?;
                            for b in head.drain(..) {
                                w.put(b).await?;
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
                w.abort().await;
            }
            return Err(e);
        }
        match upload {
            Some(w) => w.finish().await?,
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

    /// Removes what killed fills left behind, older than `older_than`: objects under the
    /// temporary prefix (a fill killed between the upload and the copy to the final key)
    /// and, on S3, multipart uploads never completed (aborted through their journal,
    /// `multipart`).
    pub async fn clean(&self, older_than: std::time::Duration) -> Result<Cleaned, StorageError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let uploads = match &self.uploads {
            Some(u) => u.clean(&self.store, cutoff).await?,
            None => 0,
        };
        Ok(Cleaned {
            temporary: self.clean_temporary(cutoff).await?,
            uploads,
        })
    }

    async fn clean_temporary(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, StorageError> {
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

    /// S3 multipart uploads in flight or abandoned, as (bucket key, upload id); none on a
    /// local directory.
    pub async fn incomplete_uploads(&self) -> Result<Vec<(String, String)>, StorageError> {
        match &self.uploads {
            Some(u) => Ok(u.journaled(&self.store).await?),
            None => Ok(Vec::new()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
