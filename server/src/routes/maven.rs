//! Maven routes: `/maven/{path}` (every enabled Maven source by priority) and
//! `/sources/{source}/{path}` (one source), GET and HEAD.
//!
//! - Release files are immutable artifacts, verified on ingest against the upstream's
//!   `.sha1` sidecar (a file whose upstream has no sidecar is stored unverified; a
//!   sidecar that cannot be fetched because the upstream fails fails the request).
//! - Checksum sidecars (`.sha1`, `.md5`, `.sha256`, `.sha512`) are computed by Orchard
//!   from the bytes it stored and serves, so they can never disagree with them.
//! - `maven-metadata.xml` (group, artifact and SNAPSHOT version level) is a mutable
//!   document (PACKAGE_VERSIONS TTL, revalidation, stale-if-error); its sidecars are
//!   computed from the copy being served.
//! - Non-unique SNAPSHOT files (`…-SNAPSHOT.jar`) are mutable: cached per TTL window;
//!   when the upstream fails, the newest earlier window's copy is served stale.
//!   Timestamped SNAPSHOT files are immutable like releases.
//! - Merged view: the first source (by priority) that has a version's POM owns every
//!   file of that groupId:artifactId:version (the POM is fetched once, to decide and to
//!   be stored); when no source has the POM, the first source that has the requested
//!   file serves it. Metadata comes from the first source that has it. Upstream 404s are remembered for `ORCHARD_CACHE_TTL_NEGATIVE`, so builds
//!   that probe many repositories do not hammer the upstream; 5xx and timeouts never are.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;

use crate::cache::Category;
use crate::error::ApiError;
use crate::protocols::maven::coords::{self, content_type, is_snapshot, Checksum, MavenPath};
use crate::protocols::View;
use crate::proxy::artifact::{self, ArtifactSpec, Upstream};
use crate::proxy::document::{self, DocumentRequest, Parser};
use crate::proxy::response;
use crate::proxy::FetchError;
use crate::sources::{Protocol, Source};
use crate::state::AppState;
use crate::storage::Expected;

fn versions_ttl(state: &AppState, source: &Source) -> Duration {
    source.versions_ttl(state.config.cache.ttl_versions)
}

fn metadata_request(state: &AppState, source: &Arc<Source>, path: &str) -> DocumentRequest {
    let parse: Parser = Arc::new(|body, _ct| {
        let text =
            std::str::from_utf8(body).map_err(|_| "maven-metadata.xml is not UTF-8".to_string())?;
        if !text.contains("<metadata") {
            return Err("upstream maven-metadata.xml has no <metadata> element".into());
        }
        Ok(text.to_string())
    });
    DocumentRequest {
        protocol: Protocol::Maven,
        source: source.clone(),
        identifier: format!("metadata/{path}"),
        url: source.url(path),
        accept: "application/xml, text/xml;q=0.9, */*;q=0.1",
        ttl: versions_ttl(state, source),
        category: Category::PackageVersions,
        parse,
    }
}

/// Whether a source has a SNAPSHOT version (its version-level metadata); answers are
/// cached like documents, 404s negatively.
fn snapshot_presence_request(
    state: &AppState,
    source: &Arc<Source>,
    group: &str,
    artifact: &str,
    version: &str,
) -> DocumentRequest {
    let probe = format!(
        "{}/{artifact}/{version}/maven-metadata.xml",
        group.replace('.', "/")
    );
    DocumentRequest {
        protocol: Protocol::Maven,
        source: source.clone(),
        identifier: format!("present/{probe}"),
        url: source.url(&probe),
        accept: "*/*",
        ttl: versions_ttl(state, source),
        category: Category::PackageVersions,
        parse: Arc::new(|_, _| Ok(String::new())),
    }
}

fn text(body: impl Into<Bytes>, ct: &'static str, etag: Option<String>) -> HttpResponse {
    let mut b = HttpResponse::Ok();
    b.insert_header((header::CONTENT_TYPE, ct));
    if let Some(e) = etag {
        b.insert_header((header::ETAG, e));
    }
    b.body(body.into())
}

fn digest_of(algo: Checksum, data: &[u8]) -> String {
    let mut h = algo.hasher();
    h(Some(data));
    h(None).unwrap_or_default()
}

async fn metadata(
    state: &AppState,
    view: &View,
    dir: &str,
    checksum: Option<Checksum>,
) -> Result<HttpResponse, ApiError> {
    let path = format!("{dir}/maven-metadata.xml");
    let found = document::first_found(
        state,
        view.sources(state, Protocol::Maven),
        |source| coords::source_serves_dir(source, dir),
        |source| metadata_request(state, source, &path),
    )
    .await?;
    if let Some(document::Found {
        request: dreq,
        doc,
        status,
        ..
    }) = found
    {
        let body = document::body(state, &dreq, &doc).await?;
        let res = match checksum {
            Some(algo) => text(digest_of(algo, body.as_bytes()), "text/plain", None),
            None => text(
                body.to_string(),
                "text/xml",
                Some(format!("W/\"{}\"", doc.digest())),
            ),
        };
        return Ok(response::tag(res, status));
    }
    Err(ApiError::NotFound(format!(
        "{path} not found in any Maven source"
    )))
}

/// The source that owns a version in the merged view: the first (by priority) that has
/// the version's POM — fetched once and stored, so the POM request Maven makes next is
/// a hit — or, for a SNAPSHOT, its version-level metadata. `None` when no source has it.
async fn version_owner(
    state: &AppState,
    req: &HttpRequest,
    candidates: &[Arc<Source>],
    group: &str,
    artifact: &str,
    version: &str,
) -> Result<Option<Arc<Source>>, ApiError> {
    for source in candidates {
        let found = if is_snapshot(version) {
            document::get(
                state,
                &snapshot_presence_request(state, source, group, artifact, version),
            )
            .await?
            .0
            .found()
        } else {
            let file = format!("{artifact}-{version}.pom");
            let pom = MavenPath::File {
                group: group.to_string(),
                artifact: artifact.to_string(),
                version: version.to_string(),
                file: file.clone(),
                checksum: None,
            };
            let main = pom.main_path();
            let spec = ArtifactSpec {
                protocol: Protocol::Maven,
                source: source.clone(),
                path: main.clone(),
                content_type: content_type(&file),
            };
            match artifact::ensure(
                state,
                spec,
                || resolve_upstream(state, source, &main),
                pom_hook(req, file.clone()),
            )
            .await
            {
                Ok(_) => true,
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(e),
            }
        };
        if found {
            return Ok(Some(source.clone()));
        }
    }
    Ok(None)
}

/// Dependency extraction once a POM is stored — except for a parent or imported POM
/// that an extraction itself asked for (`PARENT_POM_HEADER` from a loopback peer): one
/// extraction then loads a bounded set of POMs instead of cascading through a chain.
fn pom_hook(req: &HttpRequest, file: String) -> Option<artifact::CommitHook> {
    let internal = req
        .headers()
        .contains_key(crate::deps::local::PARENT_POM_HEADER)
        && req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    if internal {
        return None;
    }
    crate::deps::extraction_hook(Protocol::Maven, &file)
}

/// Where a file's bytes are upstream, with the digest the upstream declares for them.
async fn resolve_upstream(
    state: &AppState,
    source: &Source,
    main: &str,
) -> Result<Upstream, ApiError> {
    let sha1 = upstream_sha1(state, source, main).await?;
    Ok(Upstream {
        url: source.url(main),
        expected: Expected {
            sha1,
            ..Default::default()
        },
    })
}

/// The digest the upstream declares for a file (its `.sha1`), if it has one.
async fn upstream_sha1(
    state: &AppState,
    source: &Source,
    path: &str,
) -> Result<Option<String>, ApiError> {
    let url = source.url(&format!("{path}.sha1"));
    let mut resp = state
        .http
        .get(Some(source.name()), &url, &[("accept", "text/plain, */*")])
        .await
        .map_err(FetchError::from)?;
    match resp.status().as_u16() {
        200 => {
            let body =
                tokio::time::timeout(state.config.http.read_timeout(), resp.body().limit(4096))
                    .await
                    .map_err(|_| ApiError::GatewayTimeout)?
                    .map_err(|e| {
                        ApiError::BadGateway(format!("reading the upstream checksum failed: {e}"))
                    })?;
            let text = String::from_utf8_lossy(&body);
            let token = text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if token.len() == 40 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(token))
            } else {
                Err(ApiError::BadGateway(format!(
                    "the upstream {path}.sha1 is not a SHA-1 digest"
                )))
            }
        }
        404 | 410 => Ok(None),
        s => Err(ApiError::BadGateway(format!(
            "upstream answered {s} for the checksum of {path}"
        ))),
    }
}

async fn file(
    state: &AppState,
    req: &HttpRequest,
    view: &View,
    path: &MavenPath,
) -> Result<HttpResponse, ApiError> {
    let MavenPath::File {
        group,
        artifact,
        version,
        file,
        checksum,
    } = path
    else {
        return Err(ApiError::Internal);
    };
    let name = format!("{group}:{artifact}");
    let candidates: Vec<Arc<Source>> = match view {
        View::Source(s) if coords::source_serves(s, group, Some(artifact)) => {
            return serve_from(state, req, s.clone(), path).await
        }
        View::Source(s) => {
            return Err(ApiError::NotFound(format!(
                "source {:?} does not serve {name}",
                s.name()
            )))
        }
        View::Merged => view
            .sources(state, Protocol::Maven)
            .into_iter()
            .filter(|s| coords::source_serves(s, group, Some(artifact)))
            .collect(),
    };
    // The POM decides which source serves a version whenever one has it (so a
    // lower-priority source cannot shadow a version's files: dependency confusion).
    let is_pom =
        checksum.is_none() && !is_snapshot(version) && *file == format!("{artifact}-{version}.pom");
    if !is_pom {
        if let Some(source) =
            version_owner(state, req, &candidates, group, artifact, version).await?
        {
            return serve_from(state, req, source, path).await;
        }
    }
    // The POM itself, or a version no source has a POM for (Maven asks for some jars,
    // such as plexus-utils 1.1, without one): the first source that has the file. A
    // source's 404 is remembered per path; any other failure ends the lookup.
    for source in candidates {
        match serve_from(state, req, source, path).await {
            Err(e) if e.is_not_found() => continue,
            other => return other,
        }
    }
    Err(ApiError::NotFound(format!(
        "{} not found in any Maven source ({name}:{version} has no POM in any of them)",
        path.main_path()
    )))
}

/// Serves one file of a version from one source.
async fn serve_from(
    state: &AppState,
    req: &HttpRequest,
    source: Arc<Source>,
    path: &MavenPath,
) -> Result<HttpResponse, ApiError> {
    let MavenPath::File {
        version,
        file,
        checksum,
        ..
    } = path
    else {
        return Err(ApiError::Internal);
    };
    let main = path.main_path();
    // Non-unique SNAPSHOT files change upstream: one cache entry per TTL window.
    let window = versions_ttl(state, &source).as_secs().max(1);
    let current = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        / window;
    let mutable = is_snapshot(version) && file.contains("-SNAPSHOT");
    let windowed = |w: u64| format!("{main}@{w}");
    let stored_path = if mutable {
        windowed(current)
    } else {
        main.clone()
    };
    let main_spec = || ArtifactSpec {
        protocol: Protocol::Maven,
        source: source.clone(),
        path: stored_path.clone(),
        content_type: content_type(file),
    };
    let resolve = || resolve_upstream(state, &source, &main);
    let hook = || {
        if file.ends_with(".pom") {
            pom_hook(req, file.to_string())
        } else {
            None
        }
    };
    match checksum {
        None if mutable => match artifact::serve(state, req, main_spec(), resolve, None).await {
            // The upstream failed: the newest earlier copy within ORCHARD_CACHE_STALE_MAX.
            Err(e)
                if matches!(
                    e.answered(),
                    ApiError::BadGateway(_) | ApiError::GatewayTimeout
                ) =>
            {
                let back = (state.config.cache.stale_max.as_secs() / window).clamp(1, 24);
                for w in (current.saturating_sub(back)..current).rev() {
                    let old = ArtifactSpec {
                        path: windowed(w),
                        ..main_spec()
                    };
                    if let Some(res) =
                        artifact::serve_cached(state, req, &old, crate::proxy::CacheStatus::Stale)
                            .await?
                    {
                        return Ok(res);
                    }
                }
                Err(e)
            }
            other => other,
        },
        None => artifact::serve(state, req, main_spec(), resolve, hook()).await,
        Some(algo) => {
            let sidecar = ArtifactSpec {
                protocol: Protocol::Maven,
                source: source.clone(),
                path: format!("{stored_path}.{}", algo.ext()),
                content_type: "text/plain",
            };
            let produce = || async {
                let committed = artifact::ensure(state, main_spec(), resolve, hook()).await?;
                let (_, _, mut body) = state.storage.get(&committed.sha256, None).await?;
                let mut hasher = algo.hasher();
                while let Some(chunk) = body.next().await {
                    hasher(Some(&chunk?));
                }
                Ok(Bytes::from(hasher(None).unwrap_or_default()))
            };
            artifact::serve_derived(state, req, sidecar, produce).await
        }
    }
}

async fn dispatch(
    state: &AppState,
    req: &HttpRequest,
    view: View,
    tail: &str,
) -> Result<HttpResponse, ApiError> {
    let segments: Vec<String> = tail
        .split('/')
        .map(crate::protocols::decode_segment)
        .collect::<Result<_, _>>()?;
    let path = coords::parse(&segments).map_err(ApiError::BadRequest)?;
    match &path {
        MavenPath::Metadata { dir, checksum } => metadata(state, &view, dir, *checksum).await,
        MavenPath::File { .. } => file(state, req, &view, &path).await,
    }
}

async fn merged(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let tail = req.path().strip_prefix("/maven/").unwrap_or("").to_string();
    dispatch(&state, &req, View::Merged, &tail).await
}

async fn one_source(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (view, tail) = View::of_source_path(&state, req.path(), Protocol::Maven)?;
    dispatch(&state, &req, view, &tail).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/maven/{tail:.*}")
            .route(web::get().to(merged))
            .route(web::head().to(merged)),
    )
    .service(
        web::resource("/sources/{source}/{tail:.*}")
            .guard(super::source_protocol(Protocol::Maven))
            .route(web::get().to(one_source))
            .route(web::head().to(one_source)),
    );
}
