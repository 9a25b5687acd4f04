//! The flow's handle: the configuration and the backends every flow and adapter call
//! needs (cache, artifact storage, database, sources, upstream HTTP clients, blocking
//! pool) and the flow's per-replica tables. The HTTP application's state
//! (`state::AppState`) wraps it; the flow and the adapters take this handle, never the
//! application's state.

use std::sync::{Arc, OnceLock};

use super::ProxyShared;
use crate::cache::CacheService;
use crate::config::Config;
use crate::db::ArtifactRepository;
use crate::http_client::HttpClientManager;
use crate::sources::SourceRegistry;
use crate::storage::ArtifactStore;
use crate::worker_pool::BlockingPool;

#[derive(Clone)]
pub struct Flow {
    pub config: Arc<Config>,
    pub cache: CacheService,
    pub storage: ArtifactStore,
    pub http: Arc<HttpClientManager>,
    pub blocking: BlockingPool,
    pub sources: Arc<SourceRegistry>,
    pub proxy: Arc<ProxyShared>,
    /// Set once the database is reachable and migrated (start-up retries until then).
    db: Arc<OnceLock<Arc<dyn ArtifactRepository>>>,
}

impl Flow {
    pub fn new(
        config: Arc<Config>,
        cache: CacheService,
        storage: ArtifactStore,
        http: Arc<HttpClientManager>,
        blocking: BlockingPool,
    ) -> Self {
        let proxy = Arc::new(ProxyShared::new(&config));
        Flow {
            config,
            cache,
            storage,
            http,
            blocking,
            sources: Arc::new(SourceRegistry::default()),
            proxy,
            db: Arc::new(OnceLock::new()),
        }
    }

    pub fn db(&self) -> Option<&Arc<dyn ArtifactRepository>> {
        self.db.get()
    }

    pub fn set_db(&self, repo: Arc<dyn ArtifactRepository>) {
        let _ = self.db.set(repo);
    }
}
