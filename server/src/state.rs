//! The application state shared by every handler: pools, cache, storage and the
//! repository, each behind a handle that tests can swap.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::cache::CacheService;
use crate::config::Config;
use crate::db::ArtifactRepository;
use crate::http_client::HttpClientManager;
use crate::proxy::ProxyShared;
use crate::sources::SourceRegistry;
use crate::storage::ArtifactStore;
use crate::worker_pool::BlockingPool;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub cache: CacheService,
    pub storage: ArtifactStore,
    pub http: Arc<HttpClientManager>,
    pub blocking: BlockingPool,
    pub sources: Arc<SourceRegistry>,
    pub proxy: Arc<ProxyShared>,
    /// Set once the database is reachable and migrated (start-up retries until then).
    db: Arc<OnceLock<Arc<dyn ArtifactRepository>>>,
    pub started: Instant,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        cache: CacheService,
        storage: ArtifactStore,
        http: Arc<HttpClientManager>,
        blocking: BlockingPool,
    ) -> Self {
        let proxy = Arc::new(ProxyShared::new(&config));
        AppState {
            config,
            cache,
            storage,
            http,
            blocking,
            sources: Arc::new(SourceRegistry::default()),
            proxy,
            db: Arc::new(OnceLock::new()),
            started: Instant::now(),
        }
    }

    pub fn db(&self) -> Option<&Arc<dyn ArtifactRepository>> {
        self.db.get()
    }

    pub fn set_db(&self, repo: Arc<dyn ArtifactRepository>) {
        let _ = self.db.set(repo);
    }
}
