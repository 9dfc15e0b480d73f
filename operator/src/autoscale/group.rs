//! [`GroupScaler`]: the one driver of a consumer group's autoscaling, shared by the Kubernetes
//! runtime (stepped by every group reconcile, applying a Deployment) and `sluice dev` (stepped
//! every poll interval, scaling worker processes). It keeps what must survive between
//! readings (the [`Autoscaler`]'s history, the [`LagHistory`] and the last decided count) and
//! applies a decision through a [`ScaleTarget`].

use std::time::Duration;

use sluice_broker::{Broker, GroupConfig};
use tracing::warn;

use super::{
    AutoscalePolicy, Autoscaler, Error, LagHistory, Measured, ScaleRecord, ScaleTarget,
    StepOutcome, measure,
};

/// The autoscaling state of one group, kept across readings.
#[derive(Debug)]
pub struct GroupScaler {
    autoscaler: Autoscaler,
    history: LagHistory,
    last_desired: Option<u32>,
}

impl GroupScaler {
    /// A scaler with `policy`, which must pass [`AutoscalePolicy::validate`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPolicy`] when the policy can never work.
    pub fn new(policy: AutoscalePolicy) -> Result<Self, Error> {
        Ok(Self {
            autoscaler: Autoscaler::new(policy)?,
            history: LagHistory::default(),
            last_desired: None,
        })
    }

    /// The policy in effect.
    pub fn policy(&self) -> &AutoscalePolicy {
        self.autoscaler.policy()
    }

    /// Replaces the policy when it changed (the group was edited), keeping the history; a
    /// policy that cannot work is logged and the previous one stays.
    pub fn update_policy(&mut self, policy: &AutoscalePolicy) {
        if self.autoscaler.policy() != policy
            && let Err(e) = self.autoscaler.set_policy(policy.clone())
        {
            warn!(error = %e, "autoscaling policy rejected");
        }
    }

    /// The replicas last decided, if any (the current count of a group whose workers the
    /// runtime does not run).
    pub fn last_desired(&self) -> Option<u32> {
        self.last_desired
    }

    /// Decides from one reading and applies the decision to `target` (`now` on the caller's
    /// monotonic clock).
    ///
    /// # Errors
    ///
    /// When `target` cannot report or apply its replicas; nothing is recorded as decided.
    pub async fn step<T: ScaleTarget>(
        &mut self,
        measured: &Measured,
        target: &T,
        now: Duration,
    ) -> Result<StepOutcome, Error> {
        let snapshot = self.history.snapshot(
            &measured.lag,
            measured.partitions,
            measured.ordering,
            measured.dlq_depth,
        );
        let step = self.autoscaler.step(target, &snapshot, now).await?;
        self.last_desired = Some(step.decision.desired);
        Ok(step)
    }

    /// Measures the group `config` on `broker` ([`measure`]), then does [`GroupScaler::step`].
    ///
    /// # Errors
    ///
    /// [`Error::Snapshot`] when the lag cannot be read, else as [`GroupScaler::step`].
    pub async fn poll<T: ScaleTarget>(
        &mut self,
        broker: &Broker,
        config: &GroupConfig,
        target: &T,
        now: Duration,
    ) -> Result<StepOutcome, Error> {
        let measured = measure(broker, config)
            .await
            .map_err(|e| Error::Snapshot(Box::new(e)))?;
        self.step(&measured, target, now).await
    }

    /// The status record of the last decision (see [`Autoscaler::record`]).
    pub fn record(&self, wall_now: time::OffsetDateTime) -> Option<ScaleRecord> {
        self.autoscaler.record(wall_now)
    }
}
