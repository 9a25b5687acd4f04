//! Multipart uploads that the storage cleaner can find again.
//!
//! An S3 multipart upload that is never completed or aborted (a replica killed mid-fill)
//! keeps its parts in the bucket, and object listings do not show it. So before its first
//! part an upload writes a small journal object, `uploads/{uuid}`, naming its key and
//! upload id, and deletes it once the upload is completed or aborted. The cleaner aborts
//! the uploads whose journal is older than its bound (`Uploads::clean`). An upload whose
//! fill is dropped (the client went away, the fill failed) is aborted at once.
//!
//! Parts are `part_size` bytes each (the last one shorter), at most `concurrency` in
//! flight, so a fill holds a few parts in memory whatever the artifact's size.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

const JOURNAL_PREFIX: &str = "uploads";

/// The bucket's multipart API next to the (possibly prefixed) object store.
#[derive(Clone)]
pub(super) struct Uploads {
    multipart: Arc<dyn MultipartStore>,
    /// Keys of the object store, written with this prefix in the bucket (multipart calls
    /// go to the bucket itself, so they add it).
    prefix: String,
}

#[derive(Serialize, Deserialize)]
struct Journal {
    key: String,
    upload_id: String,
}

impl Uploads {
    pub(super) fn new(multipart: Arc<dyn MultipartStore>, prefix: &str) -> Self {
        Uploads {
            multipart,
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    fn bucket_key(&self, key: &Path) -> Path {
        if self.prefix.is_empty() {
            key.clone()
        } else {
            Path::from(format!("{}/{}", self.prefix, key))
        }
    }

    /// Starts an upload of `key`: the upload is created, then its journal written.
    pub(super) async fn start(
        &self,
        objects: Arc<dyn ObjectStore>,
        key: &Path,
        part_size: usize,
        concurrency: usize,
    ) -> object_store::Result<Upload> {
        let key = self.bucket_key(key);
        let id = self.multipart.create_multipart(&key).await?;
        let journal = Path::from(format!("{JOURNAL_PREFIX}/{}", uuid::Uuid::new_v4()));
        let record = serde_json::to_vec(&Journal {
            key: key.to_string(),
            upload_id: id.clone(),
        })
        .expect("a journal serialises");
        if let Err(e) = objects.put(&journal, PutPayload::from(record)).await {
            let _ = self.multipart.abort_multipart(&key, &id).await;
            return Err(e);
        }
        Ok(Upload {
            uploads: self.clone(),
            objects,
            key,
            id,
            journal,
            part_size,
            concurrency,
            pending: Vec::new(),
            pending_len: 0,
            in_flight: FuturesOrdered::new(),
            parts: Vec::new(),
            closed: false,
        })
    }

    /// The (bucket key, upload id) of every upload with a journal: in flight or abandoned.
    pub(super) async fn journaled(
        &self,
        objects: &Arc<dyn ObjectStore>,
    ) -> object_store::Result<Vec<(String, String)>> {
        let journals: Vec<Path> = objects
            .list(Some(&Path::from(JOURNAL_PREFIX)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for journal in journals {
            if let Ok(r) = objects.get(&journal).await {
                if let Ok(j) = serde_json::from_slice::<Journal>(&r.bytes().await?) {
                    out.push((j.key, j.upload_id));
                }
            }
        }
        Ok(out)
    }

    /// Aborts the uploads whose journal is older than `cutoff` and deletes their
    /// journals. Returns how many uploads were aborted (an upload that had completed or
    /// was aborted already only loses its journal).
    pub(super) async fn clean(
        &self,
        objects: &Arc<dyn ObjectStore>,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> object_store::Result<usize> {
        let old: Vec<Path> = objects
            .list(Some(&Path::from(JOURNAL_PREFIX)))
            .try_filter(|meta| std::future::ready(meta.last_modified < cutoff))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        let mut aborted = 0;
        for journal in old {
            let bytes = match objects.get(&journal).await {
                Ok(r) => r.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if let Ok(j) = serde_json::from_slice::<Journal>(&bytes) {
                match self
                    .multipart
                    .abort_multipart(&Path::from(j.key), &j.upload_id)
                    .await
                {
                    Ok(()) => aborted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            match objects.delete(&journal).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(aborted)
    }
}

/// One multipart upload in progress; dropped unfinished, it is aborted.
pub(super) struct Upload {
    uploads: Uploads,
    objects: Arc<dyn ObjectStore>,
    key: Path,
    id: MultipartId,
    journal: Path,
    part_size: usize,
    concurrency: usize,
    pending: Vec<Bytes>,
    pending_len: usize,
    in_flight: FuturesOrdered<BoxFuture<'static, object_store::Result<PartId>>>,
    parts: Vec<PartId>,
    closed: bool,
}

impl Upload {
    /// Adds bytes; a full part is sent once fewer than `concurrency` parts are in flight.
    pub(super) async fn put(&mut self, mut chunk: Bytes) -> object_store::Result<()> {
        while !chunk.is_empty() {
            let room = self.part_size - self.pending_len;
            let piece = chunk.split_to(room.min(chunk.len()));
            self.pending_len += piece.len();
            self.pending.push(piece);
            if self.pending_len == self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> object_store::Result<()> {
        while self.in_flight.len() >= self.concurrency {
            if let Some(part) = self.in_flight.next().await {
                self.parts.push(part?);
            }
        }
        let payload = PutPayload::from_iter(std::mem::take(&mut self.pending));
        self.pending_len = 0;
        let index = self.parts.len() + self.in_flight.len();
        let multipart = self.uploads.multipart.clone();
        let (key, id) = (self.key.clone(), self.id.clone());
        self.in_flight.push_back(Box::pin(async move {
            multipart.put_part(&key, &id, index, payload).await
        }));
        Ok(())
    }

    /// Sends what is left, completes the upload and deletes its journal.
    pub(super) async fn finish(mut self) -> object_store::Result<()> {
        if self.pending_len > 0 || self.parts.len() + self.in_flight.len() == 0 {
            self.send_part().await?;
        }
        while let Some(part) = self.in_flight.next().await {
            self.parts.push(part?);
        }
        let parts = std::mem::take(&mut self.parts);
        self.uploads
            .multipart
            .complete_multipart(&self.key, &self.id, parts)
            .await?;
        self.closed = true;
        let _ = self.objects.delete(&self.journal).await;
        Ok(())
    }

    /// Aborts the upload and deletes its journal.
    pub(super) async fn abort(mut self) {
        self.closed = true;
        self.in_flight = FuturesOrdered::new();
        let _ = self
            .uploads
            .multipart
            .abort_multipart(&self.key, &self.id)
            .await;
        let _ = self.objects.delete(&self.journal).await;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the journal stays; the cleaner aborts the upload later
        };
        let multipart = self.uploads.multipart.clone();
        let objects = self.objects.clone();
        let (key, id, journal) = (self.key.clone(), self.id.clone(), self.journal.clone());
        runtime.spawn(async move {
            if multipart.abort_multipart(&key, &id).await.is_ok() {
                let _ = objects.delete(&journal).await;
            }
        });
    }
}
