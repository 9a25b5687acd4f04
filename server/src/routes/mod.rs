//! Every route of the package listener, registered in one place, and the middleware
//! that counts requests. Protocol handlers join here as they land.

pub mod admin;
pub mod deps;
pub mod health;
pub mod maven;
pub mod npm;
pub mod pypi;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::metrics::metrics;
use crate::proxy::CacheStatus;

const PROTOCOLS: [&str; 3] = ["pypi", "npm", "maven"];

fn protocol_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    PROTOCOLS
        .iter()
        .find(|p| **p == first)
        .copied()
        .unwrap_or(match first {
            "sources" => "source",
            "api" => "api",
            _ => "other",
        })
}

/// Counts `orchard_http_requests_total{protocol,route,status,cache}` and times
/// `orchard_http_request_duration_seconds`. `route` is the matched pattern, never the raw
/// path, so hostile paths cannot blow up label cardinality.
pub async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let protocol = protocol_of(req.path());
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let cache = res
        .response()
        .extensions()
        .get::<CacheStatus>()
        .copied()
        .unwrap_or(CacheStatus::Bypass);
    let status = res.status().as_u16().to_string();
    let m = metrics();
    m.http_requests
        .with_label_values(&[protocol, &route, &status, cache.as_str()])
        .inc();
    m.http_request_duration
        .with_label_values(&[protocol, &route])
        .observe(started.elapsed().as_secs_f64());
    Ok(res)
}

/// Refuses requests whose headers add up to more than `ORCHARD_MAX_HEADER_BYTES` (431),
/// before any handler (or upstream) sees them.
pub async fn limit_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = req
        .app_data::<web::Data<crate::state::AppState>>()
        .map(|s| s.config.max_header_bytes)
        .unwrap_or(usize::MAX);
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > limit {
        let res = actix_web::ResponseError::error_response(&ApiError::HeadersTooLarge(limit));
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

async fn index() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "name": "orchard",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "caching proxy for package registries",
    }))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

/// The package listener's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index));
    pypi::configure(cfg);
    npm::configure(cfg);
    maven::configure(cfg);
    deps::configure(cfg);
    admin::configure(cfg);
}

/// Matches `/sources/{source}/…` only when `{source}` is an enabled source of
/// `protocol`, so each protocol owns its sources' URL space (an npm package may be
/// called `simple`).
pub fn source_protocol(protocol: crate::sources::Protocol) -> impl actix_web::guard::Guard {
    actix_web::guard::fn_guard(move |ctx| {
        let Some(name) = ctx.head().uri.path().split('/').nth(2) else {
            return false;
        };
        let Some(state) = ctx.app_data::<web::Data<crate::state::AppState>>() else {
            return false;
        };
        state.sources.get(protocol, name).is_some()
    })
}

pub fn default_service() -> actix_web::Route {
    web::to(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_label_is_bounded() {
        assert_eq!(protocol_of("/pypi/simple/x/"), "pypi");
        assert_eq!(protocol_of("/npm/@s/x"), "npm");
        assert_eq!(protocol_of("/sources/internal/simple/"), "source");
        assert_eq!(protocol_of("/%2e%2e/etc/passwd"), "other");
        assert_eq!(protocol_of(""), "other");
    }
}
