//! One caller does the work, the others wait for its result — across actix worker
//! threads (awc futures are not `Send`, so the work stays on the leader's thread and
//! only the result crosses over a watch channel).
//!
//! If the leader goes away without a result (its task was dropped), the waiters see the
//! channel close and one of them becomes the next leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type Slots<V> = Arc<Mutex<HashMap<String, watch::Receiver<Option<V>>>>>;

pub struct SingleFlight<V> {
    slots: Slots<V>,
}

impl<V> Default for SingleFlight<V> {
    fn default() -> Self {
        SingleFlight {
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

pub enum Role<V> {
    Leader(Leader<V>),
    Follower(watch::Receiver<Option<V>>),
}

/// The caller that does the work. Publish with `finish`; dropping it without a result
/// releases the key.
pub struct Leader<V> {
    key: String,
    tx: Option<watch::Sender<Option<V>>>,
    slots: Slots<V>,
}

impl<V: Clone> Leader<V> {
    pub fn finish(mut self, value: V) {
        if let Some(tx) = self.tx.take() {
            self.slots
                .lock()
                .expect("singleflight lock")
                .remove(&self.key);
            let _ = tx.send(Some(value));
        }
    }
}

impl<V> Drop for Leader<V> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.slots
                .lock()
                .expect("singleflight lock")
                .remove(&self.key);
        }
    }
}

impl<V: Clone> SingleFlight<V> {
    pub fn join(&self, key: &str) -> Role<V> {
        let mut slots = self.slots.lock().expect("singleflight lock");
        if let Some(rx) = slots.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        slots.insert(key.to_string(), rx);
        Role::Leader(Leader {
            key: key.to_string(),
            tx: Some(tx),
            slots: self.slots.clone(),
        })
    }

    /// `Some(())` when `key` is being worked on.
    pub fn in_flight_key(&self, key: &str) -> Option<()> {
        self.slots
            .lock()
            .expect("singleflight lock")
            .contains_key(key)
            .then_some(())
    }

    /// Number of keys in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.lock().expect("singleflight lock").len()
    }
}

/// Waits for the leader's result; `None` when the leader gave up.
pub async fn wait<V: Clone>(mut rx: watch::Receiver<Option<V>>) -> Option<V> {
    loop {
        if let Some(v) = rx.borrow_and_update().clone() {
            return Some(v);
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone();
        }
    }
}

/// Runs `work` once for concurrent callers of the same key; the others get its result.
/// Returns the value and whether this caller waited for another.
pub async fn run<V, F, Fut>(flight: &SingleFlight<V>, key: &str, mut work: F) -> (V, bool)
where
    V: Clone,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = V>,
{
    let mut waited = false;
    loop {
        match flight.join(key) {
            Role::Leader(leader) => {
                let v = work().await;
                leader.finish(v.clone());
                return (v, waited);
            }
            Role::Follower(rx) => {
                waited = true;
                if let Some(v) = wait(rx).await {
                    return (v, true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_run() {
        let flight = Arc::new(SingleFlight::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (flight, runs) = (flight.clone(), runs.clone());
                tokio::spawn(async move {
                    run(&flight, "k", || {
                        let runs = runs.clone();
                        async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            7
                        }
                    })
                    .await
                })
            })
            .collect();
        let mut waited = 0;
        for t in tasks {
            let (v, w) = t.await.unwrap();
            assert_eq!(v, 7);
            waited += usize::from(w);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(waited, 19);
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_vanished_leader_hands_over() {
        let flight = SingleFlight::<u32>::default();
        let Role::Leader(leader) = flight.join("k") else {
            panic!("first caller leads")
        };
        let Role::Follower(rx) = flight.join("k") else {
            panic!("second caller follows")
        };
        drop(leader);
        assert_eq!(wait(rx).await, None);
        assert!(
            matches!(flight.join("k"), Role::Leader(_)),
            "the key is free again"
        );
    }
}
