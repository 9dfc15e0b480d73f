//! A ConsumerGroup's `autoscaling` block -> the autoscaler's [`AutoscalePolicy`] (pure).
//! Shared by the Kubernetes runtime and `sluice dev`.

use crate::autoscale::{AutoscalePolicy, ScaleUpLimit};
use crate::crd::ConsumerGroupSpec;
use crate::crd::InvalidField;

/// The policy of a group. Without an `autoscaling` block the group runs a fixed single worker
/// (min = max = 1). Unset fields take the autoscaler's defaults.
pub fn autoscale_policy(spec: &ConsumerGroupSpec) -> Result<AutoscalePolicy, InvalidField> {
    let defaults = AutoscalePolicy::default();
    let Some(a) = spec.autoscaling.as_ref() else {
        return Ok(AutoscalePolicy {
            min: 1,
            max: 1,
            ..defaults
        });
    };
    let min = a.min_replicas.unwrap_or(1);
    if min > a.max_replicas {
        return Err(InvalidField::new(
            "spec.autoscaling.minReplicas",
            format!(
                "{min} exceeds maxReplicas {}: lower minReplicas or raise maxReplicas",
                a.max_replicas
            ),
        ));
    }
    let duration = |value: &Option<crate::crd::DurationString>, field: &str, default| match value {
        Some(d) => d.parse(field),
        None => Ok(default),
    };
    let policy = AutoscalePolicy {
        min,
        max: a.max_replicas,
        target_lag_per_replica: a
            .target_lag_per_replica
            .unwrap_or(defaults.target_lag_per_replica),
        activation_lag: a.activation_lag.unwrap_or(defaults.activation_lag),
        scale_up_limit: match a.scale_up_limit {
            Some(replicas) => ScaleUpLimit {
                replicas,
                percent: 0,
            },
            None => ScaleUpLimit::UNLIMITED,
        },
        scale_down_stabilization: duration(
            &a.scale_down_stabilization,
            "spec.autoscaling.scaleDownStabilization",
            defaults.scale_down_stabilization,
        )?,
        poll_interval: duration(
            &a.poll_interval,
            "spec.autoscaling.pollInterval",
            defaults.poll_interval,
        )?,
        scale_to_zero: a.scale_to_zero.unwrap_or(false),
        idle_before_zero: duration(
            &a.idle_before_zero,
            "spec.autoscaling.idleBeforeZero",
            defaults.idle_before_zero,
        )?,
        ..defaults
    };
    policy
        .validate()
        .map_err(|e| InvalidField::new("spec.autoscaling", e.to_string()))?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(yaml: &str) -> ConsumerGroupSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn fields_map_and_defaults_fill_in() {
        let p = autoscale_policy(&spec(
            "source: {topic: t}\nautoscaling: {minReplicas: 2, maxReplicas: 8, targetLagPerReplica: 50, pollInterval: 2s, scaleToZero: true, idleBeforeZero: 1m, scaleUpLimit: 3}",
        ))
        .unwrap();
        assert_eq!((p.min, p.max, p.target_lag_per_replica), (2, 8, 50));
        assert_eq!(p.poll_interval, Duration::from_secs(2));
        assert_eq!(p.idle_before_zero, Duration::from_secs(60));
        assert!(p.scale_to_zero);
        assert_eq!(p.scale_up_limit.replicas, 3);
        assert_eq!(p.scale_down_stabilization, Duration::from_secs(300));
    }

    #[test]
    fn no_autoscaling_means_one_worker() {
        let p = autoscale_policy(&spec("source: {topic: t}")).unwrap();
        assert_eq!((p.min, p.max), (1, 1));
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = autoscale_policy(&spec(
            "source: {topic: t}\nautoscaling: {minReplicas: 5, maxReplicas: 2}",
        ))
        .unwrap_err();
        assert_eq!(err.field, "spec.autoscaling.minReplicas");
        let err = autoscale_policy(&spec(
            "source: {topic: t}\nautoscaling: {maxReplicas: 2, pollInterval: soon}",
        ))
        .unwrap_err();
        assert_eq!(err.field, "spec.autoscaling.pollInterval");
    }
}
