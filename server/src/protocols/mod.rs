//! Protocol adapters: what differs between registries. The shared flow is `proxy`.

pub mod maven;
pub mod npm;
pub mod pypi;

use crate::error::ApiError;

/// One percent-decoded path segment; control characters are refused.
pub fn decode_segment(segment: &str) -> Result<String, ApiError> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    let s = String::from_utf8(bytes).map_err(|_| ApiError::BadRequest("path is not UTF-8".into()))?;
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
