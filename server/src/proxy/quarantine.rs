//! Quarantined artifacts: an admin marks a SHA-256 (`PUT /api/v1/artifacts/{sha256}/quarantine`)
//! and every replica answers 451 for it — on a hit, and at the commit of a fill that
//! produced those bytes (nothing quarantined is mapped to a path again). Each replica
//! reads the whole (small) table at most once a second, so a change reaches every
//! replica within a second; when the database cannot be read, the last known set stays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::metrics::metrics;
use crate::proxy::Flow;

const REFRESH: Duration = Duration::from_secs(1);

/// SHA-256 → reason.
type Reasons = Arc<HashMap<String, String>>;

#[derive(Default)]
pub struct Memo {
    /// When the table was last read, and what it held.
    inner: tokio::sync::Mutex<(Option<Instant>, Reasons)>,
}

impl Memo {
    /// SHA-256 → reason of every quarantined artifact, at most a second old.
    pub async fn current(&self, state: &Flow) -> Reasons {
        let mut guard = self.inner.lock().await;
        if guard.0.is_some_and(|at| at.elapsed() < REFRESH) {
            return guard.1.clone();
        }
        if let Some(repo) = state.db() {
            match repo.quarantined().await {
                Ok(rows) => {
                    guard.1 = Arc::new(rows.into_iter().map(|q| (q.sha256, q.reason)).collect());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "quarantine list unreadable; keeping the last one")
                }
            }
        }
        guard.0 = Some(Instant::now());
        guard.1.clone()
    }

    /// Makes the next `current` read the table again (after a change on this replica).
    pub async fn forget(&self) {
        self.inner.lock().await.0 = None;
    }
}

/// 451 when the artifact is quarantined.
pub async fn check(state: &Flow, sha256: &str) -> Result<(), ApiError> {
    match state.proxy.quarantine.current(state).await.get(sha256) {
        Some(reason) => {
            metrics().quarantine_refusals.inc();
            Err(ApiError::Quarantined(format!(
                "artifact {sha256} is quarantined: {reason}"
            )))
        }
        None => Ok(()),
    }
}
