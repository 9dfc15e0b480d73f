//! [`ScalerState`]: the history the autoscaler needs between two decisions. The caller keeps it
//! (the [`Autoscaler`](super::Autoscaler) driver does) and hands it to every [`decide`](super::decide).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::snapshot::PartitionSample;

/// The last scale the runtime applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastScale {
    /// Monotonic time of the scale (same clock as the `now` given to `decide`).
    pub at: Duration,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
}

/// Progress tracking of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionTrack {
    /// Ack floor when the current stall began.
    ack_floor: u64,
    /// Delivered sequence when the current stall began.
    delivered: u64,
    /// When the current stall began (last progress, or last time there was nothing to do).
    since: Duration,
}

/// What the autoscaler remembers between decisions. Start with `ScalerState::default()`.
///
/// All times are monotonic durations since an origin the caller picks (e.g. `Instant` at
/// operator start); the autoscaler never reads a clock itself.
#[derive(Debug, Clone, Default)]
pub struct ScalerState {
    /// Recommendations (time, replicas) within the scale-down stabilization window.
    recommendations: VecDeque<(Duration, u32)>,
    /// Whether the window was seeded with the replica count found at the first decision.
    seeded: bool,
    last_scale: Option<LastScale>,
    zero_lag_since: Option<Duration>,
    partitions: BTreeMap<u32, PartitionTrack>,
    /// (time, processed, failed) per snapshot within the failure window.
    outcomes: VecDeque<(Duration, u64, u64)>,
    last_decision_at: Option<Duration>,
}

impl ScalerState {
    /// Tells the state that the runtime applied a scale from `from` to `to` at `now`.
    pub fn record_scale(&mut self, now: Duration, from: u32, to: u32) {
        self.last_scale = Some(LastScale { at: now, from, to });
    }

    /// The last scale applied, if any.
    pub fn last_scale(&self) -> Option<LastScale> {
        self.last_scale
    }

    /// Since when the total lag (backoff-waiting and stuck messages included) has been zero.
    pub fn zero_lag_since(&self) -> Option<Duration> {
        self.zero_lag_since
    }

    /// The `now` of the last decision.
    pub fn last_decision_at(&self) -> Option<Duration> {
        self.last_decision_at
    }

    /// The recommendations currently in the stabilization window, oldest first.
    pub fn recommendations(&self) -> impl Iterator<Item = (Duration, u32)> + '_ {
        self.recommendations.iter().copied()
    }

    pub(super) fn mark_decision(&mut self, now: Duration) {
        self.last_decision_at = Some(now);
    }

    /// Updates the progress tracking of `sample` and says whether the (ordered) partition is
    /// stuck: it has lag, and either its head message is waiting out a retry backoff, or its ack
    /// floor has not moved for `stuck_after` while a worker holds or keeps being re-delivered
    /// its head message. With `watch == false` tracking restarts instead.
    pub(super) fn track_partition(
        &mut self,
        sample: &PartitionSample,
        now: Duration,
        stuck_after: Duration,
        watch: bool,
    ) -> bool {
        let fresh = PartitionTrack {
            ack_floor: sample.ack_floor,
            delivered: sample.delivered,
            since: now,
        };
        let track = self.partitions.entry(sample.partition).or_insert(fresh);
        if !watch || sample.effective_lag() == 0 {
            *track = fresh;
            return false;
        }
        // Ordered consumption retries in place: while the head waits out a backoff, the
        // whole partition waits with it.
        let head_in_backoff = sample.backoff() > 0;
        if sample.ack_floor != track.ack_floor {
            *track = fresh;
            return head_in_backoff;
        }
        let stalled_for = now.saturating_sub(track.since);
        let retried = sample.delivered > track.delivered;
        head_in_backoff || (stalled_for >= stuck_after && (retried || sample.unacked > 0))
    }

    /// Forgets partitions that are no longer reported.
    pub(super) fn retain_partitions(&mut self, keep: impl Fn(u32) -> bool) {
        self.partitions.retain(|p, _| keep(*p));
    }

    /// Starts or clears the zero-lag timer.
    pub(super) fn track_zero_lag(&mut self, now: Duration, total_lag: u64) {
        if total_lag == 0 {
            self.zero_lag_since.get_or_insert(now);
        } else {
            self.zero_lag_since = None;
        }
    }

    /// Adds this snapshot's outcome counts and returns (processed, failed) within `window`.
    pub(super) fn add_outcomes(
        &mut self,
        now: Duration,
        processed: u64,
        failed: u64,
        window: Duration,
    ) -> (u64, u64) {
        self.outcomes.push_back((now, processed, failed));
        while let Some(&(at, _, _)) = self.outcomes.front() {
            if now.saturating_sub(at) >= window && self.outcomes.len() > 1 {
                self.outcomes.pop_front();
            } else {
                break;
            }
        }
        self.outcomes
            .iter()
            .fold((0u64, 0u64), |(p, f), &(_, dp, df)| {
                (p.saturating_add(dp), f.saturating_add(df))
            })
    }

    /// Adds `recommended` to the stabilization window and returns the highest recommendation in
    /// it. The first call also seeds the window with `current`, so a restarted operator does not
    /// scale down before it has watched the group for a whole window.
    pub(super) fn add_recommendation(
        &mut self,
        now: Duration,
        recommended: u32,
        current: u32,
        window: Duration,
    ) -> u32 {
        if !self.seeded {
            self.seeded = true;
            self.recommendations.push_back((now, current));
        }
        while let Some(&(at, _)) = self.recommendations.front() {
            if now.saturating_sub(at) >= window {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
        self.recommendations.push_back((now, recommended));
        self.recommendations
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(recommended)
    }
}
