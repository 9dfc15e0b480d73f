//! The runtime side: [`ScaleTarget`] (what the Kubernetes and `sluice dev` runtimes implement),
//! [`LagSource`] (where snapshots come from) and [`Autoscaler`], which owns the
//! [`ScalerState`], calls [`decide`] and applies the result.

use std::future::Future;
use std::time::Duration;

use tracing::{debug, info, instrument};

use super::decide::{Decision, decide};
use super::error::Error;
use super::policy::AutoscalePolicy;
use super::record::ScaleRecord;
use super::snapshot::LagSnapshot;
use super::state::ScalerState;

/// Something whose replica count the autoscaler controls: a Deployment (server-side apply of
/// `spec.replicas`) or the worker processes of `sluice dev`.
pub trait ScaleTarget {
    /// The runtime's error; its message should name the object it failed on.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Replicas currently asked for (e.g. the Deployment's `spec.replicas`).
    fn current_replicas(&self) -> impl Future<Output = Result<u32, Self::Error>> + Send;

    /// Sets the replica count; `reason` is the human sentence to record (annotation, Event, log).
    fn set_replicas(
        &self,
        replicas: u32,
        reason: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Where [`LagSnapshot`]s come from (the broker's consumer info plus worker metrics).
pub trait LagSource {
    /// The source's error; its message should name the group it failed on.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Takes a fresh snapshot.
    fn snapshot(&self) -> impl Future<Output = Result<LagSnapshot, Self::Error>> + Send;
}

/// The result of one autoscaler step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// What was decided.
    pub decision: Decision,
    /// Whether `set_replicas` was called (and succeeded).
    pub scaled: bool,
}

/// Drives one consumer group: keeps the [`ScalerState`] across polls, decides, applies.
///
/// The caller owns the loop and the clock: every `poll_interval` it calls [`Autoscaler::poll`]
/// (or [`Autoscaler::step`] with a snapshot it took itself) with a monotonic `now`.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    policy: AutoscalePolicy,
    state: ScalerState,
    last: Option<Decision>,
    /// Wall-clock time of the last scale, fixed by the first [`Autoscaler::record`] after it
    /// (so the status shows the same time on every later reconcile) and reset by each scale.
    last_scale_wall: std::sync::OnceLock<Option<time::OffsetDateTime>>,
}

impl Autoscaler {
    /// An autoscaler for `policy`, which must pass [`AutoscalePolicy::validate`].
    pub fn new(policy: AutoscalePolicy) -> Result<Self, Error> {
        policy.validate()?;
        Ok(Self {
            policy,
            state: ScalerState::default(),
            last: None,
            last_scale_wall: std::sync::OnceLock::new(),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &AutoscalePolicy {
        &self.policy
    }

    /// Replaces the policy (the ConsumerGroup changed), keeping the history.
    pub fn set_policy(&mut self, policy: AutoscalePolicy) -> Result<(), Error> {
        policy.validate()?;
        self.policy = policy;
        Ok(())
    }

    /// The history kept between decisions.
    pub fn state(&self) -> &ScalerState {
        &self.state
    }

    /// The last decision made, if any.
    pub fn last_decision(&self) -> Option<&Decision> {
        self.last.as_ref()
    }

    /// Takes a snapshot from `source`, then does [`Autoscaler::step`].
    pub async fn poll<S, T>(
        &mut self,
        source: &S,
        target: &T,
        now: Duration,
    ) -> Result<StepOutcome, Error>
    where
        S: LagSource,
        T: ScaleTarget,
    {
        let snapshot = source
            .snapshot()
            .await
            .map_err(|e| Error::Snapshot(Box::new(e)))?;
        self.step(target, &snapshot, now).await
    }

    /// Reads the current replicas from `target`, decides from `snapshot`, and calls
    /// `set_replicas` only when the desired count differs from the current one.
    #[instrument(level = "debug", skip_all, fields(lag = snapshot.total_lag()))]
    pub async fn step<T: ScaleTarget>(
        &mut self,
        target: &T,
        snapshot: &LagSnapshot,
        now: Duration,
    ) -> Result<StepOutcome, Error> {
        let current = target
            .current_replicas()
            .await
            .map_err(|e| Error::ReadReplicas(Box::new(e)))?;
        let decision = decide(&self.policy, snapshot, current, now, &mut self.state);
        let scaled = if decision.changes_replicas() {
            let reason = decision.to_string();
            target
                .set_replicas(decision.desired, &reason)
                .await
                .map_err(|e| Error::SetReplicas {
                    from: current,
                    to: decision.desired,
                    source: Box::new(e),
                })?;
            self.state.record_scale(now, current, decision.desired);
            self.last_scale_wall = std::sync::OnceLock::new();
            info!(
                from = current,
                to = decision.desired,
                reason = decision.reason.code(),
                "{reason}"
            );
            true
        } else {
            debug!(
                replicas = current,
                reason = decision.reason.code(),
                "{decision}"
            );
            false
        };
        self.last = Some(decision.clone());
        Ok(StepOutcome { decision, scaled })
    }

    /// The status record of the last decision. `wall_now` is the wall-clock time matching the
    /// `now` of the last decision; the last scale time is derived from it the first time a
    /// record is made after a scale and then kept, whole seconds, until the next scale: an
    /// idle group's record stays identical from one reconcile to the next (no status write).
    pub fn record(&self, wall_now: time::OffsetDateTime) -> Option<ScaleRecord> {
        let decision = self.last.as_ref()?;
        let last_scale_time = *self.last_scale_wall.get_or_init(|| {
            let scale = self.state.last_scale()?;
            let decided = self.state.last_decision_at()?;
            let ago = time::Duration::try_from(decided.saturating_sub(scale.at)).ok()?;
            let at = wall_now.checked_sub(ago)?;
            at.replace_nanosecond(0).ok()
        });
        Some(ScaleRecord::from_decision(decision, last_scale_time))
    }
}
