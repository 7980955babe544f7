//! Leader election on a `coordination.k8s.io/v1` Lease. Every write carries the Lease's
//! `resourceVersion`, so of two replicas racing for it the API server lets exactly one win.
//!
//! As in client-go's leader election, a leader that cannot renew within the renew deadline
//! (shorter than the lease duration) stops acting: [`hold`] resolves and the controller exits,
//! before a standby may take the Lease over. A leader that sees another holder stops at once.

use std::time::{Duration, Instant};

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

/// Leader-election timings, client-go's defaults unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTiming {
    /// How long the Lease is held after a renewal; a standby may take it over after that.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops acting.
    pub renew_deadline: Duration,
    /// The pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for LeaderTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaderTiming {
    /// Timings that can work: `retry_period < renew_deadline < lease_duration`.
    ///
    /// # Errors
    /// Timings that would let a leader act after a standby may have taken over.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, String> {
        if retry_period.is_zero() || retry_period >= renew_deadline {
            return Err(format!(
                "the retry period ({retry_period:?}) must be positive and shorter than the renew deadline ({renew_deadline:?})"
            ));
        }
        if renew_deadline >= lease_duration {
            return Err(format!(
                "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?}), so that a leader stops before a standby may take over"
            ));
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }
}

/// What the leader does after an attempt to renew failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Try again, each attempt bounded by what is left of the deadline.
    Retry {
        /// Time left until the deadline.
        left: Duration,
    },
    /// The deadline passed: stop acting.
    Expired,
}

/// PURE: the leader's next move, `since` its last successful renewal.
pub fn renewal(since: Duration, timing: &LeaderTiming) -> Renewal {
    match timing.renew_deadline.checked_sub(since) {
        Some(left) if !left.is_zero() => Renewal::Retry { left },
        _ => Renewal::Expired,
    }
}

/// The outcome of one attempt on the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease.
    Held,
    /// Another candidate holds it.
    HeldBy(String),
    /// A concurrent write won the race (409); the next attempt reads again.
    Conflict,
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadershipLost {
    /// Another candidate holds the Lease.
    #[error("the Lease is held by {0}")]
    TakenOver(String),
    /// The Lease could not be renewed within the renew deadline.
    #[error("the Lease could not be renewed within {deadline:?}: {last}")]
    RenewDeadline {
        /// The renew deadline.
        deadline: Duration,
        /// The last failure.
        last: String,
    },
}

/// Keeps renewing the Lease `lock` holds (acquired at `acquired`) every `retry_period`, and
/// resolves as soon as leadership is lost: another holder is seen, or no renewal succeeded
/// within the renew deadline. Each attempt is bounded by what is left of the deadline, so a
/// partitioned API server cannot hold the leader past it. `clock` gives the Lease's renew
/// time; the deadline is measured on the monotonic clock.
pub async fn hold(
    lock: &LeaseLock,
    timing: LeaderTiming,
    clock: &dyn crate::server::Clock,
    acquired: Instant,
) -> LeadershipLost {
    let mut renewed = acquired;
    let mut last = String::from("no attempt yet");
    loop {
        tokio::time::sleep(timing.retry_period).await;
        let left = match renewal(renewed.elapsed(), &timing) {
            Renewal::Expired => {
                return LeadershipLost::RenewDeadline {
                    deadline: timing.renew_deadline,
                    last,
                };
            }
            Renewal::Retry { left } => left,
        };
        let started = Instant::now();
        let attempt = tokio::time::timeout(left, lock.try_acquire_or_renew(clock.now())).await;
        match attempt {
            Ok(Ok(Attempt::Held)) => {
                // The Lease runs from the renew time written, which is no later than this.
                renewed = started;
                continue;
            }
            Ok(Ok(Attempt::HeldBy(holder))) => return LeadershipLost::TakenOver(holder),
            Ok(Ok(Attempt::Conflict)) => last = "a concurrent write won the race".into(),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "the API server did not answer in time".into(),
        }
        tracing::warn!(error = %last, "cannot renew the leader lease");
        if renewal(renewed.elapsed(), &timing) == Renewal::Expired {
            return LeadershipLost::RenewDeadline {
                deadline: timing.renew_deadline,
                last,
            };
        }
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

    /// Acquires or renews the Lease.
    ///
    /// # Errors
    /// API failures other than losing a race (a 409 conflict is [`Attempt::Conflict`]).
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let step = decide(current.as_ref(), &self.holder, now);
        let ttl = i32::try_from(self.ttl.as_secs()).unwrap_or(15);
        let result = match step {
            Step::Wait => {
                let holder = current
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .unwrap_or_default();
                return Ok(Attempt::HeldBy(holder));
            }
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
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn a_leader_retries_until_the_renew_deadline_then_stops() {
        let timing = LeaderTiming::default();
        assert_eq!(
            renewal(Duration::from_secs(3), &timing),
            Renewal::Retry {
                left: Duration::from_secs(7)
            }
        );
        assert_eq!(
            renewal(Duration::from_millis(9_999), &timing),
            Renewal::Retry {
                left: Duration::from_millis(1)
            }
        );
        assert_eq!(renewal(Duration::from_secs(10), &timing), Renewal::Expired);
        assert_eq!(renewal(Duration::from_secs(60), &timing), Renewal::Expired);
    }

    #[test]
    fn timings_that_would_overlap_a_standby_are_refused() {
        let s = Duration::from_secs;
        assert_eq!(
            LeaderTiming::new(s(15), s(10), s(2)),
            Ok(LeaderTiming::default())
        );
        let err = LeaderTiming::new(s(15), s(15), s(2)).unwrap_err();
        assert!(err.contains("shorter than the lease duration"), "{err}");
        assert!(LeaderTiming::new(s(15), s(10), s(10)).is_err());
        assert!(LeaderTiming::new(s(15), s(10), s(0)).is_err());
    }
}
