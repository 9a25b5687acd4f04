//! The live registry of upstream sources the handlers read (`SourceRegistry`): each
//! source's spec, parsed base URL, credentials and HTTP client pool. What a source is
//! and where sources come from is `orchard_core::source_spec`, re-exported here.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::SecretString;

pub use orchard_core::source_spec::*;

use crate::credentials::CredentialsKey;
use crate::db::UpstreamSourceRow;
use crate::http_client::{HttpClientManager, PoolSettings, UpstreamAuth};

/// A source ready for use: its spec, parsed base URL and resolved credentials.
#[derive(Debug)]
pub struct Source {
    pub spec: SourceSpec,
    /// The base URL, always ending in `/`.
    pub base: url::Url,
}

impl Source {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether this source may serve a package, by the protocol's own pattern rule
    /// (`matches(pattern)`): included (no include list = everything) and not excluded.
    /// Each protocol supplies its rule (PyPI: normalised names; Maven: groupId and
    /// artifactId; npm: the full name).
    pub fn allows_with(&self, matches: impl Fn(&str) -> bool) -> bool {
        let included = self.spec.include.is_empty() || self.spec.include.iter().any(|p| matches(p));
        included && !self.spec.exclude.iter().any(|p| matches(p))
    }

    pub fn index_ttl(&self, default: Duration) -> Duration {
        self.spec
            .ttl
            .as_ref()
            .and_then(|t| t.index_seconds)
            .map(Duration::from_secs)
            .unwrap_or(default)
    }

    /// How long this source's version lists (npm packuments, `maven-metadata.xml`) stay
    /// fresh: its own `ttl.versionsSeconds`, else `default`.
    pub fn versions_ttl(&self, default: Duration) -> Duration {
        self.spec
            .ttl
            .as_ref()
            .and_then(|t| t.versions_seconds)
            .map(Duration::from_secs)
            .unwrap_or(default)
    }

    /// `relative` joined to the base; `relative` must already be made of validated,
    /// percent-encoded segments.
    pub fn url(&self, relative: &str) -> String {
        format!("{}{}", self.base, relative.trim_start_matches('/'))
    }
}

fn resolve_auth(
    spec: &SourceSpec,
    key: Option<&CredentialsKey>,
) -> Result<Option<UpstreamAuth>, String> {
    let Some(c) = &spec.credentials else {
        return Ok(None);
    };
    let (username, secret) = match (&c.secret_env, &c.sealed) {
        (Some(var), _) => {
            let secret = std::env::var(var).map_err(|_| {
                format!(
                    "source {}: credentials variable {var} is not set",
                    spec.name
                )
            })?;
            (c.username.clone(), SecretString::from(secret))
        }
        (None, Some(sealed)) => {
            let key = key.ok_or_else(|| {
                format!(
                    "source {}: its credentials are sealed but ORCHARD_CREDENTIALS_KEY is not set",
                    spec.name
                )
            })?;
            let opened = key
                .open(&spec.name, sealed)
                .map_err(|e| format!("source {}: {e}", spec.name))?;
            (opened.username, opened.secret)
        }
        (None, None) => {
            return Err(format!(
                "source {}: credentials without secretEnv or sealed",
                spec.name
            ))
        }
    };
    Ok(Some(match c.kind {
        CredentialsKind::Basic => UpstreamAuth::Basic {
            username: username.unwrap_or_default(),
            password: secret,
        },
        CredentialsKind::Bearer => UpstreamAuth::Bearer(secret),
    }))
}

/// The sources in force, swapped whole when they change.
#[derive(Default)]
pub struct SourceRegistry {
    sources: RwLock<Arc<Vec<Arc<Source>>>>,
}

impl SourceRegistry {
    /// Replaces the sources (static specs win over database rows of the same name) and
    /// registers one HTTP pool per source. Returns the problems of sources left out.
    pub fn install(
        &self,
        static_specs: &[SourceSpec],
        rows: &[UpstreamSourceRow],
        http: &HttpClientManager,
        key: Option<&CredentialsKey>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut specs: BTreeMap<String, SourceSpec> = BTreeMap::new();
        for row in rows {
            match SourceSpec::from_row(row) {
                Ok(s) => {
                    specs.insert(s.name.clone(), s);
                }
                Err(e) => problems.push(e),
            }
        }
        for s in static_specs {
            specs.insert(s.name.clone(), s.clone());
        }
        let mut sources = Vec::new();
        for spec in specs.into_values() {
            let mut base = match url::Url::parse(&spec.url) {
                Ok(u) => u,
                Err(e) => {
                    problems.push(format!("source {}: {e}", spec.name));
                    continue;
                }
            };
            if !base.path().ends_with('/') {
                let path = format!("{}/", base.path());
                base.set_path(&path);
            }
            match resolve_auth(&spec, key) {
                Ok(auth) => http.register(
                    &spec.name,
                    PoolSettings {
                        auth,
                        origin: Some(base.origin().ascii_serialization()),
                        ..http.default_settings()
                    },
                ),
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            }
            sources.push(Arc::new(Source { spec, base }));
        }
        sources.sort_by(|a, b| {
            a.spec
                .priority
                .cmp(&b.spec.priority)
                .then_with(|| a.spec.name.cmp(&b.spec.name))
        });
        *self.sources.write().expect("source lock poisoned") = Arc::new(sources);
        problems
    }

    pub fn all(&self) -> Arc<Vec<Arc<Source>>> {
        self.sources.read().expect("source lock poisoned").clone()
    }

    /// Enabled sources of a protocol, highest priority (lowest number) first.
    pub fn for_protocol(&self, protocol: Protocol) -> Vec<Arc<Source>> {
        self.all()
            .iter()
            .filter(|s| s.spec.enabled && s.spec.protocol == protocol)
            .cloned()
            .collect()
    }

    /// An enabled source by name and protocol.
    pub fn get(&self, protocol: Protocol, name: &str) -> Option<Arc<Source>> {
        self.all()
            .iter()
            .find(|s| s.spec.enabled && s.spec.protocol == protocol && s.spec.name == name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn sealed_credentials_need_the_key_and_the_right_source() {
        use base64::Engine;
        let key = CredentialsKey::from_base64(
            &base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
        )
        .unwrap();
        let sealed = key.seal("internal", None, &SecretString::from("tok"));
        let mut spec = SourceSpec {
            name: "internal".into(),
            settings: SourceSettings {
                protocol: Protocol::Npm,
                url: "https://upstream.example/npm/".into(),
                priority: 1,
                enabled: true,
                ttl: None,
                include: vec![],
                exclude: vec![],
                file_hosts: vec![],
            },
            credentials: Some(CredentialsSpec {
                kind: CredentialsKind::Bearer,
                username: None,
                secret_env: None,
                sealed: Some(sealed),
            }),
        };
        let row = spec.to_owned_row(Some("ns/internal"));
        assert_eq!(SourceSpec::row_owner(&row).as_deref(), Some("ns/internal"));
        assert_eq!(SourceSpec::from_row(&row).unwrap(), spec);
        assert!(matches!(
            resolve_auth(&spec, Some(&key)),
            Ok(Some(UpstreamAuth::Bearer(_)))
        ));
        let e = resolve_auth(&spec, None).unwrap_err();
        assert!(e.contains("ORCHARD_CREDENTIALS_KEY"), "{e}");
        spec.name = "renamed".into();
        assert!(resolve_auth(&spec, Some(&key)).is_err());
        spec.credentials.as_mut().unwrap().secret_env = Some("X".into());
        assert!(spec.validate().unwrap_err().contains("exactly one"));
    }

    #[test]
    fn include_exclude() {
        let spec = SourceSpec {
            name: "s".into(),
            settings: SourceSettings {
                protocol: Protocol::Pypi,
                url: "https://upstream.example/".into(),
                priority: 1,
                enabled: true,
                ttl: None,
                include: vec!["acme-*".into()],
                exclude: vec!["acme-secret".into()],
                file_hosts: vec![],
            },
            credentials: None,
        };
        let s = Source {
            base: url::Url::parse(&spec.url).unwrap(),
            spec,
        };
        let allows = |name: &str| s.allows_with(|p| wildcard_match(p, name));
        assert!(allows("acme-tools"));
        assert!(!allows("acme-secret"));
        assert!(!allows("requests"));
    }
}
