//! The I/O half of STS pacing: one pure [`Pacer`] per (account, region), the clock, the
//! sleeping, the retries of throttled calls and the metrics. A first request waits for its slot
//! at most `--sts-max-wait`; past that it is refused with the time to its slot, which the
//! server answers as `503` with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::aws::{AwsError, StsCredentials};
use crate::metrics::Metrics;
use crate::pacing::{Pacer, PacerSettings, Slot};

/// What STS throttles by: the account of the role and the region of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaceKey {
    /// The AWS account ID of the role (empty when the ARN does not name one).
    pub account: String,
    /// The STS region; empty for the server's own.
    pub region: String,
}

impl PaceKey {
    /// The key of a call assuming `role_arn` at the STS of `region` (`None`: the server's).
    pub fn new(role_arn: &str, region: Option<&str>) -> Self {
        Self {
            account: role_arn.split(':').nth(4).unwrap_or_default().to_owned(),
            region: region.unwrap_or_default().to_owned(),
        }
    }
}

/// How many times a call that could not reach STS is tried in all.
const TRANSPORT_ATTEMPTS: u32 = 3;

/// Paces STS calls per [`PaceKey`].
#[derive(Debug)]
pub struct StsPacer {
    settings: PacerSettings,
    origin: Instant,
    pacers: Mutex<HashMap<PaceKey, Pacer>>,
}

impl Default for StsPacer {
    fn default() -> Self {
        Self::new(PacerSettings::default())
    }
}

/// Counts a caller in the queue-depth gauge while it sleeps for its slot.
struct Queued<'a>(&'a Metrics);

impl<'a> Queued<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.sts_queue_depth.inc();
        Self(metrics)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.sts_queue_depth.dec();
    }
}

impl StsPacer {
    /// A pacer with `settings` for every key.
    pub fn new(settings: PacerSettings) -> Self {
        Self {
            settings,
            origin: Instant::now(),
            pacers: Mutex::default(),
        }
    }

    /// The longest a first request waits for its slot.
    pub fn max_wait(&self) -> Duration {
        self.settings.max_wait
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn with<R>(&self, key: &PaceKey, f: impl FnOnce(&mut Pacer) -> R) -> R {
        let mut pacers = self
            .pacers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pacer = pacers
            .entry(key.clone())
            .or_insert_with(|| Pacer::new(self.settings.clone()));
        f(pacer)
    }

    /// Waits for a slot no later than `deadline`, or the refusal.
    async fn slot(
        &self,
        metrics: &Metrics,
        key: &PaceKey,
        deadline: Duration,
    ) -> Result<(), AwsError> {
        loop {
            let now = self.now();
            match self.with(key, |p| p.reserve(now, deadline)) {
                Slot::Now => return Ok(()),
                Slot::At { at, epoch } => {
                    {
                        let _queued = Queued::enter(metrics);
                        tokio::time::sleep_until((self.origin + at).into()).await;
                    }
                    if self.with(key, |p| p.confirm(epoch)) {
                        return Ok(());
                    }
                }
                Slot::Refused { retry_after } => {
                    metrics.sts_queue_refusals.inc();
                    return Err(AwsError::Paced {
                        account: key.account.clone(),
                        retry_after,
                    });
                }
            }
        }
    }

    /// Runs `attempt` (one STS call) when `key`'s pacer allows, again after each `Throttling`
    /// (which slows the pacer down) and after a failure to reach STS (up to three attempts),
    /// as long as a slot comes within the maximum wait.
    ///
    /// # Errors
    /// [`AwsError::Paced`] past the maximum wait; STS's own answer otherwise.
    pub async fn call<F, Fut>(
        &self,
        metrics: &Metrics,
        key: &PaceKey,
        mut attempt: F,
    ) -> Result<StsCredentials, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<StsCredentials, AwsError>>,
    {
        let deadline = self.now() + self.settings.max_wait;
        let mut unreachable = 0;
        loop {
            self.slot(metrics, key, deadline).await?;
            let sent = self.now();
            self.with(key, |p| p.sent(sent));
            match attempt().await {
                Err(AwsError::Throttled(message)) => {
                    metrics.sts_throttles.inc();
                    let now = self.now();
                    if self.with(key, |p| p.throttled(sent, now)) {
                        tracing::warn!(
                            account = %key.account,
                            region = %key.region,
                            rate = self.with(key, |p| p.rate(now)).unwrap_or_default(),
                            %message,
                            "STS throttled; pacing calls"
                        );
                    }
                }
                Err(AwsError::Transport(_)) if unreachable + 1 < TRANSPORT_ATTEMPTS => {
                    unreachable += 1;
                    tokio::time::sleep(Duration::from_millis(100) * unreachable).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_roles_account_and_the_region() {
        let key = PaceKey::new("arn:aws:iam::123456789012:role/app", Some("eu-west-1"));
        assert_eq!(key.account, "123456789012");
        assert_eq!(key.region, "eu-west-1");
        assert_eq!(PaceKey::new("nonsense", None).account, "");
    }
}
