//! Queue spec -> [`QueueSettings`].

use sluice_broker::config::{
    DEFAULT_LOW_PRIORITY_SHARE, DelaySettings, MAX_PRIORITIES, QueueSettings, QueueSource,
};

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
    low_priority_share(spec)?;
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
        delay: delay(spec)?,
        priorities: priorities(spec)?,
    })
}

/// Default longest delay of a queue with delayed delivery.
pub const DEFAULT_MAX_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;

/// The delayed-delivery settings of a Queue (`None`: off).
pub fn delay(spec: &QueueSpec) -> Result<Option<DelaySettings>, InvalidField> {
    let Some(d) = spec.delay.as_ref().filter(|d| d.enabled) else {
        return Ok(None);
    };
    let max_delay_ms = match &d.max_delay {
        None => DEFAULT_MAX_DELAY_MS,
        Some(m) => m.parse_ms("delay.maxDelay")?,
    };
    if max_delay_ms == 0 {
        return Err(InvalidField::new(
            "delay.maxDelay",
            "must be longer than 0s; set delay.enabled: false to refuse delayed messages",
        ));
    }
    Ok(Some(DelaySettings { max_delay_ms }))
}

/// The priority levels of a Queue (1 to [`MAX_PRIORITIES`], default 1).
pub fn priorities(spec: &QueueSpec) -> Result<u32, InvalidField> {
    match spec.priorities {
        None => Ok(1),
        Some(n) if (1..=MAX_PRIORITIES).contains(&n) => Ok(n),
        Some(n) => Err(InvalidField::new(
            "priorities",
            format!("{n} is out of range: use 1 (no priorities) to {MAX_PRIORITIES}"),
        )),
    }
}

/// The starvation guard of a Queue: percent of handling reserved for lower levels.
pub fn low_priority_share(spec: &QueueSpec) -> Result<u32, InvalidField> {
    match spec.low_priority_share {
        None => Ok(DEFAULT_LOW_PRIORITY_SHARE),
        Some(n) if n <= 100 => Ok(n),
        Some(n) => Err(InvalidField::new(
            "lowPriorityShare",
            format!("{n} is not a percentage: use 0 (strict priority) to 100"),
        )),
    }
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
    fn delay_and_priorities_map_to_the_broker_settings() {
        let plain = queue_settings(&spec("broker: main\n"), &[]).unwrap();
        assert_eq!((plain.delay, plain.priorities), (None, 1));
        let s = queue_settings(
            &spec("broker: main\ndelay: {enabled: true, maxDelay: 2d}\npriorities: 3\nlowPriorityShare: 20\n"),
            &[],
        )
        .unwrap();
        assert_eq!(s.delay.unwrap().max_delay_ms, 2 * 24 * 3_600_000);
        assert_eq!(s.priorities, 3);
        let default_max =
            queue_settings(&spec("broker: main\ndelay: {enabled: true}\n"), &[]).unwrap();
        assert_eq!(
            default_max.delay.unwrap().max_delay_ms,
            DEFAULT_MAX_DELAY_MS
        );
        let off = queue_settings(
            &spec("broker: main\ndelay: {enabled: false, maxDelay: 1h}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(off.delay, None);
        for (yaml, field) in [
            ("broker: main\npriorities: 11\n", "priorities"),
            ("broker: main\npriorities: 0\n", "priorities"),
            ("broker: main\nlowPriorityShare: 101\n", "lowPriorityShare"),
            (
                "broker: main\ndelay: {enabled: true, maxDelay: 0s}\n",
                "delay.maxDelay",
            ),
        ] {
            let err = queue_settings(&spec(yaml), &[]).unwrap_err();
            assert!(err.to_string().contains(field), "{yaml}: {err}");
        }
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
