//! [`Backoff`]: the one exponential backoff policy of Sluice, used by the SDK's retries (in
//! place and by delayed redelivery), the JetStream redelivery schedule of a group's consumers,
//! the fan-out relay's restarts and the operator's requeues.
//!
//! The delays come from [`backon`]'s exponential backoff: `initial`, then multiplied by
//! `multiplier` after each attempt, never above `max`. With `jitter`, a random share of up to
//! the delay itself is added, and the result is capped at `max` again, so a delay never exceeds
//! the configured maximum. Delays are whole milliseconds (the unit of the configuration).

use std::time::Duration;

use backon::BackoffBuilder as _;
use serde::{Deserialize, Serialize};

/// The attempt after which delays stop growing in the computation (64 doublings are more than
/// any maximum delay needs).
const MAX_EXPONENT: u32 = 64;

/// Exponential backoff between attempts; serialized as part of [`GroupConfig`](crate::GroupConfig).
///
/// ```
/// use std::time::Duration;
/// use sluice_broker::Backoff;
/// let b = Backoff { initial_ms: 100, multiplier: 3.0, max_ms: 1_000, jitter: false };
/// assert_eq!(b.delay_after(1), Duration::from_millis(100));
/// assert_eq!(b.delay_after(3), Duration::from_millis(900));
/// assert_eq!(b.delay_after(4), Duration::from_millis(1_000));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the second attempt, in milliseconds.
    pub initial_ms: u64,
    /// Factor applied after each attempt (>= 1).
    pub multiplier: f64,
    /// Upper bound of a delay, in milliseconds.
    pub max_ms: u64,
    /// Whether to add random jitter (up to the delay itself, still capped at the maximum).
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            multiplier: 2.0,
            max_ms: 60_000,
            jitter: true,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt + 1`, after `attempt` failed (1-based; 0 counts as 1):
    /// the policy's delay, with jitter when [`Backoff::jitter`] is set, never above the maximum.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sluice_broker::Backoff;
    /// let b = Backoff { initial_ms: 100, multiplier: 2.0, max_ms: 400, jitter: true };
    /// for attempt in 1..8 {
    ///     assert!(b.delay_after(attempt) <= Duration::from_millis(400));
    /// }
    /// ```
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.delay(attempt, self.jitter)
    }

    /// The delay before attempt `attempt + 1` without jitter, whatever [`Backoff::jitter`] says:
    /// what the schedule a server applies is made of.
    pub fn nominal_delay_after(&self, attempt: u32) -> Duration {
        self.delay(attempt, false)
    }

    /// The schedule JetStream redelivers with: the nominal delay after each of the first
    /// `max_attempts - 1` failures (JetStream wants at most `max_deliver` entries).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sluice_broker::Backoff;
    /// let b = Backoff { initial_ms: 100, multiplier: 3.0, max_ms: 1_000, jitter: true };
    /// let ms: Vec<u128> = b.schedule(5).iter().map(Duration::as_millis).collect();
    /// assert_eq!(ms, vec![100, 300, 900, 1_000]);
    /// ```
    pub fn schedule(&self, max_attempts: u32) -> Vec<Duration> {
        (1..max_attempts.max(1))
            .map(|a| self.nominal_delay_after(a))
            .collect()
    }

    /// The one implementation: the `attempt`-th delay of backon's exponential backoff.
    fn delay(&self, attempt: u32, jitter: bool) -> Duration {
        let max = Duration::from_millis(self.max_ms);
        // A multiplier below 1 (or not a number) would shrink delays: treat it as 1.
        let factor = self.multiplier.max(1.0) as f32;
        let mut builder = backon::ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(self.initial_ms))
            .with_factor(factor)
            .with_max_delay(max)
            .without_max_times();
        if jitter {
            // Seeded here: without backon's `std` feature its generator would start from the
            // same seed on every call, and every message would get the same "random" share.
            builder = builder.with_jitter().with_jitter_seed(rand::random());
        }
        let index = attempt.saturating_sub(1).min(MAX_EXPONENT) as usize;
        let delay = builder.build().nth(index).unwrap_or(max);
        whole_millis(delay).min(max)
    }
}

/// Rounds to the nearest millisecond (backon computes in `f32` seconds, so 300 ms can come
/// out as 299.99999 ms).
fn whole_millis(d: Duration) -> Duration {
    let micros = d.as_micros();
    let millis = micros / 1_000 + u128::from(micros % 1_000 >= 500);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_schedule_is_exponential_and_capped() {
        let b = Backoff {
            initial_ms: 100,
            multiplier: 3.0,
            max_ms: 1_000,
            jitter: false,
        };
        let ms: Vec<u128> = b.schedule(5).iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 300, 900, 1_000]);
        assert!(b.schedule(1).is_empty());
    }

    #[test]
    fn retry_delays_follow_the_schedule_without_jitter() {
        let b = Backoff {
            initial_ms: 100,
            multiplier: 2.0,
            max_ms: 350,
            jitter: false,
        };
        let ms: Vec<u128> = (1..5).map(|a| b.delay_after(a).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 350, 350]);
    }

    #[test]
    fn jitter_never_takes_a_delay_past_the_maximum() {
        let b = Backoff {
            initial_ms: 100,
            multiplier: 2.0,
            max_ms: 400,
            jitter: true,
        };
        for _ in 0..200 {
            for attempt in 1..8 {
                let d = b.delay_after(attempt);
                assert!(d <= Duration::from_millis(400), "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let b = Backoff {
            initial_ms: 1_000,
            multiplier: 2.0,
            max_ms: 60_000,
            jitter: true,
        };
        let delays: std::collections::HashSet<Duration> =
            (0..50).map(|_| b.delay_after(2)).collect();
        assert!(delays.len() > 1, "jitter produced one delay: {delays:?}");
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(2_000)));
    }

    #[test]
    fn edge_attempts_and_multipliers_stay_bounded() {
        let b = Backoff {
            initial_ms: 1_000,
            multiplier: 0.5,
            max_ms: 5_000,
            jitter: false,
        };
        assert_eq!(b.delay_after(0), Duration::from_secs(1));
        assert_eq!(b.delay_after(3), Duration::from_secs(1));
        let b = Backoff {
            multiplier: 2.0,
            ..b
        };
        assert_eq!(b.delay_after(u32::MAX), Duration::from_secs(5));
        // The operator's requeue: 5 s doubling up to 160 s.
        let requeue = Backoff {
            initial_ms: 5_000,
            multiplier: 2.0,
            max_ms: 160_000,
            jitter: false,
        };
        let secs: Vec<u64> = (1..9).map(|n| requeue.delay_after(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 160, 160]);
    }
}
