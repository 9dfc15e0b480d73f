//! [`AutoscalePolicy`]: the knobs of the autoscaler, independent of the CRD that will carry them.

use std::time::Duration;

use super::error::Error;

/// How many replicas one scale-up decision may add.
///
/// The allowed step is `max(replicas, ceil(current * percent / 100))`, and at least 1, as the
/// Kubernetes HPA does when it combines a `Pods` and a `Percent` policy with `selectPolicy: Max`.
/// Use [`ScaleUpLimit::UNLIMITED`] to jump straight to the recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleUpLimit {
    /// Replicas that may always be added in one decision.
    pub replicas: u32,
    /// Percentage of the current replicas that may be added in one decision (100 = double).
    pub percent: u32,
}

impl ScaleUpLimit {
    /// No limit: a scale-up reaches the recommendation in one decision.
    pub const UNLIMITED: ScaleUpLimit = ScaleUpLimit {
        replicas: u32::MAX,
        percent: 0,
    };

    /// The highest replica count one decision may go to from `current`.
    pub fn ceiling_from(&self, current: u32) -> u32 {
        let by_percent = (u64::from(current) * u64::from(self.percent)).div_ceil(100);
        let by_percent = u32::try_from(by_percent).unwrap_or(u32::MAX);
        let step = self.replicas.max(by_percent).max(1);
        current.saturating_add(step)
    }
}

impl Default for ScaleUpLimit {
    /// Add up to 4 replicas or double, whichever is more (the HPA's default scale-up behaviour).
    fn default() -> Self {
        Self {
            replicas: 4,
            percent: 100,
        }
    }
}

/// The autoscaling policy of one consumer group.
///
/// Build it with `..Default::default()`; [`AutoscalePolicy::validate`] says what is wrong with a
/// policy that cannot work. The CRD's `autoscaling` block is mapped onto this struct.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalePolicy {
    /// Fewest replicas while the group is active (see `scale_to_zero`).
    pub min: u32,
    /// Most replicas, whatever the lag.
    pub max: u32,
    /// Lag (messages) one replica is expected to keep up with; desired = ceil(lag / this).
    pub target_lag_per_replica: u64,
    /// Lag (messages) needed to wake a group that runs zero replicas.
    pub activation_lag: u64,
    /// How fast scale-up may go per decision.
    pub scale_up_limit: ScaleUpLimit,
    /// Scale-down goes only as low as the highest recommendation made within this window.
    pub scale_down_stabilization: Duration,
    /// How often the runtime samples lag and calls the autoscaler.
    pub poll_interval: Duration,
    /// Whether the group may run zero replicas once it has been idle for `idle_before_zero`.
    pub scale_to_zero: bool,
    /// How long the lag must have been zero before scaling to zero.
    pub idle_before_zero: Duration,
    /// Failure ratio (failed / (processed + failed)) above which the group is not scaled up.
    pub failure_ratio_threshold: f64,
    /// Fewest handled messages (processed + failed) in `failure_window` before the failure ratio counts.
    pub failure_min_events: u64,
    /// How far back the failure ratio looks.
    pub failure_window: Duration,
    /// How long an ordered partition may hold lag without its acknowledged offset advancing
    /// while a worker holds or keeps being re-delivered its head message, before it counts as
    /// stuck (its lag then no longer drives scale-up).
    pub stuck_after: Duration,
}

impl Default for AutoscalePolicy {
    fn default() -> Self {
        Self {
            min: 1,
            max: 10,
            target_lag_per_replica: 100,
            activation_lag: 1,
            scale_up_limit: ScaleUpLimit::default(),
            scale_down_stabilization: Duration::from_secs(300),
            poll_interval: Duration::from_secs(5),
            scale_to_zero: false,
            idle_before_zero: Duration::from_secs(300),
            failure_ratio_threshold: 0.5,
            failure_min_events: 20,
            failure_window: Duration::from_secs(60),
            stuck_after: Duration::from_secs(30),
        }
    }
}

impl AutoscalePolicy {
    /// Checks the invariants [`decide`](super::decide) relies on, naming the field to fix.
    ///
    /// `decide` never panics on an invalid policy (it falls back to the safest reading, e.g.
    /// `max` wins over `min`), but the operator should report the problem instead.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: String| Err(Error::InvalidPolicy(msg));
        if self.max == 0 {
            return invalid("autoscaling max must be at least 1; use scaleToZero to run zero replicas when idle".into());
        }
        if self.min > self.max {
            return invalid(format!(
                "autoscaling min ({}) is greater than max ({}); lower min or raise max",
                self.min, self.max
            ));
        }
        if self.target_lag_per_replica == 0 {
            return invalid("autoscaling targetLagPerReplica must be at least 1 message".into());
        }
        if self.poll_interval.is_zero() {
            return invalid("autoscaling pollInterval must be greater than zero".into());
        }
        if !(self.failure_ratio_threshold > 0.0 && self.failure_ratio_threshold <= 1.0) {
            return invalid(format!(
                "autoscaling failureRatioThreshold ({}) must be in (0, 1]; 1 disables the failure check",
                self.failure_ratio_threshold
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::ErrorKind;

    #[test]
    fn scale_up_limit_takes_the_larger_step() {
        let limit = ScaleUpLimit::default();
        assert_eq!(limit.ceiling_from(0), 4);
        assert_eq!(limit.ceiling_from(2), 6);
        assert_eq!(limit.ceiling_from(10), 20);
        assert_eq!(ScaleUpLimit::UNLIMITED.ceiling_from(3), u32::MAX);
        let zero = ScaleUpLimit {
            replicas: 0,
            percent: 0,
        };
        assert_eq!(zero.ceiling_from(5), 6, "a limit always allows one replica");
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert!(AutoscalePolicy::default().validate().is_ok());
        let cases = [
            (
                AutoscalePolicy {
                    max: 0,
                    ..Default::default()
                },
                "max",
            ),
            (
                AutoscalePolicy {
                    min: 5,
                    max: 2,
                    ..Default::default()
                },
                "min (5)",
            ),
            (
                AutoscalePolicy {
                    target_lag_per_replica: 0,
                    ..Default::default()
                },
                "targetLagPerReplica",
            ),
            (
                AutoscalePolicy {
                    poll_interval: Duration::ZERO,
                    ..Default::default()
                },
                "pollInterval",
            ),
            (
                AutoscalePolicy {
                    failure_ratio_threshold: 0.0,
                    ..Default::default()
                },
                "failureRatioThreshold",
            ),
            (
                AutoscalePolicy {
                    failure_ratio_threshold: f64::NAN,
                    ..Default::default()
                },
                "failureRatioThreshold",
            ),
        ];
        for (policy, field) in cases {
            let err = policy.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidPolicy);
            assert!(
                err.to_string().contains(field),
                "{err} should mention {field}"
            );
        }
    }
}
