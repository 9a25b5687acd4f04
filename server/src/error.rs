//! Errors.
//!
//! Rules: library modules return their own `thiserror` enums (`CacheError`, `DbError`,
//! `StorageError`, `UpstreamError`, `ConfigError`); `anyhow` only in `main` and start-up.
//! Handlers return `ApiError`, the one HTTP error type: it picks the status (not found →
//! 404, pool exhausted → 503, upstream timeout → 504, …) and renders one envelope,
//! `{"error": {"status": N, "code": "…", "message": "…"}}`, plus `"reason"` (a stable
//! label, `FetchError::label`) when an upstream fetch failed. Messages never carry
//! secrets or internal addresses; the detail is logged once, here.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::db::DbError;
use crate::http_client::UpstreamError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("the metadata database is unavailable")]
    DatabaseUnavailable,
    #[error("{0}")]
    BadGateway(String),
    #[error("the upstream registry did not answer in time")]
    GatewayTimeout,
    /// 504 for a wait on other work (a fill another request runs), with its reason.
    #[error("{0}")]
    WaitTimeout(String),
    /// 451: an admin quarantined the artifact.
    #[error("{0}")]
    Quarantined(String),
    /// 503: a backing service (artifact storage, the cache's fill lock) cannot do its
    /// part now; the client should retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A failed upstream fetch: answered as `error`, with the fetch's stable `reason`
    /// label (`FetchError::label`) in the body.
    #[error("{error}")]
    Fetch {
        reason: &'static str,
        error: Box<ApiError>,
    },
}

impl ApiError {
    /// The error as answered (a fetch failure answers as the error it maps to).
    pub fn answered(&self) -> &ApiError {
        match self {
            ApiError::Fetch { error, .. } => error.answered(),
            other => other,
        }
    }

    /// Whether this is a 404 (a missing thing, directly or from a fetch).
    pub fn is_not_found(&self) -> bool {
        matches!(self.answered(), ApiError::NotFound(_))
    }

    /// The stable reason label of a fetch failure.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            ApiError::Fetch { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self.answered() {
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotAcceptable(_) => "not_acceptable",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::DatabaseUnavailable => "database_unavailable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Quarantined(_) => "quarantined",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::GatewayTimeout | ApiError::WaitTimeout(_) => "gateway_timeout",
            ApiError::Internal => "internal",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Fetch { .. } => unreachable!("answered() unwraps fetch errors"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self.answered() {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::DatabaseUnavailable | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Quarantined(_) => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::GatewayTimeout | ApiError::WaitTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Fetch { .. } => unreachable!("answered() unwraps fetch errors"),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut error = serde_json::json!({
            "status": status.as_u16(), "code": self.code(), "message": self.to_string()
        });
        if let Some(reason) = self.reason() {
            error["reason"] = reason.into();
        }
        self.response_builder()
            .json(serde_json::json!({ "error": error }))
    }
}

impl ApiError {
    /// Seconds a client should wait before trying again, for answers that say "not now".
    fn retry_after(&self) -> Option<u32> {
        match self.answered() {
            ApiError::DatabaseUnavailable | ApiError::Unavailable(_) => Some(5),
            _ => None,
        }
    }

    fn response_builder(&self) -> actix_web::HttpResponseBuilder {
        let mut b = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            b.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        b
    }

    /// The npm registry's error body, `{"error": "<message>"}` — npm prints that string
    /// (a structured `error` shows as `[object Object]`); `code` is the stable label.
    pub fn npm_response(&self) -> HttpResponse {
        let mut body = serde_json::json!({
            "error": self.to_string(),
            "code": self.code(),
        });
        if let Some(reason) = self.reason() {
            body["reason"] = reason.into();
        }
        self.response_builder().json(body)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::DatabaseUnavailable
            }
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::Internal
            }
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => ApiError::NotFound("artifact not found".into()),
            StorageError::BadDigest(d) => {
                ApiError::BadRequest(format!("not a sha256 digest: {d:?}"))
            }
            StorageError::HashMismatch { .. } => ApiError::BadGateway(e.to_string()),
            StorageError::BadRange => ApiError::BadRequest(e.to_string()),
            StorageError::Config(_) => {
                tracing::error!(error = %e, "storage configuration error");
                ApiError::Internal
            }
            // the store did not answer or failed: a backing-service outage, not a bug
            StorageError::Store(_) | StorageError::Source(_) => {
                tracing::warn!(error = %e, "artifact store unavailable");
                ApiError::Unavailable("the artifact store is unavailable; try again".into())
            }
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout => ApiError::GatewayTimeout,
            UpstreamError::Connect(_) => {
                ApiError::BadGateway("cannot reach the upstream registry".into())
            }
            UpstreamError::Request(_) => ApiError::BadGateway("the upstream request failed".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::FetchError;

    async fn body_of(e: &ApiError) -> (u16, serde_json::Value) {
        let res = e.error_response();
        let status = res.status().as_u16();
        let bytes = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn fetch_failures_carry_a_stable_reason() {
        for (fetch, status, code, reason) in [
            (
                FetchError::Timeout,
                504,
                "gateway_timeout",
                "upstream_timeout",
            ),
            (
                FetchError::Upstream("upstream answered 500".into()),
                502,
                "bad_gateway",
                "upstream_error",
            ),
            (
                FetchError::HashMismatch,
                502,
                "bad_gateway",
                "hash_mismatch",
            ),
            (FetchError::NotFound, 404, "not_found", "not_found_upstream"),
            (
                FetchError::Unavailable("storage".into()),
                503,
                "unavailable",
                "backend_unavailable",
            ),
        ] {
            let e = ApiError::from(fetch);
            let (got, body) = body_of(&e).await;
            assert_eq!(got, status, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
            assert_eq!(body["error"]["reason"], reason, "{body}");
            assert_eq!(e.is_not_found(), status == 404);
        }
        // errors that are not fetch failures have no reason
        let (_, body) = body_of(&ApiError::BadRequest("bad".into())).await;
        assert!(body["error"].get("reason").is_none(), "{body}");
    }
}
