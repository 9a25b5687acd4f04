//! A bounded pool for blocking work (parsing large documents, hashing, archive reads):
//! at most `ORCHARD_HTTP_WORKER_THREADS` tasks run at once on tokio's blocking threads;
//! further callers wait for a slot instead of piling threads up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::metrics::metrics;

#[derive(Debug, thiserror::Error)]
pub enum WorkerPoolError {
    #[error("the worker pool is shut down")]
    Closed,
    #[error("blocking task panicked")]
    Panicked,
}

#[derive(Clone)]
pub struct BlockingPool {
    slots: Arc<Semaphore>,
    max: usize,
    active: Arc<AtomicUsize>,
}

impl BlockingPool {
    pub fn new(max: usize) -> Self {
        metrics().worker_pool_max.set(max as i64);
        BlockingPool {
            slots: Arc::new(Semaphore::new(max)),
            max,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Runs `f` on a blocking thread once a slot is free.
    pub async fn run<F, R>(&self, f: F) -> Result<R, WorkerPoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| WorkerPoolError::Closed)?;
        let active = self.active.clone();
        let result = tokio::task::spawn_blocking(move || {
            // Counted down on return and on panic alike.
            struct Active(Arc<AtomicUsize>);
            impl Drop for Active {
                fn drop(&mut self) {
                    let now = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
                    metrics().worker_pool_active.set(now as i64);
                }
            }
            // Dropped in reverse order: the count goes down before the slot is freed, so
            // the next task never sees this one still counted.
            let _permit = permit;
            let now = active.fetch_add(1, Ordering::Relaxed) + 1;
            metrics().worker_pool_active.set(now as i64);
            let _active = Active(active);
            f()
        })
        .await;
        result.map_err(|_| WorkerPoolError::Panicked)
    }

    /// Refuses new work; running tasks finish.
    pub fn close(&self) {
        self.slots.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_task_frees_its_slot_and_the_gauge() {
        let pool = BlockingPool::new(1);
        assert!(matches!(
            pool.run(|| panic!("boom")).await,
            Err(WorkerPoolError::Panicked)
        ));
        assert_eq!(pool.active(), 0);
        assert_eq!(pool.run(|| 7).await.unwrap(), 7, "the slot came back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_runs_more_than_max_at_once() {
        let pool = BlockingPool::new(3);
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let pool = pool.clone();
                let peak = peak.clone();
                tokio::spawn(async move {
                    let inner = pool.clone();
                    pool.run(move || {
                        peak.fetch_max(inner.active(), Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((2..=3).contains(&peak), "peak {peak}");
        assert_eq!(pool.active(), 0);
        pool.close();
        assert!(matches!(
            pool.run(|| ()).await,
            Err(WorkerPoolError::Closed)
        ));
    }
}
