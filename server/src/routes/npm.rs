//! npm routes.
//!
//! | route | what |
//! |---|---|
//! | `/npm/{package}` | packument (full `application/json` or abbreviated `application/vnd.npm.install-v1+json`), merged over every enabled npm source by priority |
//! | `/npm/{package}/{version or dist-tag}` | one version's manifest |
//! | `/npm/{package}/-/{file}.tgz` | tarball |
//! | `/npm/-/ping` | `{}` |
//! | `/sources/{source}/…` | the same API for one npm source |
//!
//! `{package}` is `name`, `@scope/name` or `@scope%2fname`. Tarball links in packuments
//! are absolute (npm needs that): `ORCHARD_PUBLIC_URL` when set, else the scheme and
//! host the client used; they always point at `/sources/{source}/…` of the source the
//! packument came from.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::cache::Category;
use crate::error::ApiError;
use crate::protocols::npm::names::{is_valid_tarball, is_valid_version_or_tag, PackageName};
use crate::protocols::npm::packument;
use crate::protocols::View;
use crate::proxy::artifact::{self, ArtifactSpec, Upstream};
use crate::proxy::document::{self, DocumentRequest, Parser};
use crate::proxy::response;
use crate::sources::{Protocol, Source};
use crate::state::AppState;

const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

#[derive(Debug, PartialEq, Eq)]
enum NpmRequest {
    Ping,
    Packument(PackageName),
    Version(PackageName, String),
    Tarball(PackageName, String),
}

/// Parses the part of the path after the registry root (still percent-encoded).
fn parse_tail(tail: &str) -> Result<NpmRequest, ApiError> {
    let segs: Vec<String> = tail
        .split('/')
        .map(crate::protocols::decode_segment)
        .collect::<Result<_, _>>()?;
    if segs.iter().any(|s| s.is_empty()) {
        return Err(ApiError::NotFound("no such npm route".into()));
    }
    if segs.len() == 2 && segs[0] == "-" && segs[1] == "ping" {
        return Ok(NpmRequest::Ping);
    }
    let (name, rest) = if segs[0].starts_with('@') && !segs[0].contains('/') {
        if segs.len() < 2 {
            return Err(ApiError::BadRequest(format!(
                "scoped name {:?} needs @scope/name",
                segs[0]
            )));
        }
        (format!("{}/{}", segs[0], segs[1]), &segs[2..])
    } else {
        (segs[0].clone(), &segs[1..])
    };
    let name = PackageName::parse(&name).map_err(ApiError::BadRequest)?;
    match rest {
        [] => Ok(NpmRequest::Packument(name)),
        [v] if is_valid_version_or_tag(v) => Ok(NpmRequest::Version(name, v.clone())),
        [v] => Err(ApiError::BadRequest(format!(
            "invalid version or tag {:?}",
            v.chars().take(60).collect::<String>()
        ))),
        [dash, file] if dash == "-" && is_valid_tarball(file) => {
            Ok(NpmRequest::Tarball(name, file.clone()))
        }
        [dash, _] if dash == "-" => Err(ApiError::BadRequest("invalid tarball file name".into())),
        _ => Err(ApiError::NotFound("no such npm route".into())),
    }
}

/// scheme://host the client should use for tarball links: `ORCHARD_PUBLIC_URL`, else
/// the request's `Host` — and `Forwarded` / `X-Forwarded-*` only when the peer is one
/// of `ORCHARD_TRUSTED_PROXIES` (anyone else could choose the links other clients get).
fn base_url(state: &AppState, req: &HttpRequest) -> Result<String, ApiError> {
    if let Some(public) = &state.config.public_url {
        return Ok(public.clone());
    }
    let trusted = req.peer_addr().is_some_and(|p| {
        state
            .config
            .trusted_proxies
            .iter()
            .any(|c| c.contains(p.ip()))
    });
    let (scheme, host) = if trusted {
        let info = req.connection_info();
        (info.scheme().to_string(), info.host().to_string())
    } else {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        ("http".to_string(), host)
    };
    let ok_host = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok_host || !matches!(scheme.as_str(), "http" | "https") {
        return Err(ApiError::BadRequest("invalid Host header".into()));
    }
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// Rendered packuments are cached for the first `MAX_CACHED_BASES` distinct base URLs
/// a replica sees; others are rendered per request and not kept, so clients inventing
/// `Host` values cannot fill the cache.
const MAX_CACHED_BASES: usize = 16;
static CACHED_BASES: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// A short tag of a base URL for cache keys and ETags.
fn base_tag(base: &str) -> String {
    hex::encode(&Sha256::digest(base.as_bytes())[..4])
}

fn base_is_cacheable(base: &str) -> bool {
    let mut bases = CACHED_BASES.lock().expect("bases lock");
    if bases.contains(base) {
        return true;
    }
    if bases.len() < MAX_CACHED_BASES {
        bases.insert(base.to_string());
        return true;
    }
    false
}

fn wants_abbreviated(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(|a| {
            a.split(',').any(|part| {
                let mut it = part.split(';');
                let media = it.next().unwrap_or("").trim();
                let q = it
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .filter_map(|q| q.parse::<f32>().ok())
                    .next()
                    .unwrap_or(1.0);
                media.eq_ignore_ascii_case(ABBREVIATED) && q > 0.0
            })
        })
        .unwrap_or(false)
}

fn packument_request(
    state: &AppState,
    source: &Arc<Source>,
    name: &PackageName,
    abbreviated: bool,
) -> DocumentRequest {
    let parse_name = name.clone();
    let prefix = format!("/sources/{}", source.name());
    let parse: Parser = Arc::new(move |body, _ct| packument::parse(body, &parse_name, &prefix));
    let ttl = source.versions_ttl(state.config.cache.ttl_versions);
    DocumentRequest {
        protocol: Protocol::Npm,
        source: source.clone(),
        // `packument::STORED_FORM` names the layout of the stored text, so a replica never
        // reads a cached entry written in an older layout.
        identifier: format!(
            "{}{}/{}",
            if abbreviated {
                "abbreviated"
            } else {
                "packument"
            },
            packument::STORED_FORM,
            name.full()
        ),
        url: source.url(&name.encoded()),
        accept: if abbreviated {
            "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
        } else {
            "application/json"
        },
        ttl,
        category: Category::PackageVersions,
        parse,
    }
}

/// The first source (by priority) that has the package, with its packument.
async fn find_package(
    state: &AppState,
    view: &View,
    name: &PackageName,
    abbreviated: bool,
) -> Result<document::Found, ApiError> {
    let full = name.full();
    document::first_found(
        state,
        view.sources(state, Protocol::Npm),
        |source| source.allows_with(|p| crate::sources::wildcard_match(p, &full)),
        |source| packument_request(state, source, name, abbreviated),
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("package {full:?} not found in any npm source")))
}

/// The whole packument with the client's base URL in tarball links.
async fn packument(
    state: &AppState,
    req: &HttpRequest,
    view: &View,
    name: &PackageName,
) -> Result<HttpResponse, ApiError> {
    let abbreviated = wants_abbreviated(req);
    let base = base_url(state, req)?;
    let document::Found {
        source,
        request: dreq,
        doc,
        status,
    } = find_package(state, view, name, abbreviated).await?;
    let base_tag = base_tag(&base);
    let repr = if abbreviated { "abbreviated" } else { "full" };
    let etag = format!("W/\"{}-{repr}-{base_tag}\"", doc.digest());
    let content_type = if abbreviated {
        ABBREVIATED
    } else {
        "application/json"
    };
    let key = state.cache.key(
        Category::PackageVersions,
        "npm",
        &format!(
            "rendered/{}/{}/{}/{repr}/{base_tag}",
            source.name(),
            name.full(),
            doc.digest()
        ),
    );
    if let Some(body) = state.cache.get(&key).await {
        return Ok(response::page(req, content_type, body, etag, status));
    }
    let stored = document::body(state, &dreq, &doc).await?;
    let unreadable = |e: String| {
        tracing::error!(error = %e, "stored packument unreadable");
        ApiError::Internal
    };
    let spliced = match packument::ready(&stored, &base).map_err(unreadable)? {
        packument::Ready::Rendered(rendered) => {
            if base_is_cacheable(&base) {
                state
                    .cache
                    .set_with_ttl(&key, rendered.clone(), Some(dreq.ttl))
                    .await;
            }
            return Ok(response::page(req, content_type, rendered, etag, status));
        }
        packument::Ready::Spliced(spliced) => spliced,
    };
    let len = spliced.len as u64;
    let pieces = futures::stream::unfold(spliced, |mut s| async move {
        s.next_chunk()
            .map(|c| (Ok::<_, std::convert::Infallible>(c), s))
    });
    let body = actix_web::body::SizedStream::new(len, pieces);
    Ok(response::page(req, content_type, body, etag, status))
}

/// One render of all versions at a time per packument digest and base, per replica.
static VERSION_RENDERS: std::sync::LazyLock<
    crate::proxy::singleflight::SingleFlight<Result<(), String>>,
> = std::sync::LazyLock::new(Default::default);

async fn version(
    state: &AppState,
    req: &HttpRequest,
    view: &View,
    name: &PackageName,
    wanted: &str,
) -> Result<HttpResponse, ApiError> {
    let base = base_url(state, req)?;
    let document::Found {
        source,
        request: dreq,
        doc,
        status,
    } = find_package(state, view, name, false).await?;
    // Each version's manifest is rendered once per packument digest and base — all of
    // them in one skim of the stored document, by one request while the others wait —
    // and then served from the cache.
    let base_tag = base_tag(&base);
    let prefix = format!(
        "rendered-version/{}/{}/{}/{base_tag}",
        source.name(),
        name.full(),
        doc.digest()
    );
    let key = |v: &str| {
        state
            .cache
            .key(Category::PackageVersions, "npm", &format!("{prefix}/{v}"))
    };
    let respond = |body: Bytes| {
        Ok(response::tag(
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .body(body),
            status,
        ))
    };
    if let Some(body) = state.cache.get(&key(wanted)).await {
        return respond(body);
    }
    // `@all` marks a finished render: a version missing after it is evicted or unknown.
    if base_is_cacheable(&base) && state.cache.get(&key("@all")).await.is_none() {
        loop {
            match VERSION_RENDERS.join(&prefix) {
                crate::proxy::singleflight::Role::Leader(leader) => {
                    let stored = document::body(state, &dreq, &doc).await?;
                    let b = base.clone();
                    let rendered = state
                        .blocking
                        .run(move || packument::all_versions(packument::body_of(&stored)?, &b))
                        .await;
                    let result = match rendered {
                        Ok(Ok(all)) => {
                            for (v, manifest) in all {
                                state
                                    .cache
                                    .set_with_ttl(&key(&v), Bytes::from(manifest), Some(dreq.ttl))
                                    .await;
                            }
                            state
                                .cache
                                .set_with_ttl(
                                    &key("@all"),
                                    Bytes::from_static(b"1"),
                                    Some(dreq.ttl),
                                )
                                .await;
                            Ok(())
                        }
                        Ok(Err(e)) => Err(e),
                        Err(e) => Err(e.to_string()),
                    };
                    leader.finish(result);
                    break;
                }
                crate::proxy::singleflight::Role::Follower(rx) => {
                    if crate::proxy::singleflight::wait(rx).await.is_some() {
                        break;
                    }
                }
            }
        }
        if let Some(body) = state.cache.get(&key(wanted)).await {
            return respond(body);
        }
    }
    // Not cacheable, evicted, or not a version of this package: one skim for this one.
    let stored = document::body(state, &dreq, &doc).await?;
    let wanted_owned = wanted.to_string();
    let manifest = state
        .blocking
        .run(move || packument::version(packument::body_of(&stored)?, &wanted_owned, &base))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(|_| ApiError::Internal)?
        .ok_or_else(|| ApiError::NotFound(format!("{}@{wanted} not found", name.full())))?;
    respond(Bytes::from(manifest))
}

async fn tarball(
    state: &AppState,
    req: &HttpRequest,
    view: &View,
    name: &PackageName,
    file: &str,
) -> Result<HttpResponse, ApiError> {
    let source = match view {
        View::Source(s) => s.clone(),
        View::Merged => find_package(state, view, name, true).await?.source,
    };
    if !source.allows_with(|p| crate::sources::wildcard_match(p, &name.full())) {
        return Err(ApiError::NotFound(format!(
            "source {:?} does not serve {:?}",
            source.name(),
            name.full()
        )));
    }
    let spec = ArtifactSpec {
        protocol: Protocol::Npm,
        source: source.clone(),
        path: format!("{}/-/{file}", name.full()),
        content_type: "application/octet-stream",
    };
    let resolve = || async {
        let dreq = packument_request(state, &source, name, true);
        let (doc, _) = document::get(state, &dreq).await?;
        if !doc.found() {
            return Err(ApiError::NotFound(format!(
                "package {:?} not found in source {:?}",
                name.full(),
                source.name()
            )));
        }
        let stored = document::body(state, &dreq, &doc).await?;
        let (tarballs, _) = packument::split(&stored).map_err(|_| ApiError::Internal)?;
        let found = tarballs.get(file).ok_or_else(|| {
            ApiError::NotFound(format!("{file:?} is not a tarball of {:?}", name.full()))
        })?;
        let expected = found.expected();
        let url = crate::file_url::vet(&source, &found.url, &expected).await?;
        Ok(Upstream { url, expected })
    };
    let hook = crate::deps::extraction_hook(Protocol::Npm, file);
    artifact::serve(state, req, spec, resolve, hook).await
}

async fn dispatch(
    state: &AppState,
    req: &HttpRequest,
    view: View,
    tail: &str,
) -> Result<HttpResponse, ApiError> {
    match parse_tail(tail)? {
        NpmRequest::Ping => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body("{}")),
        NpmRequest::Packument(name) => packument(state, req, &view, &name).await,
        NpmRequest::Version(name, v) => version(state, req, &view, &name, &v).await,
        NpmRequest::Tarball(name, file) => tarball(state, req, &view, &name, &file).await,
    }
}

/// Every npm route answers errors in the registry's own format (`ApiError::npm_response`).
fn npm_errors(result: Result<HttpResponse, ApiError>) -> HttpResponse {
    result.unwrap_or_else(|e| e.npm_response())
}

async fn merged(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let tail = req.path().strip_prefix("/npm/").unwrap_or("").to_string();
    npm_errors(dispatch(&state, &req, View::Merged, &tail).await)
}

async fn one_source(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    // /sources/{source}/{tail}: the raw path keeps %2f inside scoped names.
    npm_errors(
        async {
            let (view, tail) = View::of_source_path(&state, req.path(), Protocol::Npm)?;
            dispatch(&state, &req, view, &tail).await
        }
        .await,
    )
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/npm/{tail:.*}")
            .route(web::get().to(merged))
            .route(web::head().to(merged)),
    )
    .service(
        web::resource("/sources/{source}/{tail:.*}")
            .guard(super::source_protocol(Protocol::Npm))
            .route(web::get().to(one_source))
            .route(web::head().to(one_source)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> PackageName {
        PackageName::parse(s).unwrap()
    }

    #[test]
    fn tails() {
        assert_eq!(parse_tail("-/ping").unwrap(), NpmRequest::Ping);
        assert_eq!(
            parse_tail("chalk").unwrap(),
            NpmRequest::Packument(name("chalk"))
        );
        assert_eq!(
            parse_tail("@babel/core").unwrap(),
            NpmRequest::Packument(name("@babel/core"))
        );
        assert_eq!(
            parse_tail("@babel%2fcore").unwrap(),
            NpmRequest::Packument(name("@babel/core"))
        );
        assert_eq!(
            parse_tail("@babel%2Fcore").unwrap(),
            NpmRequest::Packument(name("@babel/core"))
        );
        assert_eq!(
            parse_tail("chalk/latest").unwrap(),
            NpmRequest::Version(name("chalk"), "latest".into())
        );
        assert_eq!(
            parse_tail("@babel/core/7.0.0").unwrap(),
            NpmRequest::Version(name("@babel/core"), "7.0.0".into())
        );
        assert_eq!(
            parse_tail("@babel%2fcore/7.0.0").unwrap(),
            NpmRequest::Version(name("@babel/core"), "7.0.0".into())
        );
        assert_eq!(
            parse_tail("chalk/-/chalk-4.1.2.tgz").unwrap(),
            NpmRequest::Tarball(name("chalk"), "chalk-4.1.2.tgz".into())
        );
        assert_eq!(
            parse_tail("@babel/core/-/core-7.0.0.tgz").unwrap(),
            NpmRequest::Tarball(name("@babel/core"), "core-7.0.0.tgz".into())
        );
        for bad in [
            "%2e%2e",
            "@scope/..",
            "@scope/../x",
            "..",
            "chalk/..%2f..%2fetc",
            "chalk/-/..%2fx.tgz",
            "a%00b",
            "@scope",
            "Bad Name",
        ] {
            assert!(
                matches!(parse_tail(bad), Err(ApiError::BadRequest(_))),
                "{bad}: {:?}",
                parse_tail(bad)
            );
        }
        for missing in ["chalk/1/2", "chalk/", ""] {
            assert!(
                matches!(parse_tail(missing), Err(ApiError::NotFound(_))),
                "{missing}"
            );
        }
    }
}
