//! The ConsumerGroup's `autoscaling` block in the autoscaler's terms: [`autoscale_policy`]
//! maps [`AutoscalingSpec`] onto [`AutoscalePolicy`], applying the documented defaults and
//! checking what the schema cannot (pure; used by both runtimes).

use std::time::Duration;

use super::{AutoscalePolicy, ScaleUpLimit};
use crate::crd::InvalidField;
use crate::crd::common::DurationString;
use crate::crd::group::AutoscalingSpec;

/// Lag one replica is expected to keep up with when `targetLagPerReplica` is unset.
pub const DEFAULT_TARGET_LAG_PER_REPLICA: u64 = 100;
/// Scale-down stabilization when `scaleDownStabilization` is unset.
pub const DEFAULT_STABILIZATION: Duration = Duration::from_secs(300);
/// Poll interval when `pollInterval` is unset.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Idle time before scaling to zero when `idleBeforeZero` is unset.
pub const DEFAULT_IDLE_BEFORE_ZERO: Duration = Duration::from_secs(300);

/// The autoscaler policy of a group's `autoscaling` block, with the CRD's defaults (see the
/// field docs of [`AutoscalingSpec`]). Fails naming the field when the policy cannot work.
pub fn autoscale_policy(spec: &AutoscalingSpec) -> Result<AutoscalePolicy, InvalidField> {
    let duration = |value: &Option<DurationString>, field: &str, default: Duration| {
        value
            .as_ref()
            .map_or(Ok(default), |d| d.parse(&format!("autoscaling.{field}")))
    };
    let policy = AutoscalePolicy {
        min: spec.min_replicas.unwrap_or(1),
        max: spec.max_replicas,
        target_lag_per_replica: spec
            .target_lag_per_replica
            .unwrap_or(DEFAULT_TARGET_LAG_PER_REPLICA),
        activation_lag: spec.activation_lag.unwrap_or(1),
        scale_up_limit: spec
            .scale_up_limit
            .map_or(ScaleUpLimit::UNLIMITED, |replicas| ScaleUpLimit {
                replicas,
                percent: 0,
            }),
        scale_down_stabilization: duration(
            &spec.scale_down_stabilization,
            "scaleDownStabilization",
            DEFAULT_STABILIZATION,
        )?,
        poll_interval: duration(&spec.poll_interval, "pollInterval", DEFAULT_POLL_INTERVAL)?,
        scale_to_zero: spec.scale_to_zero.unwrap_or(false),
        idle_before_zero: duration(
            &spec.idle_before_zero,
            "idleBeforeZero",
            DEFAULT_IDLE_BEFORE_ZERO,
        )?,
        ..AutoscalePolicy::default()
    };
    policy
        .validate()
        .map_err(|e| InvalidField::new("autoscaling", e.to_string()))?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AutoscalingSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_follow_the_crd_docs() {
        let p = autoscale_policy(&spec("maxReplicas: 8")).unwrap();
        assert_eq!(p.min, 1);
        assert_eq!(p.max, 8);
        assert_eq!(p.target_lag_per_replica, 100);
        assert_eq!(p.activation_lag, 1);
        assert_eq!(p.scale_up_limit, ScaleUpLimit::UNLIMITED);
        assert_eq!(p.scale_down_stabilization, Duration::from_secs(300));
        assert_eq!(p.poll_interval, Duration::from_secs(5));
        assert!(!p.scale_to_zero);
        assert_eq!(p.idle_before_zero, Duration::from_secs(300));
    }

    #[test]
    fn every_field_maps() {
        let p = autoscale_policy(&spec(
            "minReplicas: 2\nmaxReplicas: 20\ntargetLagPerReplica: 50\nactivationLag: 10\n\
             scaleUpLimit: 3\nscaleDownStabilization: 1m\npollInterval: 2s\nscaleToZero: true\n\
             idleBeforeZero: 90s\n",
        ))
        .unwrap();
        assert_eq!((p.min, p.max), (2, 20));
        assert_eq!(p.target_lag_per_replica, 50);
        assert_eq!(p.activation_lag, 10);
        assert_eq!(
            p.scale_up_limit,
            ScaleUpLimit {
                replicas: 3,
                percent: 0
            }
        );
        assert_eq!(p.scale_down_stabilization, Duration::from_secs(60));
        assert_eq!(p.poll_interval, Duration::from_secs(2));
        assert!(p.scale_to_zero);
        assert_eq!(p.idle_before_zero, Duration::from_secs(90));
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let err = autoscale_policy(&spec("minReplicas: 5\nmaxReplicas: 2")).unwrap_err();
        assert!(err.to_string().contains("min (5)"), "{err}");
        let err = autoscale_policy(&spec("maxReplicas: 2\npollInterval: soon")).unwrap_err();
        assert!(
            err.to_string().contains("autoscaling.pollInterval"),
            "{err}"
        );
        let err = autoscale_policy(&spec("maxReplicas: 2\npollInterval: 0s")).unwrap_err();
        assert!(err.to_string().contains("pollInterval"), "{err}");
    }
}
