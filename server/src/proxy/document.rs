//! Mutable documents (index pages, version lists, `maven-metadata.xml`): cached with a
//! TTL, revalidated with `If-None-Match`/`If-Modified-Since`, served stale when the
//! upstream fails, 404s remembered for a short time, concurrent misses coalesced.
//!
//! A document is stored as the protocol's parsed form (not the upstream bytes), so
//! rendering it for a client never parses upstream input again. The cache keeps a
//! found document for `ttl + ORCHARD_CACHE_STALE_MAX`: fresh for `ttl`, usable as a
//! stale fallback after.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FetchError;
use crate::cache::Category;
use crate::routes::CacheStatus;
use crate::sources::{Protocol, Source};
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    /// `false`: the upstream answered 404/410 (a negative entry).
    pub found: bool,
    /// The parsed document (protocol-defined JSON).
    pub body: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub fetched_at_ms: i64,
    /// SHA-256 of `body`, short: identifies this version of the document.
    pub digest: String,
}

impl Document {
    fn age(&self) -> Duration {
        Duration::from_millis((now_ms() - self.fetched_at_ms).max(0) as u64)
    }
}

pub type DocumentResult = Result<(Arc<Document>, CacheStatus), FetchError>;

/// Turns the upstream body (with its content type) into the stored form.
pub type Parser = Arc<dyn Fn(&[u8], &str) -> Result<String, String> + Send + Sync>;

pub struct DocumentRequest {
    pub protocol: Protocol,
    pub source: Arc<Source>,
    /// Cache identifier within the source, e.g. `project/requests`.
    pub identifier: String,
    pub url: String,
    pub accept: &'static str,
    pub ttl: Duration,
    pub category: Category,
    pub parse: Parser,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The document, from the cache when fresh, else from the upstream (coalesced).
pub async fn get(state: &AppState, req: &DocumentRequest) -> DocumentResult {
    let key = state.cache.source_key(req.category, req.protocol.as_str(), req.source.name(), &req.identifier).await;
    let cached: Option<Document> = state.cache.get_json(&key).await;
    if let Some(doc) = &cached {
        let ttl = if doc.found { req.ttl } else { state.config.cache.ttl_negative };
        if doc.age() < ttl {
            return Ok((Arc::new(doc.clone()), CacheStatus::Hit));
        }
    }
    let previous = cached.map(Arc::new);
    let (result, waited) = super::singleflight::run(&state.proxy.documents, &key, || fetch(state, req, &key, previous.clone())).await;
    if waited {
        crate::metrics::metrics().singleflight_waiters.inc();
    }
    result
}

async fn store(state: &AppState, key: &str, doc: &Document, ttl: Duration) {
    if let Ok(bytes) = serde_json::to_vec(doc) {
        state.cache.set_with_ttl(key, bytes.into(), Some(ttl)).await;
    }
}

fn stale_or(state: &AppState, req: &DocumentRequest, previous: Option<Arc<Document>>, err: FetchError) -> DocumentResult {
    match previous {
        Some(doc) if doc.found && doc.age() < req.ttl + state.config.cache.stale_max => {
            tracing::warn!(upstream.source = req.source.name(), document = %req.identifier, error = %err, "upstream failed; serving the stale copy");
            Ok((doc, CacheStatus::Stale))
        }
        _ => Err(err),
    }
}

async fn fetch(state: &AppState, req: &DocumentRequest, key: &str, previous: Option<Arc<Document>>) -> DocumentResult {
    let mut headers: Vec<(&str, String)> = vec![("accept", req.accept.to_string())];
    if let Some(p) = previous.as_ref().filter(|p| p.found) {
        if let Some(e) = &p.etag {
            headers.push(("if-none-match", e.clone()));
        }
        if let Some(lm) = &p.last_modified {
            headers.push(("if-modified-since", lm.clone()));
        }
    }
    let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut resp = match state.http.get(Some(req.source.name()), &req.url, &header_refs).await {
        Ok(r) => r,
        Err(e) => return stale_or(state, req, previous, e.into()),
    };
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let found_ttl = req.ttl + state.config.cache.stale_max;
    match status {
        304 => match previous.filter(|p| p.found) {
            Some(p) => {
                let mut doc = (*p).clone();
                doc.fetched_at_ms = now_ms();
                store(state, key, &doc, found_ttl).await;
                Ok((Arc::new(doc), CacheStatus::Hit))
            }
            None => Err(FetchError::Upstream("upstream answered 304 to an unconditional request".into())),
        },
        200 => {
            let etag = header("etag");
            let last_modified = header("last-modified");
            let content_type = header("content-type").unwrap_or_default();
            let read = tokio::time::timeout(
                state.config.http.read_timeout(),
                resp.body().limit(state.config.max_index_bytes),
            )
            .await;
            let body = match read {
                Err(_) => return stale_or(state, req, previous, FetchError::Timeout),
                Ok(Err(actix_web::error::PayloadError::Overflow)) => {
                    return stale_or(state, req, previous, FetchError::Upstream(format!(
                        "upstream document is larger than ORCHARD_MAX_INDEX_BYTES ({})",
                        state.config.max_index_bytes
                    )))
                }
                Ok(Err(e)) => return stale_or(state, req, previous, FetchError::Upstream(format!("reading the upstream document failed: {e}"))),
                Ok(Ok(b)) => b,
            };
            let parse = req.parse.clone();
            let parsed = state.blocking.run(move || parse(&body, &content_type)).await;
            let body = match parsed {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return stale_or(state, req, previous, FetchError::Upstream(e)),
                Err(e) => return stale_or(state, req, previous, FetchError::Upstream(e.to_string())),
            };
            let digest = hex::encode(&Sha256::digest(body.as_bytes())[..8]);
            let doc = Document { found: true, body, etag, last_modified, fetched_at_ms: now_ms(), digest };
            store(state, key, &doc, found_ttl).await;
            Ok((Arc::new(doc), CacheStatus::Miss))
        }
        404 | 410 => {
            let doc = Document {
                found: false,
                body: String::new(),
                etag: None,
                last_modified: None,
                fetched_at_ms: now_ms(),
                digest: String::new(),
            };
            store(state, key, &doc, state.config.cache.ttl_negative).await;
            Ok((Arc::new(doc), CacheStatus::Miss))
        }
        other => stale_or(state, req, previous, FetchError::Upstream(format!("upstream answered {other}"))),
    }
}
