//! Immutable artifacts: lookup → single-flight fill → verify → commit → serve.
//!
//! A hit is one joined query and a stream from storage. On a miss the first request
//! (the leader) starts the fill: the upstream body is read once, each chunk goes to
//! storage (hashed as it is written) and to the leader's client. The last chunk is held
//! back until the hash is verified: on a mismatch the client's response is aborted
//! (it never receives a complete body), storage keeps nothing and
//! `orchard_hash_mismatch_total` counts it. Other requests for the same artifact on
//! this replica wait for the commit and are served from storage. The fill runs in its
//! own task at the upstream's speed, so it completes even when the leader's client
//! goes away, and never waits for it: a client more than `CLIENT_BUFFER_CHUNKS` behind
//! is detached and continues from storage after the commit.

use std::future::Future;
use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::{header, Method};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{response, singleflight, FetchError};
use crate::cache::Category;
use crate::db::{now_unix, Artifact, CachedUrl};
use crate::error::ApiError;
use crate::metrics::metrics;
use crate::proxy::CacheStatus;
use crate::proxy::Flow;
use crate::sources::{Protocol, Source};
use crate::storage::{Expected, StorageError};

/// Where the bytes come from, resolved only on a miss.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: String,
    /// The digests the index declared; the bytes must match them to be stored.
    pub expected: Expected,
}

/// What a committed fill produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub sha256: String,
    pub size: u64,
}

pub type FillResult = Result<Committed, FetchError>;

/// Called after a fill committed (e.g. to extract metadata from a wheel).
pub type CommitHook = Box<dyn FnOnce(Flow, Committed)>;

pub struct ArtifactSpec {
    pub protocol: Protocol,
    pub source: Arc<Source>,
    /// Orchard's path of the artifact within the source (validated segments).
    pub path: String,
    pub content_type: &'static str,
}

type ClientTx = mpsc::Sender<Result<Bytes, std::io::Error>>;
/// Tells the leader's response the upstream's length (or failure) once its head arrived.
type LengthTx = tokio::sync::oneshot::Sender<Result<Option<u64>, FetchError>>;

/// Serves the artifact: from storage on a hit, through a fill on a miss.
pub async fn serve<R, RF>(
    state: &Flow,
    req: &HttpRequest,
    spec: ArtifactSpec,
    resolve: R,
    on_commit: Option<CommitHook>,
) -> Result<HttpResponse, ApiError>
where
    R: FnOnce() -> RF,
    RF: Future<Output = Result<Upstream, ApiError>>,
{
    let source = spec.source.clone();
    serve_inner(state, req, spec, resolve, on_commit)
        .await
        .map(|res| response::served_by(res, source.name()))
}

async fn serve_inner<R, RF>(
    state: &Flow,
    req: &HttpRequest,
    spec: ArtifactSpec,
    resolve: R,
    on_commit: Option<CommitHook>,
) -> Result<HttpResponse, ApiError>
where
    R: FnOnce() -> RF,
    RF: Future<Output = Result<Upstream, ApiError>>,
{
    if let Some(hit) = lookup(state, &spec).await? {
        super::quarantine::check(state, &hit.sha256).await?;
        match from_storage(state, req, &hit, spec.content_type, CacheStatus::Hit).await {
            Err(e) if e.is_not_found() => {
                tracing::warn!(artifact.sha256 = %hit.sha256, "artifact row without stored bytes; fetching again");
                state.cache.delete(&lookup_key(state, &spec)).await;
            }
            other => return other,
        }
    }
    if known_missing(state, &spec).await {
        return Err(ApiError::NotFound("not found upstream (remembered)".into()));
    }
    let plain_get = req.method() == Method::GET
        && !req.headers().contains_key(header::RANGE)
        && !req.headers().contains_key(header::IF_NONE_MATCH);
    let spec = Arc::new(spec);
    if !plain_get {
        let committed = fill_once(state, &spec, resolve, on_commit).await?;
        return from_storage(state, req, &committed, spec.content_type, CacheStatus::Miss).await;
    }
    let mut on_commit = on_commit;
    let mut resolve = Some(resolve);
    loop {
        match state.proxy.artifacts.join(&flight_key(&spec)) {
            singleflight::Role::Leader(leader) => {
                // A fill that committed between our lookup and taking the lead: serve it
                // (resolving again would ask the upstream for the index or sidecar again).
                if let Some(hit) = committed_meanwhile(state, &spec).await? {
                    leader.finish(Ok(hit.clone()));
                    super::quarantine::check(state, &hit.sha256).await?;
                    return from_storage(state, req, &hit, spec.content_type, CacheStatus::Hit)
                        .await;
                }
                // Only the leader asks where the bytes are (an index page, a checksum
                // sidecar): concurrent requests make one upstream request per path.
                let Some(resolve) = resolve.take() else {
                    return Err(ApiError::Internal);
                };
                let upstream = match resolve().await {
                    Ok(u) => u,
                    Err(e) => return Err(finish_unresolved(leader, e)),
                };
                if let Err(e) = before_fetching(state, &upstream).await {
                    return Err(finish_unresolved(leader, e));
                }
                let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CLIENT_BUFFER_CHUNKS);
                let (len_tx, len_rx) =
                    tokio::sync::oneshot::channel::<Result<Option<u64>, FetchError>>();
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<FillResult>();
                let (state2, spec2, upstream2, hook) = (
                    state.clone(),
                    spec.clone(),
                    upstream.clone(),
                    on_commit.take(),
                );
                actix_web::rt::spawn(async move {
                    let result = fill(&state2, &spec2, &upstream2, Some((tx, len_tx))).await;
                    let _ = done_tx.send(result.clone());
                    leader.finish(result.clone());
                    if let (Ok(c), Some(hook)) = (result, hook) {
                        hook(state2, c);
                    }
                });
                // The head goes out once the upstream answered (with its length).
                let length = match len_rx.await {
                    Ok(Ok(len)) => len,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => return Err(ApiError::Internal),
                };
                let body = client_feed(rx, done_rx, state.storage.clone()).inspect(|c| {
                    if let Ok(b) = c {
                        metrics().artifact_bytes_served.inc_by(b.len() as u64);
                    }
                });
                let mut b = HttpResponse::Ok();
                b.insert_header((header::CONTENT_TYPE, spec.content_type));
                if let Some(sha) = &upstream.expected.sha256 {
                    b.insert_header((header::ETAG, response::etag_of(sha)));
                }
                let res = match length {
                    Some(len) => b.body(SizedStream::new(len, body)),
                    None => b.streaming(body),
                };
                return Ok(response::tag(res, CacheStatus::Miss));
            }
            singleflight::Role::Follower(rx) => {
                metrics().singleflight_waiters.inc();
                if let Some(result) = wait_for_fill(state, rx).await? {
                    let committed = result?;
                    super::quarantine::check(state, &committed.sha256).await?;
                    return from_storage(
                        state,
                        req,
                        &committed,
                        spec.content_type,
                        CacheStatus::Miss,
                    )
                    .await;
                }
                // The leader vanished: try to lead.
            }
        }
    }
}

/// A committed artifact answered from storage (HEAD, Range, ETag: `response::stored`).
async fn from_storage(
    state: &Flow,
    req: &HttpRequest,
    c: &Committed,
    content_type: &str,
    cache: CacheStatus,
) -> Result<HttpResponse, ApiError> {
    response::stored(&state.storage, req, &c.sha256, c.size, content_type, cache).await
}

/// Chunks buffered for the leader's client; a client further behind is detached from
/// the fill (which never waits for it) and continues from storage after the commit.
const CLIENT_BUFFER_CHUNKS: usize = 64;

enum Feed {
    Live {
        rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        done: tokio::sync::oneshot::Receiver<FillResult>,
        delivered: u64,
        storage: crate::storage::ArtifactStore,
    },
    Tail(futures::stream::BoxStream<'static, Result<Bytes, crate::storage::StorageError>>),
    Done,
}

/// The leader's response body: the fill's chunks while the client keeps up; when the
/// fill closes the feed early (the client fell behind, or another replica committed),
/// the rest comes from storage once the fill committed — verified bytes only.
fn client_feed(
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    done: tokio::sync::oneshot::Receiver<FillResult>,
    storage: crate::storage::ArtifactStore,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(
        Feed::Live {
            rx,
            done,
            delivered: 0,
            storage,
        },
        |feed| async move {
            match feed {
                Feed::Live {
                    mut rx,
                    done,
                    delivered,
                    storage,
                } => match rx.recv().await {
                    Some(Ok(b)) => {
                        let delivered = delivered + b.len() as u64;
                        Some((
                            Ok(b),
                            Feed::Live {
                                rx,
                                done,
                                delivered,
                                storage,
                            },
                        ))
                    }
                    Some(Err(e)) => Some((Err(e), Feed::Done)),
                    None => match done.await {
                        Ok(Ok(c)) if delivered >= c.size => None,
                        Ok(Ok(c)) => match storage.get(&c.sha256, Some(delivered..c.size)).await {
                            Ok((_, _, mut tail)) => {
                                let first = tail.next().await?;
                                Some((
                                    first.map_err(|e| io_error(&e.to_string())),
                                    Feed::Tail(tail),
                                ))
                            }
                            Err(e) => Some((Err(io_error(&e.to_string())), Feed::Done)),
                        },
                        Ok(Err(e)) => Some((Err(io_error(&e.to_string())), Feed::Done)),
                        Err(_) => {
                            Some((Err(io_error("the fill ended without a result")), Feed::Done))
                        }
                    },
                },
                Feed::Tail(mut tail) => {
                    let item = tail.next().await?;
                    Some((item.map_err(|e| io_error(&e.to_string())), Feed::Tail(tail)))
                }
                Feed::Done => None,
            }
        },
    )
}

/// Hands a chunk to the leader's client without waiting: a full buffer detaches it.
fn offer(client_tx: &mut Option<ClientTx>, item: Result<Bytes, std::io::Error>) {
    let Some(tx) = client_tx else { return };
    match tx.try_send(item) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics().fill_clients_detached.inc();
            *client_tx = None;
        }
        Err(mpsc::error::TrySendError::Closed(_)) => *client_tx = None, // the client left; the fill goes on
    }
}

/// A leader whose resolve step failed: its followers get the same answer (no second
/// upstream request for them), and the leader's own client gets the error.
fn finish_unresolved(leader: singleflight::Leader<FillResult>, e: ApiError) -> ApiError {
    // anything else: followers try themselves (dropping the leader releases them)
    let shared = FetchError::shareable(&e);
    if let Some(f) = shared {
        leader.finish(Err(f));
    }
    e
}

/// Serves the artifact only if it is already stored (no upstream call), labelled `cache`.
pub async fn serve_cached(
    state: &Flow,
    req: &HttpRequest,
    spec: &ArtifactSpec,
    cache: CacheStatus,
) -> Result<Option<HttpResponse>, ApiError> {
    let Some(hit) = lookup(state, spec).await? else {
        return Ok(None);
    };
    match from_storage(state, req, &hit, spec.content_type, cache).await {
        Err(e) if e.is_not_found() => Ok(None),
        other => other.map(Some),
    }
}

/// The committed artifact, from the cache or the database, or fetched now (coalesced
/// with concurrent fills) — for callers that need the bytes stored rather than a
/// response (e.g. checksum sidecars).
pub async fn ensure<R, RF>(
    state: &Flow,
    spec: ArtifactSpec,
    resolve: R,
    on_commit: Option<CommitHook>,
) -> Result<Committed, ApiError>
where
    R: FnOnce() -> RF,
    RF: Future<Output = Result<Upstream, ApiError>>,
{
    if let Some(hit) = lookup(state, &spec).await? {
        if state.storage.head(&hit.sha256).await.is_ok() {
            return Ok(hit);
        }
        state.cache.delete(&lookup_key(state, &spec)).await;
    }
    if known_missing(state, &spec).await {
        return Err(ApiError::NotFound("not found upstream (remembered)".into()));
    }
    fill_once(state, &Arc::new(spec), resolve, on_commit).await
}

/// Serves a file Orchard derives itself (a checksum of a stored artifact, say): from
/// storage once derived, else `produce`d, stored and committed now.
pub async fn serve_derived<P, PF>(
    state: &Flow,
    req: &HttpRequest,
    spec: ArtifactSpec,
    produce: P,
) -> Result<HttpResponse, ApiError>
where
    P: FnOnce() -> PF,
    PF: Future<Output = Result<Bytes, ApiError>>,
{
    if let Some(hit) = lookup(state, &spec).await? {
        super::quarantine::check(state, &hit.sha256).await?;
        match from_storage(state, req, &hit, spec.content_type, CacheStatus::Hit).await {
            Err(e) if e.is_not_found() => state.cache.delete(&lookup_key(state, &spec)).await,
            other => return other,
        };
    }
    let bytes = produce().await?;
    let stored = state
        .storage
        .put_stream(
            futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) }),
            &Expected::default(),
        )
        .await?;
    let derived = Upstream {
        url: "orchard:derived".into(),
        expected: Expected::default(),
    };
    let committed = commit(state, &spec, &derived, stored.sha256, stored.size).await?;
    from_storage(state, req, &committed, spec.content_type, CacheStatus::Miss).await
}

fn flight_key(spec: &ArtifactSpec) -> String {
    format!(
        "{}:{}:{}",
        spec.protocol.as_str(),
        spec.source.name(),
        spec.path
    )
}

/// One fill for concurrent callers, without a client stream; only the leader resolves.
async fn fill_once<R, RF>(
    state: &Flow,
    spec: &Arc<ArtifactSpec>,
    resolve: R,
    on_commit: Option<CommitHook>,
) -> Result<Committed, ApiError>
where
    R: FnOnce() -> RF,
    RF: Future<Output = Result<Upstream, ApiError>>,
{
    let mut on_commit = on_commit;
    let mut resolve = Some(resolve);
    loop {
        match state.proxy.artifacts.join(&flight_key(spec)) {
            singleflight::Role::Leader(leader) => {
                // committed between our lookup and taking the lead: nothing to fetch
                if let Some(hit) = committed_meanwhile(state, spec).await? {
                    leader.finish(Ok(hit.clone()));
                    return Ok(hit);
                }
                let Some(resolve) = resolve.take() else {
                    return Err(ApiError::Internal);
                };
                let upstream = match resolve().await {
                    Ok(u) => u,
                    Err(e) => return Err(finish_unresolved(leader, e)),
                };
                if let Err(e) = before_fetching(state, &upstream).await {
                    return Err(finish_unresolved(leader, e));
                }
                let result = fill(state, spec, &upstream, None).await;
                leader.finish(result.clone());
                let committed = result?;
                if let Some(hook) = on_commit.take() {
                    hook(state.clone(), committed.clone());
                }
                return Ok(committed);
            }
            singleflight::Role::Follower(rx) => {
                metrics().singleflight_waiters.inc();
                if let Some(result) = wait_for_fill(state, rx).await? {
                    return Ok(result?);
                }
            }
        }
    }
}

/// The artifact, if a fill committed it (with its bytes in storage) since this
/// request's first lookup.
async fn committed_meanwhile(
    state: &Flow,
    spec: &ArtifactSpec,
) -> Result<Option<Committed>, ApiError> {
    match lookup(state, spec).await? {
        Some(hit) if state.storage.head(&hit.sha256).await.is_ok() => Ok(Some(hit)),
        _ => Ok(None),
    }
}

/// What is checked once the upstream file is known, before any byte is fetched: a
/// declared SHA-256 that is quarantined (451), and a store known to be down (a clean
/// 503 now, not a 200 that breaks off when the bytes cannot be stored).
async fn before_fetching(state: &Flow, upstream: &Upstream) -> Result<(), ApiError> {
    if let Some(sha) = &upstream.expected.sha256 {
        super::quarantine::check(state, sha).await?;
    }
    if !state.storage.available().await {
        return Err(ApiError::Unavailable(
            "the artifact store is unavailable; try again".into(),
        ));
    }
    Ok(())
}

/// A follower's wait for this replica's fill of the same file, bounded by
/// `ORCHARD_FILL_WAIT_TIMEOUT` (the fill goes on for its own client).
async fn wait_for_fill(
    state: &Flow,
    rx: tokio::sync::watch::Receiver<Option<FillResult>>,
) -> Result<Option<FillResult>, FetchError> {
    let limit = state.config.cache.fill_wait;
    tokio::time::timeout(limit, singleflight::wait(rx))
        .await
        .map_err(|_| {
            metrics().fill_waits_timed_out.inc();
            FetchError::FillWait(limit.as_secs())
        })
}

/// Key remembering that the upstream answered 404 for this path (ORCHARD_CACHE_TTL_NEGATIVE).
fn missing_key(state: &Flow, spec: &ArtifactSpec) -> String {
    state.cache.key(
        Category::ArtifactMetadata,
        spec.protocol.as_str(),
        &format!("missing/{}/{}", spec.source.name(), spec.path),
    )
}

async fn known_missing(state: &Flow, spec: &ArtifactSpec) -> bool {
    state.cache.get(&missing_key(state, spec)).await.is_some()
}

/// Cache key of the path → artifact mapping (ARTIFACT_METADATA: immutable, no TTL).
fn lookup_key(state: &Flow, spec: &ArtifactSpec) -> String {
    state.cache.key(
        Category::ArtifactMetadata,
        spec.protocol.as_str(),
        &format!("{}/{}", spec.source.name(), spec.path),
    )
}

/// The committed artifact for the spec's path: a cache hit, else one joined query
/// (whose answer is then cached).
async fn lookup(state: &Flow, spec: &ArtifactSpec) -> Result<Option<Committed>, ApiError> {
    let key = lookup_key(state, spec);
    if let Some(hit) = state.cache.get_json::<CommittedRecord>(&key).await {
        return Ok(Some(Committed {
            sha256: hit.sha256,
            size: hit.size,
        }));
    }
    let repo = state.db().ok_or(ApiError::DatabaseUnavailable)?;
    let found = repo
        .get_cached_url_with_artifact(spec.protocol.as_str(), spec.source.name(), &spec.path)
        .await?;
    Ok(match found {
        Some((_, art)) => {
            let record = CommittedRecord {
                sha256: art.sha256,
                size: art.size as u64,
            };
            state
                .cache
                .set_json(&key, &record, Category::ArtifactMetadata)
                .await;
            Some(Committed {
                sha256: record.sha256,
                size: record.size,
            })
        }
        None => None,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CommittedRecord {
    sha256: String,
    size: u64,
}

fn io_error(msg: &str) -> std::io::Error {
    std::io::Error::other(msg.to_string())
}

/// Fetches, stores, verifies and commits one artifact. With `client`, the bytes are also
/// streamed to the leader's response (the last chunk only after verification), and the
/// upstream's length (or failure) is reported as soon as the head arrives.
async fn fill(
    state: &Flow,
    spec: &ArtifactSpec,
    upstream: &Upstream,
    client: Option<(ClientTx, LengthTx)>,
) -> FillResult {
    let (mut client_tx, len_tx) = match client {
        Some((tx, len)) => (Some(tx), Some(len)),
        None => (None, None),
    };
    let fail_early =
        |len_tx: Option<tokio::sync::oneshot::Sender<Result<Option<u64>, FetchError>>>,
         e: FetchError| {
            if let Some(l) = len_tx {
                let _ = l.send(Err(e.clone()));
            }
            Err(e)
        };
    // Across replicas: one fill per artifact. The lock is held (and renewed) until the
    // commit; `lock` is released when this function returns, and a fill whose lock is
    // lost stops.
    let lock = match replica_lock(state, spec).await {
        LockOutcome::Held(lock) => {
            // Another replica may have committed between our lookup and the lock.
            match lookup(state, spec).await {
                Ok(Some(c)) => {
                    metrics()
                        .fill_locks
                        .with_label_values(&["committed_meanwhile"])
                        .inc();
                    if let Some(l) = len_tx {
                        let _ = l.send(Ok(Some(c.size)));
                    }
                    drop(client_tx);
                    return Ok(c);
                }
                Ok(None) => Some(lock),
                Err(e) => return fail_early(len_tx, e.into()),
            }
        }
        LockOutcome::Unavailable => None,
        LockOutcome::Failed(e) => return fail_early(len_tx, e),
        LockOutcome::CommittedElsewhere(c) => {
            if let Some(l) = len_tx {
                let _ = l.send(Ok(Some(c.size)));
            }
            // the client's feed closes here and continues from storage
            drop(client_tx);
            return Ok(c);
        }
    };
    let mut resp = match state
        .http
        .get(
            Some(spec.source.name()),
            &upstream.url,
            &[("accept", "*/*")],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return fail_early(len_tx, e.into()),
    };
    match resp.status().as_u16() {
        200 => {}
        404 | 410 => {
            // Remembered briefly, so probing builds do not hammer the upstream; 5xx and
            // timeouts are never remembered.
            let ttl = state.config.cache.ttl_negative;
            state
                .cache
                .set_with_ttl(
                    &missing_key(state, spec),
                    Bytes::from_static(b"1"),
                    Some(ttl),
                )
                .await;
            return fail_early(len_tx, FetchError::NotFound);
        }
        s => {
            return fail_early(
                len_tx,
                FetchError::Upstream(format!("upstream answered {s}")),
            )
        }
    }
    let length = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(l) = len_tx {
        let _ = l.send(Ok(length));
    }

    let (store_tx, store_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let storage = state.storage.clone();
    let expected = upstream.expected.clone();
    let store_task = tokio::spawn(async move {
        let body = futures::stream::unfold(store_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        storage.put_stream(body, &expected).await
    });

    let read_timeout = state.config.http.read_timeout();
    let mut held: Option<Bytes> = None;
    let mut failure: Option<FetchError> = None;
    loop {
        match tokio::time::timeout(read_timeout, resp.next()).await {
            Err(_) => {
                failure = Some(FetchError::Timeout);
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                failure = Some(FetchError::Upstream(format!(
                    "the upstream body broke off: {e}"
                )));
                break;
            }
            Ok(Some(Ok(chunk))) => {
                if lock.as_ref().is_some_and(|l| l.lost()) {
                    failure = Some(FetchError::Unavailable(
                        "this replica lost its lock on the fill to another replica; try again"
                            .into(),
                    ));
                    break;
                }
                if store_tx.send(Ok(chunk.clone())).await.is_err() {
                    break; // storage gave up; its error is collected below
                }
                if client_tx.is_some() {
                    if let Some(prev) = held.replace(chunk) {
                        offer(&mut client_tx, Ok(prev));
                    }
                }
            }
        }
    }
    if let Some(f) = &failure {
        let _ = store_tx.send(Err(io_error(&f.to_string()))).await;
    }
    drop(store_tx);
    let stored = store_task
        .await
        .map_err(|e| FetchError::Internal(e.to_string()))?;
    let result = match (failure, stored) {
        (Some(f), _) => Err(f),
        (
            None,
            Err(StorageError::HashMismatch {
                algorithm,
                expected,
                actual,
            }),
        ) => {
            tracing::warn!(upstream.source = spec.source.name(), artifact.path = %spec.path, algorithm, expected, actual, "hash mismatch; nothing stored");
            Err(FetchError::HashMismatch)
        }
        (None, Err(StorageError::Source(m))) => Err(FetchError::Upstream(m)),
        (None, Err(e)) => {
            tracing::warn!(upstream.source = spec.source.name(), artifact.path = %spec.path, error = %e, "storing the artifact failed; nothing stored");
            Err(FetchError::Unavailable(
                "the artifact store is unavailable; nothing was stored, try again".into(),
            ))
        }
        (None, Ok(obj)) => commit(state, spec, upstream, obj.sha256, obj.size).await,
    };
    if client_tx.is_some() {
        let last = match (&result, held) {
            (Ok(_), Some(b)) => Some(Ok(b)),
            (Ok(_), None) => None,
            (Err(e), _) => Some(Err(io_error(&e.to_string()))),
        };
        if let Some(item) = last {
            offer(&mut client_tx, item);
        }
    }
    result
}

enum LockOutcome {
    Held(Box<FillLock>),
    /// The cache cannot hold locks right now: fill without one (per-replica
    /// single-flight still applies).
    Unavailable,
    CommittedElsewhere(Committed),
    Failed(FetchError),
}

/// A replica's lock on one artifact fill, renewed every third of its TTL until dropped.
/// A renewal the cache does not answer is retried until the lock would expire; a lock
/// found expired or taken by another replica is lost, and the fill stops.
struct FillLock {
    cache: crate::cache::CacheService,
    key: String,
    token: String,
    lost: Arc<std::sync::atomic::AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FillLock {
    fn new(state: &Flow, key: String, token: String) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cache, k, t, ttl, flag) = (
            state.cache.clone(),
            key.clone(),
            token.clone(),
            state.config.cache.fill_lock_ttl,
            lost.clone(),
        );
        tokio::spawn(async move {
            let mut renewed = std::time::Instant::now();
            let mut every = ttl / 3;
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(every) => {
                        match cache.extend_lock(&k, &t, ttl).await {
                            Some(true) => {
                                renewed = std::time::Instant::now();
                                every = ttl / 3;
                            }
                            Some(false) => {
                                metrics().fill_locks.with_label_values(&["lost"]).inc();
                                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                                return;
                            }
                            None if renewed.elapsed() < ttl => {
                                // the cache did not answer: try again soon, while it can still count
                                metrics().fill_locks.with_label_values(&["renew_retried"]).inc();
                                every = (ttl / 10).max(std::time::Duration::from_millis(100));
                            }
                            None => {
                                metrics().fill_locks.with_label_values(&["lost"]).inc();
                                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                }
            }
        });
        FillLock {
            cache: state.cache.clone(),
            key,
            token,
            lost,
            stop: Some(stop),
        }
    }

    fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FillLock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (cache, key, token) = (
            self.cache.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        tokio::spawn(async move { cache.unlock(&key, &token).await });
    }
}

/// Takes the cross-replica fill lock, or waits for the replica holding it to commit
/// (then the committed object is served) or to give up (then this replica takes over).
async fn replica_lock(state: &Flow, spec: &ArtifactSpec) -> LockOutcome {
    let key = state.cache.key(
        Category::ArtifactMetadata,
        spec.protocol.as_str(),
        &format!("fill-lock/{}/{}", spec.source.name(), spec.path),
    );
    let token = uuid::Uuid::new_v4().to_string();
    let ttl = state.config.cache.fill_lock_ttl;
    // A holder that keeps renewing is alive; wait for it up to ORCHARD_FILL_WAIT_TIMEOUT.
    let deadline = std::time::Instant::now() + state.config.cache.fill_wait;
    let mut waited = false;
    loop {
        match state.cache.try_lock(&key, &token, ttl).await {
            None => {
                metrics()
                    .fill_locks
                    .with_label_values(&["unavailable"])
                    .inc();
                return LockOutcome::Unavailable;
            }
            Some(true) => {
                metrics()
                    .fill_locks
                    .with_label_values(&[if waited { "took_over" } else { "acquired" }])
                    .inc();
                return LockOutcome::Held(Box::new(FillLock::new(state, key, token)));
            }
            Some(false) => {}
        }
        if !waited {
            waited = true;
            metrics().fill_locks.with_label_values(&["waited"]).inc();
            metrics().singleflight_waiters.inc();
        }
        let mut delay = std::time::Duration::from_millis(50);
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_millis(500));
            match lookup(state, spec).await {
                Ok(Some(c)) => return LockOutcome::CommittedElsewhere(c),
                Ok(None) => {}
                Err(e) => return LockOutcome::Failed(e.into()),
            }
            if known_missing(state, spec).await {
                return LockOutcome::Failed(FetchError::NotFound);
            }
            if state.cache.get(&key).await.is_none() {
                break; // released without a commit, or expired: try to take it
            }
            if std::time::Instant::now() > deadline {
                metrics().fill_waits_timed_out.inc();
                return LockOutcome::Failed(FetchError::FillWait(
                    state.config.cache.fill_wait.as_secs(),
                ));
            }
        }
    }
}

async fn commit(
    state: &Flow,
    spec: &ArtifactSpec,
    upstream: &Upstream,
    sha256: String,
    size: u64,
) -> FillResult {
    // quarantined bytes are never mapped to a path again (the leader's client, already
    // streaming, is cut short; everyone else gets 451)
    if let Err(ApiError::Quarantined(m)) = super::quarantine::check(state, &sha256).await {
        tracing::warn!(upstream.source = spec.source.name(), artifact.path = %spec.path, artifact.sha256 = %sha256, "the upstream served quarantined bytes; not stored under this path");
        return Err(FetchError::Quarantined(m));
    }
    write_mapping(state, spec, upstream, &sha256, size).await?;
    Ok(Committed { sha256, size })
}

/// How long a commit waits for the database when it is unavailable (a restart takes a
/// few seconds): the bytes are stored and verified, only their mapping is missing, and
/// the leader's client is waiting for its last chunk.
const COMMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes the artifact row and the path → artifact mapping, trying again (250 ms,
/// doubling) while the database is unavailable, for at most `COMMIT_PATIENCE`.
async fn write_mapping(
    state: &Flow,
    spec: &ArtifactSpec,
    upstream: &Upstream,
    sha256: &str,
    size: u64,
) -> Result<(), FetchError> {
    let deadline = std::time::Instant::now() + COMMIT_PATIENCE;
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        match write_mapping_once(state, spec, upstream, sha256, size).await {
            Err(FetchError::Database) if std::time::Instant::now() + delay < deadline => {
                metrics().commit_retries.inc();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

async fn write_mapping_once(
    state: &Flow,
    spec: &ArtifactSpec,
    upstream: &Upstream,
    sha256: &str,
    size: u64,
) -> Result<(), FetchError> {
    let repo = state.db().ok_or(FetchError::Database)?;
    let sha256 = sha256.to_string();
    let art = Artifact {
        sha256: sha256.clone(),
        size: size as i64,
        content_type: spec.content_type.to_string(),
        created_at: now_unix(),
    };
    repo.get_or_create_artifact(&art).await?;
    let url = CachedUrl {
        protocol: spec.protocol.as_str().to_string(),
        source: spec.source.name().to_string(),
        path: spec.path.clone(),
        artifact_sha256: sha256.clone(),
        upstream_url: crate::file_url::redact(&upstream.url), // no userinfo or query tokens at rest
        created_at: now_unix(),
    };
    repo.upsert_cached_url(&url).await?;
    Ok(())
}
