//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one reconciles.
//!
//! The holder renews every third of the lease duration. Every write is a `replace`
//! carrying the Lease's `resourceVersion`, so two candidates racing for an expired
//! Lease cannot both win: the API server rejects the second with 409 Conflict. A
//! holder that cannot renew within two thirds of the duration stops reconciling
//! before anyone else may take over; on shutdown the holder releases the Lease so
//! a follower takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The Lease's resourceVersion when this process last saw it change, and when (on
    /// this process's monotonic clock). Expiry is judged from that, not by comparing the
    /// holder's `renewTime` with the local wall clock, so clock skew between nodes
    /// cannot shorten a lease (client-go does the same).
    observed: std::sync::Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        LeaderElector {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
            observed: std::sync::Mutex::new(None),
        }
    }

    /// Whether the holder failed to renew for a whole lease duration, as seen from here.
    fn expired_locally(&self, lease: &Lease, now: Instant) -> bool {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let secs = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(15)
            .max(1) as u64;
        let mut observed = self.observed.lock().unwrap();
        match observed.as_ref() {
            Some((v, since)) if *v == version => {
                now.duration_since(*since) > Duration::from_secs(secs)
            }
            _ => {
                *observed = Some((version, now));
                false
            }
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt, bounded by a third of the lease duration (a hanging API call must
    /// not keep a leader that cannot renew from noticing).
    pub async fn attempt(&self) -> Result<bool, String> {
        match tokio::time::timeout(self.duration / 3, self.try_acquire_or_renew()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the API server did not answer in time".into()),
        }
    }

    /// One attempt: `Ok(true)` when this process holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = self.duration.as_secs() as i32;
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if !ours && holder.is_some() && !self.expired_locally(&current, Instant::now()) {
            return Ok(false);
        }
        let mut next = current.clone();
        let mut s = spec.clone();
        if !ours {
            s.acquire_time = Some(MicroTime(now));
            s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        s.holder_identity = Some(self.identity.clone());
        s.lease_duration_seconds = Some(secs);
        s.renew_time = Some(MicroTime(now));
        next.spec = Some(s);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&self) {
        let retry = self.duration / 3;
        loop {
            match self.attempt().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the Lease")
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews until the Lease is lost (someone else holds it, or no renewal succeeded
    /// within two thirds of the duration); then returns.
    pub async fn hold(&self) {
        let period = self.duration / 3;
        let deadline = self.duration * 2 / 3;
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(period).await;
            // The deadline counts from when a renewal was sent, not when it came back.
            let sent = Instant::now();
            match self.attempt().await {
                Ok(true) => last_ok = sent,
                Ok(false) => {
                    tracing::error!("leader election: the Lease was taken over");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: renewal failed");
                    if last_ok.elapsed() >= deadline {
                        tracing::error!("leader election: could not renew in time");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up (only if still ours) so a follower takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut current)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = current.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &current)
            .await
        {
            tracing::warn!(error = %e, "leader election: could not release the Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(rv: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("other".into()),
                lease_duration_seconds: Some(10),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn expiry_is_judged_on_the_local_clock_from_the_last_observed_change() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let api = Api::namespaced(kube::Client::new(service, "ns"), "ns");
        let e = LeaderElector::new(api, "l", "me", Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(
            !e.expired_locally(&lease("1"), t0),
            "first sight starts the clock"
        );
        assert!(!e.expired_locally(&lease("1"), t0 + Duration::from_secs(9)));
        assert!(
            e.expired_locally(&lease("1"), t0 + Duration::from_secs(11)),
            "no renewal seen for a whole duration"
        );
        assert!(
            !e.expired_locally(&lease("2"), t0 + Duration::from_secs(12)),
            "a renewal restarts the clock"
        );
        assert!(!e.expired_locally(&lease("2"), t0 + Duration::from_secs(21)));
        assert!(e.expired_locally(&lease("2"), t0 + Duration::from_secs(23)));
    }
}
