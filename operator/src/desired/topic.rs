//! Topic spec -> [`TopicSettings`].

use sluice_broker::config::TopicSettings;

use crate::crd::{InvalidField, TopicSpec};

/// Largest partition count the operator accepts (also the schema's maximum).
pub const MAX_PARTITIONS: u32 = 1024;

/// The broker settings of a Topic.
pub fn topic_settings(spec: &TopicSpec) -> Result<TopicSettings, InvalidField> {
    if spec.partitions == 0 || spec.partitions > MAX_PARTITIONS {
        return Err(InvalidField::new(
            "partitions",
            format!(
                "must be between 1 and {MAX_PARTITIONS}, got {}",
                spec.partitions
            ),
        ));
    }
    let replicas = super::replicas(spec.replicas, "replicas")?;
    let retention = spec
        .retention
        .clone()
        .unwrap_or_default()
        .to_broker("retention")?;
    let defaults = TopicSettings::default();
    let duplicate_window_ms = match &spec.duplicate_window {
        Some(d) => {
            let ms = d.parse_ms("duplicateWindow")?;
            if ms == 0 {
                return Err(InvalidField::new(
                    "duplicateWindow",
                    "must be longer than 0 (de-duplication needs a window)",
                ));
            }
            if let Some(max_age) = retention.max_age_ms
                && ms > max_age
            {
                return Err(InvalidField::new(
                    "duplicateWindow",
                    format!(
                        "{} is longer than retention.maxAge; the broker cannot remember ids of messages it no longer keeps, shorten it",
                        d.0
                    ),
                ));
            }
            ms
        }
        // Without an explicit window, never exceed the retention (JetStream rejects that).
        None => retention
            .max_age_ms
            .map_or(defaults.duplicate_window_ms, |age| {
                age.min(defaults.duplicate_window_ms)
            }),
    };
    Ok(TopicSettings {
        partitions: spec.partitions,
        replicas,
        retention,
        duplicate_window_ms,
        storage: spec.storage.unwrap_or_default().into(),
    })
}

/// Checks a partition change: partitions may grow, never shrink (the schema rejects it at
/// admission; this covers `sluice dev` and objects stored before the rule existed).
pub fn check_partition_change(current: u32, desired: u32) -> Result<(), InvalidField> {
    if desired < current {
        return Err(InvalidField::new(
            "partitions",
            format!(
                "cannot shrink from {current} to {desired} partitions: messages would be lost and keys would move; create a new Topic instead"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_broker::config::StorageKind;

    fn spec(yaml: &str) -> TopicSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn minimal_topic_gets_defaults() {
        let s = topic_settings(&spec("broker: main\npartitions: 6\n")).unwrap();
        assert_eq!(s.partitions, 6);
        assert_eq!(s.replicas, 1);
        assert_eq!(s.duplicate_window_ms, 120_000);
        assert_eq!(s.storage, StorageKind::File);
        assert_eq!(s.retention, Default::default());
    }

    #[test]
    fn full_topic_converts_every_field() {
        let s = topic_settings(&spec(
            "broker: main\npartitions: 3\nreplicas: 3\nretention: {maxAge: 7d, maxBytes: 1000000, maxMessages: 5000}\nduplicateWindow: 5m\nstorage: memory\ndeletionPolicy: Delete\n",
        ))
        .unwrap();
        assert_eq!(s.replicas, 3);
        assert_eq!(s.retention.max_age_ms, Some(7 * 24 * 3_600_000));
        assert_eq!(s.retention.max_bytes, Some(1_000_000));
        assert_eq!(s.retention.max_messages, Some(5000));
        assert_eq!(s.duplicate_window_ms, 300_000);
        assert_eq!(s.storage, StorageKind::Memory);
    }

    #[test]
    fn short_retention_caps_the_default_duplicate_window() {
        let s = topic_settings(&spec(
            "broker: main\npartitions: 1\nretention: {maxAge: 30s}\n",
        ))
        .unwrap();
        assert_eq!(s.duplicate_window_ms, 30_000);
    }

    #[test]
    fn invalid_topics_name_the_field() {
        for (yaml, field) in [
            ("broker: b\npartitions: 0\n", "partitions"),
            ("broker: b\npartitions: 2\nreplicas: 2\n", "replicas"),
            (
                "broker: b\npartitions: 2\nduplicateWindow: soon\n",
                "duplicateWindow",
            ),
            (
                "broker: b\npartitions: 2\nretention: {maxAge: 1m}\nduplicateWindow: 2m\n",
                "duplicateWindow",
            ),
            (
                "broker: b\npartitions: 2\nretention: {maxAge: 1x}\n",
                "retention.maxAge",
            ),
            (
                "broker: b\npartitions: 2\nretention: {maxMessages: 0}\n",
                "retention.maxMessages",
            ),
        ] {
            let err = topic_settings(&spec(yaml)).unwrap_err();
            assert_eq!(err.field, field, "{yaml}: {err}");
        }
    }

    #[test]
    fn partitions_only_grow() {
        assert!(check_partition_change(3, 6).is_ok());
        assert!(check_partition_change(3, 3).is_ok());
        assert_eq!(
            check_partition_change(6, 3).unwrap_err().field,
            "partitions"
        );
    }
}
