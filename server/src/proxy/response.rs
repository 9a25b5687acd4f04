//! Responses for stored (immutable) artifacts: `ETag`/`If-None-Match`, `HEAD`, one
//! `Range`, `Content-Length`, and the bytes-served counter.

use std::ops::Range;

use actix_web::body::SizedStream;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use futures::StreamExt;

use crate::error::ApiError;
use crate::metrics::metrics;
use crate::proxy::CacheStatus;
use crate::storage::ArtifactStore;

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Part(Range<u64>),
    Unsatisfiable,
}

/// Parses one `bytes=` range against an object of `size` bytes. Several ranges, other
/// units or malformed values are ignored (the whole object is sent), as RFC 9110
/// allows.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        // suffix: the last N bytes
        let Ok(n) = end.parse::<u64>() else {
            return RangeRequest::Full;
        };
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Part(size.saturating_sub(n)..size);
    }
    let Ok(first) = start.parse::<u64>() else {
        return RangeRequest::Full;
    };
    let last = if end.is_empty() {
        size.saturating_sub(1)
    } else {
        match end.parse::<u64>() {
            Ok(l) if l >= first => l.min(size.saturating_sub(1)),
            _ => return RangeRequest::Full,
        }
    };
    if first >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part(first..last + 1)
}

pub fn etag_of(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

fn with_cache_status(mut res: HttpResponse, status: CacheStatus) -> HttpResponse {
    res.extensions_mut().insert(status);
    if let Ok(v) = header::HeaderValue::from_str(status.as_str()) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-orchard-cache"), v);
    }
    res
}

fn base(status: StatusCode, sha256: &str, content_type: &str) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::ETAG, etag_of(sha256)))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::CONTENT_TYPE, content_type));
    b
}

/// Serves a stored artifact. `Err(StorageError::NotFound)`-style absence surfaces as
/// `ApiError::NotFound`, which callers may treat as a miss.
pub async fn stored(
    store: &ArtifactStore,
    req: &HttpRequest,
    sha256: &str,
    size: u64,
    content_type: &str,
    cache: CacheStatus,
) -> Result<HttpResponse, ApiError> {
    let etag = etag_of(sha256);
    if let Some(inm) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if etag_matches(inm, &etag) {
            let res = HttpResponse::NotModified()
                .insert_header((header::ETAG, etag))
                .finish();
            return Ok(with_cache_status(res, cache));
        }
    }
    if req.method() == Method::HEAD {
        let res = base(StatusCode::OK, sha256, content_type).body(SizedStream::new(
            size,
            futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
        ));
        return Ok(with_cache_status(res, cache));
    }
    let range = parse_range(
        req.headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, wanted) = match range {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Part(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        RangeRequest::Unsatisfiable => {
            let res = HttpResponse::RangeNotSatisfiable()
                .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                .finish();
            return Ok(with_cache_status(res, cache));
        }
    };
    let (total, served, body) = store.get(sha256, wanted.clone()).await?;
    if total != size {
        // damaged from outside (a truncated file, an object replaced by hand): never
        // served as the artifact
        tracing::error!(
            sha256,
            recorded = size,
            stored = total,
            "stored artifact differs in size from its record; not served"
        );
        metrics().damaged_artifacts.inc();
        return Err(ApiError::Unavailable(format!(
            "the stored copy of artifact {sha256} is damaged; an administrator can purge it \
             (DELETE /api/v1/artifacts/{sha256}) so that it is fetched again"
        )));
    }
    let len = served.end - served.start;
    let body = body.map(|chunk| {
        if let Ok(b) = &chunk {
            metrics().artifact_bytes_served.inc_by(b.len() as u64);
        }
        chunk.map_err(std::io::Error::other)
    });
    let mut b = base(status, sha256, content_type);
    if wanted.is_some() {
        b.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", served.start, served.end - 1, size),
        ));
    }
    Ok(with_cache_status(
        b.body(SizedStream::new(len, body)),
        cache,
    ))
}

/// A page (index page, packument, metadata document) with its ETag: 304 when the
/// client's `If-None-Match` names it; varies by `Accept` (the representation), and
/// clients may reuse it for a minute.
pub fn page(
    req: &HttpRequest,
    content_type: &str,
    body: impl actix_web::body::MessageBody + 'static,
    etag: String,
    cache: CacheStatus,
) -> HttpResponse {
    let inm = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let res = if inm.is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::VARY, "Accept"))
            .finish()
    } else {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, content_type))
            .insert_header((header::VARY, "Accept"))
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, "max-age=60"))
            .body(body)
    };
    with_cache_status(res, cache)
}

/// The source that answered a request, put on the response by the flow (the access
/// log reads it).
#[derive(Debug, Clone)]
pub struct ServedBy(pub String);

/// Marks `res` as answered by `source`.
pub fn served_by(mut res: HttpResponse, source: &str) -> HttpResponse {
    res.extensions_mut().insert(ServedBy(source.to_string()));
    res
}

pub fn tag(res: HttpResponse, cache: CacheStatus) -> HttpResponse {
    with_cache_status(res, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Part(0..5));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Part(5..10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Part(7..10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Part(0..10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Part(8..10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=a-b"), 10), Full);
    }

    #[test]
    fn etags() {
        let e = etag_of("ab");
        assert!(etag_matches("\"ab\"", &e));
        assert!(etag_matches("\"x\", W/\"ab\"", &e));
        assert!(etag_matches("*", &e));
        assert!(!etag_matches("\"abc\"", &e));
    }
}
