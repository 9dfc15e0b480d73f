//! Deterministic, collision-free, NATS-valid names for everything Sluice puts on JetStream.
//!
//! Inputs are Kubernetes names: a namespace is a DNS-1123 label (`[a-z0-9-]`, at most 63
//! characters) and a resource name a DNS-1123 subdomain (labels of `[a-z0-9-]` joined by `.`,
//! at most 253 characters). Neither may contain `_`, so Sluice uses `_` to escape dots and `__`
//! to separate parts; distinct inputs can therefore never produce the same output.
//!
//! | object | name |
//! |---|---|
//! | topic partition stream | `SLUICE_T__<ns>__<topic>__<p>` |
//! | topic partition subject | `sluice.t.<ns>.<topic>.<p>` |
//! | queue stream / subject | `SLUICE_Q__<ns>__<queue>` / `sluice.q.<ns>.<queue>` |
//! | queue priority level `l` >= 1 subject | `sluice.q.<ns>.<queue>.p<l>` (level 0 is the queue subject) |
//! | queue delayed message (a JetStream schedule) for level `l` | `sluice.q.<ns>.<queue>.sched.<l>.<id>` |
//! | dead-letter stream / subject | `SLUICE_DLQ__<ns>__<dlq>` / `sluice.dlq.<ns>.<dlq>` |
//! | group consumer (durable) | `G__<group>` on each partition stream or the queue stream |
//! | group consumer of queue priority level `l` >= 1 | `G__<group>__p<l>` (level 0: `G__<group>`) |
//! | fan-out relay consumer (durable) | `Q__<queue>` on each partition stream of a queue's source topics |
//! | group config KV bucket / key | `SLUICE_GROUP_CONFIG` / `<ns>.<group>` |
//! | membership KV bucket / key | `SLUICE_MEMBERS` / `<ns>.<group>.<member>` |
//! | partition lease KV bucket / key | `SLUICE_LEASES` / `<ns>.<group>.<partition>` |
//! | idempotency KV bucket | `SLUICE_IDEM__<ns>__<group>` |
//! | broker user of a group / of a producer | `g__<ns>__<group>` / `p__<ns>__<producer>` |
//! | inbox prefix of a user (replies, pull deliveries) | `_INBOX_<user>` |
//!
//! In names and subjects a dot of the resource name becomes `_`. Names longer than
//! [`MAX_NAME_LEN`] are shortened with a hash suffix so they stay valid and distinct.

use crate::error::{Error, ErrorKind, Result};

/// The longest stream, consumer or bucket name Sluice produces.
pub const MAX_NAME_LEN: usize = 200;

/// KV bucket that holds every group's [`GroupConfig`](crate::GroupConfig).
pub const GROUP_CONFIG_BUCKET: &str = "SLUICE_GROUP_CONFIG";
/// KV bucket of member heartbeats (per-key TTL).
pub const MEMBERS_BUCKET: &str = "SLUICE_MEMBERS";
/// KV bucket of partition leases (per-key TTL, compare-and-set), owned by the worker SDK.
pub const LEASES_BUCKET: &str = "SLUICE_LEASES";

/// A namespaced Sluice resource (a Topic, Queue, DeadLetterQueue or ConsumerGroup).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    /// Kubernetes namespace (DNS-1123 label).
    pub namespace: String,
    /// Resource name (DNS-1123 subdomain).
    pub name: String,
}

impl ResourceRef {
    /// Builds a reference after checking both parts are valid Kubernetes names.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Result<Self> {
        let namespace = namespace.into();
        let name = name.into();
        validate_label(&namespace, "namespace")?;
        validate_subdomain(&name, "resource name")?;
        Ok(Self { namespace, name })
    }

    /// A sibling resource in the same namespace.
    pub fn sibling(&self, name: impl Into<String>) -> Result<Self> {
        Self::new(self.namespace.clone(), name)
    }
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Checks a DNS-1123 label: 1-63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn validate_label(value: &str, what: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSpec,
            format!(
                "invalid {what} {value:?}: use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Checks a DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn validate_subdomain(value: &str, what: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .split('.')
            .all(|label| validate_label(label, what).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSpec,
            format!(
                "invalid {what} {value:?}: use lowercase letters, digits, '-' and '.', at most 253 characters"
            ),
        ))
    }
}

/// Escapes a validated Kubernetes name for use inside a NATS name or subject token.
fn escape(name: &str) -> String {
    name.replace('.', "_")
}

/// Keeps a name within [`MAX_NAME_LEN`] by replacing the tail with a stable hash of the whole.
fn bounded(full: String) -> String {
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    let hash = fnv1a64(full.as_bytes());
    // `__H` never occurs in an unshortened name (Kubernetes names are lowercase).
    let keep = MAX_NAME_LEN - 19;
    let mut cut = full[..keep].to_string();
    cut.push_str(&format!("__H{hash:016x}"));
    cut
}

/// FNV-1a, 64 bits: stable across releases and platforms (unlike `DefaultHasher`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Stream of one topic partition.
pub fn topic_stream(topic: &ResourceRef, partition: u32) -> String {
    bounded(format!(
        "SLUICE_T__{}__{}__{}",
        topic.namespace,
        escape(&topic.name),
        partition
    ))
}

/// Subject of one topic partition.
pub fn topic_subject(topic: &ResourceRef, partition: u32) -> String {
    format!(
        "sluice.t.{}.{}.{}",
        topic.namespace,
        escape(&topic.name),
        partition
    )
}

/// Stream of a queue.
pub fn queue_stream(queue: &ResourceRef) -> String {
    bounded(format!(
        "SLUICE_Q__{}__{}",
        queue.namespace,
        escape(&queue.name)
    ))
}

/// Subject producers publish to for a queue.
pub fn queue_subject(queue: &ResourceRef) -> String {
    format!("sluice.q.{}.{}", queue.namespace, escape(&queue.name))
}

/// Subject of priority level `level` of a queue: level 0 (the lowest, and the only one of a
/// queue without priorities) is [`queue_subject`], level `l` >= 1 is `<queue subject>.p<l>`.
///
/// ```
/// use sluice_broker::{ResourceRef, names};
/// let q = ResourceRef::new("shop", "emails").unwrap();
/// assert_eq!(names::queue_level_subject(&q, 0), "sluice.q.shop.emails");
/// assert_eq!(names::queue_level_subject(&q, 2), "sluice.q.shop.emails.p2");
/// ```
pub fn queue_level_subject(queue: &ResourceRef, level: u32) -> String {
    if level == 0 {
        queue_subject(queue)
    } else {
        format!("{}.p{level}", queue_subject(queue))
    }
}

/// Subject holding one delayed message (a JetStream `@at` schedule) for level `level` of a
/// queue; `id` must be one subject token (see [`schedule_id`]). Each delayed message needs its
/// own subject: the server keeps one schedule per subject.
pub fn queue_schedule_subject(queue: &ResourceRef, level: u32, id: &str) -> String {
    format!("{}.sched.{level}.{id}", queue_subject(queue))
}

/// Wildcard over the delayed messages of one level (`Some`) or of every level (`None`).
pub fn queue_schedule_filter(queue: &ResourceRef, level: Option<u32>) -> String {
    match level {
        Some(level) => format!("{}.sched.{level}.*", queue_subject(queue)),
        None => format!("{}.sched.>", queue_subject(queue)),
    }
}

/// A subject token identifying a delayed message: the hex FNV-1a hash of its message id, so
/// re-sending the same id replaces the schedule instead of adding a second one.
pub fn schedule_id(message_id: &str) -> String {
    format!("{:016x}", fnv1a64(message_id.as_bytes()))
}

/// Stream of a dead-letter queue.
pub fn dlq_stream(dlq: &ResourceRef) -> String {
    bounded(format!(
        "SLUICE_DLQ__{}__{}",
        dlq.namespace,
        escape(&dlq.name)
    ))
}

/// Subject dead-lettered messages are published to.
pub fn dlq_subject(dlq: &ResourceRef) -> String {
    format!("sluice.dlq.{}.{}", dlq.namespace, escape(&dlq.name))
}

/// Durable consumer name of a group (on each partition stream, or the queue stream).
pub fn group_consumer(group: &ResourceRef) -> String {
    bounded(format!("G__{}", escape(&group.name)))
}

/// Durable consumer of a group on priority level `level` of its queue (level 0 is
/// [`group_consumer`], so a queue without priorities keeps its one consumer).
pub fn group_level_consumer(group: &ResourceRef, level: u32) -> String {
    if level == 0 {
        group_consumer(group)
    } else {
        bounded(format!("G__{}__p{level}", escape(&group.name)))
    }
}

/// Durable consumer through which a queue's fan-out relay reads one partition of a source topic
/// (on that partition's stream; queue and topic share a namespace).
pub fn fanout_consumer(queue: &ResourceRef) -> String {
    bounded(format!("Q__{}", escape(&queue.name)))
}

/// Priority-group name used for pinned-client exclusivity on a group's consumers.
pub const PRIORITY_GROUP: &str = "sluice";

/// Key of a group in [`GROUP_CONFIG_BUCKET`]: `<namespace>.<group>`.
pub fn group_config_key(group: &ResourceRef) -> String {
    format!("{}.{}", group.namespace, escape(&group.name))
}

/// Key prefix of a group's members in [`MEMBERS_BUCKET`] (ends with `.`).
pub fn members_prefix(group: &ResourceRef) -> String {
    format!("{}.{}.", group.namespace, escape(&group.name))
}

/// Key of one member in [`MEMBERS_BUCKET`]; the member id is escaped into KV-key characters.
pub fn member_key(group: &ResourceRef, member_id: &str) -> String {
    format!("{}{}", members_prefix(group), escape_member(member_id))
}

/// Key of a group's lease on `partition` in [`LEASES_BUCKET`]: `<ns>.<group>.<partition>`.
pub fn lease_key(group: &ResourceRef, partition: u32) -> String {
    format!("{}.{}.{partition}", group.namespace, escape(&group.name))
}

/// Makes any member id (pod name, host-pid, ...) a valid single KV key token.
pub fn escape_member(member_id: &str) -> String {
    let mut out = String::with_capacity(member_id.len());
    for c in member_id.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else {
            out.push_str(&format!("_{:x}_", u32::from(c)));
        }
    }
    if out.is_empty() {
        out.push_str("_empty_");
    }
    out
}

/// Idempotency-store KV bucket of a group (exactly-once delivery).
pub fn idempotency_bucket(group: &ResourceRef) -> String {
    bounded(format!(
        "SLUICE_IDEM__{}__{}",
        group.namespace,
        escape(&group.name)
    ))
}

/// Broker user name of a ConsumerGroup's workers (see [`crate::identity`]).
///
/// ```
/// use sluice_broker::{ResourceRef, names};
/// let g = ResourceRef::new("shop", "billing").unwrap();
/// assert_eq!(names::group_user(&g), "g__shop__billing");
/// ```
pub fn group_user(group: &ResourceRef) -> String {
    bounded(format!("g__{}__{}", group.namespace, escape(&group.name)))
}

/// Broker user name of a producer identity (a Producer resource).
pub fn producer_user(producer: &ResourceRef) -> String {
    bounded(format!(
        "p__{}__{}",
        producer.namespace,
        escape(&producer.name)
    ))
}

/// The inbox prefix a client logged in as `user` must use (one subject token): its
/// permissions let it subscribe to `<prefix>.>` only, so no client can read the replies and
/// pull deliveries addressed to another.
///
/// ```
/// assert_eq!(sluice_broker::names::inbox_prefix("g__shop__billing"), "_INBOX_g__shop__billing");
/// ```
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Whether `name` is acceptable to JetStream as a stream, consumer or KV bucket name
/// (the strictest of the three rules: `[A-Za-z0-9_-]`).
pub fn is_valid_nats_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Whether `subject` is a valid literal NATS subject (no wildcards, no empty tokens).
pub fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '*' && c != '>')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
    }

    fn subdomain() -> impl Strategy<Value = String> {
        prop::collection::vec(label(), 1..4).prop_map(|labels| labels.join("."))
    }

    fn all_names(r: &ResourceRef, p: u32) -> Vec<String> {
        vec![
            topic_stream(r, p),
            queue_stream(r),
            dlq_stream(r),
            group_consumer(r),
            group_level_consumer(r, 3),
            idempotency_bucket(r),
            group_user(r),
            producer_user(r),
        ]
    }

    proptest! {
        #[test]
        fn outputs_are_valid_nats_names(ns in label(), name in subdomain(), p in 0u32..1000) {
            let r = ResourceRef::new(ns, name).unwrap();
            for n in all_names(&r, p) {
                prop_assert!(is_valid_nats_name(&n), "{n}");
            }
            for s in [
                topic_subject(&r, p),
                queue_subject(&r),
                dlq_subject(&r),
                queue_level_subject(&r, p % 10),
                queue_schedule_subject(&r, p % 10, &schedule_id("x")),
            ] {
                prop_assert!(is_valid_subject(&s), "{s}");
            }
        }

        #[test]
        fn distinct_inputs_never_collide(
            a in (label(), subdomain(), 0u32..50),
            b in (label(), subdomain(), 0u32..50),
        ) {
            prop_assume!(a != b);
            let ra = ResourceRef::new(a.0.clone(), a.1.clone()).unwrap();
            let rb = ResourceRef::new(b.0.clone(), b.1.clone()).unwrap();
            prop_assert_ne!(topic_stream(&ra, a.2), topic_stream(&rb, b.2));
            prop_assert_ne!(topic_subject(&ra, a.2), topic_subject(&rb, b.2));
            if ra != rb {
                prop_assert_ne!(queue_stream(&ra), queue_stream(&rb));
                prop_assert_ne!(dlq_stream(&ra), dlq_stream(&rb));
                prop_assert_ne!(group_config_key(&ra), group_config_key(&rb));
                prop_assert_ne!(idempotency_bucket(&ra), idempotency_bucket(&rb));
                prop_assert_ne!(queue_subject(&ra), queue_subject(&rb));
            }
        }

        #[test]
        fn member_keys_are_distinct_and_single_token(a in ".{0,20}", b in ".{0,20}") {
            prop_assume!(a != b);
            prop_assert_ne!(escape_member(&a), escape_member(&b));
            let e = escape_member(&a);
            prop_assert!(e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        }
    }

    #[test]
    fn kinds_never_share_a_stream_name() {
        let r = ResourceRef::new("default", "orders").unwrap();
        let names: HashSet<_> = all_names(&r, 0).into_iter().collect();
        assert_eq!(names.len(), 8);
        assert_eq!(topic_stream(&r, 3), "SLUICE_T__default__orders__3");
        assert_eq!(topic_subject(&r, 3), "sluice.t.default.orders.3");
        assert_eq!(group_config_key(&r), "default.orders");
    }

    #[test]
    fn long_names_are_bounded_and_distinct() {
        let a = ResourceRef::new("ns", format!("{}.a", "x".repeat(60))).unwrap();
        let base = vec!["y".repeat(63); 3].join(".");
        let long1 = ResourceRef::new("ns", format!("{base}.a")).unwrap();
        let long2 = ResourceRef::new("ns", format!("{base}.b")).unwrap();
        let s1 = topic_stream(&long1, 1);
        let s2 = topic_stream(&long2, 1);
        assert!(s1.len() <= MAX_NAME_LEN && is_valid_nats_name(&s1));
        assert_ne!(s1, s2);
        assert!(topic_stream(&a, 0).len() < MAX_NAME_LEN);
    }

    #[test]
    fn invalid_kubernetes_names_are_rejected_with_a_hint() {
        for (ns, name) in [
            ("Default", "x"),
            ("ns", "a_b"),
            ("ns", ""),
            ("ns", "a..b"),
            ("-x", "y"),
        ] {
            let err = ResourceRef::new(ns, name).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidSpec);
            assert!(err.to_string().contains("invalid"), "{err}");
        }
    }
}
