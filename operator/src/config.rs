//! The operator's configuration: its own `ORCHARD_OPERATOR_*` variables plus the
//! database, cache and credentials-key variables it shares with `orchard serve`
//! (read by the server crate's parsers, so both sides agree on every value).

use std::net::SocketAddr;
use std::time::Duration;

use orchard_core::config::{CacheConfig, ConfigError, DatabaseConfig, Env};
use orchard_core::credentials::CredentialsKey;

#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Namespace whose `UpstreamSource` objects (and Secrets) are reconciled; `None` =
    /// the pod's own namespace, else the kubeconfig's default.
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub identity: String,
    /// A successful reconcile is repeated after this long (drift repair).
    pub resync: Duration,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub credentials_key: Option<CredentialsKey>,
}

impl OperatorConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let database = DatabaseConfig::from_env(env, std::path::Path::new("."))?;
        if env.var("ORCHARD_DATABASE_URL").is_none() {
            return Err(ConfigError {
                var: "ORCHARD_DATABASE_URL",
                message: "is required: the operator writes sources into the replicas' database"
                    .into(),
            });
        }
        let namespace = env.var("ORCHARD_OPERATOR_NAMESPACE");
        if let Some(ns) = &namespace {
            let ok = ns.len() <= 63
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok || ns.is_empty() {
                return Err(ConfigError {
                    var: "ORCHARD_OPERATOR_NAMESPACE",
                    message: format!("{ns:?} is not a namespace name"),
                });
            }
        }
        let identity = env
            .var("ORCHARD_OPERATOR_IDENTITY")
            .or_else(|| env.var("POD_NAME"))
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        Ok(OperatorConfig {
            namespace,
            metrics_addr: env.var_parsed(
                "ORCHARD_OPERATOR_METRICS_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 9091)),
            )?,
            lease_name: env.var_or("ORCHARD_OPERATOR_LEASE_NAME", "orchard-operator"),
            lease_duration: Duration::from_secs(env.var_in_range(
                "ORCHARD_OPERATOR_LEASE_SECONDS",
                15,
                2,
                300,
            )?),
            identity,
            resync: Duration::from_secs(env.var_in_range(
                "ORCHARD_OPERATOR_RESYNC_SECONDS",
                300,
                5,
                86_400,
            )?),
            database,
            cache: CacheConfig::from_env(env)?,
            credentials_key: CredentialsKey::from_env(env)?,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "orchard-operator".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<'static> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_fn(move |k| map.get(k).cloned())
    }

    #[test]
    fn needs_a_database_and_checks_values() {
        let e = OperatorConfig::from_env(&env(&[])).unwrap_err();
        assert_eq!(e.var, "ORCHARD_DATABASE_URL");
        let c =
            OperatorConfig::from_env(&env(&[("ORCHARD_DATABASE_URL", "sqlite://x.db")])).unwrap();
        assert_eq!(
            (
                c.lease_duration.as_secs(),
                c.metrics_addr.port(),
                c.lease_name.as_str()
            ),
            (15, 9091, "orchard-operator")
        );
        let e = OperatorConfig::from_env(&env(&[
            ("ORCHARD_DATABASE_URL", "sqlite://x.db"),
            ("ORCHARD_OPERATOR_LEASE_SECONDS", "1"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "ORCHARD_OPERATOR_LEASE_SECONDS");
        let e = OperatorConfig::from_env(&env(&[
            ("ORCHARD_DATABASE_URL", "sqlite://x.db"),
            ("ORCHARD_OPERATOR_NAMESPACE", "Bad_NS"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "ORCHARD_OPERATOR_NAMESPACE");
    }
}
