//! The operator's Prometheus metrics and the small HTTP listener that serves them
//! (`/metrics`, `/healthz`) on `ORCHARD_OPERATOR_METRICS_ADDR`. Labels never carry
//! secret material: reasons are fixed words, never messages.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `result` = `success` | `error`.
    pub reconciles: IntCounterVec,
    /// `reason` = the `Ready` condition reason of the failure (e.g. `SecretNotFound`).
    pub failures: IntCounterVec,
    pub duration: Histogram,
    /// From the change of the resource (or its Secret) to the invalidation published.
    pub invalidation_lag: Histogram,
    /// 1 while this process holds the Lease.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "orchard_operator_reconciles_total",
                "UpstreamSource reconciles by result",
            ),
            &["result"],
        )
        .unwrap();
        let failures = IntCounterVec::new(
            Opts::new(
                "orchard_operator_reconcile_failures_total",
                "Failed reconciles by reason",
            ),
            &["reason"],
        )
        .unwrap();
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "orchard_operator_reconcile_duration_seconds",
                "Time one reconcile takes",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .unwrap();
        let invalidation_lag = Histogram::with_opts(
            HistogramOpts::new(
                "orchard_operator_invalidation_lag_seconds",
                "From an UpstreamSource (or Secret) change to the invalidation being published (1 s resolution: API timestamps)",
            )
            .buckets(vec![0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )
        .unwrap();
        let leader = IntGauge::new(
            "orchard_operator_leader",
            "1 while this operator holds the leader Lease",
        )
        .unwrap();
        registry.register(Box::new(reconciles.clone())).unwrap();
        registry.register(Box::new(failures.clone())).unwrap();
        registry.register(Box::new(duration.clone())).unwrap();
        registry
            .register(Box::new(invalidation_lag.clone()))
            .unwrap();
        registry.register(Box::new(leader.clone())).unwrap();
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            invalidation_lag,
            leader,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("utf-8 metrics")
    }
}

/// Serves `/metrics` and `/healthz` until the task is dropped. Requests are read with
/// a size cap and a timeout; anything else is a 404.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "operator metrics listening");
    loop {
        let (mut conn, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = conn.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let line = buf[..len].split(|b| *b == b'\r').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split(' ');
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, body, ctype) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", metrics.render(), "text/plain; version=0.0.4"),
                ("GET", "/healthz") => ("200 OK", "ok\n".to_string(), "text/plain"),
                _ => ("404 Not Found", "not found\n".to_string(), "text/plain"),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
