//! HttpClientManager: pooled keep-alive `awc` clients for upstream calls — a default
//! pool plus one pool per upstream source with its own timeouts and credentials. A
//! source's credentials are sent only to the source's own origin (scheme, host, port):
//! a URL an index names on any other host gets no `Authorization` header.
//!
//! `awc::Client` is bound to the thread (actix worker) that made it, so each worker
//! keeps its own clients, built lazily from the registered pool settings and rebuilt
//! when those change. `ORCHARD_HTTP_MAX_CONNECTIONS` is the replica-wide bound of each
//! pool: every worker's connector gets an equal share of it. Idle connections stay
//! open for `KEEPALIVE_IDLE` and are then closed; upstream pools speak HTTP/1.1 only
//! (see docs/architecture.md on the h2 advisory).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use awc::http::Version;
use secrecy::{ExposeSecret, SecretString};

use crate::config::HttpConfig;
use crate::metrics::metrics;

const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const DEFAULT_POOL: &str = "";

#[derive(Clone)]
pub enum UpstreamAuth {
    Basic {
        username: String,
        password: SecretString,
    },
    Bearer(SecretString),
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            UpstreamAuth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// Settings of one upstream's pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub auth: Option<UpstreamAuth>,
    /// The only origin (`scheme://host:port`) `auth` is sent to.
    pub origin: Option<String>,
}

impl PoolSettings {
    /// Equal settings (credentials compared by value).
    fn same_as(&self, other: &PoolSettings) -> bool {
        self.connect_timeout == other.connect_timeout
            && self.read_timeout == other.read_timeout
            && self.origin == other.origin
            && self.auth.as_ref().map(UpstreamAuth::header_value)
                == other.auth.as_ref().map(UpstreamAuth::header_value)
    }
}

impl UpstreamAuth {
    fn header_value(&self) -> String {
        use base64::Engine;
        match self {
            UpstreamAuth::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose_secret()))
            ),
            UpstreamAuth::Bearer(token) => format!("Bearer {}", token.expose_secret()),
        }
    }
}

/// `scheme://host:port` of a URL (default ports made explicit by `url`'s rules).
pub fn origin_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream timed out")]
    Timeout,
    #[error("cannot connect to upstream: {0}")]
    Connect(String),
    #[error("upstream request failed: {0}")]
    Request(String),
}

impl UpstreamError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Connect(_) => "connect_error",
            UpstreamError::Request(_) => "error",
        }
    }
}

struct Registered {
    settings: PoolSettings,
    version: u64,
}

pub struct HttpClientManager {
    config: HttpConfig,
    per_worker_limit: usize,
    pools: RwLock<HashMap<String, Registered>>,
    versions: AtomicU64,
    active: Arc<AtomicI64>,
    /// Origins that answered HTTP/1.0 without `Connection: keep-alive`: they close every
    /// connection after the response, so requests to them are sent with
    /// `Connection: close` and never pooled (awc would pool such a connection).
    closing_origins: RwLock<std::collections::HashSet<String>>,
}

/// Bound of `closing_origins` (origins come from configuration and file hosts).
const MAX_CLOSING_ORIGINS: usize = 1024;

thread_local! {
    static CLIENTS: RefCell<HashMap<String, (u64, awc::Client)>> = RefCell::new(HashMap::new());
}

/// Counts one upstream request in flight while alive.
pub struct ActiveGuard(Arc<AtomicI64>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics().http_client_active.set(now);
    }
}

impl HttpClientManager {
    pub fn new(config: &HttpConfig, workers: usize) -> Self {
        let per_worker_limit = config.max_connections.div_ceil(workers.max(1));
        metrics().http_client_max.set(config.max_connections as i64);
        let default = PoolSettings {
            connect_timeout: config.connect_timeout(),
            read_timeout: config.read_timeout(),
            auth: None,
            origin: None,
        };
        let mut pools = HashMap::new();
        pools.insert(
            DEFAULT_POOL.to_string(),
            Registered {
                settings: default,
                version: 0,
            },
        );
        HttpClientManager {
            config: config.clone(),
            per_worker_limit,
            pools: RwLock::new(pools),
            versions: AtomicU64::new(1),
            active: Arc::new(AtomicI64::new(0)),
            closing_origins: RwLock::new(Default::default()),
        }
    }

    /// Default settings for an upstream pool (from `ORCHARD_HTTP_*`).
    pub fn default_settings(&self) -> PoolSettings {
        PoolSettings {
            connect_timeout: self.config.connect_timeout(),
            read_timeout: self.config.read_timeout(),
            auth: None,
            origin: None,
        }
    }

    /// Adds or replaces an upstream's pool; workers rebuild their client (dropping its
    /// kept-alive connections) on next use — only when the settings changed.
    pub fn register(&self, name: &str, settings: PoolSettings) {
        let mut pools = self.pools.write().expect("pool lock poisoned");
        if pools
            .get(name)
            .is_some_and(|r| r.settings.same_as(&settings))
        {
            return;
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        pools.insert(name.to_string(), Registered { settings, version });
    }

    /// The version of a pool's settings (changes only when they change).
    pub fn pool_version(&self, name: &str) -> u64 {
        self.settings(name).1
    }

    pub fn remove(&self, name: &str) {
        self.pools.write().expect("pool lock poisoned").remove(name);
    }

    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.config.max_connections
    }

    /// The calling worker's client for `pool` (`None` = the default pool; an unknown
    /// name also gets the default settings).
    pub fn client(&self, pool: Option<&str>) -> awc::Client {
        let name = pool.unwrap_or(DEFAULT_POOL);
        let (settings, version) = self.settings(name);
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            match clients.get(name) {
                Some((v, c)) if *v == version => c.clone(),
                _ => {
                    let c = self.build(&settings);
                    clients.insert(name.to_string(), (version, c.clone()));
                    c
                }
            }
        })
    }

    fn settings(&self, name: &str) -> (PoolSettings, u64) {
        let pools = self.pools.read().expect("pool lock poisoned");
        let r = pools
            .get(name)
            .or_else(|| pools.get(DEFAULT_POOL))
            .expect("default pool exists");
        (r.settings.clone(), r.version)
    }

    /// The `Authorization` value for a request to `url` through `pool`: only when the URL
    /// is on the pool's own origin.
    fn authorization(&self, pool: Option<&str>, url: &str) -> Option<String> {
        let (settings, _) = self.settings(pool.unwrap_or(DEFAULT_POOL));
        let auth = settings.auth?;
        (settings.origin.is_some() && settings.origin == origin_of(url))
            .then(|| auth.header_value())
    }

    fn build(&self, settings: &PoolSettings) -> awc::Client {
        let connector = awc::Connector::new()
            .limit(self.per_worker_limit)
            .timeout(settings.connect_timeout)
            .conn_keep_alive(KEEPALIVE_IDLE)
            .max_http_version(Version::HTTP_11);
        // No credentials here: `get` adds them per request, for the source's origin only.
        awc::Client::builder()
            .connector(connector)
            .timeout(settings.read_timeout)
            .disable_redirects()
            .add_default_header(("user-agent", concat!("orchard/", env!("CARGO_PKG_VERSION"))))
            .finish()
    }

    /// Marks one upstream request in flight (for the active gauge).
    pub fn track(&self) -> ActiveGuard {
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        metrics().http_client_active.set(now);
        ActiveGuard(self.active.clone())
    }

    /// Sends a GET through `pool`, counting it by source and status.
    pub async fn get(
        &self,
        pool: Option<&str>,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<awc::ClientResponse, UpstreamError> {
        let source = pool.unwrap_or("default");
        let _guard = self.track();
        let client = self.client(pool);
        let authorization = self.authorization(pool, url);
        let origin = origin_of(url);
        let closing = origin.as_ref().is_some_and(|o| {
            self.closing_origins
                .read()
                .expect("origins lock poisoned")
                .contains(o)
        });
        let request = |client: &awc::Client| {
            let mut req = client.get(url);
            if closing {
                req = req.force_close();
            }
            if let Some(a) = &authorization {
                req = req.insert_header(("authorization", a.as_str()));
            }
            for (k, v) in headers {
                req = req.insert_header((*k, *v));
            }
            req
        };
        let started = Instant::now();
        let mut result = request(&client).send().await;
        // No response byte came back (the connection was closed or reset under the
        // request: load shedding, a keep-alive race, a server that closed a connection
        // it never meant to keep): the upstream processed nothing, and a GET is safe to
        // send once more — on a new connection, not another pooled one.
        if result.as_ref().is_err_and(unanswered) {
            tracing::debug!(upstream.source = source, upstream.url = %crate::file_url::redact(url), "upstream closed the connection unanswered; retrying once on a new connection");
            let fresh = self.build(&self.settings(pool.unwrap_or(DEFAULT_POOL)).0);
            result = request(&fresh).send().await;
        }
        if let (Ok(resp), Some(origin)) = (&result, origin) {
            if !closing && closes_after_response(resp) {
                let mut set = self.closing_origins.write().expect("origins lock poisoned");
                if set.len() < MAX_CLOSING_ORIGINS {
                    tracing::info!(upstream.source = source, upstream.origin = %origin, "upstream answers HTTP/1.0 without keep-alive; its connections are not pooled");
                    set.insert(origin);
                }
            }
        }
        metrics()
            .upstream_request_duration
            .with_label_values(&[source])
            .observe(started.elapsed().as_secs_f64());
        let result = result.map_err(|e| match e {
            awc::error::SendRequestError::Timeout => UpstreamError::Timeout,
            awc::error::SendRequestError::Connect(awc::error::ConnectError::Timeout) => {
                UpstreamError::Timeout
            }
            awc::error::SendRequestError::Connect(c) => UpstreamError::Connect(c.to_string()),
            other => UpstreamError::Request(other.to_string()),
        });
        let status = match &result {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => {
                // The URL carries no credentials (sources refuse them; auth is a header).
                tracing::warn!(upstream.source = source, upstream.url = %crate::file_url::redact(url), error = %e, "upstream request failed");
                e.metric_label().to_string()
            }
        };
        metrics()
            .upstream_requests
            .with_label_values(&[source, &status])
            .inc();
        result
    }
}

/// An error before any response byte: the request can be sent again.
fn unanswered(e: &awc::error::SendRequestError) -> bool {
    use awc::error::{ConnectError, SendRequestError};
    match e {
        SendRequestError::Connect(ConnectError::Disconnected) | SendRequestError::Send(_) => true,
        SendRequestError::Response(actix_web::error::ParseError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

/// An HTTP/1.0 response without `Connection: keep-alive`: the server closes the
/// connection after it.
fn closes_after_response(resp: &awc::ClientResponse) -> bool {
    resp.version() == Version::HTTP_10
        && !resp
            .headers()
            .get(actix_web::http::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("keep-alive"))
}

/// Why a bounded body read stopped.
#[derive(Debug)]
pub enum BodyError {
    /// More than the limit (by `Content-Length` before reading, or while reading).
    Overflow,
    Payload(String),
}

/// Reads a whole response body of at most `limit` bytes into one buffer, sized from
/// `Content-Length` up front so a large document is not copied while it grows (awc's
/// own collector doubles its buffer: up to 3× the document at the last copy).
pub async fn read_body(
    resp: &mut awc::ClientResponse,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    use futures::StreamExt;
    let declared = resp
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::Overflow);
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut payload = actix_web::HttpMessage::take_payload(resp);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Payload(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::Overflow);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
