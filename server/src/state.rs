//! The HTTP application's state, shared by every handler: the flow's handle
//! (`proxy::Flow`: configuration, cache, storage, database, sources, HTTP clients) and
//! what only the application needs. Handlers reach the flow's fields through `Deref`.

use std::time::Instant;

use crate::proxy::Flow;

#[derive(Clone)]
pub struct AppState {
    flow: Flow,
    pub started: Instant,
}

impl AppState {
    pub fn new(flow: Flow) -> Self {
        AppState {
            flow,
            started: Instant::now(),
        }
    }

    /// The flow's handle, for calls that keep it (commit hooks, background work).
    pub fn flow(&self) -> &Flow {
        &self.flow
    }
}

impl std::ops::Deref for AppState {
    type Target = Flow;
    fn deref(&self) -> &Flow {
        &self.flow
    }
}
