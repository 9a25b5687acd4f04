//! The in-process backend: a map with per-entry expiry (moka), bounded both in bytes
//! and in entries. Each entry weighs its key and value bytes plus a fixed share
//! (`max_bytes / max_entries`), and the total weight is capped at `max_bytes`: so neither
//! more than `max_entries` entries nor more than `max_bytes` of data are ever kept —
//! large documents (a 20 MB packument rendered for several base URLs) evict others
//! instead of growing the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::broadcast;

use super::{CacheBackend, CacheError};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Option<Duration>,
}

struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _now: Instant) -> Option<Duration> {
        value.ttl
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        value.ttl
    }
}

pub struct InProcessBackend {
    entries: moka::future::Cache<String, Entry>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
    counters: Mutex<HashMap<String, i64>>,
    messages: broadcast::Sender<(String, String)>,
}

impl InProcessBackend {
    pub fn new(max_entries: u64, max_bytes: u64) -> Self {
        let share = (max_bytes / max_entries.max(1)).max(1);
        InProcessBackend {
            entries: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(move |key: &String, e: &Entry| -> u32 {
                    (share + key.len() as u64 + e.value.len() as u64).min(u32::MAX as u64) as u32
                })
                .expire_after(PerEntryTtl)
                .build(),
            counters: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            messages: broadcast::channel(64).0,
        }
    }

    /// Messages published on this process's cache (channel, message).
    pub fn subscribe(&self) -> broadcast::Receiver<(String, String)> {
        self.messages.subscribe()
    }
}

#[async_trait]
impl CacheBackend for InProcessBackend {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        if let Some((owner, until)) = self.locks.lock().expect("lock table poisoned").get(key) {
            if *until > Instant::now() {
                return Ok(Some(Bytes::from(owner.clone())));
            }
        }
        Ok(self.entries.get(key).await.map(|e| e.value))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
        self.entries
            .insert(key.to_string(), Entry { value, ttl })
            .await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.entries.invalidate(key).await;
        Ok(())
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        match self.entries.get(key).await {
            Some(mut e) => {
                e.ttl = Some(ttl);
                self.entries.insert(key.to_string(), e).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn incr(&self, key: &str) -> Result<i64, CacheError> {
        let mut counters = self.counters.lock().expect("counter lock poisoned");
        let v = counters.entry(key.to_string()).or_insert(0);
        *v += 1;
        Ok(*v)
    }

    async fn get_or_init_i64(
        &self,
        key: &str,
        init: i64,
        _ttl: Duration,
    ) -> Result<i64, CacheError> {
        // counters live as long as the process: never evicted
        let mut counters = self.counters.lock().expect("counter lock poisoned");
        Ok(*counters.entry(key.to_string()).or_insert(init))
    }

    async fn get_i64(&self, key: &str) -> Result<Option<i64>, CacheError> {
        Ok(self
            .counters
            .lock()
            .expect("counter lock poisoned")
            .get(key)
            .copied())
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut locks = self.locks.lock().expect("lock table poisoned");
        let now = Instant::now();
        locks.retain(|_, (_, until)| *until > now);
        if locks.contains_key(key) {
            return Ok(false);
        }
        locks.insert(key.to_string(), (value.to_string(), now + ttl));
        Ok(true)
    }

    async fn delete_if(&self, key: &str, value: &str) -> Result<bool, CacheError> {
        let mut locks = self.locks.lock().expect("lock table poisoned");
        if locks.get(key).is_some_and(|(v, _)| v == value) {
            locks.remove(key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn expire_if(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut locks = self.locks.lock().expect("lock table poisoned");
        match locks.get_mut(key) {
            Some((v, until)) if v == value && *until > Instant::now() => {
                *until = Instant::now() + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn publish(&self, channel: &str, message: &str) -> Result<(), CacheError> {
        // No subscriber is not an error.
        let _ = self
            .messages
            .send((channel.to_string(), message.to_string()));
        Ok(())
    }

    async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<futures::stream::BoxStream<'static, String>, CacheError> {
        use futures::StreamExt;
        let rx = self.messages.subscribe();
        let channel = channel.to_string();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(m) => return Some((m, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter_map(move |(c, m)| {
            let wanted = c == channel;
            async move { wanted.then_some(m) }
        })
        .boxed())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_and_the_map_is_bounded() {
        let b = InProcessBackend::new(100, 64 << 20);
        b.set(
            "short",
            Bytes::from_static(b"1"),
            Some(Duration::from_millis(50)),
        )
        .await
        .unwrap();
        b.set("forever", Bytes::from_static(b"2"), None)
            .await
            .unwrap();
        assert!(b.get("short").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(b.get("short").await.unwrap().is_none());
        assert!(b.get("forever").await.unwrap().is_some());

        for i in 0..1000 {
            b.set(&format!("k{i}"), Bytes::from_static(b"x"), None)
                .await
                .unwrap();
        }
        b.entries.run_pending_tasks().await;
        assert!(
            b.entries.entry_count() <= 100,
            "bounded: {}",
            b.entries.entry_count()
        );
    }

    #[tokio::test]
    async fn large_values_are_bounded_by_bytes() {
        let b = InProcessBackend::new(1000, 4 << 20);
        for i in 0..10 {
            b.set(&format!("doc{i}"), Bytes::from(vec![b'x'; 1 << 20]), None)
                .await
                .unwrap();
        }
        b.entries.run_pending_tasks().await;
        assert!(
            b.entries.weighted_size() <= 4 << 20,
            "bytes bounded: {}",
            b.entries.weighted_size()
        );
        assert!(b.entries.entry_count() <= 4, "{}", b.entries.entry_count());
        // A value larger than the whole cache is simply not kept.
        b.set("huge", Bytes::from(vec![b'y'; 5 << 20]), None)
            .await
            .unwrap();
        b.entries.run_pending_tasks().await;
        assert!(b.get("huge").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn locks_are_exclusive_owned_and_expire() {
        let b = InProcessBackend::new(10, 1 << 20);
        assert!(b
            .set_nx("l", "me", Duration::from_millis(80))
            .await
            .unwrap());
        assert!(!b.set_nx("l", "you", Duration::from_secs(1)).await.unwrap());
        assert!(
            !b.delete_if("l", "you").await.unwrap(),
            "only the owner releases"
        );
        assert!(b
            .expire_if("l", "me", Duration::from_millis(80))
            .await
            .unwrap());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            b.set_nx("l", "you", Duration::from_secs(1)).await.unwrap(),
            "an expired lock can be taken over"
        );
        assert!(
            !b.expire_if("l", "me", Duration::from_secs(1))
                .await
                .unwrap(),
            "the old owner lost it"
        );
        assert!(b.delete_if("l", "you").await.unwrap());
    }

    #[tokio::test]
    async fn incr_counts_from_zero() {
        let b = InProcessBackend::new(10, 1 << 20);
        assert_eq!(b.get_i64("g").await.unwrap(), None);
        assert_eq!(b.incr("g").await.unwrap(), 1);
        assert_eq!(b.incr("g").await.unwrap(), 2);
        assert_eq!(b.get_i64("g").await.unwrap(), Some(2));
    }
}
