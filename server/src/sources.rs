//! Upstream sources: what they are (`SourceSpec`, the same fields as the
//! `UpstreamSource` CRD spec), where they come from, and the live registry handlers
//! read.
//!
//! Embedded mode reads them from `ORCHARD_UPSTREAMS_FILE` (YAML list of specs) and/or
//! `ORCHARD_UPSTREAM_PYPI` / `_NPM` / `_MAVEN` (one URL each, a source named after the
//! protocol, priority 100). In a cluster the operator writes them to the
//! `upstream_sources` table. A name defined in both places takes the static definition.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env};
use crate::credentials::CredentialsKey;
use crate::db::UpstreamSourceRow;
use crate::http_client::{HttpClientManager, PoolSettings, UpstreamAuth};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Pypi,
    Npm,
    Maven,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Pypi => "pypi",
            Protocol::Npm => "npm",
            Protocol::Maven => "maven",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "pypi" => Some(Protocol::Pypi),
            "npm" => Some(Protocol::Npm),
            "maven" => Some(Protocol::Maven),
            _ => None,
        }
    }
}

/// Credentials of an upstream. Either by reference — `secretEnv` names an environment
/// variable holding the password or token (embedded mode) — or `sealed`: username and
/// secret encrypted by the operator from a Kubernetes Secret (see `credentials`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsSpec {
    #[serde(rename = "type")]
    pub kind: CredentialsKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the password (basic) or token (bearer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Username and secret sealed with `ORCHARD_CREDENTIALS_KEY` (written by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

impl CredentialsSpec {
    /// Where the secret comes from, for logs and the config summary (never the secret).
    pub fn describe(&self) -> String {
        match (&self.secret_env, &self.sealed) {
            (Some(var), _) => format!("from ${var}"),
            _ => "sealed".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsKind {
    Basic,
    Bearer,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TtlOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions_seconds: Option<u64>,
}

/// One upstream source, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    pub name: String,
    pub protocol: Protocol,
    pub url: String,
    #[serde(default = "default_priority")]
    pub priority: i32,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlOverrides>,
    /// Name patterns (`*` wildcard) this source may serve; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Name patterns this source never serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Hosts (`host` or `host:port`) other than the source's own that its index may
    /// link files to (a CDN, say); such files are fetched without the source's
    /// credentials and only with a declared sha256/sha512 (see `file_url`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_hosts: Vec<String>,
}

fn default_priority() -> i32 {
    100
}
fn default_enabled() -> bool {
    true
}

/// The parts of a spec kept in the `settings` JSON column.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSettings {
    #[serde(default)]
    credentials: Option<CredentialsSpec>,
    #[serde(default)]
    ttl: Option<TtlOverrides>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    file_hosts: Vec<String>,
    /// Who wrote the row: `namespace/name` of the `UpstreamSource` (operator rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

impl SourceSpec {
    /// Checks the spec; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        let ok_name = !n.is_empty()
            && n.len() <= 63
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-');
        if !ok_name {
            return Err(format!(
                "source name {n:?} must be 1-63 characters of a-z, 0-9 and '-'"
            ));
        }
        let url = url::Url::parse(&self.url)
            .map_err(|e| format!("source {n}: url {:?} is not a URL: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "source {n}: url must be http:// or https:// with a host"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "source {n}: url must not carry credentials; use `credentials`"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("source {n}: url must not have a query or fragment"));
        }
        if !(0..=10_000).contains(&self.priority) {
            return Err(format!(
                "source {n}: priority {} is out of range 0..=10000",
                self.priority
            ));
        }
        if let Some(c) = &self.credentials {
            match (&c.secret_env, &c.sealed) {
                (Some(_), None) => {
                    if c.kind == CredentialsKind::Basic && c.username.is_none() {
                        return Err(format!("source {n}: basic credentials need a username"));
                    }
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "source {n}: credentials need exactly one of secretEnv and sealed"
                    ))
                }
            }
        }
        for p in self.include.iter().chain(&self.exclude) {
            if p.is_empty() || p.len() > 214 {
                return Err(format!("source {n}: empty or overlong name pattern"));
            }
        }
        for h in &self.file_hosts {
            crate::file_url::parse_file_host(h)
                .map_err(|e| format!("source {n}: fileHosts: {e}"))?;
        }
        Ok(())
    }

    pub fn to_row(&self) -> UpstreamSourceRow {
        self.to_owned_row(None)
    }

    /// The row, recording `owner` (the operator's `namespace/name` of the resource).
    pub fn to_owned_row(&self, owner: Option<&str>) -> UpstreamSourceRow {
        let settings = StoredSettings {
            credentials: self.credentials.clone(),
            ttl: self.ttl.clone(),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            file_hosts: self.file_hosts.clone(),
            owner: owner.map(str::to_string),
        };
        UpstreamSourceRow {
            name: self.name.clone(),
            protocol: self.protocol.as_str().to_string(),
            url: self.url.clone(),
            priority: self.priority,
            enabled: self.enabled,
            settings: serde_json::to_string(&settings).unwrap_or_else(|_| "{}".into()),
            updated_at: crate::db::now_unix(),
        }
    }

    /// The `owner` recorded in a row, if any.
    pub fn row_owner(row: &UpstreamSourceRow) -> Option<String> {
        serde_json::from_str::<StoredSettings>(&row.settings)
            .ok()
            .and_then(|s| s.owner)
    }

    pub fn from_row(row: &UpstreamSourceRow) -> Result<SourceSpec, String> {
        let protocol = Protocol::parse(&row.protocol)
            .ok_or_else(|| format!("source {}: unknown protocol {:?}", row.name, row.protocol))?;
        let settings: StoredSettings = serde_json::from_str(&row.settings)
            .map_err(|e| format!("source {}: bad settings: {e}", row.name))?;
        let spec = SourceSpec {
            name: row.name.clone(),
            protocol,
            url: row.url.clone(),
            priority: row.priority,
            enabled: row.enabled,
            credentials: settings.credentials,
            ttl: settings.ttl,
            include: settings.include,
            exclude: settings.exclude,
            file_hosts: settings.file_hosts,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Sources from `ORCHARD_UPSTREAMS_FILE` and `ORCHARD_UPSTREAM_{PYPI,NPM,MAVEN}`.
pub fn static_sources(env: &Env<'_>) -> Result<Vec<SourceSpec>, ConfigError> {
    const FILE: &str = "ORCHARD_UPSTREAMS_FILE";
    let mut specs: Vec<SourceSpec> = Vec::new();
    if let Some(path) = env.var(FILE) {
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            var: FILE,
            message: format!("cannot read {path}: {e}"),
        })?;
        specs = serde_norway::from_str(&text).map_err(|e| ConfigError {
            var: FILE,
            message: format!("{path} is not a list of sources: {e}"),
        })?;
        for s in &specs {
            s.validate()
                .map_err(|message| ConfigError { var: FILE, message })?;
        }
    }
    for (var, protocol) in [
        ("ORCHARD_UPSTREAM_PYPI", Protocol::Pypi),
        ("ORCHARD_UPSTREAM_NPM", Protocol::Npm),
        ("ORCHARD_UPSTREAM_MAVEN", Protocol::Maven),
    ] {
        if let Some(url) = env.var(var) {
            let spec = SourceSpec {
                name: protocol.as_str().to_string(),
                protocol,
                url,
                priority: default_priority(),
                enabled: true,
                credentials: None,
                ttl: None,
                include: vec![],
                exclude: vec![],
                file_hosts: vec![],
            };
            spec.validate()
                .map_err(|message| ConfigError { var, message })?;
            specs.push(spec);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for s in &specs {
        if !seen.insert(s.name.clone()) {
            return Err(ConfigError {
                var: FILE,
                message: format!("source name {:?} is defined twice", s.name),
            });
        }
    }
    Ok(specs)
}

/// `*` matches any run of characters; everything else matches itself.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

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

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("acme-*", "acme-tools"));
        assert!(!wildcard_match("acme-*", "acm"));
        assert!(wildcard_match("*-internal", "x-internal"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }

    #[test]
    fn yaml_file_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.yaml");
        std::fs::write(
            &path,
            "- name: internal\n  protocol: pypi\n  url: https://upstream.example/internal/simple\n  priority: 10\n  include: ['acme-*']\n  credentials: {type: bearer, secretEnv: INTERNAL_TOKEN}\n- name: public\n  protocol: pypi\n  url: https://upstream.example/simple/\n",
        )
        .unwrap();
        let p = path.to_string_lossy().to_string();
        let specs = static_sources(&Env::from_fn(move |k| {
            (k == "ORCHARD_UPSTREAMS_FILE").then(|| p.clone())
        }))
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].priority, 10);
        assert_eq!(specs[1].priority, 100);
        assert_eq!(SourceSpec::from_row(&specs[0].to_row()).unwrap(), specs[0]);

        std::fs::write(
            &path,
            "- name: Bad_Name\n  protocol: pypi\n  url: https://upstream.example/\n",
        )
        .unwrap();
        let p = path.to_string_lossy().to_string();
        let e = static_sources(&Env::from_fn(move |k| {
            (k == "ORCHARD_UPSTREAMS_FILE").then(|| p.clone())
        }))
        .unwrap_err();
        assert_eq!(e.var, "ORCHARD_UPSTREAMS_FILE");
        assert!(e.message.contains("Bad_Name"), "{e}");

        let e = static_sources(&Env::from_fn(|k| {
            (k == "ORCHARD_UPSTREAM_PYPI").then(|| "ftp://x/".to_string())
        }))
        .unwrap_err();
        assert_eq!(e.var, "ORCHARD_UPSTREAM_PYPI");
        let e = static_sources(&Env::from_fn(|k| {
            (k == "ORCHARD_UPSTREAM_PYPI").then(|| "https://u:p@upstream.example/".to_string())
        }))
        .unwrap_err();
        assert!(e.message.contains("credentials"), "{e}");
    }

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
            protocol: Protocol::Npm,
            url: "https://upstream.example/npm/".into(),
            priority: 1,
            enabled: true,
            credentials: Some(CredentialsSpec {
                kind: CredentialsKind::Bearer,
                username: None,
                secret_env: None,
                sealed: Some(sealed),
            }),
            ttl: None,
            include: vec![],
            exclude: vec![],
            file_hosts: vec![],
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
            protocol: Protocol::Pypi,
            url: "https://upstream.example/".into(),
            priority: 1,
            enabled: true,
            credentials: None,
            ttl: None,
            include: vec!["acme-*".into()],
            exclude: vec!["acme-secret".into()],
            file_hosts: vec![],
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
