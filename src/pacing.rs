//! PURE: pacing of STS calls for one (account, region), so that STS throttling is absorbed
//! instead of passed on. No I/O and no clock: every method takes `now`, a [`Duration`] since an
//! origin the caller picks.
//!
//! The shape follows the AWS SDKs' adaptive retry mode:
//! - the pacer is **open** (no limit) until STS first answers `Throttling`;
//! - a throttle **cuts** the rate multiplicatively (× [`PacerSettings::beta`]), from the rate
//!   measured over the last second when open, from the current limit otherwise. Throttles of
//!   calls sent before the last cut do not cut again: they are the same congestion;
//! - between throttles the rate **recovers** additively, by [`PacerSettings::increase`] of the
//!   rate at the last cut per second (AIMD);
//! - after [`PacerSettings::reopen_after`] without a throttle the pacer opens again.
//!
//! While limited, calls get slots spaced `1 / rate` apart (a token bucket of one token, in
//! virtual-scheduling form). A caller whose slot would come after its deadline is refused with
//! the time until that slot, which the server answers as `Retry-After`. A cut starts a new
//! epoch: callers sleeping on a slot given out at the old rate take a new one when they wake.

use std::collections::VecDeque;
use std::time::Duration;

/// How the pacer adapts.
#[derive(Debug, Clone, PartialEq)]
pub struct PacerSettings {
    /// The factor a throttle multiplies the rate by (the AWS SDKs' 0.7).
    pub beta: f64,
    /// The lowest rate, calls per second.
    pub min_rate: f64,
    /// Additive recovery per second, as a fraction of the rate set by the last cut.
    pub increase: f64,
    /// How long without a throttle before the limit is lifted.
    pub reopen_after: Duration,
    /// How long a first request may wait for its slot before it is refused.
    pub max_wait: Duration,
}

impl Default for PacerSettings {
    fn default() -> Self {
        Self {
            beta: 0.7,
            min_rate: 0.5,
            increase: 0.1,
            reopen_after: Duration::from_secs(60),
            max_wait: Duration::from_secs(5),
        }
    }
}

/// What a caller is told when it asks to call STS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    /// Call now.
    Now,
    /// Sleep until `at`, then [`Pacer::confirm`] with `epoch`.
    At {
        /// When the slot comes.
        at: Duration,
        /// The epoch the slot belongs to.
        epoch: u64,
    },
    /// The slot would come after the caller's deadline: try again after `retry_after`.
    Refused {
        /// Time until the slot that would have been given.
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Limit {
    /// The rate the last cut set.
    cut_rate: f64,
    /// When the last cut happened.
    last_cut: Duration,
    /// The first slot not given out yet.
    next_free: Duration,
}

/// When calls were sent over the last second, for the rate measured when open.
#[derive(Debug, Clone, Default, PartialEq)]
struct Window {
    sent: VecDeque<Duration>,
}

const SECOND: Duration = Duration::from_secs(1);
/// The shortest span a rate is measured over: a burst sent within a few milliseconds counts as
/// sent over this long, not as a near-infinite rate.
const SHORTEST_SPAN: Duration = Duration::from_millis(100);
/// Sends remembered at most (a second at a rate far above any STS quota).
const REMEMBERED: usize = 10_000;

impl Window {
    fn forget_before(&mut self, now: Duration) {
        while self.sent.front().is_some_and(|t| *t + SECOND <= now) {
            self.sent.pop_front();
        }
    }

    fn record(&mut self, now: Duration) {
        self.forget_before(now);
        if self.sent.len() >= REMEMBERED {
            self.sent.pop_front();
        }
        self.sent.push_back(now);
    }

    /// Calls per second over the last second: the intervals between the calls sent in it over
    /// the time since the first of them, so that a burst at the start of a storm is not read as a slow second.
    fn rate(&mut self, now: Duration) -> f64 {
        self.forget_before(now);
        let Some(first) = self.sent.front() else {
            return 0.0;
        };
        let span = now.saturating_sub(*first).clamp(SHORTEST_SPAN, SECOND);
        (self.sent.len() - 1) as f64 / span.as_secs_f64()
    }
}

/// The pacing state of one (account, region).
#[derive(Debug, Clone, PartialEq)]
pub struct Pacer {
    settings: PacerSettings,
    limit: Option<Limit>,
    epoch: u64,
    sent: Window,
}

impl Pacer {
    /// An open pacer.
    pub fn new(settings: PacerSettings) -> Self {
        Self {
            settings,
            limit: None,
            epoch: 0,
            sent: Window::default(),
        }
    }

    /// The limit in calls per second at `now`, `None` when open.
    pub fn rate(&mut self, now: Duration) -> Option<f64> {
        let limit = self.limit.as_ref()?;
        let since = now.saturating_sub(limit.last_cut);
        if since >= self.settings.reopen_after {
            self.limit = None;
            self.epoch += 1;
            return None;
        }
        let step = (limit.cut_rate * self.settings.increase).max(self.settings.min_rate);
        Some(limit.cut_rate + step * since.as_secs_f64())
    }

    /// A slot for a call arriving at `now` that must start by `deadline`.
    pub fn reserve(&mut self, now: Duration, deadline: Duration) -> Slot {
        let Some(rate) = self.rate(now) else {
            return Slot::Now;
        };
        let Some(limit) = self.limit.as_mut() else {
            return Slot::Now;
        };
        let slot = limit.next_free.max(now);
        if slot > deadline {
            return Slot::Refused {
                retry_after: slot - now,
            };
        }
        limit.next_free = slot + Duration::from_secs_f64(1.0 / rate);
        if slot <= now {
            Slot::Now
        } else {
            Slot::At {
                at: slot,
                epoch: self.epoch,
            }
        }
    }

    /// Whether a slot of `epoch` still holds when its caller wakes: false after a cut (or a
    /// reopening), and the caller reserves again.
    pub fn confirm(&self, epoch: u64) -> bool {
        epoch == self.epoch
    }

    /// A call goes to STS at `now`.
    pub fn sent(&mut self, now: Duration) {
        self.sent.record(now);
    }

    /// STS throttled a call sent at `sent_at`; the answer came at `now`. Returns whether the
    /// rate was cut.
    pub fn throttled(&mut self, sent_at: Duration, now: Duration) -> bool {
        let base = match self.rate(now) {
            Some(_) if self.limit.as_ref().is_some_and(|l| sent_at < l.last_cut) => return false,
            Some(rate) => rate,
            None => self.sent.rate(now),
        };
        let cut_rate = (base * self.settings.beta).max(self.settings.min_rate);
        // The next call waits one interval at the new rate: STS's own bucket is empty now.
        self.limit = Some(Limit {
            cut_rate,
            last_cut: now,
            next_free: now + Duration::from_secs_f64(1.0 / cut_rate),
        });
        self.epoch += 1;
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings() -> PacerSettings {
        PacerSettings {
            beta: 0.5,
            min_rate: 1.0,
            increase: 0.1,
            reopen_after: Duration::from_secs(30),
            max_wait: Duration::from_secs(5),
        }
    }

    #[test]
    fn open_until_the_first_throttle() {
        let mut p = Pacer::new(settings());
        for i in 0..1000 {
            assert_eq!(p.reserve(ms(i), ms(i)), Slot::Now);
            p.sent(ms(i));
        }
        assert_eq!(p.rate(ms(1000)), None);
    }

    #[test]
    fn a_throttle_cuts_the_measured_rate_and_spaces_the_slots() {
        let mut p = Pacer::new(settings());
        // 41 calls in 100 ms, the start of a storm: 400 per second measured.
        for i in 0..41 {
            p.sent(ms(i * 2));
        }
        assert!(p.throttled(ms(80), ms(100)));
        assert_eq!(p.rate(ms(100)), Some(200.0));
        // 40 calls spread over the last second: 40 per second.
        let mut p = Pacer::new(settings());
        for i in 0..41 {
            p.sent(ms(i * 25 + 100));
        }
        assert!(p.throttled(ms(1080), ms(1100)));
        assert_eq!(p.rate(ms(1100)), Some(20.0));
        // Slots 50 ms apart, the first one interval after the cut.
        assert_eq!(
            p.reserve(ms(1100), ms(5100)),
            Slot::At {
                at: ms(1150),
                epoch: 1
            }
        );
        assert_eq!(
            p.reserve(ms(1100), ms(5100)),
            Slot::At {
                at: ms(1200),
                epoch: 1
            }
        );
        assert_eq!(p.reserve(ms(1250), ms(5100)), Slot::Now);
    }

    #[test]
    fn throttles_of_calls_sent_before_the_cut_do_not_cut_again() {
        let mut p = Pacer::new(settings());
        for i in 0..40 {
            p.sent(ms(i));
        }
        assert!(p.throttled(ms(10), ms(50)));
        let after_first = p.rate(ms(50));
        // The rest of the burst comes back throttled too: no further cut.
        for i in 11..40 {
            assert!(!p.throttled(ms(i), ms(60)));
        }
        assert_eq!(p.rate(ms(50)), after_first);
        // A call sent after the cut and throttled cuts again.
        assert!(p.throttled(ms(70), ms(90)));
        assert!(p.rate(ms(90)).unwrap() < after_first.unwrap());
    }

    #[test]
    fn the_rate_recovers_additively_and_the_limit_lifts_after_a_quiet_spell() {
        let mut p = Pacer::new(settings());
        // 20 calls over the last second (the one at 0 ms is older than that): 20 per second.
        for i in 0..21 {
            p.sent(ms(i * 50));
        }
        p.throttled(ms(950), ms(1000));
        let cut = p.rate(ms(1000)).unwrap();
        assert!((cut - 10.0).abs() < 1e-9, "{cut}");
        // +10 % of the cut rate (1/s, the minimum step) per second.
        let later = p.rate(ms(11_000)).unwrap();
        assert!((later - 20.0).abs() < 1e-9, "{later}");
        assert_eq!(p.rate(ms(31_000)), None, "open again after 30 s");
    }

    #[test]
    fn never_below_the_minimum_rate() {
        let mut p = Pacer::new(settings());
        p.sent(ms(0));
        p.throttled(ms(0), ms(1));
        for i in 0..50 {
            p.throttled(ms(10 + i), ms(10 + i));
        }
        assert_eq!(p.rate(ms(59)), Some(1.0));
    }

    #[test]
    fn a_slot_past_the_deadline_is_refused_with_the_wait_it_would_have_had() {
        let mut p = Pacer::new(settings());
        // The only call, answered a second later: nothing sent in the last second, so the
        // minimum rate, one call per second.
        p.sent(ms(0));
        p.throttled(ms(0), ms(1000));
        let t = |n: u64| ms(1000 + n);
        // Slots at 1 s and 2 s from now; 3 s is past the deadline.
        assert!(matches!(p.reserve(t(0), t(2500)), Slot::At { .. }));
        assert!(matches!(p.reserve(t(0), t(2500)), Slot::At { .. }));
        match p.reserve(t(0), t(2500)) {
            Slot::Refused { retry_after } => {
                assert!(
                    retry_after > ms(2500) && retry_after < ms(3200),
                    "{retry_after:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A refusal gives nothing away: the next caller with a later deadline gets that slot.
        match p.reserve(t(0), t(10_000)) {
            Slot::At { at, .. } => assert_eq!(at, t(3000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cut_invalidates_slots_given_at_the_old_rate() {
        let mut p = Pacer::new(settings());
        for i in 0..20 {
            p.sent(ms(i));
        }
        p.throttled(ms(0), ms(20));
        let Slot::At { epoch, .. } = p.reserve(ms(20), ms(5000)) else {
            panic!("no slot")
        };
        assert!(p.confirm(epoch));
        p.throttled(ms(30), ms(40));
        assert!(!p.confirm(epoch));
    }
}
