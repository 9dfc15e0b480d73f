//! ConsumerGroup spec -> [`GroupConfig`].

use sluice_broker::config::{
    Backoff, Delivery, GroupConfig, Ordering, RetryPolicy, SourceKind, SourceRef, StartFrom,
};

use crate::crd::group::{BackoffPolicy, DeliveryMode, GroupSource, OrderingMode, StartPosition};
use crate::crd::{ConsumerGroupSpec, InvalidField};

/// Ack wait when neither the group nor its queue sets one.
pub const DEFAULT_ACK_WAIT_MS: u64 = 30_000;

/// The group's source, looked up by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSource {
    /// Topic or queue.
    pub kind: SourceKind,
    /// Its name.
    pub name: String,
    /// Broker it lives on.
    pub broker: String,
    /// Partition count (1 for a queue).
    pub partitions: u32,
    /// The queue's visibility timeout, used as the default ack wait.
    pub visibility_timeout_ms: Option<u64>,
    /// The queue's priority levels (1 for a topic).
    pub priorities: u32,
    /// The queue's starvation guard, percent of handling reserved for lower levels.
    pub low_priority_share: u32,
}

/// The source named by a spec: its kind and name, or an error if not exactly one is set.
pub fn source_of(source: &GroupSource) -> Result<(SourceKind, &str), InvalidField> {
    match (&source.topic, &source.queue) {
        (Some(t), None) => Ok((SourceKind::Topic, t)),
        (None, Some(q)) => Ok((SourceKind::Queue, q)),
        _ => Err(InvalidField::new(
            "source",
            "set exactly one of source.topic or source.queue",
        )),
    }
}

/// The `topic/<name>` / `queue/<name>` label shown in status.
pub fn source_label(kind: SourceKind, name: &str) -> String {
    match kind {
        SourceKind::Topic => format!("topic/{name}"),
        SourceKind::Queue => format!("queue/{name}"),
    }
}

/// The broker a group uses: `spec.broker`, which must match the source's, or the source's.
pub fn group_broker(
    spec: &ConsumerGroupSpec,
    source: &ResolvedSource,
) -> Result<String, InvalidField> {
    match &spec.broker {
        Some(b) if *b != source.broker => Err(InvalidField::new(
            "broker",
            format!(
                "is {b}, but the source {} is on Broker {}; remove spec.broker or point it at {}",
                source_label(source.kind, &source.name),
                source.broker,
                source.broker
            ),
        )),
        _ => Ok(source.broker.clone()),
    }
}

/// The config the operator publishes for a group. `dead_letter_exists` tells whether the
/// named DeadLetterQueue exists on the same broker (looked up by the caller).
pub fn group_config(
    namespace: &str,
    name: &str,
    spec: &ConsumerGroupSpec,
    source: &ResolvedSource,
) -> Result<GroupConfig, InvalidField> {
    group_broker(spec, source)?;
    if source.partitions == 0 {
        return Err(InvalidField::new(
            "source",
            format!(
                "{} has no partitions",
                source_label(source.kind, &source.name)
            ),
        ));
    }
    let mut cfg = GroupConfig::new(
        namespace,
        name,
        SourceRef {
            kind: source.kind,
            name: source.name.clone(),
            partitions: source.partitions,
        },
    );
    cfg.delivery = match spec.delivery.unwrap_or(DeliveryMode::AtLeastOnce) {
        DeliveryMode::AtMostOnce => Delivery::AtMostOnce,
        DeliveryMode::AtLeastOnce => Delivery::AtLeastOnce,
        DeliveryMode::ExactlyOnce => Delivery::ExactlyOnce,
    };
    cfg.ordering = ordering(spec, source.kind)?;
    cfg.start_from = start_from(spec)?;
    cfg.retry = retry(spec)?;
    cfg.dead_letter = spec.dead_letter.as_ref().map(|d| d.queue.clone());
    if let Some(outputs) = &spec.outputs {
        for (field, names) in [
            ("outputs.topics", &outputs.topics),
            ("outputs.queues", &outputs.queues),
        ] {
            if let Some(bad) = names
                .iter()
                .find(|n| sluice_broker::names::validate_subdomain(n, "name").is_err())
            {
                return Err(InvalidField::new(
                    field,
                    format!(
                        "{bad:?} is not a resource name (lowercase letters, digits, '-' and '.')"
                    ),
                ));
            }
        }
        if let Some(Err(e)) = outputs
            .buckets
            .iter()
            .map(|b| sluice_broker::identity::validate_app_bucket(b))
            .find(Result::is_err)
        {
            return Err(InvalidField::new(
                "outputs.buckets",
                e.message().to_string(),
            ));
        }
        cfg.outputs = sluice_broker::config::GroupOutputs {
            topics: outputs.topics.clone(),
            queues: outputs.queues.clone(),
            buckets: outputs.buckets.clone(),
        };
    }
    cfg.ack_wait_ms = ack_wait_ms(spec, source)?;
    cfg.priorities = source.priorities;
    cfg.low_priority_share = source.low_priority_share;
    if let Some(c) = spec.max_concurrency {
        if c == 0 {
            return Err(InvalidField::new("maxConcurrency", "must be at least 1"));
        }
        cfg.max_concurrency = c;
    }
    // The shared invariants of the SDK; the checks above already cover them with field
    // names, this keeps the two from drifting apart.
    cfg.validate()
        .map_err(|e| InvalidField::new("", e.message().to_string()))?;
    Ok(cfg)
}

fn ordering(spec: &ConsumerGroupSpec, kind: SourceKind) -> Result<Ordering, InvalidField> {
    match (kind, spec.ordering) {
        (SourceKind::Topic, None | Some(OrderingMode::Partition)) => Ok(Ordering::Partition),
        (SourceKind::Topic, Some(OrderingMode::Key)) => Ok(Ordering::Key),
        (_, Some(OrderingMode::None)) | (SourceKind::Queue, None) => Ok(Ordering::None),
        (SourceKind::Queue, Some(mode)) => Err(InvalidField::new(
            "ordering",
            format!(
                "{} ordering needs partitions, but a Queue hands messages to competing workers without order; read a Topic for ordered consumption or set ordering: none",
                match mode {
                    OrderingMode::Key => "key",
                    _ => "partition",
                }
            ),
        )),
    }
}

fn start_from(spec: &ConsumerGroupSpec) -> Result<StartFrom, InvalidField> {
    let Some(s) = &spec.start_from else {
        return Ok(StartFrom::Earliest);
    };
    match (s.position, &s.time) {
        (StartPosition::Earliest, None) => Ok(StartFrom::Earliest),
        (StartPosition::Latest, None) => Ok(StartFrom::Latest),
        (StartPosition::Time, Some(t)) => {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    InvalidField::new(
                        "startFrom.time",
                        format!("{t:?} is not an RFC 3339 time like 2026-01-31T12:00:00Z ({e})"),
                    )
                })?;
            Ok(StartFrom::Time(t.clone()))
        }
        (StartPosition::Time, None) => Err(InvalidField::new(
            "startFrom.time",
            "is required with position: time",
        )),
        (_, Some(_)) => Err(InvalidField::new(
            "startFrom.time",
            "is only allowed with position: time",
        )),
    }
}

fn retry(spec: &ConsumerGroupSpec) -> Result<RetryPolicy, InvalidField> {
    let defaults = RetryPolicy::default();
    let Some(r) = &spec.retry else {
        return Ok(defaults);
    };
    let max_attempts = r.max_attempts.unwrap_or(defaults.max_attempts);
    if max_attempts == 0 {
        return Err(InvalidField::new(
            "retry.maxAttempts",
            "must be at least 1 (1 = no retries)",
        ));
    }
    let initial_ms = match &r.backoff_delay {
        Some(d) => d.parse_ms("retry.backoffDelay")?,
        None => defaults.backoff.initial_ms,
    };
    let constant = r.backoff_policy == Some(BackoffPolicy::Constant);
    let multiplier = match (constant, r.multiplier) {
        (true, Some(m)) if m != 1.0 => {
            return Err(InvalidField::new(
                "retry.multiplier",
                "has no effect with backoffPolicy: constant; remove it or use exponential",
            ));
        }
        (true, _) => 1.0,
        (false, Some(m)) if !m.is_finite() || m < 1.0 => {
            return Err(InvalidField::new(
                "retry.multiplier",
                format!("must be a number of at least 1, got {m}"),
            ));
        }
        (false, m) => m.unwrap_or(defaults.backoff.multiplier),
    };
    let max_ms = match &r.backoff_max {
        Some(d) => {
            let max = d.parse_ms("retry.backoffMax")?;
            if max < initial_ms {
                return Err(InvalidField::new(
                    "retry.backoffMax",
                    format!("must not be shorter than retry.backoffDelay ({initial_ms} ms)"),
                ));
            }
            max
        }
        None if constant => initial_ms,
        None => defaults.backoff.max_ms.max(initial_ms),
    };
    Ok(RetryPolicy {
        max_attempts,
        backoff: Backoff {
            initial_ms,
            multiplier,
            max_ms,
            jitter: r.jitter.unwrap_or(defaults.backoff.jitter),
        },
    })
}

/// The ack wait of a group: `spec.ackWait`, else the queue's visibility timeout, else 30s.
pub fn ack_wait_ms(spec: &ConsumerGroupSpec, source: &ResolvedSource) -> Result<u64, InvalidField> {
    let ms = match &spec.ack_wait {
        Some(d) => d.parse_ms("ackWait")?,
        None => source.visibility_timeout_ms.unwrap_or(DEFAULT_ACK_WAIT_MS),
    };
    if ms < 1_000 {
        return Err(InvalidField::new("ackWait", "must be at least 1s"));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ConsumerGroupSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn topic() -> ResolvedSource {
        ResolvedSource {
            kind: SourceKind::Topic,
            name: "orders".into(),
            broker: "main".into(),
            partitions: 6,
            visibility_timeout_ms: None,
            priorities: 1,
            low_priority_share: 10,
        }
    }

    fn queue() -> ResolvedSource {
        ResolvedSource {
            kind: SourceKind::Queue,
            name: "jobs".into(),
            broker: "main".into(),
            partitions: 1,
            visibility_timeout_ms: Some(120_000),
            priorities: 1,
            low_priority_share: 10,
        }
    }

    #[test]
    fn outputs_reach_the_config_and_bad_names_are_refused() {
        let cfg = group_config(
            "ns",
            "billing",
            &spec("source: {topic: orders}\noutputs: {topics: [invoices], queues: [emails]}\n"),
            &topic(),
        )
        .unwrap();
        assert_eq!(cfg.outputs.topics, ["invoices"]);
        assert_eq!(cfg.outputs.queues, ["emails"]);
        let err = group_config(
            "ns",
            "billing",
            &spec("source: {topic: orders}\noutputs: {queues: [Bad_Name]}\n"),
            &topic(),
        )
        .unwrap_err();
        assert_eq!(err.field, "outputs.queues");
        let cfg = group_config(
            "ns",
            "billing",
            &spec("source: {topic: orders}\noutputs: {buckets: [BILLING_RESULTS]}\n"),
            &topic(),
        )
        .unwrap();
        assert_eq!(cfg.outputs.buckets, ["BILLING_RESULTS"]);
        let err = group_config(
            "ns",
            "billing",
            &spec("source: {topic: orders}\noutputs: {buckets: [SLUICE_LEASES]}\n"),
            &topic(),
        )
        .unwrap_err();
        assert_eq!(err.field, "outputs.buckets");
    }

    #[test]
    fn minimal_group_on_a_topic_gets_defaults() {
        let cfg = group_config(
            "ns",
            "billing",
            &spec("source: {topic: orders}\n"),
            &topic(),
        )
        .unwrap();
        assert_eq!(cfg.source.partitions, 6);
        assert_eq!(cfg.delivery, Delivery::AtLeastOnce);
        assert_eq!(cfg.ordering, Ordering::Partition);
        assert_eq!(cfg.start_from, StartFrom::Earliest);
        assert_eq!(cfg.retry, RetryPolicy::default());
        assert_eq!(cfg.ack_wait_ms, 30_000);
        assert_eq!(cfg.dead_letter, None);
    }

    #[test]
    fn full_group_converts_every_field() {
        let cfg = group_config(
            "ns",
            "billing",
            &spec(
                r#"
broker: main
source: {topic: orders}
delivery: exactlyOnce
ordering: key
startFrom: {position: time, time: "2026-01-01T00:00:00Z"}
retry: {maxAttempts: 3, backoffPolicy: exponential, backoffDelay: 500ms, multiplier: 3, backoffMax: 10s, jitter: false}
deadLetter: {queue: orders-dlq}
ackWait: 45s
maxConcurrency: 4
"#,
            ),
            &topic(),
        )
        .unwrap();
        assert_eq!(cfg.delivery, Delivery::ExactlyOnce);
        assert_eq!(cfg.ordering, Ordering::Key);
        assert_eq!(
            cfg.start_from,
            StartFrom::Time("2026-01-01T00:00:00Z".into())
        );
        assert_eq!(
            cfg.retry,
            RetryPolicy {
                max_attempts: 3,
                backoff: Backoff {
                    initial_ms: 500,
                    multiplier: 3.0,
                    max_ms: 10_000,
                    jitter: false
                }
            }
        );
        assert_eq!(cfg.dead_letter.as_deref(), Some("orders-dlq"));
        assert_eq!(cfg.ack_wait_ms, 45_000);
        assert_eq!(cfg.max_concurrency, 4);
    }

    #[test]
    fn queue_groups_are_unordered_and_inherit_the_visibility_timeout() {
        let cfg = group_config("ns", "w", &spec("source: {queue: jobs}\n"), &queue()).unwrap();
        assert_eq!(cfg.ordering, Ordering::None);
        assert_eq!(cfg.ack_wait_ms, 120_000);
        assert_eq!(cfg.source.kind, SourceKind::Queue);
    }

    #[test]
    fn constant_backoff_keeps_one_delay() {
        let cfg = group_config(
            "ns",
            "w",
            &spec("source: {topic: orders}\nretry: {backoffPolicy: constant, backoffDelay: 2s}\n"),
            &topic(),
        )
        .unwrap();
        assert_eq!(
            cfg.retry.backoff.schedule(4),
            vec![std::time::Duration::from_secs(2); 3]
        );
    }

    #[test]
    fn invalid_groups_name_the_field() {
        for (yaml, source, field) in [
            ("source: {topic: orders, queue: jobs}\n", topic(), "source"),
            (
                "broker: other\nsource: {topic: orders}\n",
                topic(),
                "broker",
            ),
            (
                "source: {queue: jobs}\nordering: partition\n",
                queue(),
                "ordering",
            ),
            (
                "source: {topic: orders}\nretry: {maxAttempts: 0}\n",
                topic(),
                "retry.maxAttempts",
            ),
            (
                "source: {topic: orders}\nretry: {multiplier: 0.5}\n",
                topic(),
                "retry.multiplier",
            ),
            (
                "source: {topic: orders}\nretry: {backoffDelay: 10s, backoffMax: 1s}\n",
                topic(),
                "retry.backoffMax",
            ),
            (
                "source: {topic: orders}\nretry: {backoffPolicy: constant, multiplier: 2}\n",
                topic(),
                "retry.multiplier",
            ),
            (
                "source: {topic: orders}\nackWait: 100ms\n",
                topic(),
                "ackWait",
            ),
            (
                "source: {topic: orders}\nackWait: forever\n",
                topic(),
                "ackWait",
            ),
            (
                "source: {topic: orders}\nstartFrom: {position: time}\n",
                topic(),
                "startFrom.time",
            ),
            (
                "source: {topic: orders}\nstartFrom: {position: time, time: yesterday}\n",
                topic(),
                "startFrom.time",
            ),
            (
                "source: {topic: orders}\nstartFrom: {position: latest, time: \"2026-01-01T00:00:00Z\"}\n",
                topic(),
                "startFrom.time",
            ),
            (
                "source: {topic: orders}\nmaxConcurrency: 0\n",
                topic(),
                "maxConcurrency",
            ),
        ] {
            let s = spec(yaml);
            let err = source_of(&s.source)
                .and_then(|_| group_config("ns", "g", &s, &source))
                .unwrap_err();
            assert_eq!(err.field, field, "{yaml}: {err}");
        }
    }
}
