//! Prometheus metrics. Every name starts with `orchard_`; one registry per process.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_request_duration: HistogramVec,
    pub http_client_active: IntGauge,
    pub http_client_max: IntGauge,
    pub worker_pool_active: IntGauge,
    pub worker_pool_max: IntGauge,
    pub cache_operations: IntCounterVec,
    pub cache_errors: IntCounterVec,
    pub db_statements: IntCounter,
    pub db_pool_connections: IntGaugeVec,
    pub storage_operations: IntCounterVec,
    pub hash_mismatch: IntCounter,
    pub file_url_refusals: IntCounterVec,
    pub fill_clients_detached: IntCounter,
    pub fill_waits_timed_out: IntCounter,
    pub document_work_waits: IntCounter,
    pub document_copies: IntCounterVec,
    pub db_retries: IntCounter,
    pub quarantine_refusals: IntCounter,
    pub storage_cleaned: IntCounterVec,
    pub damaged_artifacts: IntCounter,
    pub fetch_failures: IntCounterVec,
    pub commit_retries: IntCounter,
    pub page_renders: IntCounterVec,
    pub artifact_bytes_served: IntCounter,
    pub singleflight_waiters: IntCounter,
    pub dependency_extractions: IntCounterVec,
    pub dependency_resolutions: IntCounterVec,
    pub ensure_files: IntCounterVec,
    pub fill_locks: IntCounterVec,
    pub background_refreshes: IntCounter,
    pub component_up: IntGaugeVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ];
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        Metrics {
            http_requests: counter_vec(
                &r,
                "orchard_http_requests_total",
                "Requests served, by protocol, route, status and cache result (hit|miss|stale|bypass)",
                &["protocol", "route", "status", "cache"],
            ),
            http_request_duration: histogram_vec(
                &r,
                "orchard_http_request_duration_seconds",
                "Time to the response head, by protocol and route",
                &["protocol", "route"],
            ),
            upstream_requests: counter_vec(
                &r,
                "orchard_upstream_requests_total",
                "Requests sent upstream, by source and status (HTTP status or error kind)",
                &["source", "status"],
            ),
            upstream_request_duration: histogram_vec(
                &r,
                "orchard_upstream_request_duration_seconds",
                "Upstream time to response head, by source",
                &["source"],
            ),
            http_client_active: gauge(&r, "orchard_http_client_active", "Upstream requests in flight"),
            http_client_max: gauge(&r, "orchard_http_client_max", "Upstream connections allowed per pool"),
            worker_pool_active: gauge(&r, "orchard_worker_pool_active", "Blocking tasks running"),
            worker_pool_max: gauge(&r, "orchard_worker_pool_max", "Blocking tasks allowed at once"),
            cache_operations: counter_vec(
                &r,
                "orchard_cache_operations_total",
                "Cache calls by backend, operation and result (hit|miss|ok|error)",
                &["backend", "op", "result"],
            ),
            cache_errors: counter_vec(
                &r,
                "orchard_cache_errors_total",
                "Cache calls that failed or timed out; the request went on without the cache",
                &["backend", "op", "reason"],
            ),
            db_statements: counter(&r, "orchard_db_statements_total", "SQL statements sent to the database"),
            db_pool_connections: {
                let g = IntGaugeVec::new(Opts::new("orchard_db_pool_connections", "Database pool connections by state (idle|in_use|max)"), &["state"])
                    .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            storage_operations: counter_vec(
                &r,
                "orchard_storage_operations_total",
                "Artifact storage calls by backend, operation and result",
                &["backend", "op", "result"],
            ),
            hash_mismatch: counter(&r, "orchard_hash_mismatch_total", "Artifacts refused because their bytes did not match the declared hash"),
            page_renders: counter_vec(
                &r,
                "orchard_page_renders_total",
                "Merged pages built from their sources' documents (then cached), by protocol and page",
                &["protocol", "page"],
            ),
            fill_clients_detached: counter(
                &r,
                "orchard_fill_clients_detached_total",
                "Leader clients too slow for the upstream fill, continued from storage after the commit",
            ),
            fill_waits_timed_out: counter(
                &r,
                "orchard_fill_waits_timed_out_total",
                "Requests that stopped waiting for another request's fill after ORCHARD_FILL_WAIT_TIMEOUT (answered 504)",
            ),
            document_work_waits: counter(
                &r,
                "orchard_document_work_waits_total",
                "Upstream documents that waited for room in ORCHARD_DOCUMENT_WORK_BYTES before being read or parsed",
            ),
            document_copies: counter_vec(
                &r,
                "orchard_document_copies_total",
                "Last good copies of upstream documents persisted in the artifact store, by outcome (saved|save_failed|restored)",
                &["outcome"],
            ),
            db_retries: counter(
                &r,
                "orchard_db_retries_total",
                "Database calls sent once more after their connection was lost",
            ),
            quarantine_refusals: counter(
                &r,
                "orchard_quarantine_refusals_total",
                "Requests answered 451 because their artifact is quarantined",
            ),
            storage_cleaned: counter_vec(
                &r,
                "orchard_storage_cleaned_total",
                "Leftovers of killed fills removed from artifact storage by the cleaner, by kind (temporary object, multipart upload)",
                &["kind"],
            ),
            commit_retries: counter(
                &r,
                "orchard_commit_retries_total",
                "Artifact commits tried again because the database was unavailable (a restart)",
            ),
            fetch_failures: counter_vec(
                &r,
                "orchard_fetch_failures_total",
                "Upstream fetches that failed a request, by reason (the `reason` of the JSON error body)",
                &["reason"],
            ),
            damaged_artifacts: counter(
                &r,
                "orchard_damaged_artifacts_total",
                "Requests for a stored artifact whose bytes differ in size from its record (not served; 503)",
            ),
            file_url_refusals: counter_vec(
                &r,
                "orchard_file_url_refusals_total",
                "File URLs from an upstream's index refused (SSRF rules), by source and reason",
                &["source", "reason"],
            ),
            artifact_bytes_served: counter(&r, "orchard_artifact_bytes_served_total", "Artifact bytes sent to clients"),
            singleflight_waiters: counter(&r, "orchard_singleflight_waiters_total", "Requests that waited for another request's upstream fetch"),
            dependency_extractions: counter_vec(
                &r,
                "orchard_dependency_extractions_total",
                "Dependency extractions by protocol and outcome (known|unknown|failed)",
                &["protocol", "outcome"],
            ),
            dependency_resolutions: counter_vec(
                &r,
                "orchard_dependency_resolutions_total",
                "Dependency resolution answers by result (hit = one cache read, computed, refreshed)",
                &["result"],
            ),
            ensure_files: counter_vec(&r, "orchard_ensure_files_total", "Files of ensure requests by status (cached|fetched|failed)", &["status"]),
            background_refreshes: counter(
                &r,
                "orchard_background_refreshes_total",
                "Cached documents refreshed in the background before they expired (stale-while-revalidate)",
            ),
            fill_locks: counter_vec(
                &r,
                "orchard_fill_lock_total",
                "Cross-replica artifact fill locks by outcome (acquired|waited|took_over|committed_meanwhile|unavailable|renew_retried|lost)",
                &["outcome"],
            ),
            component_up: {
                let g = IntGaugeVec::new(Opts::new("orchard_component_up", "1 when a backing component answers its health check"), &["component"])
                    .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            registry: r,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}
