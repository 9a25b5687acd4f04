//! Redis backends: one node through a `ConnectionManager` (reconnects by itself), or a
//! Redis Cluster through the cluster-async connection. Only single-key commands are
//! used, so every call works on a cluster. Connecting happens in the background, so a
//! Redis that is down at start never delays or fails the start.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use secrecy::{ExposeSecret, SecretString};

use super::{CacheBackend, CacheError};

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub struct RedisBackend {
    kind: &'static str,
    conn: Arc<OnceLock<Conn>>,
    /// A plain client for pub/sub: on a cluster, any node (PUBLISH reaches every node).
    pubsub_clients: Vec<redis::Client>,
}

impl RedisBackend {
    pub fn single(
        host: &str,
        port: u16,
        db: i64,
        password: Option<&SecretString>,
        timeout: Duration,
    ) -> Result<Self, CacheError> {
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp(host.to_string(), port).into_connection_info()?;
        let mut settings = info.redis_settings().clone().set_db(db);
        if let Some(p) = password {
            settings = settings.set_password(p.expose_secret());
        }
        let info = info.set_redis_settings(settings);
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let conn = Arc::new(OnceLock::new());
        let _ = conn.set(Conn::Single(manager));
        Ok(RedisBackend {
            kind: "redis",
            conn,
            pubsub_clients: vec![client],
        })
    }

    pub fn cluster(
        nodes: &[String],
        password: Option<&SecretString>,
        timeout: Duration,
    ) -> Result<Self, CacheError> {
        let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}")).collect();
        let mut builder = ClusterClientBuilder::new(urls)
            .connection_timeout(timeout.max(Duration::from_millis(500)))
            .response_timeout(timeout)
            .retries(1);
        if let Some(p) = password {
            builder = builder.password(p.expose_secret());
        }
        let client = builder.build()?;
        let mut pubsub_clients = Vec::new();
        for node in nodes {
            let (host, port) = node.rsplit_once(':').unwrap_or((node.as_str(), "6379"));
            let info = redis::IntoConnectionInfo::into_connection_info(
                redis::ConnectionAddr::Tcp(host.to_string(), port.parse().unwrap_or(6379)),
            )?;
            let info = match password {
                Some(p) => {
                    let settings = info
                        .redis_settings()
                        .clone()
                        .set_password(p.expose_secret());
                    info.set_redis_settings(settings)
                }
                None => info,
            };
            pubsub_clients.push(redis::Client::open(info)?);
        }
        let conn = Arc::new(OnceLock::new());
        let slot = conn.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match client.get_async_connection().await {
                    Ok(c) => {
                        let _ = slot.set(Conn::Cluster(c));
                        tracing::info!("connected to the Redis Cluster");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis Cluster unreachable; serving without the cache");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        Ok(RedisBackend {
            kind: "redis-cluster",
            conn,
            pubsub_clients,
        })
    }

    fn conn(&self) -> Result<Conn, CacheError> {
        self.conn.get().cloned().ok_or(CacheError::NotConnected)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let value = match self.conn()? {
            Conn::Single(mut c) => c.req_packed_command(cmd).await?,
            Conn::Cluster(mut c) => c.req_packed_command(cmd).await?,
        };
        redis::from_redis_value(value).map_err(|e| CacheError::Parse(e.to_string()))
    }
}

#[async_trait]
impl CacheBackend for RedisBackend {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let v: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(key)).await?;
        Ok(v.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value.as_ref());
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        self.query::<()>(&cmd).await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.query::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(|_| ())
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        let n: i64 = self
            .query(
                redis::cmd("PEXPIRE")
                    .arg(key)
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(n == 1)
    }

    async fn incr(&self, key: &str) -> Result<i64, CacheError> {
        self.query(redis::cmd("INCR").arg(key)).await
    }

    async fn get_i64(&self, key: &str) -> Result<Option<i64>, CacheError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn get_or_init_i64(
        &self,
        key: &str,
        init: i64,
        ttl: Duration,
    ) -> Result<i64, CacheError> {
        const SCRIPT: &str = "local v = redis.call('get', KEYS[1]) if v then return tonumber(v) end redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return tonumber(ARGV[1])";
        self.query(
            redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(1)
                .arg(key)
                .arg(init)
                .arg(ttl.as_millis().max(1) as u64),
        )
        .await
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        let r: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(r.is_some())
    }

    async fn delete_if(&self, key: &str, value: &str) -> Result<bool, CacheError> {
        const SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
        let n: i64 = self
            .query(redis::cmd("EVAL").arg(SCRIPT).arg(1).arg(key).arg(value))
            .await?;
        Ok(n == 1)
    }

    async fn expire_if(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        const SCRIPT: &str =
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
        let n: i64 = self
            .query(
                redis::cmd("EVAL")
                    .arg(SCRIPT)
                    .arg(1)
                    .arg(key)
                    .arg(value)
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(n == 1)
    }

    async fn publish(&self, channel: &str, message: &str) -> Result<(), CacheError> {
        self.query::<i64>(redis::cmd("PUBLISH").arg(channel).arg(message))
            .await
            .map(|_| ())
    }

    async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<futures::stream::BoxStream<'static, String>, CacheError> {
        use futures::StreamExt;
        let mut last = CacheError::NotConnected;
        for client in &self.pubsub_clients {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    pubsub.subscribe(channel).await?;
                    return Ok(pubsub
                        .into_on_message()
                        .filter_map(|m| async move { m.get_payload::<String>().ok() })
                        .boxed());
                }
                Err(e) => last = e.into(),
            }
        }
        Err(last)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.query::<String>(&redis::cmd("PING")).await.map(|_| ())
    }
}
