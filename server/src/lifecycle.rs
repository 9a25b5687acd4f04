//! Start-up and shutdown (DESIGN §7).
//!
//! Start: HTTP client pools and the worker pool → cache (Redis connects in the
//! background) → storage → the admin listener (so `/healthz` answers and `/readyz` says
//! what is missing) → database: connect and migrate under the advisory lock, retrying
//! with backoff while it is unreachable → upstream sources → the package listener.
//!
//! SIGTERM or SIGINT: stop accepting, drain in-flight requests for at most
//! `ORCHARD_SHUTDOWN_TIMEOUT` seconds, stop the admin listener, close the worker pool;
//! the Redis connections close when the state is dropped.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;

use crate::cache::CacheService;
use crate::config::Config;
use crate::db;
use crate::http_client::HttpClientManager;
use crate::routes::{self, health};
use crate::state::AppState;
use crate::storage::ArtifactStore;
use crate::worker_pool::BlockingPool;

/// Runs `orchard serve` until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(config = %config.redacted_summary(), "starting orchard {}", env!("CARGO_PKG_VERSION"));
    let config = Arc::new(config);
    let workers = config.server.workers;

    let http = Arc::new(HttpClientManager::new(&config.http, workers));
    let blocking = BlockingPool::new(config.http.worker_threads);
    let cache = CacheService::from_config(&config.cache).context("cache configuration")?;
    let storage = ArtifactStore::from_config(&config.storage).context("storage configuration")?;
    let state = AppState::new(crate::proxy::Flow::new(
        config.clone(),
        cache,
        storage,
        http,
        blocking.clone(),
    ));

    let admin_state = web::Data::new(state.clone());
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(admin_state.clone())
            .configure(health::configure)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(config.server.admin_addr)
    .with_context(|| {
        format!(
            "cannot listen on ORCHARD_ADMIN_ADDR {}",
            config.server.admin_addr
        )
    })?
    .run();
    let admin_handle = admin.handle();
    let admin_task = tokio::spawn(admin);
    tracing::info!(addr = %config.server.admin_addr, "admin listener up: /healthz /readyz /metrics");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    let repo = tokio::select! {
        repo = connect_database(&config) => repo,
        _ = &mut shutdown => {
            tracing::info!("shutdown requested before the database was reachable");
            admin_handle.stop(true).await;
            return Ok(());
        }
    };
    let rows = repo
        .list_sources()
        .await
        .context("loading upstream sources")?;
    for problem in state.sources.install(
        &config.sources,
        &rows,
        &state.http,
        config.credentials_key.as_ref(),
    ) {
        tracing::error!(problem = %problem, "upstream source left out");
    }
    let names: Vec<String> = state
        .sources
        .all()
        .iter()
        .map(|s| format!("{}:{}", s.spec.protocol.as_str(), s.name()))
        .collect();
    tracing::info!(sources = ?names, "upstream sources loaded");
    state.set_db(repo);
    let watcher = tokio::spawn(watch_sources(state.clone()));
    let cleaner = tokio::spawn(clean_storage(state.clone()));

    let app_state = web::Data::new(state.clone());
    let package = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(middleware::from_fn(routes::limit_headers))
            // every body is what it says it is (POMs and metadata are XML a browser could sniff)
            .wrap(middleware::DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
            .wrap(middleware::from_fn(routes::record_request))
            .wrap(middleware::from_fn(crate::access_log::access_log))
            .configure(routes::configure)
            .default_service(routes::default_service())
    })
    .on_connect(client_write_timeout(Duration::from_secs(
        config.server.client_write_timeout_secs,
    )))
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(config.server.shutdown_timeout_secs)
    .bind(config.server.listen_addr)
    .with_context(|| {
        format!(
            "cannot listen on ORCHARD_LISTEN_ADDR {}",
            config.server.listen_addr
        )
    })?
    .run();
    let package_handle = package.handle();
    let package_task = tokio::spawn(package);
    tracing::info!(addr = %config.server.listen_addr, "orchard is serving");

    shutdown.await;
    tracing::info!(
        drain_secs = config.server.shutdown_timeout_secs,
        "shutting down: draining in-flight requests"
    );
    package_handle.stop(true).await;
    admin_handle.stop(true).await;
    let _ = package_task.await;
    let _ = admin_task.await;
    watcher.abort();
    cleaner.abort();
    blocking.close();
    tracing::info!("stopped");
    Ok(())
}

/// Keeps the source list current: reloads it from the database when an invalidation
/// message arrives (the operator publishes one per change) and every
/// `ORCHARD_SOURCES_REFRESH` seconds as a safety net; drops memoised generations.
async fn watch_sources(state: AppState) {
    use futures::StreamExt;
    let channel = state.cache.invalidation_channel();
    let mut every = tokio::time::interval(state.config.sources_refresh);
    every.tick().await;
    // A subscription that cannot be made in this time is retried: a stalled connection
    // must not hold up the periodic reloads.
    const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
    loop {
        let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, state.cache.subscribe(&channel))
            .await
            .unwrap_or(Err(crate::cache::CacheError::Timeout(SUBSCRIBE_TIMEOUT)));
        match subscribed {
            Ok(mut messages) => loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(m) => reload_sources(&state, &format!("invalidation {m}")).await,
                        None => break, // connection lost: subscribe again
                    },
                    _ = every.tick() => reload_sources(&state, "periodic").await,
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "cannot subscribe to invalidations; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {},
                    _ = every.tick() => reload_sources(&state, "periodic").await,
                }
            }
        }
    }
}

/// Every 10 minutes (the first time after one), one replica at a time (a lock in the
/// cache; without a cache each process cleans its own store) removes what killed fills
/// left in storage, older than `ORCHARD_STORAGE_TMP_MAX_AGE`: temporary objects and
/// incomplete S3 multipart uploads, counted in `orchard_storage_cleaned_total{kind}`.
async fn clean_storage(state: AppState) {
    const EVERY: Duration = Duration::from_secs(600);
    tokio::time::sleep(Duration::from_secs(60)).await;
    loop {
        let key = state.cache.key(
            crate::cache::Category::ArtifactMetadata,
            "storage",
            "cleaner-lock",
        );
        let token = uuid::Uuid::new_v4().to_string();
        if state.cache.try_lock(&key, &token, EVERY / 2).await != Some(false) {
            match state.storage.clean(state.config.storage_tmp_max_age).await {
                Ok(cleaned) => {
                    let m = &crate::metrics::metrics().storage_cleaned;
                    m.with_label_values(&["temporary"])
                        .inc_by(cleaned.temporary as u64);
                    m.with_label_values(&["upload"])
                        .inc_by(cleaned.uploads as u64);
                    if cleaned != Default::default() {
                        tracing::info!(
                            temporary_objects = cleaned.temporary,
                            multipart_uploads = cleaned.uploads,
                            "storage cleaner removed what killed fills left behind"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "storage cleaner failed; trying again later"),
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn reload_sources(state: &AppState, reason: &str) {
    state.cache.forget_generations();
    let Some(repo) = state.db() else { return };
    match repo.list_sources().await {
        Ok(rows) => {
            for problem in state.sources.install(
                &state.config.sources,
                &rows,
                &state.http,
                state.config.credentials_key.as_ref(),
            ) {
                tracing::error!(problem = %problem, "upstream source left out");
            }
            tracing::info!(
                reason,
                sources = state.sources.all().len(),
                "upstream sources reloaded"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "reloading upstream sources failed; keeping the current list")
        }
    }
}

/// Connects and migrates, retrying with backoff (1 s doubling to 30 s) until it works.
async fn connect_database(config: &Config) -> Arc<dyn db::ArtifactRepository> {
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            let applied = db::run_migrations(&config.database.url).await?;
            if !applied.is_empty() {
                tracing::info!(migrations = ?applied, "database migrations applied");
            }
            db::connect(&config.database).await
        };
        match attempt.await {
            Ok(repo) => {
                tracing::info!(database = %config.database.url.redacted(), "database ready");
                return repo;
            }
            Err(e) => {
                tracing::error!(
                    database = %config.database.url.redacted(),
                    error = %e,
                    retry_in_s = delay.as_secs(),
                    "database unreachable; /readyz answers 503 until it is"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Drops a client connection whose sent bytes stay unacknowledged — a client that
/// stopped reading (zero window) included — for `timeout`: the kernel's
/// `TCP_USER_TIMEOUT`, set on every accepted package-traffic socket.
fn client_write_timeout(
    timeout: Duration,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + Clone + 'static {
    move |conn, _ext| {
        if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
                tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
            }
        }
    }
}
