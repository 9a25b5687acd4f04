//! The operator process: metrics listener, database and cache, leader election, and
//! the controller (UpstreamSources of one namespace, re-triggered by the Secrets they
//! reference) while this process leads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use orchard_core::cache::CacheService;
use orchard_core::config::CacheBackendConfig;
use orchard_core::db;

use crate::config::OperatorConfig;
use crate::crd::UpstreamSource;
use crate::leader::LeaderElector;
use crate::metrics::{self, Metrics};
use crate::reconcile::{self, Context};

pub const HELP: &str = "orchard-operator: reconciles UpstreamSource resources into Orchard's database and cache.

Environment:
  ORCHARD_DATABASE_URL            the replicas' database (required; postgres:// or sqlite://)
  ORCHARD_REDIS_CLUSTER_NODES     Redis Cluster seed nodes (or ORCHARD_REDIS_HOST/_PORT/_DB)
  ORCHARD_CREDENTIALS_KEY[_FILE]  32-byte base64 key sealing upstream credentials (as the replicas)
  ORCHARD_OPERATOR_NAMESPACE      namespace to watch (default: the pod's, else the kubeconfig's)
  ORCHARD_OPERATOR_METRICS_ADDR   /metrics and /healthz listener (default 0.0.0.0:9091)
  ORCHARD_OPERATOR_LEASE_NAME     leader-election Lease (default orchard-operator)
  ORCHARD_OPERATOR_LEASE_SECONDS  lease duration (default 15)
  ORCHARD_OPERATOR_IDENTITY       this replica's name in the Lease (default $POD_NAME, else host-pid)
  ORCHARD_OPERATOR_RESYNC_SECONDS re-check period of a synced source (default 300)
Kubernetes access: in-cluster service account, else KUBECONFIG / ~/.kube/config.";

pub async fn run(config: OperatorConfig) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let listener = tokio::spawn(metrics::serve(config.metrics_addr, metrics.clone()));
    if matches!(config.cache.backend, CacheBackendConfig::InProcess) {
        tracing::warn!("no Redis configured: invalidations reach no replica (they still reload every ORCHARD_SOURCES_REFRESH seconds)");
    }
    let client = kube::Client::try_default().await?;
    let namespace = match &config.namespace {
        Some(ns) => ns.clone(),
        None => std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| client.default_namespace().to_string()),
    };
    let repo = connect_database(&config).await;
    let cache = CacheService::from_config(&config.cache)?;
    let elector = LeaderElector::new(
        Api::<Lease>::namespaced(client.clone(), &namespace),
        &config.lease_name,
        &config.identity,
        config.lease_duration,
    );
    tracing::info!(
        namespace,
        identity = elector.identity(),
        lease = config.lease_name,
        "waiting for leadership"
    );
    tokio::select! {
        _ = elector.acquire() => {},
        _ = shutdown_signal() => return Ok(()),
    }
    metrics.leader.set(1);
    tracing::info!(
        namespace,
        identity = elector.identity(),
        "leading: reconciling UpstreamSources"
    );

    let reporter = Reporter {
        controller: "orchard-operator".into(),
        instance: Some(config.identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        repo,
        cache,
        key: config.credentials_key.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        resync: config.resync,
        failures: Mutex::new(HashMap::new()),
    });
    let sources: Api<UpstreamSource> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let controller = Controller::new(sources, watcher::Config::default());
    let store = controller.store();
    let controller = controller
        .watches(
            secrets,
            watcher::Config::default(),
            move |secret: Secret| {
                let name = secret.name_any();
                let ns = secret.namespace();
                store
                    .state()
                    .into_iter()
                    .filter(|s| {
                        s.namespace() == ns
                            && s.spec
                                .credentials_secret_ref
                                .as_ref()
                                .is_some_and(|r| r.name == name)
                    })
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|_| futures::future::ready(()));

    let outcome = tokio::select! {
        _ = controller => Err(anyhow::anyhow!("the controller stopped")),
        _ = elector.hold() => Err(anyhow::anyhow!("lost the leader Lease; exiting so that only the new leader reconciles")),
        _ = shutdown_signal() => Ok(()),
    };
    metrics.leader.set(0);
    if outcome.is_ok() {
        tracing::info!("shutting down: releasing the Lease");
        elector.release().await;
    }
    listener.abort();
    outcome
}

/// Migrates (under the advisory lock the replicas use too) and connects, retrying with
/// backoff until the database answers.
async fn connect_database(config: &OperatorConfig) -> Arc<dyn db::ArtifactRepository> {
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            db::run_migrations(&config.database.url).await?;
            db::connect(&config.database).await
        };
        match attempt.await {
            Ok(repo) => return repo,
            Err(e) => {
                tracing::error!(database = %config.database.url.redacted(), error = %e, retry_in_s = delay.as_secs(), "database unreachable");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
