//! The admin API (bearer token `ORCHARD_ADMIN_TOKEN`; unset = off): the sources in
//! force, cache invalidation of one source, and the artifact operations an operator
//! needs when an upstream misbehaves: purge and quarantine. Ensure files live in
//! `deps::api`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// `Authorization: Bearer <ORCHARD_ADMIN_TOKEN>`, compared in constant time.
pub fn authorize(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(token) = &state.config.admin_token else {
        return Err(ApiError::Forbidden(
            "the admin API is disabled: set ORCHARD_ADMIN_TOKEN".into(),
        ));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("admin token required: Authorization: Bearer <token>".into())
        })?;
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.expose_secret().as_bytes()),
    );
    if a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        != 0
    {
        return Err(ApiError::Forbidden("wrong admin token".into()));
    }
    Ok(())
}

/// `GET /api/v1/sources`: every source in force, by priority; credentials only as where
/// they come from, never their values.
async fn sources(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let statics: Vec<&str> = state
        .config
        .sources
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut out = Vec::new();
    for s in state.sources.all().iter() {
        let spec = &s.spec;
        out.push(serde_json::json!({
            "name": spec.name,
            "protocol": spec.protocol.as_str(),
            "url": spec.url,
            "priority": spec.priority,
            "enabled": spec.enabled,
            "include": spec.include,
            "exclude": spec.exclude,
            "ttl": spec.ttl,
            "credentials": spec.credentials.as_ref().map(|c| c.describe()),
            "origin": if statics.contains(&spec.name.as_str()) { "configuration" } else { "database" },
            "generation": state.cache.generation(&spec.name).await,
        }));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sources": out })))
}

/// `POST /api/v1/sources/{name}/invalidate`: bumps the source's cache generation, so
/// every replica drops its cached pages, packuments and metadata of that source (stored
/// artifacts are immutable and stay).
async fn invalidate(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let name = name.into_inner();
    if !state.sources.all().iter().any(|s| s.spec.name == name) {
        return Err(ApiError::NotFound(format!("no source named {name:?}")));
    }
    let generation = state.cache.bump_generation(&name).await.ok_or_else(|| {
        ApiError::BadGateway("the cache did not answer; nothing was invalidated".into())
    })?;
    tracing::info!(upstream.source = %name, generation, "source invalidated by the admin API");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "source": name, "generation": generation })))
}

/// The checks every artifact operation starts with: the admin token, a SHA-256, and a
/// database to act on.
fn artifact_operation(
    state: &AppState,
    req: &HttpRequest,
    raw_sha: &str,
) -> Result<(String, std::sync::Arc<dyn crate::db::ArtifactRepository>), ApiError> {
    authorize(state, req)?;
    let sha = super::deps::check_sha(raw_sha)?;
    let repo = state.db().ok_or(ApiError::DatabaseUnavailable)?.clone();
    Ok((sha, repo))
}

/// `DELETE /api/v1/artifacts/{sha256}`: removes every path mapped to the artifact, its
/// row and dependencies, then its bytes (nothing references them any more). The next
/// request for one of those paths fetches the file again — the way out when an upstream
/// re-published a file under the same name with other bytes.
async fn purge(
    state: web::Data<AppState>,
    req: HttpRequest,
    sha: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (sha, repo) = artifact_operation(&state, &req, &sha)?;
    let purged = repo.purge_artifact(&sha).await?;
    // (S3 answers a DELETE of a missing key with success: ask first)
    let bytes = match state.storage.head(&sha).await {
        Ok(_) => {
            state.storage.delete(&sha).await?;
            true
        }
        Err(crate::storage::StorageError::NotFound) => false,
        Err(e) => return Err(e.into()),
    };
    if purged.urls == 0 && !purged.artifact && !bytes {
        return Err(ApiError::NotFound(format!("no artifact has SHA-256 {sha}")));
    }
    tracing::info!(artifact.sha256 = %sha, urls = purged.urls, "artifact purged by the admin API");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sha256": sha, "urls": purged.urls, "artifact": purged.artifact, "bytes": bytes,
    })))
}

#[derive(serde::Deserialize, Default)]
struct QuarantineBody {
    reason: Option<String>,
}

/// `PUT /api/v1/artifacts/{sha256}/quarantine` (optional JSON `{"reason": "…"}`): every
/// replica answers 451 for the artifact within a second.
async fn quarantine(
    state: web::Data<AppState>,
    req: HttpRequest,
    sha: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (sha, repo) = artifact_operation(&state, &req, &sha)?;
    let body: QuarantineBody = if body.iter().all(u8::is_ascii_whitespace) {
        QuarantineBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("body: {e} (expected {{\"reason\": \"…\"}})"))
        })?
    };
    let reason: String = body
        .reason
        .unwrap_or_else(|| "quarantined by an administrator".into())
        .chars()
        .filter(|c| !c.is_control())
        .take(500)
        .collect();
    let entry = crate::db::Quarantined {
        sha256: sha.clone(),
        reason: reason.clone(),
        created_at: crate::db::now_unix(),
    };
    repo.quarantine(&entry).await?;
    state.proxy.quarantine.forget().await;
    tracing::warn!(artifact.sha256 = %sha, reason = %reason, "artifact quarantined by the admin API");
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "sha256": sha, "quarantined": true, "reason": reason })))
}

/// `DELETE /api/v1/artifacts/{sha256}/quarantine`: lifts it.
async fn release(
    state: web::Data<AppState>,
    req: HttpRequest,
    sha: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (sha, repo) = artifact_operation(&state, &req, &sha)?;
    if !repo.unquarantine(&sha).await? {
        return Err(ApiError::NotFound(format!("{sha} is not quarantined")));
    }
    state.proxy.quarantine.forget().await;
    tracing::info!(artifact.sha256 = %sha, "quarantine lifted by the admin API");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sha256": sha, "quarantined": false })))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    quarantined: Option<bool>,
}

/// `GET /api/v1/artifacts?quarantined=true`: the quarantined artifacts, each with its
/// reason, when it was quarantined and the paths that map to it.
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    if query.quarantined != Some(true) {
        return Err(ApiError::BadRequest(
            "only ?quarantined=true is supported".into(),
        ));
    }
    let repo = state.db().ok_or(ApiError::DatabaseUnavailable)?;
    let mut out = Vec::new();
    for q in repo.quarantined().await? {
        let paths: Vec<serde_json::Value> = repo
            .cached_urls_of(&q.sha256)
            .await?
            .into_iter()
            .map(
                |u| serde_json::json!({"protocol": u.protocol, "source": u.source, "path": u.path}),
            )
            .collect();
        out.push(serde_json::json!({
            "sha256": q.sha256, "reason": q.reason, "quarantined_at": q.created_at, "paths": paths,
        }));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "artifacts": out })))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/sources", web::get().to(sources))
        .route(
            "/api/v1/sources/{name}/invalidate",
            web::post().to(invalidate),
        )
        .route("/api/v1/artifacts", web::get().to(list))
        .route("/api/v1/artifacts/{sha256}", web::delete().to(purge))
        .route(
            "/api/v1/artifacts/{sha256}/quarantine",
            web::put().to(quarantine),
        )
        .route(
            "/api/v1/artifacts/{sha256}/quarantine",
            web::delete().to(release),
        );
}
