//! Protocol adapters: what differs between registries. The shared flow is `proxy`.

pub mod maven;
pub mod npm;
pub mod pypi;

use std::sync::Arc;

use crate::error::ApiError;
use crate::sources::{Protocol, Source};
use crate::state::AppState;

/// Which sources a request sees: all enabled sources of the protocol by priority
/// (`/pypi/…`, `/npm/…`, `/maven/…`) or one named source (`/sources/{name}/…`).
#[derive(Clone)]
pub enum View {
    Merged,
    Source(Arc<Source>),
}

impl View {
    pub fn sources(&self, state: &AppState, protocol: Protocol) -> Vec<Arc<Source>> {
        match self {
            View::Merged => state.sources.for_protocol(protocol),
            View::Source(s) => vec![s.clone()],
        }
    }

    /// The view of `/sources/{source}/{tail}`, with the raw tail.
    pub fn of_source_path(
        state: &AppState,
        path: &str,
        protocol: Protocol,
    ) -> Result<(View, String), ApiError> {
        let (name, tail) = source_and_tail(path)?;
        let source = state.sources.get(protocol, &name).ok_or_else(|| {
            ApiError::NotFound(format!(
                "no enabled {} source named {name:?}",
                protocol.as_str()
            ))
        })?;
        Ok((View::Source(source), tail))
    }
}

/// One percent-decoded path segment; control characters are refused.
pub fn decode_segment(segment: &str) -> Result<String, ApiError> {
    let bytes: Vec<u8> =
        url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default();
    let s =
        String::from_utf8(bytes).map_err(|_| ApiError::BadRequest("path is not UTF-8".into()))?;
    if s.chars().any(|c| c.is_control()) {
        return Err(ApiError::BadRequest("control characters in path".into()));
    }
    Ok(s)
}

/// `/sources/{source}/{tail}` of a request: the decoded source name and the raw
/// (still percent-encoded) tail.
pub fn source_and_tail(path: &str) -> Result<(String, String), ApiError> {
    let mut parts = path.splitn(4, '/').skip(2);
    let source = decode_segment(parts.next().unwrap_or(""))?;
    Ok((source, parts.next().unwrap_or("").to_string()))
}
