//! Typed configuration, read once from `ORCHARD_*` environment variables.
//!
//! Every variable, its default and its meaning:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `ORCHARD_LISTEN_ADDR` | `0.0.0.0:8080` | package traffic |
//! | `ORCHARD_ADMIN_ADDR` | `0.0.0.0:9090` | `/healthz`, `/readyz`, `/metrics` |
//! | `ORCHARD_WORKERS` | number of CPUs | actix worker threads per listener |
//! | `ORCHARD_SHUTDOWN_TIMEOUT` | `30` | seconds to drain in-flight requests on SIGTERM |
//! | `ORCHARD_CLIENT_WRITE_TIMEOUT` | `60` | seconds a client may leave response bytes unread (zero window) before its connection is dropped (`TCP_USER_TIMEOUT`) |
//! | `ORCHARD_LOG_FORMAT` | `text` | `text` or `json` (the filter is `RUST_LOG`, default `info`) |
//! | `ORCHARD_ACCESS_LOG` | `true` | one line per package request (target `orchard::access`): method, path without query, route, status, cache outcome, source, bytes, complete, duration, peer |
//! | `ORCHARD_DATA_DIR` | `./orchard-data` | embedded mode: SQLite file and artifact directory |
//! | `ORCHARD_DATABASE_URL` | `sqlite://$ORCHARD_DATA_DIR/orchard.db` | `postgres://…` or `sqlite://…` |
//! | `ORCHARD_DATABASE_POOL_SIZE` | `20` | connections kept by the pool |
//! | `ORCHARD_DATABASE_MAX_OVERFLOW` | `30` | extra connections under load (max = size + overflow) |
//! | `ORCHARD_DATABASE_POOL_TIMEOUT` | `30` | seconds to wait for a free connection |
//! | `ORCHARD_DATABASE_POOL_PRE_PING` | `false` | `SELECT 1` on each checkout (without it: only the closed/broken check) |
//! | `ORCHARD_REDIS_CLUSTER_NODES` | unset | `host:port,…` of a Redis Cluster (wins over `ORCHARD_REDIS_HOST`) |
//! | `ORCHARD_REDIS_HOST` | unset | one Redis node; unset and no cluster = in-process cache |
//! | `ORCHARD_REDIS_PORT` | `6379` | port of that node |
//! | `ORCHARD_REDIS_DB` | `0` | database number of that node |
//! | `ORCHARD_REDIS_PASSWORD` | unset | Redis password (secret) |
//! | `ORCHARD_REDIS_TIMEOUT_MS` | `250` | per-call deadline; past it the request goes on without the cache |
//! | `ORCHARD_CACHE_NAMESPACE` | `orchard` | first segment of every cache key |
//! | `ORCHARD_CACHE_MAX_ENTRIES` | `100000` | entry bound of the in-process cache |
//! | `ORCHARD_CACHE_MAX_BYTES` | `268435456` | byte bound of the in-process cache |
//! | `ORCHARD_ADMIN_TOKEN` | — | bearer token of the admin API (unset: off) |
//! | `ORCHARD_DEPS_REQUIRE_TOKEN` | `false` | `GET /api/v1/artifacts/{sha256}/dependencies` needs the admin token too (the chart sets it) |
//! | `ORCHARD_CREDENTIALS_KEY` / `_FILE` | — | key that opens sealed upstream credentials |
//! | `ORCHARD_CACHE_TTL_INDEX` | `300` | seconds, PACKAGE_INDEX |
//! | `ORCHARD_CACHE_TTL_VERSIONS` | `300` | seconds, PACKAGE_VERSIONS |
//! | `ORCHARD_CACHE_TTL_UPSTREAM` | `3600` | seconds, UPSTREAM_SOURCES |
//! | `ORCHARD_CACHE_TTL_IMMUTABLE` | `604800` | seconds, immutable data (ARTIFACT_METADATA, ARTIFACT_DEPENDENCIES, DEPENDENCY_RESOLUTION): every key expires, the database holds the truth |
//! | `ORCHARD_S3_ENDPOINT` | unset | S3-compatible endpoint; unset = local directory |
//! | `ORCHARD_S3_BUCKET` | required with an endpoint | bucket |
//! | `ORCHARD_S3_REGION` | `us-east-1` | region used for signing |
//! | `ORCHARD_S3_ACCESS_KEY_ID` | required with an endpoint | access key |
//! | `ORCHARD_S3_SECRET_ACCESS_KEY` | required with an endpoint | secret key (secret) |
//! | `ORCHARD_S3_PREFIX` | empty | key prefix inside the bucket |
//! | `ORCHARD_HTTP_MAX_CONNECTIONS` | `100` | upstream connections per pool |
//! | `ORCHARD_HTTP_KEEPALIVE_CONNECTIONS` | `20` | idle upstream connections kept warm per pool |
//! | `ORCHARD_HTTP_CONNECT_TIMEOUT` | `30` | seconds |
//! | `ORCHARD_HTTP_READ_TIMEOUT` | `60` | seconds |
//! | `ORCHARD_HTTP_WORKER_THREADS` | `32` | bound of the pool for blocking work |
//! | `ORCHARD_FILL_LOCK_TTL` | `15` | seconds a replica's lock on an artifact fill lasts without renewal (a dead holder is replaced after this) |
//! | `ORCHARD_FILL_WAIT_TIMEOUT` | `900` | seconds a request waits for a fill another request runs (on any replica) before answering 504; the fill itself goes on |
//! | `ORCHARD_CACHE_TTL_NEGATIVE` | `60` | seconds an upstream 404 is remembered |
//! | `ORCHARD_CACHE_STALE_MAX` | `86400` | seconds an expired index page may still be served when the upstream fails |
//! | `ORCHARD_TRUSTED_PROXIES` | empty | comma-separated IPs or CIDRs whose `Forwarded` / `X-Forwarded-*` headers are believed; from anyone else they are ignored |
//! | `ORCHARD_PUBLIC_URL` | unset | `scheme://host[:port]` clients reach Orchard at (absolute links, e.g. npm tarballs); unset = from each request |
//! | `ORCHARD_MAX_HEADER_BYTES` | `32768` | largest total of request headers accepted (431 above) |
//! | `ORCHARD_MAX_INDEX_BYTES` | `67108864` | largest upstream index document accepted |
//! | `ORCHARD_DOCUMENT_WORK_BYTES` | `268435456` | memory budget of upstream documents read and parsed at once (each counted as 3× its size); more wait their turn |
//! | `ORCHARD_STORAGE_TMP_MAX_AGE` | `3600` | seconds after which what a killed fill left in storage (a temporary object, an incomplete S3 multipart upload) is removed by the storage cleaner (every 10 minutes, one replica at a time) |
//! | `ORCHARD_SOURCES_REFRESH` | `30` | seconds between reloads of the source list from the database (besides invalidation messages) |
//! | `ORCHARD_UPSTREAMS_FILE` | unset | YAML list of upstream sources (see `sources`) |
//! | `ORCHARD_UPSTREAM_PYPI` / `_NPM` / `_MAVEN` | unset | one upstream URL per protocol |

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// A bad configuration value. The message always names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// Where an `Env` reads a variable from.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Reads variables from any source (the process environment, or a map in tests).
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl<'a> Env<'a> {
    pub fn process() -> Env<'static> {
        Env {
            lookup: Box::new(|k| std::env::var(k).ok()),
        }
    }

    pub fn from_fn(f: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env {
            lookup: Box::new(f),
        }
    }

    /// The value, or `None` when unset or empty.
    pub fn var(&self, name: &'static str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn var_or(&self, name: &'static str, default: &str) -> String {
        self.var(name).unwrap_or_else(|| default.to_string())
    }

    pub fn required_var(&self, name: &'static str, why: &str) -> Result<String, ConfigError> {
        self.var(name).ok_or_else(|| ConfigError {
            var: name,
            message: format!("is required {why}"),
        })
    }

    pub fn var_parsed<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        match self.var(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse::<T>().map_err(|e| ConfigError {
                var: name,
                message: format!("cannot parse {raw:?}: {e}"),
            }),
        }
    }

    /// A whole number within `min..=max`.
    pub fn var_in_range(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let v: u64 = self.var_parsed(name, default)?;
        if v < min || v > max {
            return Err(ConfigError {
                var: name,
                message: format!("{v} is out of range {min}..={max}"),
            });
        }
        Ok(v)
    }

    pub fn var_bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.var(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError {
                    var: name,
                    message: format!("{v:?} is not a boolean (true/false)"),
                }),
            },
        }
    }

    fn secret(&self, name: &'static str) -> Option<SecretString> {
        self.var(name).map(SecretString::from)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub sources: Vec<crate::source_spec::SourceSpec>,
    pub max_index_bytes: usize,
    /// Bytes all upstream documents being read and parsed at once may take (estimated
    /// as `DOCUMENT_WORK_FACTOR` × their size); more wait.
    pub document_work_bytes: u64,
    pub max_header_bytes: usize,
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<Cidr>,
    pub sources_refresh: Duration,
    /// Temporary objects older than this are removed by the storage cleaner.
    pub storage_tmp_max_age: Duration,
    /// Opens upstream credentials the operator sealed into `upstream_sources` rows.
    pub credentials_key: Option<crate::credentials::CredentialsKey>,
    /// Bearer token of the admin API (`POST /api/v1/ensure`); unset = admin API off.
    pub admin_token: Option<SecretString>,
    pub deps_require_token: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub workers: usize,
    pub shutdown_timeout_secs: u64,
    pub client_write_timeout_secs: u64,
    pub log_format: LogFormat,
    /// One line per package request (`access_log`).
    pub access_log: bool,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone)]
pub enum DatabaseUrl {
    Postgres(SecretString),
    /// A file path for SQLite.
    Sqlite(PathBuf),
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl DatabaseUrl {
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            DatabaseUrl::Postgres(s) => redact_url(s.expose_secret()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DatabaseUrl::Postgres(_) => "postgres",
            DatabaseUrl::Sqlite(_) => "sqlite",
        }
    }
}

/// Replaces the password (and any query string, which may carry one) of a URL.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query().is_some() {
                u.set_query(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    pub pool_size: u32,
    pub max_overflow: u32,
    pub pool_timeout: Duration,
    pub pre_ping: bool,
}

#[derive(Debug, Clone)]
pub enum CacheBackendConfig {
    InProcess,
    Redis { host: String, port: u16, db: i64 },
    RedisCluster { nodes: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub backend: CacheBackendConfig,
    pub password: Option<SecretString>,
    pub timeout: Duration,
    pub namespace: String,
    pub max_entries: u64,
    /// Byte bound of the in-process cache (keys + values).
    pub max_bytes: u64,
    pub ttl_index: Duration,
    pub ttl_versions: Duration,
    pub ttl_upstream: Duration,
    /// TTL of cached immutable data (path → artifact, dependencies, resolutions): every
    /// key expires; the database holds the truth.
    pub ttl_immutable: Duration,
    pub ttl_negative: Duration,
    pub stale_max: Duration,
    pub fill_lock_ttl: Duration,
    /// How long a request waits for a fill another request (on this replica or another)
    /// is running before it answers 504.
    pub fill_wait: Duration,
}

#[derive(Debug, Clone)]
pub enum StorageConfig {
    Local { root: PathBuf },
    S3(S3Config),
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    pub max_connections: usize,
    pub keepalive_connections: usize,
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    pub worker_threads: usize,
}

impl HttpConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_secs)
    }
}

impl Config {
    pub fn from_process_env() -> Result<Config, ConfigError> {
        Config::from_env(&Env::process())
    }

    pub fn from_env(env: &Env<'_>) -> Result<Config, ConfigError> {
        let server = ServerConfig::from_env(env)?;
        Ok(Config {
            database: DatabaseConfig::from_env(env, &server.data_dir)?,
            cache: CacheConfig::from_env(env)?,
            storage: StorageConfig::from_env(env, &server.data_dir)?,
            http: HttpConfig::from_env(env)?,
            sources: crate::source_spec::static_sources(env)?,
            max_index_bytes: env.var_in_range("ORCHARD_MAX_INDEX_BYTES", 64 << 20, 1024, 1 << 32)?
                as usize,
            document_work_bytes: env.var_in_range(
                "ORCHARD_DOCUMENT_WORK_BYTES",
                256 << 20,
                1 << 20,
                1 << 40,
            )?,
            max_header_bytes: env.var_in_range(
                "ORCHARD_MAX_HEADER_BYTES",
                32 << 10,
                1024,
                1 << 20,
            )? as usize,
            public_url: public_url(env)?,
            trusted_proxies: trusted_proxies(env)?,
            sources_refresh: Duration::from_secs(env.var_in_range(
                "ORCHARD_SOURCES_REFRESH",
                30,
                1,
                86_400,
            )?),
            storage_tmp_max_age: Duration::from_secs(env.var_in_range(
                "ORCHARD_STORAGE_TMP_MAX_AGE",
                3600,
                60,
                31_536_000,
            )?),
            credentials_key: crate::credentials::CredentialsKey::from_env(env)?,
            admin_token: env.secret("ORCHARD_ADMIN_TOKEN"),
            deps_require_token: env.var_bool("ORCHARD_DEPS_REQUIRE_TOKEN", false)?,
            server,
        })
    }

    /// The effective configuration as one JSON object, secrets redacted.
    pub fn redacted_summary(&self) -> serde_json::Value {
        let cache_backend = match &self.cache.backend {
            CacheBackendConfig::InProcess => {
                serde_json::json!({"kind": "in-process", "max_entries": self.cache.max_entries, "max_bytes": self.cache.max_bytes})
            }
            CacheBackendConfig::Redis { host, port, db } => {
                serde_json::json!({"kind": "redis", "host": host, "port": port, "db": db})
            }
            CacheBackendConfig::RedisCluster { nodes } => {
                serde_json::json!({"kind": "redis-cluster", "nodes": nodes})
            }
        };
        let storage = match &self.storage {
            StorageConfig::Local { root } => serde_json::json!({"kind": "local", "root": root}),
            StorageConfig::S3(s3) => serde_json::json!({
                "kind": "s3", "endpoint": redact_url(&s3.endpoint), "bucket": s3.bucket,
                "region": s3.region, "prefix": s3.prefix,
                "access_key_id": "***", "secret_access_key": "***",
            }),
        };
        serde_json::json!({
            "server": self.server,
            "database": {
                "url": self.database.url.redacted(),
                "pool_size": self.database.pool_size,
                "max_overflow": self.database.max_overflow,
                "pool_timeout_secs": self.database.pool_timeout.as_secs(),
                "pre_ping": self.database.pre_ping,
            },
            "cache": {
                "backend": cache_backend,
                "password": self.cache.password.as_ref().map(|_| "***"),
                "timeout_ms": self.cache.timeout.as_millis() as u64,
                "namespace": self.cache.namespace,
                "ttl_index_secs": self.cache.ttl_index.as_secs(),
                "ttl_versions_secs": self.cache.ttl_versions.as_secs(),
                "ttl_upstream_secs": self.cache.ttl_upstream.as_secs(),
                "ttl_immutable_secs": self.cache.ttl_immutable.as_secs(),
                "ttl_negative_secs": self.cache.ttl_negative.as_secs(),
                "stale_max_secs": self.cache.stale_max.as_secs(),
                "fill_lock_ttl_secs": self.cache.fill_lock_ttl.as_secs(),
                "fill_wait_secs": self.cache.fill_wait.as_secs(),
            },
            "sources": self.sources.iter().map(|s| serde_json::json!({
                "name": s.name, "protocol": s.protocol.as_str(), "url": redact_url(&s.url),
                "priority": s.priority, "enabled": s.enabled,
                "credentials": s.credentials.as_ref().map(|c| c.describe()),
            })).collect::<Vec<_>>(),
            "max_index_bytes": self.max_index_bytes,
            "document_work_bytes": self.document_work_bytes,
            "max_header_bytes": self.max_header_bytes,
            "public_url": self.public_url,
            "trusted_proxies": self.trusted_proxies.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "sources_refresh_secs": self.sources_refresh.as_secs(),
            "storage_tmp_max_age_secs": self.storage_tmp_max_age.as_secs(),
            "credentials_key": self.credentials_key.as_ref().map(|_| "set"),
            "admin_token": self.admin_token.as_ref().map(|_| "***"),
            "deps_require_token": self.deps_require_token,
            "storage": storage,
            "http": self.http,
        })
    }
}

impl ServerConfig {
    fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let default_workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let log_format = match env.var_or("ORCHARD_LOG_FORMAT", "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError {
                    var: "ORCHARD_LOG_FORMAT",
                    message: format!("{other:?} is not one of text, json"),
                })
            }
        };
        Ok(ServerConfig {
            listen_addr: env.var_parsed(
                "ORCHARD_LISTEN_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 8080)),
            )?,
            admin_addr: env
                .var_parsed("ORCHARD_ADMIN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9090)))?,
            workers: env.var_in_range("ORCHARD_WORKERS", default_workers as u64, 1, 512)? as usize,
            shutdown_timeout_secs: env.var_in_range("ORCHARD_SHUTDOWN_TIMEOUT", 30, 0, 3600)?,
            client_write_timeout_secs: env.var_in_range(
                "ORCHARD_CLIENT_WRITE_TIMEOUT",
                60,
                1,
                86_400,
            )?,
            log_format,
            access_log: env.var_bool("ORCHARD_ACCESS_LOG", true)?,
            data_dir: PathBuf::from(env.var_or("ORCHARD_DATA_DIR", "./orchard-data")),
        })
    }
}

impl DatabaseConfig {
    pub fn from_env(env: &Env<'_>, data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        const VAR: &str = "ORCHARD_DATABASE_URL";
        let url = match env.var(VAR) {
            None => DatabaseUrl::Sqlite(data_dir.join("orchard.db")),
            Some(raw) => {
                let scheme = raw.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
                match scheme.as_deref() {
                    Some("postgres") | Some("postgresql") => {
                        url::Url::parse(&raw).map_err(|e| ConfigError {
                            var: VAR,
                            message: format!("not a valid URL: {e}"),
                        })?;
                        DatabaseUrl::Postgres(SecretString::from(raw))
                    }
                    Some("sqlite") => {
                        let path = &raw["sqlite://".len()..];
                        if path.is_empty() {
                            return Err(ConfigError {
                                var: VAR,
                                message: "sqlite:// needs a file path".into(),
                            });
                        }
                        DatabaseUrl::Sqlite(PathBuf::from(path))
                    }
                    Some(other) => {
                        return Err(ConfigError {
                            var: VAR,
                            message: format!(
                                "unknown URL scheme {other:?} (expected postgres:// or sqlite://)"
                            ),
                        })
                    }
                    None => {
                        return Err(ConfigError {
                            var: VAR,
                            message: "expected postgres://… or sqlite://…".into(),
                        })
                    }
                }
            }
        };
        Ok(DatabaseConfig {
            url,
            pool_size: env.var_in_range("ORCHARD_DATABASE_POOL_SIZE", 20, 1, 10_000)? as u32,
            max_overflow: env.var_in_range("ORCHARD_DATABASE_MAX_OVERFLOW", 30, 0, 10_000)? as u32,
            pool_timeout: Duration::from_secs(env.var_in_range(
                "ORCHARD_DATABASE_POOL_TIMEOUT",
                30,
                1,
                3600,
            )?),
            pre_ping: env.var_bool("ORCHARD_DATABASE_POOL_PRE_PING", false)?,
        })
    }
}

fn public_url(env: &Env<'_>) -> Result<Option<String>, ConfigError> {
    const VAR: &str = "ORCHARD_PUBLIC_URL";
    let Some(raw) = env.var(VAR) else {
        return Ok(None);
    };
    let u = url::Url::parse(&raw).map_err(|e| ConfigError {
        var: VAR,
        message: format!("not a valid URL: {e}"),
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() || u.query().is_some() {
        return Err(ConfigError {
            var: VAR,
            message: "expected http(s)://host[:port][/prefix]".into(),
        });
    }
    Ok(Some(raw.trim_end_matches('/').to_string()))
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(raw: &str) -> Result<Cidr, String> {
        let raw = raw.trim();
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{raw:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{raw:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                (u32::from(net) & mask) == (u32::from(ip) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                (u128::from(net) & mask) == (u128::from(ip) & mask)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn trusted_proxies(env: &Env<'_>) -> Result<Vec<Cidr>, ConfigError> {
    const VAR: &str = "ORCHARD_TRUSTED_PROXIES";
    let Some(raw) = env.var(VAR) else {
        return Ok(vec![]);
    };
    raw.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Cidr::parse(s).map_err(|message| ConfigError { var: VAR, message }))
        .collect()
}

fn parse_host_port(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let (host, port) = raw.trim().rsplit_once(':').ok_or_else(|| ConfigError {
        var,
        message: format!("{raw:?} is not host:port"),
    })?;
    if host.is_empty() {
        return Err(ConfigError {
            var,
            message: format!("{raw:?} has an empty host"),
        });
    }
    port.parse::<u16>().map_err(|_| ConfigError {
        var,
        message: format!("{raw:?} has a bad port"),
    })?;
    Ok(format!("{host}:{port}"))
}

impl CacheConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let backend = if let Some(nodes) = env.var("ORCHARD_REDIS_CLUSTER_NODES") {
            let nodes = nodes
                .split(',')
                .filter(|n| !n.trim().is_empty())
                .map(|n| parse_host_port("ORCHARD_REDIS_CLUSTER_NODES", n))
                .collect::<Result<Vec<_>, _>>()?;
            if nodes.is_empty() {
                return Err(ConfigError {
                    var: "ORCHARD_REDIS_CLUSTER_NODES",
                    message: "lists no node".into(),
                });
            }
            CacheBackendConfig::RedisCluster { nodes }
        } else if let Some(host) = env.var("ORCHARD_REDIS_HOST") {
            CacheBackendConfig::Redis {
                host,
                port: env.var_parsed("ORCHARD_REDIS_PORT", 6379u16)?,
                db: env.var_in_range("ORCHARD_REDIS_DB", 0, 0, 15)? as i64,
            }
        } else {
            CacheBackendConfig::InProcess
        };
        let namespace = env.var_or("ORCHARD_CACHE_NAMESPACE", "orchard");
        if namespace.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(ConfigError {
                var: "ORCHARD_CACHE_NAMESPACE",
                message: "must not contain ':' or spaces".into(),
            });
        }
        Ok(CacheConfig {
            backend,
            password: env.secret("ORCHARD_REDIS_PASSWORD"),
            timeout: Duration::from_millis(env.var_in_range(
                "ORCHARD_REDIS_TIMEOUT_MS",
                250,
                1,
                60_000,
            )?),
            namespace,
            max_entries: env.var_in_range(
                "ORCHARD_CACHE_MAX_ENTRIES",
                100_000,
                1,
                u32::MAX as u64,
            )?,
            max_bytes: env.var_in_range("ORCHARD_CACHE_MAX_BYTES", 256 << 20, 1 << 20, 1 << 40)?,
            ttl_index: Duration::from_secs(env.var_in_range(
                "ORCHARD_CACHE_TTL_INDEX",
                300,
                1,
                31_536_000,
            )?),
            ttl_versions: Duration::from_secs(env.var_in_range(
                "ORCHARD_CACHE_TTL_VERSIONS",
                300,
                1,
                31_536_000,
            )?),
            ttl_upstream: Duration::from_secs(env.var_in_range(
                "ORCHARD_CACHE_TTL_UPSTREAM",
                3600,
                1,
                31_536_000,
            )?),
            ttl_immutable: Duration::from_secs(env.var_in_range(
                "ORCHARD_CACHE_TTL_IMMUTABLE",
                604_800,
                60,
                31_536_000,
            )?),
            ttl_negative: Duration::from_secs(env.var_in_range(
                "ORCHARD_CACHE_TTL_NEGATIVE",
                60,
                1,
                86_400,
            )?),
            stale_max: Duration::from_secs(env.var_in_range(
                "ORCHARD_CACHE_STALE_MAX",
                86_400,
                0,
                31_536_000,
            )?),
            fill_lock_ttl: Duration::from_secs(env.var_in_range(
                "ORCHARD_FILL_LOCK_TTL",
                15,
                1,
                600,
            )?),
            fill_wait: Duration::from_secs(env.var_in_range(
                "ORCHARD_FILL_WAIT_TIMEOUT",
                900,
                1,
                86_400,
            )?),
        })
    }
}

impl StorageConfig {
    fn from_env(env: &Env<'_>, data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let Some(endpoint) = env.var("ORCHARD_S3_ENDPOINT") else {
            return Ok(StorageConfig::Local {
                root: data_dir.join("artifacts"),
            });
        };
        match url::Url::parse(&endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => {
                return Err(ConfigError {
                    var: "ORCHARD_S3_ENDPOINT",
                    message: format!(
                        "unknown URL scheme {:?} (expected http:// or https://)",
                        u.scheme()
                    ),
                })
            }
            Err(e) => {
                return Err(ConfigError {
                    var: "ORCHARD_S3_ENDPOINT",
                    message: format!("not a valid URL: {e}"),
                })
            }
        }
        let why = "when ORCHARD_S3_ENDPOINT is set";
        let prefix = env
            .var_or("ORCHARD_S3_PREFIX", "")
            .trim_matches('/')
            .to_string();
        if prefix.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(ConfigError {
                var: "ORCHARD_S3_PREFIX",
                message: "must not contain . or .. segments".into(),
            });
        }
        Ok(StorageConfig::S3(S3Config {
            endpoint,
            bucket: env.required_var("ORCHARD_S3_BUCKET", why)?,
            region: env.var_or("ORCHARD_S3_REGION", "us-east-1"),
            access_key_id: env.required_var("ORCHARD_S3_ACCESS_KEY_ID", why)?,
            secret_access_key: SecretString::from(
                env.required_var("ORCHARD_S3_SECRET_ACCESS_KEY", why)?,
            ),
            prefix,
        }))
    }
}

impl HttpConfig {
    fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let max_connections =
            env.var_in_range("ORCHARD_HTTP_MAX_CONNECTIONS", 100, 1, 100_000)? as usize;
        let keepalive_connections =
            env.var_in_range("ORCHARD_HTTP_KEEPALIVE_CONNECTIONS", 20, 0, 100_000)? as usize;
        if keepalive_connections > max_connections {
            return Err(ConfigError {
                var: "ORCHARD_HTTP_KEEPALIVE_CONNECTIONS",
                message: format!("{keepalive_connections} is more than ORCHARD_HTTP_MAX_CONNECTIONS ({max_connections})"),
            });
        }
        Ok(HttpConfig {
            max_connections,
            keepalive_connections,
            connect_timeout_secs: env.var_in_range("ORCHARD_HTTP_CONNECT_TIMEOUT", 30, 1, 3600)?,
            read_timeout_secs: env.var_in_range("ORCHARD_HTTP_READ_TIMEOUT", 60, 1, 3600)?,
            worker_threads: env.var_in_range("ORCHARD_HTTP_WORKER_THREADS", 32, 1, 4096)? as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn trusted_proxy_networks() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(
            c.contains("10.1.2.3".parse().unwrap()) && !c.contains("11.0.0.1".parse().unwrap())
        );
        assert!(
            c.contains("::ffff:10.9.9.9".parse().unwrap()),
            "IPv4-mapped peers"
        );
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(
            one.contains("127.0.0.1".parse().unwrap())
                && !one.contains("127.0.0.2".parse().unwrap())
        );
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(
            v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap())
        );
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "10.0.0/8", "::1/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            config(&[("ORCHARD_TRUSTED_PROXIES", "10.0.0.0/8,nope")])
                .unwrap_err()
                .var,
            "ORCHARD_TRUSTED_PROXIES"
        );
        assert_eq!(
            config(&[("ORCHARD_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")])
                .unwrap()
                .trusted_proxies
                .len(),
            2
        );
    }

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&Env::from_fn(move |k| map.get(k).cloned()))
    }

    #[test]
    fn no_configuration_is_the_embedded_default() {
        let c = config(&[]).unwrap();
        assert_eq!(c.server.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.server.admin_addr.to_string(), "0.0.0.0:9090");
        assert!(
            matches!(c.database.url, DatabaseUrl::Sqlite(ref p) if p.ends_with("orchard-data/orchard.db"))
        );
        assert!(matches!(c.cache.backend, CacheBackendConfig::InProcess));
        assert!(
            matches!(c.storage, StorageConfig::Local { ref root } if root.ends_with("orchard-data/artifacts"))
        );
        assert_eq!(c.http.max_connections, 100);
        assert_eq!(c.http.keepalive_connections, 20);
        assert_eq!(c.http.connect_timeout_secs, 30);
        assert_eq!(c.http.read_timeout_secs, 60);
        assert_eq!(c.http.worker_threads, 32);
        assert_eq!(c.cache.ttl_index.as_secs(), 300);
        assert_eq!(c.cache.ttl_versions.as_secs(), 300);
        assert_eq!(c.cache.ttl_upstream.as_secs(), 3600);
        assert_eq!((c.database.pool_size, c.database.max_overflow), (20, 30));
        assert_eq!(c.database.pool_timeout.as_secs(), 30);
        assert!(!c.database.pre_ping);
    }

    #[test]
    fn bad_number_names_the_variable() {
        let e = config(&[("ORCHARD_HTTP_MAX_CONNECTIONS", "abc")]).unwrap_err();
        assert_eq!(e.var, "ORCHARD_HTTP_MAX_CONNECTIONS");
        assert!(
            e.to_string()
                .starts_with("ORCHARD_HTTP_MAX_CONNECTIONS: cannot parse \"abc\""),
            "{e}"
        );
    }

    #[test]
    fn unknown_database_scheme_is_rejected() {
        let e = config(&[("ORCHARD_DATABASE_URL", "mysql://u:p@h/db")]).unwrap_err();
        assert_eq!(e.var, "ORCHARD_DATABASE_URL");
        assert!(e.message.contains("unknown URL scheme \"mysql\""), "{e}");
        assert!(
            !e.to_string().contains(":p@"),
            "the message must not echo the password: {e}"
        );
    }

    #[test]
    fn out_of_range_and_bad_bool_and_bad_addr() {
        assert_eq!(
            config(&[("ORCHARD_HTTP_WORKER_THREADS", "0")])
                .unwrap_err()
                .var,
            "ORCHARD_HTTP_WORKER_THREADS"
        );
        assert_eq!(
            config(&[("ORCHARD_DATABASE_POOL_PRE_PING", "maybe")])
                .unwrap_err()
                .var,
            "ORCHARD_DATABASE_POOL_PRE_PING"
        );
        assert_eq!(
            config(&[("ORCHARD_LISTEN_ADDR", "localhost")])
                .unwrap_err()
                .var,
            "ORCHARD_LISTEN_ADDR"
        );
        assert_eq!(
            config(&[("ORCHARD_HTTP_KEEPALIVE_CONNECTIONS", "200")])
                .unwrap_err()
                .var,
            "ORCHARD_HTTP_KEEPALIVE_CONNECTIONS"
        );
        assert_eq!(
            config(&[("ORCHARD_REDIS_CLUSTER_NODES", "a:1,b")])
                .unwrap_err()
                .var,
            "ORCHARD_REDIS_CLUSTER_NODES"
        );
        assert_eq!(
            config(&[("ORCHARD_S3_ENDPOINT", "ftp://x")])
                .unwrap_err()
                .var,
            "ORCHARD_S3_ENDPOINT"
        );
    }

    #[test]
    fn s3_requires_bucket_and_keys() {
        let e = config(&[("ORCHARD_S3_ENDPOINT", "http://127.0.0.1:9000")]).unwrap_err();
        assert_eq!(e.var, "ORCHARD_S3_BUCKET");
    }

    #[test]
    fn production_backends_and_redaction() {
        let c = config(&[
            (
                "ORCHARD_DATABASE_URL",
                "postgres://orchard:hunter2@db:5432/orchard?password=hunter2",
            ),
            ("ORCHARD_REDIS_CLUSTER_NODES", "r1:7001, r2:7002"),
            ("ORCHARD_REDIS_HOST", "ignored"),
            ("ORCHARD_REDIS_PASSWORD", "redispw"),
            ("ORCHARD_S3_ENDPOINT", "http://s3:9000"),
            ("ORCHARD_S3_BUCKET", "b"),
            ("ORCHARD_S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("ORCHARD_S3_SECRET_ACCESS_KEY", "s3secret"),
        ])
        .unwrap();
        assert!(
            matches!(c.cache.backend, CacheBackendConfig::RedisCluster { ref nodes } if nodes == &["r1:7001", "r2:7002"])
        );
        let text = c.redacted_summary().to_string();
        for secret in ["hunter2", "redispw", "s3secret", "AKIAEXAMPLE"] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
        assert!(
            text.contains("postgres://orchard:***@db:5432/orchard"),
            "{text}"
        );
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "Debug must not print the database password"
        );
        assert!(!format!("{c:?}").contains("s3secret"));
    }
}
