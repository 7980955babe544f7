//! Leader election on a `coordination.k8s.io/v1` Lease. Every write carries the Lease's
//! `resourceVersion`, so of two replicas racing for it the API server lets exactly one win.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// What a candidate does with the Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder stopped renewing: take it over.
    TakeOver,
    /// Someone else holds it.
    Wait,
}

/// PURE: the step for `holder` at `now`.
pub fn decide(lease: Option<&Lease>, holder: &str, now: Timestamp) -> Step {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            Step::TakeOver
        } else {
            Step::Create
        };
    };
    if spec.holder_identity.as_deref() == Some(holder) {
        return Step::Renew;
    }
    let ttl = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match (&spec.holder_identity, &spec.renew_time) {
        (None, _) | (_, None) => Step::TakeOver,
        (Some(_), Some(renewed)) if renewed.0 + ttl < now => Step::TakeOver,
        _ => Step::Wait,
    }
}

/// One candidate for one Lease.
#[derive(Debug, Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    ttl: Duration,
}

impl LeaseLock {
    /// A candidate `holder` for Lease `namespace/name`, held for `ttl` after each renewal.
    pub fn new(client: Client, namespace: &str, name: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            holder: holder.into(),
            ttl,
        }
    }

    /// How long the Lease is held after a renewal.
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Acquires or renews the Lease. `true` when this candidate holds it afterwards.
    ///
    /// # Errors
    /// API failures other than losing a race (a 409 conflict means another candidate won).
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let step = decide(current.as_ref(), &self.holder, now);
        let ttl = i32::try_from(self.ttl.as_secs()).unwrap_or(15);
        let result = match step {
            Step::Wait => return Ok(false),
            Step::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.holder.clone()),
                        lease_duration_seconds: Some(ttl),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Step::Renew | Step::TakeOver => {
                let mut lease = current.unwrap_or_default();
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::TakeOver {
                    spec.holder_identity = Some(self.holder.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(ttl);
                spec.renew_time = Some(MicroTime(now));
                // `replace` sends the resourceVersion we read: a concurrent writer makes it fail.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn candidates_create_renew_take_over_or_wait() {
        let now = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        assert_eq!(decide(None, "a", now), Step::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 5, now)), "a", now),
            Step::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 5, now)), "a", now),
            Step::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 16, now)), "a", now),
            Step::TakeOver
        );
        assert_eq!(decide(Some(&lease(None, 0, now)), "a", now), Step::TakeOver);
    }
}
