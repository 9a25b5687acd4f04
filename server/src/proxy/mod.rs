//! PackageProxyBase: the flow every protocol shares (DESIGN §3).
//!
//! - `document`: mutable documents — cache, revalidate, stale-if-error, negative cache.
//! - `artifact`: immutable artifacts — lookup, single-flight fill streamed to the first
//!   client while hashed and stored, verify, commit.
//! - `response`: serving stored artifacts (HEAD, Range, ETag).
//! - `singleflight`: one upstream call for concurrent misses on a replica.
//!
//! Protocols supply URLs, parsers, renderers and hooks; none of them touches the cache,
//! the storage or the database directly for these flows.

pub mod artifact;
pub mod document;
mod flow;
pub mod persisted;
pub mod quarantine;
pub mod response;
pub mod singleflight;
#[cfg(test)]
mod tests;

pub use flow::Flow;

use crate::error::ApiError;
use crate::http_client::UpstreamError;

/// How a response was served, set by the flow (or a handler) as a response extension; `bypass` when
/// none is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// Why an upstream fetch failed; cloneable so single-flight waiters share it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("the upstream registry did not answer in time")]
    Timeout,
    #[error("{0}")]
    Upstream(String),
    #[error("not found upstream")]
    NotFound,
    /// The request's own lookup found nothing (e.g. the file is not on the index).
    #[error("{0}")]
    Missing(String),
    #[error("the metadata database is unavailable")]
    Database,
    #[error("the upstream bytes do not match the declared hash")]
    HashMismatch,
    #[error("internal error: {0}")]
    Internal(String),
    /// Another request's fill of the same file did not finish within
    /// `ORCHARD_FILL_WAIT_TIMEOUT`.
    #[error("the file is still being fetched by another request after {0} s (ORCHARD_FILL_WAIT_TIMEOUT); try again later")]
    FillWait(u64),
    /// A backing service cannot do its part now (artifact storage, the fill lock).
    #[error("{0}")]
    Unavailable(String),
    /// The bytes are quarantined.
    #[error("{0}")]
    Quarantined(String),
}

impl FetchError {
    /// A stable label of the reason: the `reason` of the JSON error body and of
    /// `orchard_fetch_failures_total`.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Timeout => "upstream_timeout",
            FetchError::Upstream(_) => "upstream_error",
            FetchError::NotFound => "not_found_upstream",
            FetchError::Missing(_) => "not_listed",
            FetchError::Database => "database_unavailable",
            FetchError::HashMismatch => "hash_mismatch",
            FetchError::Internal(_) => "internal",
            FetchError::FillWait(_) => "fill_wait_timeout",
            FetchError::Unavailable(_) => "backend_unavailable",
            FetchError::Quarantined(_) => "quarantined",
        }
    }
}

impl FetchError {
    /// The fetch failure an answer stands for, when followers of a fill can share it
    /// (`None`: an error of this request alone — a bad request, say).
    pub fn shareable(e: &ApiError) -> Option<FetchError> {
        Some(match e.answered() {
            ApiError::NotFound(m) => FetchError::Missing(m.clone()),
            ApiError::BadGateway(m) => FetchError::Upstream(m.clone()),
            ApiError::GatewayTimeout => FetchError::Timeout,
            ApiError::DatabaseUnavailable => FetchError::Database,
            ApiError::Quarantined(m) => FetchError::Quarantined(m.clone()),
            ApiError::Unavailable(m) => FetchError::Unavailable(m.clone()),
            _ => return None,
        })
    }
}

/// An error of a step of a fill (a lookup, the quarantine check) as the fill's failure:
/// its kind kept, so that a database or storage outage stays a 503.
impl From<ApiError> for FetchError {
    fn from(e: ApiError) -> Self {
        FetchError::shareable(&e).unwrap_or_else(|| FetchError::Internal(e.to_string()))
    }
}

/// A database call of a fill: unavailable (connection lost, pool exhausted) is
/// `Database` — a 503 —, anything else internal.
impl From<crate::db::DbError> for FetchError {
    fn from(e: crate::db::DbError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable during a fill");
            FetchError::Database
        } else {
            FetchError::Internal(e.to_string())
        }
    }
}

impl From<UpstreamError> for FetchError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout => FetchError::Timeout,
            UpstreamError::Connect(_) => {
                FetchError::Upstream("cannot reach the upstream registry".into())
            }
            UpstreamError::Request(_) => FetchError::Upstream("the upstream request failed".into()),
        }
    }
}

impl From<FetchError> for ApiError {
    fn from(e: FetchError) -> Self {
        let reason = e.label();
        crate::metrics::metrics()
            .fetch_failures
            .with_label_values(&[reason])
            .inc();
        let error = match e {
            FetchError::Timeout => ApiError::GatewayTimeout,
            FetchError::Upstream(m) => ApiError::BadGateway(m),
            FetchError::NotFound => ApiError::NotFound("not found upstream".into()),
            FetchError::Missing(m) => ApiError::NotFound(m),
            FetchError::Database => ApiError::DatabaseUnavailable,
            FetchError::HashMismatch => ApiError::BadGateway(
                "the upstream bytes do not match the declared hash; nothing was stored".into(),
            ),
            FetchError::Internal(m) => {
                tracing::error!(error = %m, "artifact fill failed");
                ApiError::Internal
            }
            e @ FetchError::FillWait(_) => ApiError::WaitTimeout(e.to_string()),
            FetchError::Unavailable(m) => ApiError::Unavailable(m),
            FetchError::Quarantined(m) => ApiError::Quarantined(m),
        };
        ApiError::Fetch {
            reason,
            error: Box::new(error),
        }
    }
}

/// Per-replica state of the flow.
pub struct ProxyShared {
    pub documents: singleflight::SingleFlight<document::DocumentResult>,
    pub artifacts: singleflight::SingleFlight<artifact::FillResult>,
    /// Memory budget of upstream documents being read and parsed.
    pub document_work: document::WorkBudget,
    /// Quarantined artifacts, as this replica last read them.
    pub quarantine: quarantine::Memo,
}

impl ProxyShared {
    pub fn new(config: &crate::config::Config) -> Self {
        ProxyShared {
            documents: Default::default(),
            artifacts: Default::default(),
            document_work: document::WorkBudget::new(config.document_work_bytes),
            quarantine: Default::default(),
        }
    }
}
