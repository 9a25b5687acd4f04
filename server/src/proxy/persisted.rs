//! The last good copy of every upstream document (index page, packument,
//! `maven-metadata.xml`), persisted in the artifact store next to the artifacts, so that
//! stale-if-error survives a restart, a flushed or failed-over cache and an in-process
//! cache lost with its process — on every backend combination.
//!
//! One object per document: `documents/{protocol}/{sha256 of source and identifier}`,
//! holding a JSON line (`Envelope`: which source and URL it came from, its head) and then
//! the parsed body — empty for a "not found" answer, which is kept too: when a source is
//! down, its last answer "I do not have this project" lets a merged view go on to the
//! next source instead of failing. Written in the background after each fetch that brought a new body,
//! and again after a revalidation once the copy is older than `REFRESH_AFTER` (so its
//! age, which `ORCHARD_CACHE_STALE_MAX` bounds, stays close to the last successful
//! contact with the upstream). Read only when the upstream fails and the cache has no
//! copy; a copy from another upstream URL of the same source name is never used.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::document::{DocHead, DocumentRequest, Text};
use crate::metrics::metrics;
use crate::proxy::Flow;

/// A persisted copy is rewritten after a revalidation once it is this old.
pub const REFRESH_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    source: String,
    source_url: String,
    identifier: String,
    head: DocHead,
}

fn name(req: &DocumentRequest) -> String {
    let mut h = Sha256::new();
    h.update(req.source.name().as_bytes());
    h.update([0]);
    h.update(req.identifier.as_bytes());
    format!(
        "documents/{}/{}",
        req.protocol.as_str(),
        hex::encode(h.finalize())
    )
}

/// Persists `body` as the document's last good copy, in the background.
pub fn save(state: &Flow, req: &DocumentRequest, head: &DocHead, body: Text) {
    let envelope = Envelope {
        source: req.source.name().to_string(),
        source_url: req.source.spec.url.clone(),
        identifier: req.identifier.clone(),
        head: head.clone(),
    };
    let (storage, object) = (state.storage.clone(), name(req));
    tokio::spawn(async move {
        let mut line = match serde_json::to_vec(&envelope) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let outcome = match storage
            .put_named(&object, vec![bytes::Bytes::from(line), body.bytes()])
            .await
        {
            Ok(()) => "saved",
            Err(e) => {
                tracing::debug!(document = %envelope.identifier, error = %e, "the document's last good copy was not persisted");
                "save_failed"
            }
        };
        metrics()
            .document_copies
            .with_label_values(&[outcome])
            .inc();
    });
}

/// The document's persisted last good copy, if there is one from the source's current
/// URL.
pub async fn load(state: &Flow, req: &DocumentRequest) -> Option<(DocHead, Text)> {
    let bytes = match state.storage.get_named(&name(req)).await {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(document = %req.identifier, error = %e, "the document's last good copy is unreadable");
            return None;
        }
    };
    let newline = memchr::memchr(b'\n', &bytes)?;
    let envelope: Envelope = serde_json::from_slice(&bytes[..newline]).ok()?;
    if envelope.source != req.source.name()
        || envelope.identifier != req.identifier
        || envelope.source_url != req.source.spec.url
    {
        return None;
    }
    let body = Text::from_utf8(bytes.slice(newline + 1..))?;
    metrics()
        .document_copies
        .with_label_values(&["restored"])
        .inc();
    Some((envelope.head, body))
}
