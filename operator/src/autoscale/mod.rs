//! The autoscaler's pure core: how many workers a consumer group should run, and why.
//!
//! The decision ([`decide`], [`AutoscalePolicy`], [`ScalerState`]) is pure: no Kubernetes or
//! NATS types. Around it, each in one place and shared by the Kubernetes runtime (a Deployment
//! scaled by server-side apply) and the `sluice dev` process runtime:
//!
//! - [`autoscale_policy`] (`spec.rs`): the ConsumerGroup's `autoscaling` block as a policy;
//! - [`measure`] (`measure.rs`): the one lag reading of a group on the broker;
//! - [`LagHistory`] (`history.rs`): that reading as a [`LagSnapshot`] (rates from levels);
//! - [`GroupScaler`] (`group.rs`): the one driver, stepping [`Autoscaler`] with a reading
//!   and applying its decision through the runtime's [`ScaleTarget`] ("set replicas").
//!
//! [`Autoscaler`] drives [`decide`] through a [`ScaleTarget`] and a [`LagSource`]. The caller owns the loop and
//! the clock: every [`AutoscalePolicy::poll_interval`] it passes a fresh [`LagSnapshot`] and a
//! monotonic `now`. Nothing here reads a clock or sleeps.
//!
//! # Algorithm
//!
//! Each poll, [`decide`] goes through these steps (all times on the caller's monotonic clock):
//!
//! 1. **Lag.** Per partition, lag = `pending + unacked`. Messages that are only waiting out a
//!    retry backoff (`backoff_waiting`, a subset of `unacked`) are subtracted: more workers would
//!    not handle them any sooner. This is the *effective lag*.
//! 2. **Stuck partitions** (ordering=partition only, and only while workers run). Ordered
//!    consumption retries in place, so a partition is stuck when it has effective lag and either
//!    its head message is waiting out a retry backoff (`backoff_waiting > 0`: the partition waits
//!    with it; detected at once), or its acknowledged offset (ack floor) has not moved for
//!    [`stuck_after`](AutoscalePolicy::stuck_after) while a worker holds its head message
//!    (`unacked > 0`) or keeps being re-delivered it (`delivered` advanced). That is the shape of
//!    a poison message: another worker cannot help, since one worker owns a partition. Its lag is left out of the effective lag and a [`ScaleNote::StuckPartitions`]
//!    says so. A partition whose offsets stand still with *nothing* delivered is not stuck but
//!    unserved, and its lag counts. For ordering key/none a poison message does not block the
//!    partition, so no partition is ever considered stuck; the failure check covers those.
//! 3. **Failures.** The snapshot's `processed` and `failed` (retries + dead-letters) counts are
//!    summed over [`failure_window`](AutoscalePolicy::failure_window). When at least
//!    [`failure_min_events`](AutoscalePolicy::failure_min_events) attempts were made and
//!    `failed / (processed + failed)` exceeds
//!    [`failure_ratio_threshold`](AutoscalePolicy::failure_ratio_threshold), failures *dominate*.
//! 4. **Recommendation.** `ceil(effective_lag / target_lag_per_replica)`, except at zero
//!    replicas where the group only *activates* once effective lag >=
//!    [`activation_lag`](AutoscalePolicy::activation_lag) (KEDA's activation threshold).
//!    With ordering=partition it is capped at the partition count
//!    ([`ScaleNote::CappedAtPartitions`]); key/none may exceed it. It is then clamped to
//!    `[floor, max]`, where floor is `min`, or with `scale_to_zero` `max(min, 1)` while active
//!    and 0 when idle or not activated.
//! 5. **Scale up** (recommendation > current): at once, within this poll, but by at most
//!    [`scale_up_limit`](AutoscalePolicy::scale_up_limit) per decision (the rest follows on
//!    the next polls). Not when failures dominate: the count is kept and
//!    [`ScaleReason::FailuresDominate`] says why (raising to the floor still happens).
//!    From zero, the reason is [`ScaleReason::Activate`] and the target is at least `max(min, 1)`.
//! 6. **Scale down** (recommendation < current): only to the highest recommendation made
//!    within [`scale_down_stabilization`](AutoscalePolicy::scale_down_stabilization), as the
//!    Kubernetes HPA's stabilization window and KEDA do, so a dip shorter than the window
//!    changes nothing ([`ScaleReason::HoldScaleDown`]) and a square wave does not flap. The
//!    window is seeded with the replica count found at the first decision, so a restarted
//!    operator does not scale down before it has watched a whole window. A count above `max`
//!    drops to `max` at once.
//! 7. **Scale to zero**: with [`scale_to_zero`](AutoscalePolicy::scale_to_zero), once the *total*
//!    lag (backoff-waiting and stuck messages included, so nothing is stranded) has been zero for
//!    [`idle_before_zero`](AutoscalePolicy::idle_before_zero), the group goes to zero directly
//!    (that period is its stabilization). Below `min` only in this case.
//!
//! Every [`Decision`] carries the desired count, a [`ScaleReason`] whose `Display` is a sentence
//! for humans, [`ScaleNote`]s for caps, clamps, stuck partitions and excluded backoff waits, and
//! the [`DecisionInputs`]. [`ScaleRecord`] is its form in the ConsumerGroup status.

mod decide;
mod driver;
mod error;
mod group;
mod history;
mod measure;
mod policy;
mod record;
mod snapshot;
mod spec;
mod state;

#[cfg(test)]
mod tests;

pub use decide::{Decision, DecisionInputs, ScaleNote, ScaleReason, decide};
pub use driver::{Autoscaler, LagSource, ScaleTarget, StepOutcome};
pub use error::{Cause, Error, ErrorKind};
pub use group::GroupScaler;
pub use history::LagHistory;
pub use measure::{Measured, measure};
pub use policy::{AutoscalePolicy, ScaleUpLimit};
pub use record::ScaleRecord;
pub use snapshot::{LagSnapshot, PartitionSample};
pub use spec::{
    DEFAULT_IDLE_BEFORE_ZERO, DEFAULT_POLL_INTERVAL, DEFAULT_STABILIZATION,
    DEFAULT_TARGET_LAG_PER_REPLICA, autoscale_policy,
};
pub use state::{LastScale, ScalerState};
