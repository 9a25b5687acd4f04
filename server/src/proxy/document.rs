//! Mutable documents (index pages, packuments, `maven-metadata.xml`): cached with a
//! TTL, revalidated with `If-None-Match`/`If-Modified-Since`, served stale when the
//! upstream fails, 404s remembered for a short time, concurrent misses coalesced.
//!
//! A document is stored as the protocol's parsed form (not the upstream bytes), so
//! serving it never parses upstream input again. It is kept as two cache entries: a
//! small head (found?, validators, fetch time, digest of the body) under the
//! generation-scoped key, and the body under `{key}#{digest}`. A hit reads the head
//! only; protocols render from the body (and cache what they render by digest), so a
//! large document is read only when something new has to be rendered. A found
//! document is kept for `ttl + ORCHARD_CACHE_STALE_MAX`: fresh for `ttl`, a stale
//! fallback after.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FetchError;
use crate::cache::Category;
use crate::proxy::CacheStatus;
use crate::proxy::Flow;
use crate::sources::{Protocol, Source};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocHead {
    /// `false`: the upstream answered 404/410 (a negative entry).
    pub found: bool,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub fetched_at_ms: i64,
    /// Short SHA-256 of the body: identifies this version of the document.
    pub digest: String,
    /// When the body was last persisted as the last good copy (`persisted`).
    #[serde(default)]
    pub persisted_at_ms: i64,
}

impl DocHead {
    fn age(&self) -> Duration {
        Duration::from_millis((now_ms() - self.fetched_at_ms).max(0) as u64)
    }

    /// Whether its persisted last good copy is older than `persisted::REFRESH_AFTER`.
    fn copy_due(&self, now: i64) -> bool {
        Duration::from_millis((now - self.persisted_at_ms).max(0) as u64)
            >= super::persisted::REFRESH_AFTER
    }
}

/// A document head, with its body when this request fetched it.
#[derive(Debug)]
pub struct Loaded {
    pub head: DocHead,
    fetched_body: Option<Text>,
    key: String,
}

impl Loaded {
    pub fn found(&self) -> bool {
        self.head.found
    }
    pub fn digest(&self) -> &str {
        &self.head.digest
    }
}

pub type DocumentResult = Result<(Arc<Loaded>, CacheStatus), FetchError>;

/// Turns the upstream body (with its content type) into the stored form.
pub type Parser = Arc<dyn Fn(&[u8], &str) -> Result<String, String> + Send + Sync>;

#[derive(Clone)]
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
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn body_key(key: &str, digest: &str) -> String {
    format!("{key}#{digest}")
}

/// A document found in one of several sources.
pub struct Found {
    pub source: Arc<Source>,
    pub request: DocumentRequest,
    pub doc: Arc<Loaded>,
    pub status: CacheStatus,
}

/// The merged view's rule: the first of `sources` (in priority order) that `serves`
/// the name and whose document (`request`) exists — a higher-priority source that has
/// it hides every lower one. A source that fails (5xx, timeout) ends the search with
/// its error rather than falling through to a lower one.
pub async fn first_found(
    state: &Flow,
    sources: impl IntoIterator<Item = Arc<Source>>,
    serves: impl Fn(&Source) -> bool,
    request: impl Fn(&Arc<Source>) -> DocumentRequest,
) -> Result<Option<Found>, FetchError> {
    for source in sources {
        if !serves(&source) {
            continue;
        }
        let request = request(&source);
        let (doc, status) = get(state, &request).await?;
        if doc.found() {
            return Ok(Some(Found {
                source,
                request,
                doc,
                status,
            }));
        }
    }
    Ok(None)
}

/// The document's head, from the cache when fresh, else from the upstream (coalesced).
pub async fn get(state: &Flow, req: &DocumentRequest) -> DocumentResult {
    let key = state
        .cache
        .source_key(
            req.category,
            req.protocol.as_str(),
            req.source.name(),
            &req.identifier,
        )
        .await;
    let cached: Option<DocHead> = state.cache.get_json(&key).await;
    if let Some(head) = &cached {
        let ttl = if head.found {
            req.ttl
        } else {
            state.config.cache.ttl_negative
        };
        if head.age() < ttl {
            // Stale-while-revalidate, ahead of expiry: a page still being asked for in the
            // last quarter of its TTL is refreshed in the background, so a busy page
            // never makes a client wait for the upstream.
            if head.found
                && head.age() >= ttl * 3 / 4
                && state.proxy.documents.in_flight_key(&key).is_none()
            {
                refresh_in_background(state, req, &key, head);
            }
            return Ok((
                Arc::new(Loaded {
                    head: head.clone(),
                    fetched_body: None,
                    key,
                }),
                CacheStatus::Hit,
            ));
        }
    }
    coalesced_fetch(state, req, key, cached).await
}

fn refresh_in_background(state: &Flow, req: &DocumentRequest, key: &str, head: &DocHead) {
    let (state, req, key, previous) = (state.clone(), req.clone(), key.to_string(), head.clone());
    crate::metrics::metrics().background_refreshes.inc();
    actix_web::rt::spawn(async move {
        if let Err(e) = coalesced_fetch(&state, &req, key, Some(previous)).await {
            tracing::debug!(document = %req.identifier, error = %e, "background refresh failed; the cached copy stays");
        }
    });
}

async fn coalesced_fetch(
    state: &Flow,
    req: &DocumentRequest,
    key: String,
    previous: Option<DocHead>,
) -> DocumentResult {
    let previous = previous.map(Arc::new);
    let (result, waited) = super::singleflight::run(&state.proxy.documents, &key, || {
        fetch(state, req, &key, previous.clone())
    })
    .await;
    if waited {
        crate::metrics::metrics().singleflight_waiters.inc();
    }
    result
}

/// The body of a found document: the one just fetched, else from the cache; when the
/// cache lost it, the document is fetched again.
pub async fn body(
    state: &Flow,
    req: &DocumentRequest,
    loaded: &Loaded,
) -> Result<Text, FetchError> {
    if let Some(b) = &loaded.fetched_body {
        return Ok(b.clone());
    }
    if let Some(text) = state
        .cache
        .get(&body_key(&loaded.key, &loaded.head.digest))
        .await
        .and_then(Text::from_utf8)
    {
        return Ok(text);
    }
    let (fresh, _) = coalesced_fetch(state, req, loaded.key.clone(), None).await?;
    if !fresh.head.found {
        return Err(FetchError::NotFound);
    }
    match &fresh.fetched_body {
        Some(b) => Ok(b.clone()),
        None => state
            .cache
            .get(&body_key(&fresh.key, &fresh.head.digest))
            .await
            .and_then(Text::from_utf8)
            .ok_or_else(|| FetchError::Internal("document body unavailable".into())),
    }
}

/// A parsed document body: UTF-8 text in shared bytes, so the cache and every request
/// hold one copy of it (a packument can be tens of MB).
#[derive(Clone)]
pub struct Text(bytes::Bytes);

impl Text {
    pub fn from_string(s: String) -> Text {
        Text(bytes::Bytes::from(s))
    }

    /// Checked once here; `Deref` relies on it.
    pub fn from_utf8(b: bytes::Bytes) -> Option<Text> {
        std::str::from_utf8(&b).ok()?;
        Some(Text(b))
    }

    pub fn bytes(&self) -> bytes::Bytes {
        self.0.clone()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Text({} bytes)", self.0.len())
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        // SAFETY: every constructor checks (or starts from) valid UTF-8, and the bytes
        // are immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// How much memory reading and parsing a document takes, as a multiple of its size
/// (the body, the parsed and rewritten form, and slack; measured 2.5× for a 13.5 MB
/// packument — e2e/hostile/test_big_documents.py).
pub const DOCUMENT_WORK_FACTOR: u64 = 3;

/// Bounds the memory of upstream documents read and parsed at once
/// (`ORCHARD_DOCUMENT_WORK_BYTES`), counted in KiB: each takes
/// `DOCUMENT_WORK_FACTOR` × its size (at most the whole budget) and later ones wait.
pub struct WorkBudget {
    permits: Arc<tokio::sync::Semaphore>,
    total: u32,
}

impl WorkBudget {
    pub fn new(bytes: u64) -> Self {
        let total = (bytes >> 10).clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u64) as u32;
        WorkBudget {
            permits: Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
        }
    }

    /// Waits until a document of `size` bytes fits in the budget.
    pub async fn reserve(&self, size: u64) -> tokio::sync::OwnedSemaphorePermit {
        let want =
            (size.saturating_mul(DOCUMENT_WORK_FACTOR) >> 10).clamp(1, self.total as u64) as u32;
        match self.permits.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(_) => {
                crate::metrics::metrics().document_work_waits.inc();
                self.permits
                    .clone()
                    .acquire_many_owned(want)
                    .await
                    .expect("the budget semaphore is never closed")
            }
        }
    }
}

async fn store_head(state: &Flow, key: &str, head: &DocHead, ttl: Duration) {
    if let Ok(bytes) = serde_json::to_vec(head) {
        state.cache.set_with_ttl(key, bytes.into(), Some(ttl)).await;
    }
}

async fn stale_or(
    state: &Flow,
    req: &DocumentRequest,
    key: &str,
    previous: Option<Arc<DocHead>>,
    err: FetchError,
) -> DocumentResult {
    let keep_for = req.ttl + state.config.cache.stale_max;
    // The last good answer, found or not (a merged view goes on past a source whose last
    // answer was "not found"), up to ORCHARD_CACHE_STALE_MAX.
    if let Some(head) = previous.filter(|h| h.age() < keep_for) {
        tracing::warn!(upstream.source = req.source.name(), document = %req.identifier, error = %err, found = head.found, "upstream failed; serving the stale answer");
        return Ok((
            Arc::new(Loaded {
                head: (*head).clone(),
                fetched_body: None,
                key: key.to_string(),
            }),
            CacheStatus::Stale,
        ));
    }
    // Nothing usable in the cache (a restart, a flushed or failed-over cache): the last
    // good copy persisted in the artifact store, within the same bound.
    match super::persisted::load(state, req).await {
        Some((head, body)) if head.age() < keep_for => {
            tracing::warn!(upstream.source = req.source.name(), document = %req.identifier, error = %err, found = head.found, age_secs = head.age().as_secs(), "upstream failed; serving the persisted last good answer");
            // back into the cache, so the next request revalidates it with its validators
            if head.found {
                state
                    .cache
                    .set_with_ttl(&body_key(key, &head.digest), body.bytes(), Some(keep_for))
                    .await;
            }
            store_head(state, key, &head, keep_for).await;
            Ok((
                Arc::new(Loaded {
                    fetched_body: head.found.then_some(body),
                    head,
                    key: key.to_string(),
                }),
                CacheStatus::Stale,
            ))
        }
        _ => Err(err),
    }
}

async fn fetch(
    state: &Flow,
    req: &DocumentRequest,
    key: &str,
    previous: Option<Arc<DocHead>>,
) -> DocumentResult {
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
    let mut resp = match state
        .http
        .get(Some(req.source.name()), &req.url, &header_refs)
        .await
    {
        Ok(r) => r,
        Err(e) => return stale_or(state, req, key, previous, e.into()).await,
    };
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let found_ttl = req.ttl + state.config.cache.stale_max;
    match status {
        304 => match previous.filter(|p| p.found) {
            Some(p) => {
                let mut head = (*p).clone();
                head.fetched_at_ms = now_ms();
                if head.copy_due(now_ms()) {
                    // keep the persisted copy's age close to the last contact upstream
                    if let Some(body) = state
                        .cache
                        .get(&body_key(key, &head.digest))
                        .await
                        .and_then(Text::from_utf8)
                    {
                        head.persisted_at_ms = now_ms();
                        super::persisted::save(state, req, &head, body);
                    }
                }
                if state
                    .cache
                    .expire(&body_key(key, &head.digest), found_ttl)
                    .await
                {
                    store_head(state, key, &head, found_ttl).await;
                    Ok((
                        Arc::new(Loaded {
                            head,
                            fetched_body: None,
                            key: key.to_string(),
                        }),
                        CacheStatus::Hit,
                    ))
                } else {
                    // The body is gone from the cache: ask again without validators.
                    Box::pin(fetch(state, req, key, None)).await
                }
            }
            None => Err(FetchError::Upstream(
                "upstream answered 304 to an unconditional request".into(),
            )),
        },
        200 => {
            let etag = header("etag");
            let last_modified = header("last-modified");
            let content_type = header("content-type").unwrap_or_default();
            // The budget is taken for the declared size before reading (an undeclared
            // size is read first, bounded by ORCHARD_MAX_INDEX_BYTES, then counted).
            let declared = resp
                .headers()
                .get(actix_web::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n <= state.config.max_index_bytes as u64);
            let mut reserved = match declared {
                Some(n) => Some(state.proxy.document_work.reserve(n).await),
                None => None,
            };
            let read = tokio::time::timeout(
                state.config.http.read_timeout(),
                crate::http_client::read_body(&mut resp, state.config.max_index_bytes),
            )
            .await;
            let raw = match read {
                Err(_) => return stale_or(state, req, key, previous, FetchError::Timeout).await,
                Ok(Err(crate::http_client::BodyError::Overflow)) => {
                    let e = FetchError::Upstream(format!(
                        "upstream document is larger than ORCHARD_MAX_INDEX_BYTES ({})",
                        state.config.max_index_bytes
                    ));
                    return stale_or(state, req, key, previous, e).await;
                }
                Ok(Err(crate::http_client::BodyError::Payload(e))) => {
                    let e =
                        FetchError::Upstream(format!("reading the upstream document failed: {e}"));
                    return stale_or(state, req, key, previous, e).await;
                }
                Ok(Ok(b)) => b,
            };
            if reserved.is_none() {
                reserved = Some(state.proxy.document_work.reserve(raw.len() as u64).await);
            }
            let parse = req.parse.clone();
            let parsed = match state.blocking.run(move || parse(&raw, &content_type)).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    return stale_or(state, req, key, previous, FetchError::Upstream(e)).await
                }
                Err(e) => {
                    return stale_or(
                        state,
                        req,
                        key,
                        previous,
                        FetchError::Upstream(e.to_string()),
                    )
                    .await
                }
            };
            let digest = hex::encode(&Sha256::digest(parsed.as_bytes())[..8]);
            let head = DocHead {
                found: true,
                etag,
                last_modified,
                fetched_at_ms: now_ms(),
                digest,
                persisted_at_ms: now_ms(),
            };
            let body = Text::from_string(parsed);
            super::persisted::save(state, req, &head, body.clone());
            // the cache shares the same bytes (an in-process cache keeps them without a copy)
            state
                .cache
                .set_with_ttl(&body_key(key, &head.digest), body.bytes(), Some(found_ttl))
                .await;
            store_head(state, key, &head, found_ttl).await;
            drop(reserved);
            Ok((
                Arc::new(Loaded {
                    head,
                    fetched_body: Some(body),
                    key: key.to_string(),
                }),
                CacheStatus::Miss,
            ))
        }
        404 | 410 => {
            // persisted too (an empty body), at most every REFRESH_AFTER while it holds
            let now = now_ms();
            let kept = previous
                .as_ref()
                .filter(|p| !p.found && !p.copy_due(now))
                .map(|p| p.persisted_at_ms);
            let head = DocHead {
                found: false,
                etag: None,
                last_modified: None,
                fetched_at_ms: now,
                digest: String::new(),
                persisted_at_ms: kept.unwrap_or(now),
            };
            if kept.is_none() {
                super::persisted::save(state, req, &head, Text::from_string(String::new()));
            }
            // kept as long as a found answer, for stale-if-error; fresh for ORCHARD_CACHE_TTL_NEGATIVE (`get`)
            store_head(state, key, &head, found_ttl).await;
            Ok((
                Arc::new(Loaded {
                    head,
                    fetched_body: None,
                    key: key.to_string(),
                }),
                CacheStatus::Miss,
            ))
        }
        other => {
            stale_or(
                state,
                req,
                key,
                previous,
                FetchError::Upstream(format!("upstream answered {other}")),
            )
            .await
        }
    }
}
