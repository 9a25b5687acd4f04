//! The `UpstreamSource` custom resource, derived from these types: `crdgen` prints the
//! CRD (committed as `manifests/crd.yaml`; `make test` fails when it is stale).
//!
//! The schema validates what the API server can check itself, so `kubectl apply` of a
//! bad spec is refused with a readable message: the protocol is an enum, the URL an
//! http(s) URL without credentials, query or fragment (CEL), the priority 0–10000, TTLs
//! at least one second, name patterns non-empty. Those fields and rules are
//! `orchard_core::source_spec::SourceSettings`, shared with the server.

use kube::{CustomResource, KubeSchema};
use orchard_core::source_spec::SourceSettings;
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
    /// What the source is: the same struct (fields, defaults, bounds, CEL rules) as a
    /// source in the server's sources file and database row, flattened into the spec.
    #[serde(flatten)]
    pub source: SourceSettings,
    /// A Secret in the same namespace with the upstream's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
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
