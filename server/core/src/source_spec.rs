//! Upstream sources as configured: `SourceSpec` (the same fields as the
//! `UpstreamSource` CRD spec), its validation, its database row, and where static
//! sources come from. The live registry the server reads is `orchard_server::sources`.
//!
//! Embedded mode reads them from `ORCHARD_UPSTREAMS_FILE` (YAML list of specs) and/or
//! `ORCHARD_UPSTREAM_PYPI` / `_NPM` / `_MAVEN` (one URL each, a source named after the
//! protocol, priority 100). In a cluster the operator writes them to the
//! `upstream_sources` table. A name defined in both places takes the static definition.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env};
use crate::db::UpstreamSourceRow;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TtlOverrides {
    /// Seconds an index page (PyPI) stays fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31536000))]
    pub index_seconds: Option<u64>,
    /// Seconds version lists (npm packuments, maven-metadata.xml) stay fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31536000))]
    pub versions_seconds: Option<u64>,
}

// What an upstream source is, apart from its name and credentials — defined once for
// every place a source is written: the sources file (`SourceSpec`), the database row,
// and the `UpstreamSource` custom resource (the operator's CRD flattens this struct
// into its spec, and its schema — with the bounds and CEL rules below — into the CRD;
// the doc comments are the CRD's field descriptions).
/// An upstream registry: its protocol, URL, priority and which packages it may serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSettings {
    /// `pypi` (a PEP 503/691 simple index), `npm` (a registry) or `maven` (a repository layout).
    pub protocol: Protocol,
    /// Base URL of the upstream, e.g. `https://upstream.example/simple/`.
    #[schemars(
        length(min = 8, max = 2048),
        extend("x-kubernetes-validations" = [
            {
                "rule": "self.startsWith('http://') || self.startsWith('https://')",
                "message": "url must start with http:// or https://"
            },
            {
                "rule": "!self.contains('@') && !self.contains('?') && !self.contains('#')",
                "message": "url must not carry credentials, a query or a fragment; use credentialsSecretRef"
            }
        ])
    )]
    pub url: String,
    /// Lower wins: in the merged view a package found in a higher-priority source hides
    /// it in every lower one.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: i32,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlOverrides>,
    /// Package name patterns (`*` wildcard) this source may serve; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 214)))]
    pub include: Vec<String>,
    /// Package name patterns this source never serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 214)))]
    pub exclude: Vec<String>,
    /// Hosts other than the source's own (`host` or `host:port`, e.g. a CDN the index
    /// links to) that files may be fetched from: without the source's credentials, and
    /// only files with a declared sha256/sha512.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 261),
            regex(pattern = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
        )
    )]
    pub file_hosts: Vec<String>,
}

impl SourceSettings {
    /// Settings with every optional field at its default.
    pub fn new(protocol: Protocol, url: impl Into<String>) -> Self {
        SourceSettings {
            protocol,
            url: url.into(),
            priority: default_priority(),
            enabled: default_enabled(),
            ttl: None,
            include: Vec::new(),
            exclude: Vec::new(),
            file_hosts: Vec::new(),
        }
    }

    /// The field names a source may carry, from the schema (used to refuse unknown
    /// fields in the sources file, which `flatten` would otherwise ignore).
    pub fn field_names() -> Vec<String> {
        let schema = schemars::schema_for!(SourceSettings);
        schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// One upstream source, as configured: its name, its settings and (in the sources
/// file or a row) its credentials. Reads of the settings go through `Deref`
/// (`spec.url`, `spec.priority`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    pub name: String,
    #[serde(flatten)]
    pub settings: SourceSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSpec>,
}

impl std::ops::Deref for SourceSpec {
    type Target = SourceSettings;
    fn deref(&self) -> &SourceSettings {
        &self.settings
    }
}

impl std::ops::DerefMut for SourceSpec {
    fn deref_mut(&mut self) -> &mut SourceSettings {
        &mut self.settings
    }
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
            parse_file_host(h).map_err(|e| format!("source {n}: fileHosts: {e}"))?;
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
            settings: SourceSettings {
                protocol,
                url: row.url.clone(),
                priority: row.priority,
                enabled: row.enabled,
                ttl: settings.ttl,
                include: settings.include,
                exclude: settings.exclude,
                file_hosts: settings.file_hosts,
            },
            credentials: settings.credentials,
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
        let entries: Vec<serde_norway::Value> =
            serde_norway::from_str(&text).map_err(|e| ConfigError {
                var: FILE,
                message: format!("{path} is not a list of sources: {e}"),
            })?;
        let mut known = SourceSettings::field_names();
        known.extend(["name".to_string(), "credentials".to_string()]);
        for entry in entries {
            if let Some(fields) = entry.as_mapping() {
                if let Some(unknown) = fields
                    .keys()
                    .map(|k| k.as_str().unwrap_or("?"))
                    .find(|k| !known.iter().any(|f| f == k))
                {
                    return Err(ConfigError {
                        var: FILE,
                        message: format!(
                            "{path}: unknown field `{unknown}` in a source (known: {})",
                            known.join(", ")
                        ),
                    });
                }
            }
            specs.push(serde_norway::from_value(entry).map_err(|e| ConfigError {
                var: FILE,
                message: format!("{path} is not a list of sources: {e}"),
            })?);
        }
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
                settings: SourceSettings::new(protocol, url),
                credentials: None,
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

/// Checks a `fileHosts` entry: `host` or `host:port` (IPv6 in brackets).
pub fn parse_file_host(entry: &str) -> Result<(String, Option<u16>), String> {
    let parsed = url::Url::parse(&format!("http://{entry}/"))
        .map_err(|e| format!("{entry:?} is not a host or host:port: {e}"))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{entry:?} has no host"))?;
    let rebuilt = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    if !rebuilt.eq_ignore_ascii_case(entry) || parsed.path() != "/" {
        return Err(format!("{entry:?} must be a bare host or host:port"));
    }
    Ok((host.to_ascii_lowercase(), parsed.port()))
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

        // a misspelt field is refused, not ignored
        std::fs::write(
            &path,
            "- name: typo\n  protocol: pypi\n  url: https://upstream.example/\n  priorty: 5\n",
        )
        .unwrap();
        let p = path.to_string_lossy().to_string();
        let e = static_sources(&Env::from_fn(move |k| {
            (k == "ORCHARD_UPSTREAMS_FILE").then(|| p.clone())
        }))
        .unwrap_err();
        assert!(e.message.contains("unknown field `priorty`"), "{e}");
        assert!(e.message.contains("fileHosts"), "{e}");
    }
}
