//! `GET /api/v1/artifacts/{sha256}/dependencies` and `POST /api/v1/ensure`.

use std::rc::Rc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::admin::authorize;
use crate::cache::Category;
use crate::deps::ensure::{self, Item};
use crate::deps::resolve::{self, Environment, Options};
use crate::deps::universe::ServerUniverse;
use crate::deps::{extractable, Extracted};
use crate::error::ApiError;
use crate::metrics::metrics;
use crate::proxy::CacheStatus;
use crate::sources::Protocol;
use crate::state::AppState;

/// Largest ensure file accepted.
const MAX_ENSURE_BYTES: usize = 16 << 20;
/// Files fetched at once by one ensure request.
const ENSURE_CONCURRENCY: usize = 8;

#[derive(Deserialize)]
struct DepsQuery {
    max_depth: Option<usize>,
    include_optional: Option<bool>,
    refresh: Option<bool>,
    python_version: Option<String>,
    platform: Option<String>,
}

/// A SHA-256 from a request path: 64 hex digits, lowercased.
pub(crate) fn check_sha(raw: &str) -> Result<String, ApiError> {
    if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ApiError::BadRequest(
            "the artifact is named by its SHA-256: 64 hex digits".into(),
        ))
    }
}

/// `2.7`, `3.12`, `3.12.1`: major 2 or 3, minor and patch 0–99, written without leading
/// zeros — so `3.1`, `3.01` and `3.001` are one environment, and the cached answers
/// (keyed by it) stay bounded.
fn normalize_python_version(v: &str) -> Option<String> {
    let parts: Vec<&str> = v.split('.').collect();
    if !(2..=3).contains(&parts.len()) || v.len() > 16 {
        return None;
    }
    let nums: Vec<u32> = parts
        .iter()
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect::<Option<_>>()?;
    if !(2..=3).contains(&nums[0]) || nums[1..].iter().any(|n| *n > 99) {
        return None;
    }
    Some(
        nums.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

fn check_env(
    python_version: Option<String>,
    platform: Option<String>,
) -> Result<Environment, ApiError> {
    let python_version = match python_version {
        Some(v) => Some(normalize_python_version(&v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "python_version {v:?} is not like 3.12 (major 2 or 3, minor and patch up to 99)"
            ))
        })?),
        None => None,
    };
    if let Some(p) = &platform {
        if !matches!(p.as_str(), "linux" | "darwin" | "win32") {
            return Err(ApiError::BadRequest(format!(
                "platform {p:?} is not one of linux, darwin, win32"
            )));
        }
    }
    Ok(Environment {
        python_version,
        platform,
    })
}

/// The root's extraction: the artifact's own, or for a Maven jar/war, its POM's.
async fn root_extraction(
    state: &AppState,
    u: &ServerUniverse,
    sha256: &str,
) -> Result<(Extracted, String), ApiError> {
    let repo = state.db().ok_or(ApiError::DatabaseUnavailable)?;
    let urls = repo.cached_urls_of(sha256).await?;
    let Some(url) = urls.first() else {
        return Err(ApiError::NotFound(format!(
            "no cached artifact has SHA-256 {sha256}"
        )));
    };
    let protocol = Protocol::parse(&url.protocol).ok_or(ApiError::Internal)?;
    let filename = url.path.rsplit('/').next().unwrap_or("").to_string();
    if extractable(protocol, &filename) {
        match u.extraction(protocol, &filename, sha256).await {
            Ok(e) => return Ok((e, sha256.to_string())),
            // A wheel Orchard cannot read: its PEP 658 metadata, when the index has it.
            Err(err) if protocol == Protocol::Pypi && filename.ends_with(".whl") => {
                let fetched = u
                    .local
                    .fetch(&format!(
                        "/sources/{}/files/{}.metadata",
                        url.source, url.path
                    ))
                    .await;
                if fetched.error.is_some() {
                    return Err(ApiError::BadGateway(err));
                }
                let e = u
                    .extraction(
                        Protocol::Pypi,
                        &format!("{filename}.metadata"),
                        &fetched.sha256,
                    )
                    .await
                    .map_err(ApiError::BadGateway)?;
                return Ok((e, sha256.to_string()));
            }
            Err(err) => return Err(ApiError::BadGateway(err)),
        }
    }
    if protocol == Protocol::Maven {
        // group/…/artifact/version/file → that version's POM.
        let parts: Vec<&str> = url.path.split('/').collect();
        if parts.len() >= 4 {
            let (version, artifact) = (parts[parts.len() - 2], parts[parts.len() - 3]);
            let dir = parts[..parts.len() - 1].join("/");
            let pom = format!("{artifact}-{version}.pom");
            let fetched = u
                .local
                .fetch(&format!("/sources/{}/{dir}/{pom}", url.source))
                .await;
            if let Some(e) = fetched.error {
                return Err(ApiError::BadGateway(format!("the POM of {filename}: {e}")));
            }
            let e = u
                .extraction(Protocol::Maven, &pom, &fetched.sha256)
                .await
                .map_err(ApiError::BadGateway)?;
            return Ok((e, fetched.sha256));
        }
    }
    Err(ApiError::BadRequest(format!(
        "{filename:?} is not a file Orchard reads dependencies from"
    )))
}

/// Resolutions computed at once per process; more wait. Cached answers never wait.
static RESOLVING: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(2));

async fn dependencies(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<DepsQuery>,
) -> Result<HttpResponse, ApiError> {
    if state.config.deps_require_token {
        authorize(&state, &req)?;
    }
    let sha256 = check_sha(&path)?;
    let q = query.into_inner();
    if q.refresh == Some(true) {
        // Recomputing bypasses the cache and may fetch a whole tree: an admin action.
        authorize(&state, &req)?;
    }
    let max_depth = q.max_depth.unwrap_or(10);
    if !(1..=50).contains(&max_depth) {
        return Err(ApiError::BadRequest("max_depth must be 1..=50".into()));
    }
    let include_optional = q.include_optional.unwrap_or(false);
    let env = check_env(q.python_version, q.platform)?;
    let fingerprint = serde_json::json!({"sha256": sha256, "max_depth": max_depth, "include_optional": include_optional, "environment": env});
    let key = state.cache.key(
        Category::DependencyResolution,
        "any",
        &hex::encode(Sha256::digest(fingerprint.to_string())),
    );
    let refresh = q.refresh.unwrap_or(false);
    if !refresh {
        if let Some(body) = state.cache.get(&key).await {
            metrics()
                .dependency_resolutions
                .with_label_values(&["hit"])
                .inc();
            let res = HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .body(body);
            return Ok(crate::proxy::response::tag(res, CacheStatus::Hit));
        }
    }
    let _slot = RESOLVING.acquire().await.map_err(|_| ApiError::Internal)?;
    let u = ServerUniverse::new(&state);
    let (root, root_sha) = root_extraction(&state, &u, &sha256).await?;
    let opts = Options {
        max_depth,
        include_optional,
        environment: env,
    };
    let resolution = resolve::resolve(&u, &root, &root_sha, &opts).await;
    let body = Bytes::from(serde_json::to_vec(&resolution).map_err(|_| ApiError::Internal)?);
    state
        .cache
        .set(&key, body.clone(), Category::DependencyResolution)
        .await;
    metrics()
        .dependency_resolutions
        .with_label_values(&[if refresh { "refreshed" } else { "computed" }])
        .inc();
    let res = HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(body);
    Ok(crate::proxy::response::tag(res, CacheStatus::Miss))
}

#[derive(Deserialize)]
struct EnsureQuery {
    python_version: Option<String>,
    platform: Option<String>,
}

async fn ensure_file(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<EnsureQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let q = query.into_inner();
    let env = check_env(q.python_version, q.platform)?;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
        if body.len() + chunk.len() > MAX_ENSURE_BYTES {
            return Err(ApiError::PayloadTooLarge(format!(
                "ensure files are limited to {MAX_ENSURE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the ensure file is not UTF-8".into()))?;
    let entries = ensure::parse(text).map_err(ApiError::BadRequest)?;
    let u = Rc::new(ServerUniverse::new(&state));
    let streaming = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    let total = entries.len();
    let results = futures::stream::iter(entries)
        .map(move |e| {
            let (u, env) = (u.clone(), env.clone());
            async move { ensure::run_entry(&u, &e, &env).await }
        })
        .buffer_unordered(ENSURE_CONCURRENCY)
        .inspect(|items: &Vec<Item>| {
            for i in items {
                metrics()
                    .ensure_files
                    .with_label_values(&[i.status.as_str()])
                    .inc();
            }
        });
    if streaming {
        // `{"entries": N}`, `{"items": […]}` per entry as it finishes, then `{"summary": …}`.
        let head = futures::stream::once(async move {
            Ok::<_, actix_web::Error>(Bytes::from(format!(
                "{}\n",
                serde_json::json!({"entries": total})
            )))
        });
        let lines = results.map(|items| {
            Ok(Bytes::from(format!(
                "{}\n",
                serde_json::json!({"items": items})
            )))
        });
        return Ok(HttpResponse::Ok()
            .content_type("application/x-ndjson")
            .streaming(summary_after(head.chain(lines))));
    }
    let items: Vec<Item> = results.flat_map(futures::stream::iter).collect().await;
    let summary = ensure::summarize(&items);
    Ok(HttpResponse::Ok().json(serde_json::json!({"summary": summary, "items": items})))
}

/// Appends a final `{"summary": …}` line computed from the item lines that went by.
fn summary_after(
    body: impl futures::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let items = Rc::new(std::cell::RefCell::new(Vec::<Item>::new()));
    let seen = items.clone();
    body.inspect(move |chunk| {
        if let Ok(b) = chunk {
            #[derive(Deserialize)]
            struct Line {
                items: Vec<Item>,
            }
            if let Ok(line) = serde_json::from_slice::<Line>(b) {
                seen.borrow_mut().extend(line.items);
            }
        }
    })
    .chain(futures::stream::once(async move {
        let s = ensure::summarize(&items.borrow());
        Ok(Bytes::from(format!(
            "{}\n",
            serde_json::json!({"summary": s})
        )))
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/artifacts/{sha256}/dependencies",
        web::get().to(dependencies),
    )
    .route("/api/v1/ensure", web::post().to(ensure_file));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_versions_are_normalised_and_bounded() {
        for (given, want) in [
            ("3.1", "3.1"),
            ("3.01", "3.1"),
            ("3.001", "3.1"),
            ("3.12", "3.12"),
            ("3.12.0", "3.12.0"),
            ("2.7", "2.7"),
        ] {
            assert_eq!(
                normalize_python_version(given).as_deref(),
                Some(want),
                "{given}"
            );
        }
        for bad in [
            "3",
            "4.0",
            "1.5",
            "3.100",
            "3.12.1.1",
            "3.x",
            "",
            "3..1",
            "03.9999999999999999999",
        ] {
            assert_eq!(normalize_python_version(bad), None, "{bad}");
        }
        assert!(
            check_env(Some("3.01".into()), None)
                .unwrap()
                .python_version
                .as_deref()
                == Some("3.1")
        );
    }
}
