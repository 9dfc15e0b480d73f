//! Queue spec -> [`QueueSettings`].

use sluice_broker::config::{QueueSettings, QueueSource};

use crate::crd::{InvalidField, QueueSpec};

/// Default visibility timeout of a queue.
pub const DEFAULT_VISIBILITY_TIMEOUT_MS: u64 = 30_000;

/// A source topic, looked up by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTopic {
    /// Topic name.
    pub name: String,
    /// Broker the topic lives on.
    pub broker: String,
    /// Its partition count.
    pub partitions: u32,
}

/// The broker settings of a Queue. `topics` are the looked-up `spec.sources`, in any order;
/// a source missing from it is reported as not found.
pub fn queue_settings(
    spec: &QueueSpec,
    topics: &[ResolvedTopic],
) -> Result<QueueSettings, InvalidField> {
    let replicas = super::replicas(spec.replicas, "replicas")?;
    visibility_timeout_ms(spec)?;
    let max_age_ms = spec
        .retention
        .as_ref()
        .and_then(|r| r.max_age.as_ref())
        .map(|d| d.parse_ms("retention.maxAge"))
        .transpose()?;
    if max_age_ms == Some(0) {
        return Err(InvalidField::new(
            "retention.maxAge",
            "must be longer than 0; leave it unset to keep messages until handled",
        ));
    }
    let mut sources = Vec::with_capacity(spec.sources.len());
    for (i, source) in spec.sources.iter().enumerate() {
        let field = format!("sources[{i}].topic");
        if spec.sources[..i].iter().any(|s| s.topic == source.topic) {
            return Err(InvalidField::new(
                field,
                format!("topic {} is listed twice", source.topic),
            ));
        }
        let topic = topics
            .iter()
            .find(|t| t.name == source.topic)
            .ok_or_else(|| {
                InvalidField::new(
                    &field,
                    format!(
                        "Topic {} does not exist in this namespace; create it first",
                        source.topic
                    ),
                )
            })?;
        if topic.broker != spec.broker {
            return Err(InvalidField::new(
                field,
                format!(
                    "Topic {} is on Broker {}, but this Queue is on Broker {}; a queue can only copy topics of its own broker",
                    topic.name, topic.broker, spec.broker
                ),
            ));
        }
        sources.push(QueueSource {
            topic: topic.name.clone(),
            partitions: topic.partitions,
        });
    }
    let defaults = QueueSettings::default();
    Ok(QueueSettings {
        replicas,
        max_age_ms,
        duplicate_window_ms: max_age_ms.map_or(defaults.duplicate_window_ms, |age| {
            age.min(defaults.duplicate_window_ms)
        }),
        sources,
        storage: spec.storage.unwrap_or_default().into(),
        delay: None,
        priorities: 1,
    })
}

/// The visibility timeout of a queue in milliseconds (default 30s, at least 1s).
pub fn visibility_timeout_ms(spec: &QueueSpec) -> Result<u64, InvalidField> {
    let Some(d) = &spec.visibility_timeout else {
        return Ok(DEFAULT_VISIBILITY_TIMEOUT_MS);
    };
    let ms = d.parse_ms("visibilityTimeout")?;
    if ms < 1_000 {
        return Err(InvalidField::new(
            "visibilityTimeout",
            format!("{} is too short; use at least 1s", d.0),
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> QueueSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn orders() -> ResolvedTopic {
        ResolvedTopic {
            name: "orders".into(),
            broker: "main".into(),
            partitions: 4,
        }
    }

    #[test]
    fn queue_with_sources_carries_partition_counts() {
        let s = queue_settings(
            &spec("broker: main\nreplicas: 3\nvisibilityTimeout: 2m\nretention: {maxAge: 4d}\nsources: [{topic: orders}]\n"),
            &[orders()],
        )
        .unwrap();
        assert_eq!(s.replicas, 3);
        assert_eq!(s.max_age_ms, Some(4 * 24 * 3_600_000));
        assert_eq!(
            s.sources,
            vec![QueueSource {
                topic: "orders".into(),
                partitions: 4
            }]
        );
        assert_eq!(
            visibility_timeout_ms(&spec("broker: main\nvisibilityTimeout: 2m\n")).unwrap(),
            120_000
        );
        assert_eq!(
            visibility_timeout_ms(&spec("broker: main\n")).unwrap(),
            30_000
        );
    }

    #[test]
    fn invalid_queues_name_the_field() {
        let other_broker = ResolvedTopic {
            broker: "other".into(),
            ..orders()
        };
        for (yaml, topics, field) in [
            (
                "broker: main\nsources: [{topic: missing}]\n",
                vec![orders()],
                "sources[0].topic",
            ),
            (
                "broker: main\nsources: [{topic: orders}]\n",
                vec![other_broker],
                "sources[0].topic",
            ),
            (
                "broker: main\nsources: [{topic: orders}, {topic: orders}]\n",
                vec![orders()],
                "sources[1].topic",
            ),
            (
                "broker: main\nvisibilityTimeout: 10ms\n",
                vec![],
                "visibilityTimeout",
            ),
            (
                "broker: main\nretention: {maxAge: 0s}\n",
                vec![],
                "retention.maxAge",
            ),
        ] {
            let err = queue_settings(&spec(yaml), &topics).unwrap_err();
            assert_eq!(err.field, field, "{yaml}: {err}");
        }
    }
}
