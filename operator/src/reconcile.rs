//! The reconciler: one `UpstreamSource` → one `upstream_sources` row, a generation
//! bump and an invalidation message, and the `Ready` condition written back.
//!
//! Apply: validate, read the referenced Secret, seal its values, upsert the row (only
//! when it differs), bump the source's generation (which publishes on
//! `{ns}:invalidate`), then write status with server-side apply and emit an Event.
//! Delete (finalizer): remove the row, publish, let the object go. A reconcile that
//! changes nothing writes nothing, so status writes cannot feed back into a loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Resource, ResourceExt};
use orchard_core::cache::CacheService;
use orchard_core::credentials::CredentialsKey;
use orchard_core::db::{ArtifactRepository, UpstreamSourceRow};
use orchard_core::source_spec::{CredentialsKind, CredentialsSpec, SourceSpec};
use secrecy::{ExposeSecret, SecretString};

use crate::crd::{Condition, CredentialsType, UpstreamSource, UpstreamSourceStatus};
use crate::metrics::Metrics;

pub const FINALIZER: &str = "orchard.dev/source-row";
pub const FIELD_MANAGER: &str = "orchard-operator";
/// The label a Secret needs before an `UpstreamSource` may use it: without this opt-in,
/// anyone allowed to write an UpstreamSource could send any Secret of the namespace
/// (the database password, the credentials key) to a URL of their choice.
pub const CREDENTIALS_LABEL: &str = "orchard.dev/upstream-credentials";

/// Why a reconcile failed. `reason()` is the `Ready` condition reason and the metric
/// label; messages name fields and objects, never secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidSpec(String),
    #[error("Secret {0:?} not found in this namespace")]
    SecretNotFound(String),
    #[error("Secret {0:?} is not labelled {CREDENTIALS_LABEL}=true; only Secrets meant for upstreams can be referenced")]
    SecretNotLabelled(String),
    #[error("Secret {secret:?} has no non-empty key {key:?}")]
    SecretKeyMissing { secret: String, key: String },
    #[error("credentialsSecretRef is set but the operator has no ORCHARD_CREDENTIALS_KEY to seal it with")]
    NoCredentialsKey,
    #[error("source name {name:?} is already used by {owner}")]
    NameConflict { name: String, owner: String },
    #[error("database: {0}")]
    Database(String),
    #[error("could not publish the invalidation (cache unreachable); the row is written and replicas reload it periodically")]
    Invalidation,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::SecretNotFound(_) => "SecretNotFound",
            Error::SecretNotLabelled(_) => "SecretNotLabelled",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::NoCredentialsKey => "NoCredentialsKey",
            Error::NameConflict { .. } => "NameConflict",
            Error::Database(_) => "DatabaseError",
            Error::Invalidation => "InvalidationFailed",
            Error::Kube(_) => "KubernetesError",
        }
    }
}

pub type FinalizerError = kube::runtime::finalizer::Error<Error>;

/// The reason label of a reconcile error.
pub fn failure_reason(e: &FinalizerError) -> &'static str {
    use kube::runtime::finalizer::Error as F;
    match e {
        F::ApplyFailed(e) | F::CleanupFailed(e) => e.reason(),
        F::AddFinalizer(_) | F::RemoveFinalizer(_) => "FinalizerError",
        _ => "InvalidObject",
    }
}

pub struct Context {
    pub client: kube::Client,
    pub repo: Arc<dyn ArtifactRepository>,
    pub cache: CacheService,
    pub key: Option<CredentialsKey>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub resync: Duration,
    /// Consecutive failures per object, for the error backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

/// The controller's reconcile function.
pub async fn reconcile(
    obj: Arc<UpstreamSource>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError> {
    let started = Instant::now();
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<UpstreamSource> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Finalizer::Apply(o) => apply(&o, &ctx).await,
            Finalizer::Cleanup(o) => cleanup(&o, &ctx).await,
        }
    })
    .await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let key = object_key(&obj);
    match &result {
        Ok(_) => {
            ctx.metrics.reconciles.with_label_values(&["success"]).inc();
            ctx.failures.lock().unwrap().remove(&key);
        }
        Err(e) => {
            ctx.metrics.reconciles.with_label_values(&["error"]).inc();
            ctx.metrics
                .failures
                .with_label_values(&[failure_reason(e)])
                .inc();
            tracing::warn!(source = %key, reason = failure_reason(e), error = %e, "reconcile failed");
        }
    }
    result
}

/// Exponential backoff per object: 1 s, 2 s, 4 s … capped at 5 minutes.
pub fn error_policy(obj: Arc<UpstreamSource>, _e: &FinalizerError, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(object_key(&obj)).or_insert(0);
    *n = n.saturating_add(1);
    Action::requeue(backoff(*n))
}

pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

fn object_key(obj: &UpstreamSource) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

async fn apply(obj: &UpstreamSource, ctx: &Context) -> Result<Action, Error> {
    match sync(obj, ctx).await {
        Ok(outcome) => {
            let generation = obj.metadata.generation;
            let ready_now = ready_condition(obj)
                .is_some_and(|c| c.status == "True" && c.observed_generation == generation);
            if let Some(g) = outcome.published {
                let message = format!(
                    "source {:?} written to the database; replicas told to reload (cache generation {g})",
                    obj.name_any()
                );
                write_status(obj, ctx, "True", "Synced", &message).await?;
                publish_event(obj, ctx, EventType::Normal, "Synced", "Sync", &message).await;
            } else if !ready_now {
                let message = format!("source {:?} is in the database", obj.name_any());
                write_status(obj, ctx, "True", "Synced", &message).await?;
            }
            Ok(Action::requeue(ctx.resync))
        }
        Err(e) => {
            let message = e.to_string();
            let unchanged = ready_condition(obj).is_some_and(|c| {
                c.status == "False"
                    && c.reason == e.reason()
                    && c.message == message
                    && c.observed_generation == obj.metadata.generation
            });
            if !unchanged {
                if let Err(se) = write_status(obj, ctx, "False", e.reason(), &message).await {
                    tracing::warn!(error = %se, "could not write the failure into status");
                }
            }
            publish_event(obj, ctx, EventType::Warning, e.reason(), "Sync", &message).await;
            Err(e)
        }
    }
}

struct SyncOutcome {
    /// The generation published, when the row changed (or was never confirmed).
    published: Option<i64>,
}

/// Brings the row in line with the resource; publishes when anything changed or when the
/// last publish is not confirmed in status.
async fn sync(obj: &UpstreamSource, ctx: &Context) -> Result<SyncOutcome, Error> {
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let owner = format!("{ns}/{name}");
    let rows = ctx
        .repo
        .list_sources()
        .await
        .map_err(|e| Error::Database(e.to_string()))?;
    let existing = rows.into_iter().find(|r| r.name == name);
    if let Some(row) = &existing {
        if let Some(other) = SourceSpec::row_owner(row).filter(|o| *o != owner) {
            return Err(Error::NameConflict { name, owner: other });
        }
    }
    let (credentials, secret_changed_at) =
        credentials(obj, ctx, &name, &ns, existing.as_ref()).await?;
    let spec = desired_spec(obj, credentials);
    spec.validate().map_err(Error::InvalidSpec)?;
    let desired = spec.to_owned_row(Some(&owner));
    let changed = existing.as_ref().is_none_or(|row| !same_row(row, &desired));
    let confirmed = ready_condition(obj)
        .is_some_and(|c| c.status == "True" && c.observed_generation == obj.metadata.generation);
    if changed {
        // The owner check above is advisory (it names the owner); this one is atomic.
        let written = ctx
            .repo
            .upsert_source_owned(&desired, &owner)
            .await
            .map_err(|e| Error::Database(e.to_string()))?;
        if !written {
            return Err(Error::NameConflict {
                name,
                owner: "another UpstreamSource (written concurrently)".into(),
            });
        }
    }
    if !changed && confirmed {
        return Ok(SyncOutcome { published: None });
    }
    let generation = ctx
        .cache
        .bump_generation(&name)
        .await
        .ok_or(Error::Invalidation)?;
    let changed_at = [spec_changed_at(obj), secret_changed_at]
        .into_iter()
        .flatten()
        .max();
    observe_lag(ctx, changed_at);
    tracing::info!(source = %owner, generation, changed, "source synced and invalidation published");
    Ok(SyncOutcome {
        published: Some(generation),
    })
}

async fn cleanup(obj: &UpstreamSource, ctx: &Context) -> Result<Action, Error> {
    let name = obj.name_any();
    let owner = format!("{}/{}", obj.namespace().unwrap_or_default(), name);
    // Only a row without an owner or owned by this resource (one statement).
    if ctx
        .repo
        .delete_source_owned(&name, &owner)
        .await
        .map_err(|e| Error::Database(e.to_string()))?
    {
        ctx.cache
            .bump_generation(&name)
            .await
            .ok_or(Error::Invalidation)?;
        observe_lag(ctx, obj.metadata.deletion_timestamp.as_ref().map(|t| t.0));
        tracing::info!(source = %owner, "source removed and invalidation published");
        let message = format!("source {name:?} removed from the database; replicas told to reload");
        publish_event(obj, ctx, EventType::Normal, "Deleted", "Delete", &message).await;
    }
    Ok(Action::await_change())
}

/// The row the resource describes (credentials already resolved and sealed).
pub fn desired_spec(obj: &UpstreamSource, credentials: Option<CredentialsSpec>) -> SourceSpec {
    SourceSpec {
        name: obj.name_any(),
        settings: obj.spec.source.clone(),
        credentials,
    }
}

/// Reads the referenced Secret and seals its values. A value already sealed in the
/// existing row is reused when it opens to the same credentials, so an unchanged Secret
/// leaves the row unchanged. Returns the Secret's last change time too.
async fn credentials(
    obj: &UpstreamSource,
    ctx: &Context,
    name: &str,
    ns: &str,
    existing: Option<&UpstreamSourceRow>,
) -> Result<(Option<CredentialsSpec>, Option<Timestamp>), Error> {
    let Some(r) = &obj.spec.credentials_secret_ref else {
        return Ok((None, None));
    };
    let key = ctx.key.as_ref().ok_or(Error::NoCredentialsKey)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets
        .get_opt(&r.name)
        .await?
        .ok_or_else(|| Error::SecretNotFound(r.name.clone()))?;
    if secret.labels().get(CREDENTIALS_LABEL).map(String::as_str) != Some("true") {
        return Err(Error::SecretNotLabelled(r.name.clone()));
    }
    let value = |k: &str| -> Result<String, Error> {
        let missing = || Error::SecretKeyMissing {
            secret: r.name.clone(),
            key: k.to_string(),
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .ok_or_else(missing)?;
        let text = String::from_utf8(bytes.0.clone()).map_err(|_| missing())?;
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        if text.is_empty() {
            return Err(missing());
        }
        Ok(text)
    };
    let (kind, username) = match r.kind {
        CredentialsType::Basic => (
            CredentialsKind::Basic,
            Some(value(r.username_key.as_deref().unwrap_or("username"))?),
        ),
        CredentialsType::Bearer => (CredentialsKind::Bearer, None),
    };
    let default_key = if r.kind == CredentialsType::Basic {
        "password"
    } else {
        "token"
    };
    let secret_value = SecretString::from(value(r.secret_key.as_deref().unwrap_or(default_key))?);
    let previous = existing
        .and_then(|row| SourceSpec::from_row(row).ok())
        .and_then(|s| s.credentials)
        .filter(|c| c.kind == kind)
        .and_then(|c| c.sealed)
        .filter(|sealed| {
            key.open(name, sealed).is_ok_and(|o| {
                o.username == username && o.secret.expose_secret() == secret_value.expose_secret()
            })
        });
    let sealed = previous.unwrap_or_else(|| key.seal(name, username.as_deref(), &secret_value));
    let changed_at = latest_change(&secret.metadata, |_| true);
    Ok((
        Some(CredentialsSpec {
            kind,
            username: None,
            secret_env: None,
            sealed: Some(sealed),
        }),
        changed_at,
    ))
}

/// Rows are equal when everything but `updated_at` is.
fn same_row(a: &UpstreamSourceRow, b: &UpstreamSourceRow) -> bool {
    (
        &a.name,
        &a.protocol,
        &a.url,
        a.priority,
        a.enabled,
        &a.settings,
    ) == (
        &b.name,
        &b.protocol,
        &b.url,
        b.priority,
        b.enabled,
        &b.settings,
    )
}

fn ready_condition(obj: &UpstreamSource) -> Option<&Condition> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.kind == "Ready")
}

/// When the spec last changed: the newest managed-fields entry that owns spec fields
/// (or the creation time).
fn spec_changed_at(obj: &UpstreamSource) -> Option<Timestamp> {
    latest_change(&obj.metadata, |fields| fields.contains("\"f:spec\""))
        .or_else(|| obj.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn latest_change(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owns: impl Fn(&str) -> bool,
) -> Option<Timestamp> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref().unwrap_or("").is_empty())
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| owns(&f.0.to_string())))
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
}

fn observe_lag(ctx: &Context, changed_at: Option<Timestamp>) {
    if let Some(t) = changed_at {
        let lag = Timestamp::now().duration_since(t).as_secs_f64().max(0.0);
        ctx.metrics.invalidation_lag.observe(lag);
    }
}

/// Writes the `Ready` condition with server-side apply (field manager
/// `orchard-operator`); the transition time moves only when the status value changes.
async fn write_status(
    obj: &UpstreamSource,
    ctx: &Context,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let now = Timestamp::now().to_string();
    let previous = ready_condition(obj);
    let transition = previous
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let generation = obj.metadata.generation;
    let condition = Condition {
        kind: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: transition,
        observed_generation: generation,
    };
    let last_sync_time = if status == "True" {
        Some(now)
    } else {
        obj.status.as_ref().and_then(|s| s.last_sync_time.clone())
    };
    let status = UpstreamSourceStatus {
        conditions: vec![condition],
        observed_generation: generation,
        last_sync_time,
    };
    let patch = serde_json::json!({
        "apiVersion": UpstreamSource::api_version(&()),
        "kind": UpstreamSource::kind(&()),
        "status": status,
    });
    let api: Api<UpstreamSource> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish_event(
    obj: &UpstreamSource,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(b, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
