//! DeadLetterQueue spec -> [`DlqSettings`], and the alert check.

use sluice_broker::config::DlqSettings;

use crate::crd::{DeadLetterQueueSpec, InvalidField};

/// The broker settings of a DeadLetterQueue.
pub fn dlq_settings(spec: &DeadLetterQueueSpec) -> Result<DlqSettings, InvalidField> {
    if let Some(t) = &spec.alert_threshold
        && t.depth == 0
    {
        return Err(InvalidField::new(
            "alertThreshold.depth",
            "must be at least 1; remove alertThreshold to never alert",
        ));
    }
    Ok(DlqSettings {
        replicas: super::replicas(spec.replicas, "replicas")?,
        retention: spec
            .retention
            .clone()
            .unwrap_or_default()
            .to_broker("retention")?,
    })
}

/// Whether a dead-letter queue of `depth` messages is over its alert threshold.
pub fn over_threshold(spec: &DeadLetterQueueSpec, depth: u64) -> bool {
    spec.alert_threshold
        .as_ref()
        .is_some_and(|t| depth >= t.depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> DeadLetterQueueSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn converts_and_alerts_at_threshold() {
        let s = spec(
            "broker: main\nreplicas: 3\nretention: {maxAge: 14d}\nalertThreshold: {depth: 10}\n",
        );
        let d = dlq_settings(&s).unwrap();
        assert_eq!(d.replicas, 3);
        assert_eq!(d.retention.max_age_ms, Some(14 * 24 * 3_600_000));
        assert!(!over_threshold(&s, 9));
        assert!(over_threshold(&s, 10));
        assert!(!over_threshold(&spec("broker: main\n"), 1_000_000));
    }

    #[test]
    fn invalid_dlqs_name_the_field() {
        for (yaml, field) in [
            (
                "broker: b\nalertThreshold: {depth: 0}\n",
                "alertThreshold.depth",
            ),
            ("broker: b\nreplicas: 4\n", "replicas"),
            (
                "broker: b\nretention: {maxBytes: -1}\n",
                "retention.maxBytes",
            ),
        ] {
            assert_eq!(
                dlq_settings(&spec(yaml)).unwrap_err().field,
                field,
                "{yaml}"
            );
        }
    }
}
