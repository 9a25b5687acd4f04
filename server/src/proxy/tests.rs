//! The shared flow on its own, against a test upstream on loopback that counts every
//! request: documents (fresh hits, revalidation with 304, stale-if-error, remembered
//! 404s, coalesced misses) and artifacts (one fill for concurrent misses, hits from
//! storage, nothing stored on a hash mismatch). The state is the embedded default:
//! SQLite, a local directory and the in-process cache in a temporary directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use sha2::{Digest, Sha256};

use super::artifact::{self, ArtifactSpec, Upstream};
use super::document::{self, DocumentRequest, Parser};
use super::{CacheStatus, FetchError};
use crate::cache::{CacheService, Category};
use crate::config::{Config, Env};
use crate::error::ApiError;
use crate::http_client::HttpClientManager;
use crate::proxy::Flow;
use crate::sources::{Protocol, SourceSettings, SourceSpec};
use crate::storage::{ArtifactStore, Expected};
use crate::worker_pool::BlockingPool;

/// What the test upstream answers for one path.
#[derive(Clone)]
enum Answer {
    /// 200 with this body and ETag (304 when the client already has it), after `delay`.
    Body {
        body: Vec<u8>,
        etag: String,
        delay: Duration,
    },
    Status(u16),
}

#[derive(Clone, Default)]
struct TestUpstream {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl TestUpstream {
    fn answer(&self, path: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_string(), answer);
    }

    fn body(&self, path: &str, body: &[u8], delay: Duration) {
        let etag = format!("\"{}\"", hex::encode(&Sha256::digest(body)[..6]));
        self.answer(
            path,
            Answer::Body {
                body: body.to_vec(),
                etag,
                delay,
            },
        );
    }

    fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    async fn serve(self, req: HttpRequest) -> HttpResponse {
        let path = req.path().to_string();
        *self.counts.lock().unwrap().entry(path.clone()).or_default() += 1;
        let answer = self.answers.lock().unwrap().get(&path).cloned();
        match answer {
            None => HttpResponse::NotFound().finish(),
            Some(Answer::Status(s)) => {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(s).unwrap()).finish()
            }
            Some(Answer::Body { body, etag, delay }) => {
                let known = req
                    .headers()
                    .get("if-none-match")
                    .and_then(|v| v.to_str().ok())
                    == Some(etag.as_str());
                if known {
                    *self
                        .counts
                        .lock()
                        .unwrap()
                        .entry(format!("304 {path}"))
                        .or_default() += 1;
                    return HttpResponse::NotModified()
                        .insert_header(("etag", etag))
                        .finish();
                }
                actix_web::rt::time::sleep(delay).await;
                HttpResponse::Ok()
                    .insert_header(("etag", etag))
                    .content_type("application/octet-stream")
                    .body(body)
            }
        }
    }

    /// Starts the server; returns its base URL.
    async fn start(&self) -> (String, actix_web::dev::ServerHandle) {
        let me = self.clone();
        let server = HttpServer::new(move || {
            let me = me.clone();
            App::new().default_service(web::to(move |req: HttpRequest| me.clone().serve(req)))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        (format!("http://{addr}"), handle)
    }
}

/// An embedded-default state with one PyPI source `up` at `base`.
async fn state(base: &str, dir: &tempfile::TempDir) -> Flow {
    let vars: HashMap<&str, String> = HashMap::from([
        ("ORCHARD_DATA_DIR", dir.path().display().to_string()),
        ("ORCHARD_CACHE_TTL_NEGATIVE", "60".to_string()),
        ("ORCHARD_CACHE_STALE_MAX", "3600".to_string()),
    ]);
    let config = Config::from_env(&Env::from_fn(move |k| vars.get(k).cloned())).unwrap();
    let config = Arc::new(config);
    let http = Arc::new(HttpClientManager::new(&config.http, 1));
    let state = Flow::new(
        config.clone(),
        CacheService::from_config(&config.cache).unwrap(),
        ArtifactStore::from_config(&config.storage).unwrap(),
        http,
        BlockingPool::new(2),
    );
    crate::db::run_migrations(&config.database.url)
        .await
        .unwrap();
    state.set_db(crate::db::connect(&config.database).await.unwrap());
    let spec = SourceSpec {
        name: "up".into(),
        settings: SourceSettings::new(Protocol::Pypi, format!("{base}/")),
        credentials: None,
    };
    assert!(state
        .sources
        .install(&[spec], &[], &state.http, None)
        .is_empty());
    state
}

fn doc_request(state: &Flow, path: &str, ttl: Duration) -> DocumentRequest {
    let source = state.sources.get(Protocol::Pypi, "up").unwrap();
    let parse: Parser =
        Arc::new(|body, _| String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".to_string()));
    DocumentRequest {
        protocol: Protocol::Pypi,
        url: source.url(path),
        source,
        identifier: format!("test/{path}"),
        accept: "*/*",
        ttl,
        category: Category::PackageIndex,
        parse,
    }
}

async fn get_text(
    state: &Flow,
    req: &DocumentRequest,
) -> Result<(String, CacheStatus), FetchError> {
    let (doc, status) = document::get(state, req).await?;
    if !doc.found() {
        return Err(FetchError::NotFound);
    }
    Ok((document::body(state, req, &doc).await?.to_string(), status))
}

#[actix_web::test]
async fn documents_are_cached_revalidated_and_served_stale() {
    let up = TestUpstream::default();
    let (base, server) = up.start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = state(&base, &dir).await;
    up.body("/page", b"version 1", Duration::ZERO);

    // a miss, then a fresh hit without the upstream
    let fresh = doc_request(&state, "page", Duration::from_secs(60));
    assert_eq!(
        get_text(&state, &fresh).await.unwrap(),
        ("version 1".into(), CacheStatus::Miss)
    );
    assert_eq!(
        get_text(&state, &fresh).await.unwrap(),
        ("version 1".into(), CacheStatus::Hit)
    );
    assert_eq!(up.count("/page"), 1);

    // expired (TTL 0): revalidated with If-None-Match; the upstream's 304 keeps the copy
    let expired = doc_request(&state, "page", Duration::ZERO);
    assert_eq!(get_text(&state, &expired).await.unwrap().0, "version 1");
    assert_eq!((up.count("/page"), up.count("304 /page")), (2, 1));

    // a new version upstream replaces it on the next revalidation
    up.body("/page", b"version 2", Duration::ZERO);
    assert_eq!(get_text(&state, &expired).await.unwrap().0, "version 2");

    // the upstream fails: the last good copy is served, labelled stale
    up.answer("/page", Answer::Status(503));
    assert_eq!(
        get_text(&state, &expired).await.unwrap(),
        ("version 2".into(), CacheStatus::Stale)
    );
    server.stop(false).await;
}

#[actix_web::test]
async fn a_404_is_remembered_and_a_failure_without_a_copy_is_an_error() {
    let up = TestUpstream::default();
    let (base, server) = up.start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = state(&base, &dir).await;

    let missing = doc_request(&state, "missing", Duration::from_secs(60));
    for _ in 0..3 {
        let (doc, _) = document::get(&state, &missing).await.unwrap();
        assert!(!doc.found());
    }
    assert_eq!(
        up.count("/missing"),
        1,
        "the 404 is remembered (negative cache)"
    );

    up.answer("/broken", Answer::Status(500));
    let broken = doc_request(&state, "broken", Duration::from_secs(60));
    let err = document::get(&state, &broken).await.unwrap_err();
    assert!(matches!(err, FetchError::Upstream(_)), "{err:?}");
    assert!(
        !ApiError::from(err).is_not_found(),
        "a failure is never a 404"
    );
    server.stop(false).await;
}

#[actix_web::test]
async fn concurrent_document_misses_make_one_upstream_request() {
    let up = TestUpstream::default();
    let (base, server) = up.start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = state(&base, &dir).await;
    up.body("/busy", b"shared", Duration::from_millis(300));
    let req = doc_request(&state, "busy", Duration::from_secs(60));
    let all = futures::future::join_all((0..20).map(|_| get_text(&state, &req))).await;
    assert!(all.iter().all(|r| r.as_ref().unwrap().0 == "shared"));
    assert_eq!(up.count("/busy"), 1);
    server.stop(false).await;
}

fn file_spec(state: &Flow, path: &str) -> ArtifactSpec {
    ArtifactSpec {
        protocol: Protocol::Pypi,
        source: state.sources.get(Protocol::Pypi, "up").unwrap(),
        path: path.to_string(),
        content_type: "application/octet-stream",
    }
}

async fn ensure_file(
    state: &Flow,
    base: &str,
    path: &str,
    expected: Expected,
) -> Result<artifact::Committed, ApiError> {
    let url = format!("{base}/{path}");
    artifact::ensure(
        state,
        file_spec(state, path),
        move || async move { Ok(Upstream { url, expected }) },
        None,
    )
    .await
}

#[actix_web::test]
async fn concurrent_artifact_misses_make_one_fill_then_hits_come_from_storage() {
    let up = TestUpstream::default();
    let (base, server) = up.start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = state(&base, &dir).await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&bytes));
    up.body("/files/a-1.0.tar.gz", &bytes, Duration::from_millis(300));

    let all = futures::future::join_all(
        (0..20).map(|_| ensure_file(&state, &base, "files/a-1.0.tar.gz", Expected::sha256(&sha))),
    )
    .await;
    for r in &all {
        let c = r.as_ref().unwrap();
        assert_eq!(
            (c.sha256.as_str(), c.size),
            (sha.as_str(), bytes.len() as u64)
        );
    }
    assert_eq!(up.count("/files/a-1.0.tar.gz"), 1, "one fill for 20 misses");

    // a hit: from storage, the upstream is not asked again
    ensure_file(&state, &base, "files/a-1.0.tar.gz", Expected::default())
        .await
        .unwrap();
    assert_eq!(up.count("/files/a-1.0.tar.gz"), 1);
    let (_, _, body) = state.storage.get(&sha, None).await.unwrap();
    let stored: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(body).await.unwrap();
    assert_eq!(stored.concat(), bytes);
    server.stop(false).await;
}

#[actix_web::test]
async fn bytes_that_do_not_match_the_declared_digest_are_not_stored() {
    let up = TestUpstream::default();
    let (base, server) = up.start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = state(&base, &dir).await;
    up.body("/files/b-1.0.tar.gz", b"tampered bytes", Duration::ZERO);
    let declared = hex::encode(Sha256::digest(b"the real bytes"));

    let err = ensure_file(
        &state,
        &base,
        "files/b-1.0.tar.gz",
        Expected::sha256(&declared),
    )
    .await
    .unwrap_err();
    assert!(matches!(err.answered(), ApiError::BadGateway(_)), "{err:?}");
    assert_eq!(err.reason(), Some("hash_mismatch"));
    let actual = hex::encode(Sha256::digest(b"tampered bytes"));
    assert!(
        state.storage.head(&actual).await.is_err(),
        "nothing stored under the served bytes' digest"
    );
    // not remembered as a success: the next request asks the upstream again
    let _ = ensure_file(
        &state,
        &base,
        "files/b-1.0.tar.gz",
        Expected::sha256(&declared),
    )
    .await;
    assert_eq!(up.count("/files/b-1.0.tar.gz"), 2);
    server.stop(false).await;
}

/// A database that goes away during a fill (the lookup after taking the fill lock, the
/// commit) is a 503, never a 500: found by the fault suite (a Postgres restart answered
/// one 500, "artifact fill failed: the metadata database is unavailable").
#[test]
fn an_unavailable_database_during_a_fill_is_a_503() {
    use crate::db::DbError;
    use actix_web::ResponseError;
    let lost = DbError::PoolTimeout;
    assert!(lost.is_unavailable());
    let fetch = FetchError::from(lost);
    assert!(matches!(fetch, FetchError::Database), "{fetch:?}");
    assert_eq!(ApiError::from(fetch).status_code().as_u16(), 503);
    // a lookup's error (an ApiError) keeps its kind when a fill reports it
    let fetch = FetchError::from(ApiError::DatabaseUnavailable);
    assert!(matches!(fetch, FetchError::Database), "{fetch:?}");
    let fetch = FetchError::from(ApiError::Unavailable("storage".into()));
    assert!(matches!(fetch, FetchError::Unavailable(_)), "{fetch:?}");
    assert!(matches!(
        FetchError::from(DbError::Invalid("x".into())),
        FetchError::Internal(_)
    ));
}
