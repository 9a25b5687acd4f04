//! The admin listener: `/healthz` (the process answers), `/readyz` (every component,
//! 503 while a required one is down) and `/metrics` (Prometheus text).
//!
//! Required for readiness: the database and artifact storage — until the replica has
//! been ready once. After that a required component that goes down makes the replica
//! `degraded` (200, the component reported down): the database and the store are shared
//! by every replica, and taking them all out of the Service for a blip would turn the
//! cached traffic they can still serve into connection errors. The cache is reported
//! but never required: without it requests still succeed, only slower.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::metrics::metrics;
use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Set the first time every required component answered.
static BEEN_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Debug, Serialize)]
pub struct Component {
    pub status: &'static str,
    pub backend: &'static str,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<serde_json::Value>,
}

fn component<E: std::fmt::Display>(
    name: &str,
    backend: &'static str,
    required: bool,
    result: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> Component {
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    };
    metrics()
        .component_up
        .with_label_values(&[name])
        .set(i64::from(error.is_none()));
    Component {
        status: if error.is_none() { "up" } else { "down" },
        backend,
        required,
        error,
        pool: None,
    }
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let db_backend = state.config.database.url.kind();
    let (database, cache, storage) = tokio::join!(
        async {
            match state.db() {
                Some(repo) => {
                    let mut c = component(
                        "database",
                        repo.kind(),
                        true,
                        tokio::time::timeout(CHECK_TIMEOUT, repo.ping()).await,
                    );
                    c.pool = Some(serde_json::to_value(repo.pool_state()).unwrap_or_default());
                    c
                }
                None => {
                    metrics()
                        .component_up
                        .with_label_values(&["database"])
                        .set(0);
                    Component {
                        status: "down",
                        backend: db_backend,
                        required: true,
                        error: Some(
                            "connecting (start-up retries until the database answers)".into(),
                        ),
                        pool: None,
                    }
                }
            }
        },
        async {
            component(
                "cache",
                state.cache.backend_kind(),
                false,
                tokio::time::timeout(CHECK_TIMEOUT, state.cache.ping()).await,
            )
        },
        async {
            component(
                "storage",
                state.storage.kind(),
                true,
                tokio::time::timeout(CHECK_TIMEOUT, state.storage.ping()).await,
            )
        },
    );
    let all_up = [&database, &cache, &storage]
        .iter()
        .all(|c| !c.required || c.status == "up");
    let been_ready = if all_up {
        BEEN_READY.store(true, std::sync::atomic::Ordering::Relaxed);
        true
    } else {
        // the database connected at start-up at least (`state.db()`), and everything
        // was up once: serve what can be served
        state.db().is_some() && BEEN_READY.load(std::sync::atomic::Ordering::Relaxed)
    };
    let ready = all_up || been_ready;
    let body = serde_json::json!({
        "status": if all_up { "ready" } else if ready { "degraded" } else { "not_ready" },
        "components": {
            "database": database,
            "cache": cache,
            "storage": storage,
            "http_pool": {"status": "up", "active": state.http.active(), "max": state.http.max()},
            "worker_pool": {"status": "up", "active": state.blocking.active(), "max": state.blocking.max()},
        },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    let m = metrics();
    if let Some(repo) = state.db() {
        let p = repo.pool_state();
        m.db_pool_connections
            .with_label_values(&["idle"])
            .set(p.idle as i64);
        m.db_pool_connections
            .with_label_values(&["in_use"])
            .set((p.connections - p.idle) as i64);
        m.db_pool_connections
            .with_label_values(&["max"])
            .set(p.max as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics_text));
}
