//! Broker identities: the exact NATS permissions of a ConsumerGroup's workers and of a
//! producer, derived from what the worker SDK and the producer client actually send.
//!
//! Every permission is an allow list; anything not listed is refused by the server. A group
//! user (`names::group_user`) may:
//!
//! | what | subjects (publish unless marked) |
//! |---|---|
//! | prove JetStream is there at connect | `$JS.API.INFO` |
//! | open its consumers | `$JS.API.STREAM.INFO.<source stream>`, `$JS.API.CONSUMER.INFO.<stream>.<its durable>` |
//! | pull from them | `$JS.API.CONSUMER.MSG.NEXT.<stream>.<its durable>` |
//! | ack, nak, term, in-progress | `$JS.ACK.<stream>.<its durable>.>` |
//! | read a message of its source by offset (dead-lettering a given-up message) | `$JS.API.STREAM.MSG.GET.<source stream>`, `$JS.API.DIRECT.GET.<source stream>` |
//! | hand a partition over (topic groups) | `$JS.API.CONSUMER.UNPIN.<stream>.<its durable>` |
//! | dead-letter | `sluice.dlq.<ns>.<its dlq>` |
//! | publish its declared outputs | `sluice.t.<ns>.<topic>.*`, `sluice.q.<ns>.<queue>` and `.>`, plus the stream lookups the producer makes (`STREAM.INFO` of partitions `0..=n`, of the queue stream) |
//! | read its group config | `STREAM.INFO` and a KV watch of `SLUICE_GROUP_CONFIG`, direct get of its own key |
//! | membership and leases (topic groups) | `$KV.SLUICE_MEMBERS.<ns>.<group>.*`, `$KV.SLUICE_LEASES.<ns>.<group>.*`, direct get of its own lease keys, KV watches of both buckets |
//! | its declared application buckets (`outputs.buckets`) | `$JS.API.STREAM.CREATE.KV_<b>`, `STREAM.INFO`, `STREAM.MSG.GET`, `DIRECT.GET` of `KV_<b>`, `$KV.<b>.>` |
//! | idempotency store (exactlyOnce) | `$KV.SLUICE_IDEM__<ns>__<group>.>` and reads of that bucket |
//! | subscribe: replies and deliveries | `_INBOX_<user>.>` (the SDK uses [`names::inbox_prefix`]) |
//! | subscribe: max-deliveries advisories of its consumers | `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<its durable>` |
//!
//! Nothing else: no stream or consumer creation, update or deletion (the operator provisions
//! consumers and buckets), no message deletion or purge, no other group's keys, no other
//! stream's messages, no core subscription to `sluice.>`, no other client's inbox.
//!
//! One residual read: async-nats creates KV watchers through the legacy
//! `$JS.API.CONSUMER.CREATE.<bucket stream>` subject, which names no filter, so a group's
//! user can watch other groups' *values* in the three shared buckets (config, members,
//! leases). It can never write them. See docs/security.md.
//!
//! A producer user (`names::producer_user`) may publish to the Topics and Queues it names
//! (and look their streams up) and subscribe to its own inbox; nothing else.

use std::collections::BTreeMap;

use crate::config::{Delivery, GroupConfig, SourceKind};
use crate::error::Result;
use crate::group::group_consumers;
use crate::names::{self, ResourceRef};

/// The permissions of one broker user, as nats-server's `permissions` block reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Permissions {
    /// Subjects the user may publish to (exact or with `*`/`>` wildcards).
    pub publish: Vec<String>,
    /// Subjects the user may subscribe to.
    pub subscribe: Vec<String>,
}

impl Permissions {
    fn publish(&mut self, subject: impl Into<String>) {
        let subject = subject.into();
        if !self.publish.contains(&subject) {
            self.publish.push(subject);
        }
    }

    fn subscribe(&mut self, subject: impl Into<String>) {
        let subject = subject.into();
        if !self.subscribe.contains(&subject) {
            self.subscribe.push(subject);
        }
    }

    /// What a client needs to publish to topic `topic` with `partitions` partitions: the
    /// partition subjects and the stream lookups of partition discovery (which probes one
    /// past the last partition to find the count).
    fn produce_topic(&mut self, topic: &ResourceRef, partitions: u32) {
        for p in 0..=partitions {
            self.publish(format!(
                "$JS.API.STREAM.INFO.{}",
                names::topic_stream(topic, p)
            ));
        }
        self.publish(format!(
            "sluice.t.{}.{}.*",
            topic.namespace,
            topic.name.replace('.', "_")
        ));
    }

    /// What a client needs to publish to queue `queue`: its stream lookup, its subject, and
    /// the subjects below it (priority levels and delayed messages).
    fn produce_queue(&mut self, queue: &ResourceRef) {
        self.publish(format!(
            "$JS.API.STREAM.INFO.{}",
            names::queue_stream(queue)
        ));
        let subject = names::queue_subject(queue);
        self.publish(format!("{subject}.>"));
        self.publish(subject);
    }

    /// Read access to a KV bucket shared by every group: info, watches, and a direct get of
    /// the keys matching `own_keys` (a key or a key pattern).
    fn read_shared_bucket(&mut self, bucket: &str, own_keys: &str) {
        self.publish(format!("$JS.API.STREAM.INFO.KV_{bucket}"));
        self.publish(format!("$JS.API.CONSUMER.CREATE.KV_{bucket}"));
        self.publish(format!("$JS.FC.KV_{bucket}.>"));
        self.publish(format!(
            "$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{own_keys}"
        ));
    }
}

/// The permissions of a ConsumerGroup's workers (see the module docs for the table).
/// `topic_partitions` gives the partition count of each output topic (a topic missing from
/// it counts as having none yet: its subjects are allowed, discovery finds nothing).
///
/// ```
/// use std::collections::BTreeMap;
/// use sluice_broker::config::{GroupConfig, SourceKind, SourceRef};
/// let mut cfg = GroupConfig::new("shop", "billing", SourceRef { kind: SourceKind::Topic, name: "orders".into(), partitions: 2 });
/// cfg.dead_letter = Some("billing-dlq".into());
/// let p = sluice_broker::identity::group_permissions(&cfg, &BTreeMap::new()).unwrap();
/// assert!(p.publish.contains(&"$JS.API.CONSUMER.MSG.NEXT.SLUICE_T__shop__orders__1.G__billing".to_string()));
/// assert!(p.publish.contains(&"sluice.dlq.shop.billing-dlq".to_string()));
/// assert_eq!(p.subscribe[0], "_INBOX_g__shop__billing.>");
/// ```
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] when a name in the config is not a Kubernetes name.
pub fn group_permissions(
    cfg: &GroupConfig,
    topic_partitions: &BTreeMap<String, u32>,
) -> Result<Permissions> {
    let group = cfg.group_ref()?;
    let user = names::group_user(&group);
    let mut p = Permissions::default();
    p.subscribe(format!("{}.>", names::inbox_prefix(&user)));
    p.publish("$JS.API.INFO");
    for consumer in group_consumers(cfg)? {
        let (stream, durable) = (&consumer.stream, &consumer.durable);
        p.publish(format!("$JS.API.STREAM.INFO.{stream}"));
        p.publish(format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"));
        p.publish(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"));
        p.publish(format!("$JS.ACK.{stream}.{durable}.>"));
        p.publish(format!("$JS.API.STREAM.MSG.GET.{stream}"));
        p.publish(format!("$JS.API.DIRECT.GET.{stream}"));
        if cfg.source.kind == SourceKind::Topic {
            p.publish(format!("$JS.API.CONSUMER.UNPIN.{stream}.{durable}"));
        }
        p.subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"
        ));
    }
    if let Some(dlq) = &cfg.dead_letter {
        p.publish(names::dlq_subject(&group.sibling(dlq.clone())?));
    }
    for topic in &cfg.outputs.topics {
        let topic = group.sibling(topic.clone())?;
        p.produce_topic(
            &topic,
            topic_partitions.get(&topic.name).copied().unwrap_or(0),
        );
    }
    for queue in &cfg.outputs.queues {
        p.produce_queue(&group.sibling(queue.clone())?);
    }
    for bucket in &cfg.outputs.buckets {
        validate_app_bucket(bucket)?;
        p.publish(format!("$JS.API.STREAM.CREATE.KV_{bucket}"));
        p.publish(format!("$JS.API.STREAM.INFO.KV_{bucket}"));
        p.publish(format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"));
        p.publish(format!("$JS.API.DIRECT.GET.KV_{bucket}"));
        p.publish(format!("$JS.API.DIRECT.GET.KV_{bucket}.>"));
        p.publish(format!("$KV.{bucket}.>"));
    }
    p.read_shared_bucket(names::GROUP_CONFIG_BUCKET, &names::group_config_key(&group));
    if cfg.source.kind == SourceKind::Topic {
        let own = format!("{}*", names::members_prefix(&group));
        for bucket in [names::MEMBERS_BUCKET, names::LEASES_BUCKET] {
            p.read_shared_bucket(bucket, &own);
            p.publish(format!("$KV.{bucket}.{own}"));
        }
    }
    if cfg.delivery == Delivery::ExactlyOnce {
        let bucket = names::idempotency_bucket(&group);
        p.publish(format!("$JS.API.STREAM.INFO.KV_{bucket}"));
        p.publish(format!("$JS.API.DIRECT.GET.KV_{bucket}.>"));
        p.publish(format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"));
        p.publish(format!("$KV.{bucket}.>"));
    }
    Ok(p)
}

/// Checks the name of an application bucket a group declares (`outputs.buckets`): a valid
/// bucket name (`[A-Za-z0-9_-]`) that is not one of Sluice's own (`SLUICE*`, any case).
///
/// ```
/// assert!(sluice_broker::identity::validate_app_bucket("ORDERS_AUDIT").is_ok());
/// assert!(sluice_broker::identity::validate_app_bucket("SLUICE_LEASES").is_err());
/// assert!(sluice_broker::identity::validate_app_bucket("a.b").is_err());
/// ```
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] saying which rule the name breaks.
pub fn validate_app_bucket(bucket: &str) -> Result<()> {
    use crate::error::{Error, ErrorKind};
    if !names::is_valid_nats_name(bucket) {
        return Err(Error::new(
            ErrorKind::InvalidSpec,
            format!("{bucket:?} is not a bucket name: use letters, digits, '_' and '-'"),
        ));
    }
    if bucket.to_ascii_uppercase().starts_with("SLUICE") {
        return Err(Error::new(
            ErrorKind::InvalidSpec,
            format!(
                "bucket {bucket:?}: names starting with SLUICE belong to Sluice's own state (membership, leases, configs, idempotency); choose another name"
            ),
        ));
    }
    Ok(())
}

/// The permissions of a producer that may publish to `topics` (name -> partition count) and
/// `queues`, all in the producer's namespace, and nothing else.
///
/// ```
/// use std::collections::BTreeMap;
/// use sluice_broker::ResourceRef;
/// let producer = ResourceRef::new("shop", "order-api").unwrap();
/// let topics = BTreeMap::from([("orders".to_string(), 3)]);
/// let p = sluice_broker::identity::producer_permissions(&producer, &topics, &[]).unwrap();
/// assert!(p.publish.contains(&"sluice.t.shop.orders.*".to_string()));
/// assert_eq!(p.subscribe, ["_INBOX_p__shop__order-api.>"]);
/// ```
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] when a topic or queue name is not a Kubernetes name.
pub fn producer_permissions(
    producer: &ResourceRef,
    topics: &BTreeMap<String, u32>,
    queues: &[String],
) -> Result<Permissions> {
    let user = names::producer_user(producer);
    let mut p = Permissions::default();
    p.subscribe(format!("{}.>", names::inbox_prefix(&user)));
    p.publish("$JS.API.INFO");
    for (topic, partitions) in topics {
        p.produce_topic(&producer.sibling(topic.clone())?, *partitions);
    }
    for queue in queues {
        p.produce_queue(&producer.sibling(queue.clone())?);
    }
    Ok(p)
}

/// Asks every server of the cluster `client` is connected to to reload its configuration
/// (`$SYS.REQ.SERVER.<id>.RELOAD`), so users added to or removed from an included users file
/// take effect without a restart. `client` must be logged in as a system-account user.
/// Servers are found with `$SYS.REQ.SERVER.PING`, waiting up to `discover` for answers, or
/// less once `expected` servers answered. Returns the ids of the servers that reloaded.
///
/// ```no_run
/// # async fn f(system: async_nats::Client) -> sluice_broker::Result<()> {
/// let reloaded = sluice_broker::identity::reload_servers(&system, 3, std::time::Duration::from_secs(2)).await?;
/// assert_eq!(reloaded.len(), 3);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`crate::ErrorKind::Unavailable`] when no server answers (the user is not a system user,
/// or the broker is down); [`crate::ErrorKind::Broker`] when a server refuses the reload (its
/// new configuration does not parse: the server keeps the old one, see its log).
pub async fn reload_servers(
    client: &async_nats::Client,
    expected: usize,
    discover: std::time::Duration,
) -> Result<Vec<String>> {
    use crate::error::{Error, ErrorKind};
    use futures::StreamExt;

    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.map_err(|e| {
        Error::with_source(
            ErrorKind::Unavailable,
            "failed to subscribe for server pings",
            e,
        )
    })?;
    client
        .publish_with_reply("$SYS.REQ.SERVER.PING", inbox, bytes::Bytes::new())
        .await
        .map_err(|e| Error::with_source(ErrorKind::Unavailable, "failed to ping the servers", e))?;
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + discover;
    while ids.len() < expected.max(1) {
        let next = tokio::time::timeout_at(deadline, answers.next()).await;
        let Ok(Some(message)) = next else { break };
        let id = serde_json::from_slice::<serde_json::Value>(&message.payload)
            .ok()
            .and_then(|v| v["server"]["id"].as_str().map(String::from));
        if let Some(id) = id.filter(|id| !ids.contains(id)) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "no server answered $SYS.REQ.SERVER.PING: log in as the system-account user (sluice-system) and check the broker is up",
        ));
    }
    for id in &ids {
        let reply = client
            .request(format!("$SYS.REQ.SERVER.{id}.RELOAD"), bytes::Bytes::new())
            .await
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Unavailable,
                    format!("failed to ask server {id} to reload"),
                    e,
                )
            })?;
        let body: serde_json::Value =
            serde_json::from_slice(&reply.payload).unwrap_or(serde_json::Value::Null);
        if let Some(error) = body.get("error").filter(|e| !e.is_null()) {
            return Err(Error::new(
                ErrorKind::Broker,
                format!(
                    "server {id} refused to reload its configuration: {error}; it keeps the previous one (see its log)"
                ),
            ));
        }
    }
    tracing::info!(servers = ids.len(), "servers reloaded their configuration");
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GroupOutputs, SourceRef};

    fn topic_group() -> GroupConfig {
        let mut cfg = GroupConfig::new(
            "shop",
            "billing",
            SourceRef {
                kind: SourceKind::Topic,
                name: "orders".into(),
                partitions: 2,
            },
        );
        cfg.dead_letter = Some("billing-dlq".into());
        cfg.outputs = GroupOutputs {
            topics: vec!["invoices".into()],
            queues: vec!["emails".into()],
            buckets: vec![],
        };
        cfg
    }

    fn has(list: &[String], subject: &str) -> bool {
        list.iter().any(|s| s == subject)
    }

    #[test]
    fn topic_group_gets_its_consumers_keys_dlq_and_outputs_only() {
        let topics = BTreeMap::from([("invoices".to_string(), 2)]);
        let p = group_permissions(&topic_group(), &topics).unwrap();
        for expected in [
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.SLUICE_T__shop__orders__0",
            "$JS.API.CONSUMER.INFO.SLUICE_T__shop__orders__1.G__billing",
            "$JS.API.CONSUMER.MSG.NEXT.SLUICE_T__shop__orders__0.G__billing",
            "$JS.ACK.SLUICE_T__shop__orders__1.G__billing.>",
            "$JS.API.CONSUMER.UNPIN.SLUICE_T__shop__orders__0.G__billing",
            "$JS.API.STREAM.MSG.GET.SLUICE_T__shop__orders__0",
            "sluice.dlq.shop.billing-dlq",
            "sluice.t.shop.invoices.*",
            "$JS.API.STREAM.INFO.SLUICE_T__shop__invoices__2",
            "sluice.q.shop.emails",
            "sluice.q.shop.emails.>",
            "$JS.API.DIRECT.GET.KV_SLUICE_GROUP_CONFIG.$KV.SLUICE_GROUP_CONFIG.shop.billing",
            "$KV.SLUICE_MEMBERS.shop.billing.*",
            "$KV.SLUICE_LEASES.shop.billing.*",
            "$JS.API.DIRECT.GET.KV_SLUICE_LEASES.$KV.SLUICE_LEASES.shop.billing.*",
        ] {
            assert!(has(&p.publish, expected), "missing {expected}: {p:#?}");
        }
        assert_eq!(
            p.subscribe,
            [
                "_INBOX_g__shop__billing.>",
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.SLUICE_T__shop__orders__0.G__billing",
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.SLUICE_T__shop__orders__1.G__billing",
            ]
        );
        // No wildcard reaches beyond the group's own names.
        for subject in &p.publish {
            for broad in ["$JS.API.>", "$KV.>", "sluice.>", "$JS.ACK.>", "_INBOX.>"] {
                assert_ne!(subject, broad);
            }
            assert!(
                !subject.contains("DELETE")
                    && !subject.contains("PURGE")
                    && !subject.contains("UPDATE")
                    && !subject.starts_with("$KV.SLUICE_GROUP_CONFIG"),
                "{subject}"
            );
        }
        assert!(!p.publish.iter().any(|s| s.contains("IDEM")), "{p:#?}");
    }

    #[test]
    fn queue_group_has_no_membership_and_exactly_once_gets_its_store() {
        let mut cfg = GroupConfig::new(
            "shop",
            "mailers",
            SourceRef {
                kind: SourceKind::Queue,
                name: "emails".into(),
                partitions: 1,
            },
        );
        cfg.priorities = 2;
        cfg.delivery = Delivery::ExactlyOnce;
        let p = group_permissions(&cfg, &BTreeMap::new()).unwrap();
        assert!(has(
            &p.publish,
            "$JS.API.CONSUMER.MSG.NEXT.SLUICE_Q__shop__emails.G__mailers__p1"
        ));
        assert!(has(&p.publish, "$KV.SLUICE_IDEM__shop__mailers.>"));
        assert!(!p.publish.iter().any(|s| s.contains("SLUICE_MEMBERS")));
        assert!(!p.publish.iter().any(|s| s.contains("UNPIN")));
        assert!(
            !p.publish.iter().any(|s| s.starts_with("sluice.")),
            "{p:#?}"
        );
    }

    #[test]
    fn producer_may_only_publish_to_what_it_names() {
        let producer = ResourceRef::new("shop", "order-api").unwrap();
        let topics = BTreeMap::from([("orders".to_string(), 1)]);
        let p = producer_permissions(&producer, &topics, &["emails".to_string()]).unwrap();
        assert_eq!(
            p.publish,
            [
                "$JS.API.INFO",
                "$JS.API.STREAM.INFO.SLUICE_T__shop__orders__0",
                "$JS.API.STREAM.INFO.SLUICE_T__shop__orders__1",
                "sluice.t.shop.orders.*",
                "$JS.API.STREAM.INFO.SLUICE_Q__shop__emails",
                "sluice.q.shop.emails.>",
                "sluice.q.shop.emails",
            ]
        );
        assert_eq!(p.subscribe, ["_INBOX_p__shop__order-api.>"]);
        let err =
            producer_permissions(&producer, &BTreeMap::new(), &["Bad_Name".into()]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidSpec);
    }
}
