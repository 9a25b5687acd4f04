//! The `UpstreamSource` custom resource, derived from these types: `crdgen` prints the
//! CRD (committed as `manifests/crd.yaml`; `make test` fails when it is stale).
//!
//! The schema validates what the API server can check itself, so `kubectl apply` of a
//! bad spec is refused with a readable message: the protocol is an enum, the URL an
//! http(s) URL without credentials, query or fragment (CEL), the priority 0–10000, TTLs
//! at least one second, name patterns non-empty.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// kube's printcolumn is repeated by design (one per column)
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "orchard.dev",
    version = "v1alpha1",
    kind = "UpstreamSource",
    namespaced,
    status = "UpstreamSourceStatus",
    shortname = "upsrc",
    category = "orchard",
    doc = "An upstream package registry Orchard proxies (PyPI simple index, npm registry or Maven repository)",
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSourceSpec {
    /// `pypi` (a PEP 503/691 simple index), `npm` (a registry) or `maven` (a repository layout).
    pub protocol: Protocol,
    /// Base URL of the upstream, e.g. `https://upstream.example/simple/`.
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must start with http:// or https://"))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('@') && !self.contains('?') && !self.contains('#')").message("url must not carry credentials, a query or a fragment; use credentialsSecretRef"))]
    pub url: String,
    /// Lower wins: in the merged view a package found in a higher-priority source hides
    /// it in every lower one.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: i32,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// A Secret in the same namespace with the upstream's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlOverrides>,
    /// Package name patterns (`*` wildcard) this source may serve; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub include: Vec<Pattern>,
    /// Package name patterns this source never serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub exclude: Vec<Pattern>,
    /// Hosts other than the source's own (`host` or `host:port`, e.g. a CDN the index
    /// links to) that files may be fetched from: without the source's credentials, and
    /// only files with a declared sha256/sha512.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub file_hosts: Vec<FileHost>,
}

fn default_priority() -> i32 {
    100
}
fn default_enabled() -> bool {
    true
}

/// `host` or `host:port` (IPv6 in brackets).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct FileHost(
    #[schemars(
        length(min = 1, max = 261),
        regex(pattern = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
    )]
    pub String,
);

/// A name pattern such as `acme-*` or `com.acme:*`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct Pattern(#[schemars(length(min = 1, max = 214))] pub String);

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Pypi,
    Npm,
    Maven,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: CredentialsType,
    /// Key of the username (basic). Default `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,
    /// Key of the password (basic) or token (bearer). Default `password` / `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsType {
    Basic,
    Bearer,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
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

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSourceStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339 time of the last successful sync into Postgres and the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
}

/// A status condition (`Ready`), in the usual Kubernetes shape.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
