//! The admin API (bearer token `ORCHARD_ADMIN_TOKEN`; unset = off): the sources in
//! force and cache invalidation of one source. Ensure files live in `deps::api`.

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

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/sources", web::get().to(sources)).route(
        "/api/v1/sources/{name}/invalidate",
        web::post().to(invalidate),
    );
}
