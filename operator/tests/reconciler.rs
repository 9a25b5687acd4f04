//! The reconciler against a `tower-test` mock API server: every request it sends is
//! asserted (method, path, body) and answered in turn; a request that is not expected
//! fails the test, and so does an expected one that never comes. The database is a
//! real SQLite file and the cache the in-process backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use orchard_core::cache::CacheService;
use orchard_core::config::{CacheConfig, DatabaseConfig, Env};
use orchard_core::credentials::CredentialsKey;
use orchard_core::db::{self, ArtifactRepository};
use orchard_core::source_spec::SourceSpec;
use orchard_operator::crd::UpstreamSource;
use orchard_operator::metrics::Metrics;
use orchard_operator::reconcile::{self, Context, FINALIZER};
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

struct Expect {
    method: &'static str,
    /// Path and query must start with this.
    path: String,
    check: Box<dyn Fn(&Value) + Send>,
    status: u16,
    reply: Value,
}

fn expect(
    method: &'static str,
    path: impl Into<String>,
    check: impl Fn(&Value) + Send + 'static,
    status: u16,
    reply: Value,
) -> Expect {
    Expect {
        method,
        path: path.into(),
        check: Box::new(check),
        status,
        reply,
    }
}

/// Answers exactly the expected requests, in order; returns the bodies it saw.
async fn serve(mut handle: Handle, expects: Vec<Expect>) -> Vec<Value> {
    let mut seen = Vec::new();
    for e in expects {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("expected {} {} but no request came", e.method, e.path))
            .expect("the client went away");
        let uri = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        assert_eq!(req.method().as_str(), e.method, "method of {uri}");
        assert!(
            uri.starts_with(&e.path),
            "expected {} {}, got {uri}",
            e.method,
            e.path
        );
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (e.check)(&body);
        seen.push(body);
        send.send_response(
            Response::builder()
                .status(e.status)
                .body(Body::from(serde_json::to_vec(&e.reply).unwrap()))
                .unwrap(),
        );
    }
    seen
}

struct World {
    ctx: Arc<Context>,
    repo: Arc<dyn ArtifactRepository>,
    cache: CacheService,
    key: CredentialsKey,
    _dir: tempfile::TempDir,
}

async fn world() -> (World, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "team");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("o.db").display());
    let env = Env::from_fn(move |k| (k == "ORCHARD_DATABASE_URL").then(|| url.clone()));
    let dbc = DatabaseConfig::from_env(&env, dir.path()).unwrap();
    db::run_migrations(&dbc.url).await.unwrap();
    let repo = db::connect(&dbc).await.unwrap();
    let cache = CacheService::from_config(&CacheConfig::from_env(&Env::from_fn(|_| None)).unwrap())
        .unwrap();
    let key = CredentialsKey::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
    let ctx = Arc::new(Context {
        client: client.clone(),
        repo: repo.clone(),
        cache: cache.clone(),
        key: Some(key.clone()),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "orchard-operator".into(),
                instance: Some("test".into()),
            },
        ),
        metrics: Metrics::new(),
        resync: Duration::from_secs(300),
        failures: Mutex::new(HashMap::new()),
    });
    (
        World {
            ctx,
            repo,
            cache,
            key,
            _dir: dir,
        },
        handle,
    )
}

fn source(finalized: bool, extra_spec: Value, status: Option<Value>) -> UpstreamSource {
    let mut spec =
        json!({"protocol": "pypi", "url": "https://upstream.example/simple/", "priority": 10});
    spec.as_object_mut()
        .unwrap()
        .extend(extra_spec.as_object().unwrap().clone());
    let mut obj = json!({
        "apiVersion": "orchard.dev/v1alpha1",
        "kind": "UpstreamSource",
        "metadata": {"name": "internal", "namespace": "team", "uid": "u-1", "generation": 3, "resourceVersion": "7",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
    });
    if finalized {
        obj["metadata"]["finalizers"] = json!([FINALIZER]);
    }
    if let Some(s) = status {
        obj["status"] = s;
    }
    serde_json::from_value(obj).unwrap()
}

/// What the API server answers to a status patch: the object.
fn cr_json() -> Value {
    serde_json::to_value(source(true, json!({}), None)).unwrap()
}

const CR: &str = "/apis/orchard.dev/v1alpha1/namespaces/team/upstreamsources/internal";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team/events";

fn ready_status(body: &Value, status: &str, reason: &str) {
    let c = &body["status"]["conditions"][0];
    assert_eq!(
        (
            c["type"].as_str(),
            c["status"].as_str(),
            c["reason"].as_str()
        ),
        (Some("Ready"), Some(status), Some(reason)),
        "{body}"
    );
    assert_eq!(c["observedGeneration"], 3);
    assert_eq!(body["status"]["observedGeneration"], 3);
    assert_eq!(body["apiVersion"], "orchard.dev/v1alpha1");
    assert_eq!(body["kind"], "UpstreamSource");
}

fn event(body: &Value, type_: &str, reason: &str) {
    assert_eq!(
        (body["type"].as_str(), body["reason"].as_str()),
        (Some(type_), Some(reason)),
        "{body}"
    );
    assert_eq!(body["regarding"]["name"], "internal");
    assert_eq!(body["reportingController"], "orchard-operator");
}

#[tokio::test]
async fn first_reconcile_only_adds_the_finalizer() {
    let (w, handle) = world().await;
    let obj = source(false, json!({}), None);
    let reply = serde_json::to_value(source(true, json!({}), None)).unwrap();
    let server = tokio::spawn(serve(
        handle,
        vec![expect(
            "PATCH",
            CR,
            |b| {
                let ops = b.as_array().expect("a JSON patch");
                assert!(
                    ops.iter()
                        .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER])),
                    "{b}"
                );
            },
            200,
            reply,
        )],
    ));
    let action = reconcile::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    server.await.unwrap();
    assert!(
        w.repo.list_sources().await.unwrap().is_empty(),
        "no row before the finalizer is in place"
    );
}

#[tokio::test]
async fn apply_writes_row_bumps_generation_then_status_and_event_and_is_idempotent() {
    let (w, handle) = world().await;
    // a source's generation starts at the time of its first use; count bumps from it
    let g0 = w.cache.generation("internal").await.unwrap();
    let obj = source(true, json!({"exclude": ["acme-*"]}), None);
    let server = tokio::spawn(serve(
        handle,
        vec![
            expect(
                "PATCH",
                format!("{CR}/status?&force=true&fieldManager=orchard-operator"),
                |b| ready_status(b, "True", "Synced"),
                200,
                cr_json(),
            ),
            expect(
                "POST",
                EVENTS,
                |b| event(b, "Normal", "Synced"),
                201,
                json!({}),
            ),
        ],
    ));
    let action = reconcile::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let seen = server.await.unwrap();
    assert!(seen[0]["status"]["lastSyncTime"].is_string());

    let rows = w.repo.list_sources().await.unwrap();
    assert_eq!(rows.len(), 1);
    let spec = SourceSpec::from_row(&rows[0]).unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.priority, spec.exclude.clone()),
        ("internal", 10, vec!["acme-*".to_string()])
    );
    assert_eq!(
        SourceSpec::row_owner(&rows[0]).as_deref(),
        Some("team/internal")
    );
    assert_eq!(w.cache.generation("internal").await, Some(g0 + 1));

    // Again, with the status it wrote: nothing to do and no request at all (the mock's
    // handle is gone with the finished server task, so any request would fail the
    // reconcile); the row is untouched.
    let obj = source(
        true,
        json!({"exclude": ["acme-*"]}),
        Some(seen[0]["status"].clone()),
    );
    let action = reconcile::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(w.repo.list_sources().await.unwrap(), rows);
    assert_eq!(
        w.cache.generation("internal").await,
        Some(g0 + 1),
        "no second invalidation"
    );
    let text = w.ctx.metrics.render();
    assert!(
        text.contains("orchard_operator_reconciles_total{result=\"success\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("orchard_operator_invalidation_lag_seconds_count 1"),
        "{text}"
    );
}

#[tokio::test]
async fn credentials_are_read_from_the_secret_sealed_and_never_echoed() {
    let (w, handle) = world().await;
    let obj = source(
        true,
        json!({"credentialsSecretRef": {"name": "tok", "type": "basic"}}),
        None,
    );
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tok", "namespace": "team", "labels": {"orchard.dev/upstream-credentials": "true"}},
        "data": {"username": "Y2ktYm90", "password": "aHVudGVyMi1zM2NyM3Q="} // ci-bot / hunter2-s3cr3t
    });
    let server = tokio::spawn(serve(
        handle,
        vec![
            expect(
                "GET",
                "/api/v1/namespaces/team/secrets/tok",
                |_| {},
                200,
                secret,
            ),
            expect(
                "PATCH",
                format!("{CR}/status"),
                |b| ready_status(b, "True", "Synced"),
                200,
                cr_json(),
            ),
            expect(
                "POST",
                EVENTS,
                |b| event(b, "Normal", "Synced"),
                201,
                json!({}),
            ),
        ],
    ));
    reconcile::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .unwrap();
    let seen = server.await.unwrap();
    for body in &seen {
        let text = body.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVy"),
            "secret echoed: {text}"
        );
    }
    let row = &w.repo.list_sources().await.unwrap()[0];
    assert!(
        !row.settings.contains("hunter2") && !row.settings.contains("ci-bot"),
        "{}",
        row.settings
    );
    let sealed = SourceSpec::from_row(row)
        .unwrap()
        .credentials
        .unwrap()
        .sealed
        .unwrap();
    let opened = w.key.open("internal", &sealed).unwrap();
    assert_eq!(opened.username.as_deref(), Some("ci-bot"));
    assert!(!w.ctx.metrics.render().contains("hunter2"));
}

#[tokio::test]
async fn a_secret_without_the_opt_in_label_is_refused() {
    let (w, handle) = world().await;
    let obj = source(
        true,
        json!({"url": "https://upstream.example/elsewhere/", "credentialsSecretRef": {"name": "db", "type": "bearer", "secretKey": "password"}}),
        None,
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "team"}, "data": {"password": "c2VjcmV0"}});
    let server = tokio::spawn(serve(
        handle,
        vec![
            expect(
                "GET",
                "/api/v1/namespaces/team/secrets/db",
                |_| {},
                200,
                secret,
            ),
            expect(
                "PATCH",
                format!("{CR}/status"),
                |b| ready_status(b, "False", "SecretNotLabelled"),
                200,
                cr_json(),
            ),
            expect(
                "POST",
                EVENTS,
                |b| event(b, "Warning", "SecretNotLabelled"),
                201,
                json!({}),
            ),
        ],
    ));
    let err = reconcile::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(reconcile::failure_reason(&err), "SecretNotLabelled");
    server.await.unwrap();
    assert!(
        w.repo.list_sources().await.unwrap().is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn missing_secret_sets_ready_false_and_backs_off() {
    let (w, handle) = world().await;
    // a source's generation starts at the time of its first use; count bumps from it
    let g0 = w.cache.generation("internal").await.unwrap();
    let obj = Arc::new(source(
        true,
        json!({"credentialsSecretRef": {"name": "nope", "type": "bearer"}}),
        None,
    ));
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
        "message": "secrets \"nope\" not found"});
    let server = tokio::spawn(serve(
        handle,
        vec![
            expect(
                "GET",
                "/api/v1/namespaces/team/secrets/nope",
                |_| {},
                404,
                not_found,
            ),
            expect(
                "PATCH",
                format!("{CR}/status"),
                |b| {
                    ready_status(b, "False", "SecretNotFound");
                    assert!(b["status"]["conditions"][0]["message"]
                        .as_str()
                        .unwrap()
                        .contains("\"nope\""));
                },
                200,
                cr_json(),
            ),
            expect(
                "POST",
                EVENTS,
                |b| event(b, "Warning", "SecretNotFound"),
                201,
                json!({}),
            ),
        ],
    ));
    let err = reconcile::reconcile(obj.clone(), w.ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(reconcile::failure_reason(&err), "SecretNotFound");
    server.await.unwrap();
    assert!(w.repo.list_sources().await.unwrap().is_empty());
    assert_eq!(
        w.cache.generation("internal").await,
        Some(g0),
        "no invalidation"
    );
    let a1 = reconcile::error_policy(obj.clone(), &err, w.ctx.clone());
    let a2 = reconcile::error_policy(obj.clone(), &err, w.ctx.clone());
    assert_eq!(
        (a1, a2),
        (
            Action::requeue(Duration::from_secs(1)),
            Action::requeue(Duration::from_secs(2))
        )
    );
    assert!(w
        .ctx
        .metrics
        .render()
        .contains("orchard_operator_reconcile_failures_total{reason=\"SecretNotFound\"} 1"));
}

#[tokio::test]
async fn a_name_owned_by_another_namespace_is_a_conflict() {
    let (w, handle) = world().await;
    let mut other = reconcile::desired_spec(&source(true, json!({}), None), None);
    other.url = "https://upstream.example/other/".into();
    w.repo
        .upsert_source(&other.to_owned_row(Some("elsewhere/internal")))
        .await
        .unwrap();
    let server = tokio::spawn(serve(
        handle,
        vec![
            expect(
                "PATCH",
                format!("{CR}/status"),
                |b| ready_status(b, "False", "NameConflict"),
                200,
                cr_json(),
            ),
            expect(
                "POST",
                EVENTS,
                |b| event(b, "Warning", "NameConflict"),
                201,
                json!({}),
            ),
        ],
    ));
    let err = reconcile::reconcile(Arc::new(source(true, json!({}), None)), w.ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(reconcile::failure_reason(&err), "NameConflict");
    server.await.unwrap();
    assert_eq!(
        w.repo.list_sources().await.unwrap()[0].url,
        "https://upstream.example/other/",
        "not overwritten"
    );
}

#[tokio::test]
async fn delete_removes_the_row_publishes_and_releases_the_finalizer() {
    let (w, handle) = world().await;
    // a source's generation starts at the time of its first use; count bumps from it
    let g0 = w.cache.generation("internal").await.unwrap();
    let spec = reconcile::desired_spec(&source(true, json!({}), None), None);
    w.repo
        .upsert_source(&spec.to_owned_row(Some("team/internal")))
        .await
        .unwrap();
    let mut obj = source(true, json!({}), None);
    obj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let server = tokio::spawn(serve(
        handle,
        vec![
            expect(
                "POST",
                EVENTS,
                |b| event(b, "Normal", "Deleted"),
                201,
                json!({}),
            ),
            expect(
                "PATCH",
                CR,
                |b| {
                    let ops = b.as_array().expect("a JSON patch");
                    assert!(
                        ops.iter().any(
                            |op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0"
                        ),
                        "{b}"
                    );
                },
                200,
                serde_json::to_value(source(false, json!({}), None)).unwrap(),
            ),
        ],
    ));
    let action = reconcile::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    server.await.unwrap();
    assert!(w.repo.list_sources().await.unwrap().is_empty());
    assert_eq!(w.cache.generation("internal").await, Some(g0 + 1));
}
