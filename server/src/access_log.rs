//! The access log: one line per package request when its response ends (or is dropped
//! unfinished), target `orchard::access`, in the process's log format (`text` or
//! `json`). Fields: method, path (never the query: it may carry tokens), route pattern,
//! status, cache outcome, source, bytes sent, whether the body was sent whole, duration
//! and the connection's peer address. `ORCHARD_ACCESS_LOG=false` turns it off.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use bytes::Bytes;

use crate::proxy::response::ServedBy;
use crate::proxy::CacheStatus;

struct Line {
    method: String,
    path: String,
    route: String,
    status: u16,
    cache: &'static str,
    source: String,
    peer: String,
    started: Instant,
    expected: Option<u64>,
}

/// A response body that counts what it sends and writes the line when it is dropped.
pub struct Logged {
    inner: BoxBody,
    line: Option<Line>,
    sent: u64,
    ended: bool,
}

impl MessageBody for Logged {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(b))) => self.sent += b.len() as u64,
            Poll::Ready(None) => self.ended = true,
            _ => {}
        }
        polled
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let Some(l) = self.line.take() else { return };
        let complete = match l.expected {
            Some(n) => self.sent == n,
            None => self.ended,
        };
        tracing::info!(
            target: "orchard::access",
            method = %l.method,
            path = %l.path,
            route = %l.route,
            status = l.status,
            cache = l.cache,
            source = %l.source,
            bytes = self.sent,
            complete,
            duration_ms = l.started.elapsed().as_secs_f64() * 1000.0,
            peer = %l.peer,
            "request"
        );
    }
}

/// The `/sources/{name}/…` segment of a path, when there is one.
fn source_of_path(path: &str) -> Option<&str> {
    path.strip_prefix("/sources/")?.split('/').next()
}

/// Middleware: wraps each response body in `Logged`.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<Logged>, actix_web::Error> {
    let enabled = req
        .app_data::<web::Data<crate::state::AppState>>()
        .is_none_or(|s| s.config.server.access_log);
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.path().to_string();
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let res = next.call(req).await?;
    let line = enabled.then(|| {
        let response = res.response();
        let source = response
            .extensions()
            .get::<ServedBy>()
            .map(|s| s.0.clone())
            .or_else(|| source_of_path(&path).map(str::to_string))
            .unwrap_or_else(|| "-".into());
        let cache = response
            .extensions()
            .get::<CacheStatus>()
            .copied()
            .unwrap_or(CacheStatus::Bypass)
            .as_str();
        Line {
            route: res
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".into()),
            status: res.status().as_u16(),
            expected: match response.body().size() {
                BodySize::Sized(n) => Some(n),
                BodySize::None => Some(0),
                BodySize::Stream => None,
            },
            method,
            path,
            cache,
            source,
            peer,
            started,
        }
    });
    Ok(res.map_body(|_, body| Logged {
        inner: body.boxed(),
        line,
        sent: 0,
        ended: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_from_paths() {
        assert_eq!(
            source_of_path("/sources/internal/simple/x/"),
            Some("internal")
        );
        assert_eq!(source_of_path("/pypi/simple/x/"), None);
    }
}
