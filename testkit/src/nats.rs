//! A real nats-server for a test (random port, temp dir) with the helpers tests use to
//! provision, publish and read back. Group configs here carry test-friendly timings.

use std::time::Duration;

use async_nats::HeaderMap;
use sluice_broker::config::{DlqSettings, QueueSettings, SourceKind, SourceRef, TopicSettings};
use sluice_broker::dlq::DeadLetter;
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{Broker, ConnectOptions, GroupConfig, ResourceRef, names};

use crate::wait::wait_until;

/// The namespace every harness object lives in.
pub const NS: &str = "default";

/// A running nats-server and a broker connection to it.
#[derive(Debug)]
pub struct Harness {
    /// The server; dropped with the harness.
    pub server: NatsServer,
    /// A connection to it.
    pub broker: Broker,
}

/// A topic group config with test-friendly timings (2 s ack wait and pin timeout, 100 ms to
/// 1 s backoff without jitter).
pub fn topic_group(topic: &str, group: &str, partitions: u32) -> GroupConfig {
    let mut cfg = GroupConfig::new(
        NS,
        group,
        SourceRef {
            kind: SourceKind::Topic,
            name: topic.into(),
            partitions,
        },
    );
    cfg.ack_wait_ms = 2_000;
    cfg.pin_timeout_ms = 2_000;
    cfg.retry.backoff.initial_ms = 100;
    cfg.retry.backoff.max_ms = 1_000;
    cfg.retry.backoff.jitter = false;
    cfg
}

/// A queue group config with the timings of [`topic_group`].
pub fn queue_group(queue: &str, group: &str) -> GroupConfig {
    let mut cfg = topic_group(queue, group, 1);
    cfg.source.kind = SourceKind::Queue;
    cfg
}

fn object(name: &str) -> ResourceRef {
    ResourceRef::new(NS, name).unwrap()
}

impl Harness {
    /// Starts a single nats-server and connects to it (also installs test tracing).
    pub async fn start() -> Self {
        crate::init_tracing();
        let server = NatsServer::start(ServerOptions::default()).await.unwrap();
        let broker = Broker::connect(&ConnectOptions::from_url_list(&server.url()))
            .await
            .unwrap();
        Harness { server, broker }
    }

    /// The server's client URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Provisions the group's topic (with its partitions), its DLQ (if any) and the group.
    pub async fn provision(&self, cfg: &GroupConfig) {
        let topic = object(&cfg.source.name);
        let settings = TopicSettings {
            partitions: cfg.source.partitions,
            ..Default::default()
        };
        self.broker.ensure_topic(&topic, &settings).await.unwrap();
        self.provision_dlq_and_group(cfg).await;
    }

    /// Provisions the group's queue, its DLQ (if any) and the group.
    pub async fn provision_queue(&self, cfg: &GroupConfig) {
        self.provision_queue_with(cfg, &QueueSettings::default())
            .await;
    }

    /// Provisions the group's queue with `settings` (delay, priorities; the group's
    /// `priorities` must match), its DLQ (if any) and the group.
    pub async fn provision_queue_with(&self, cfg: &GroupConfig, settings: &QueueSettings) {
        let queue = object(&cfg.source.name);
        self.broker.ensure_queue(&queue, settings).await.unwrap();
        self.provision_dlq_and_group(cfg).await;
    }

    async fn provision_dlq_and_group(&self, cfg: &GroupConfig) {
        if let Some(dlq) = &cfg.dead_letter {
            self.broker
                .ensure_dlq(&object(dlq), &DlqSettings::default())
                .await
                .unwrap();
        }
        self.broker.ensure_group(cfg).await.unwrap();
    }

    /// Publishes to a subject with headers; returns the stream sequence.
    async fn publish_raw(&self, subject: String, headers: HeaderMap, payload: &str) -> u64 {
        self.broker
            .jetstream()
            .publish_with_headers(subject, headers, payload.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// Publishes `payload` to a topic partition with a message id and optional key; returns
    /// the offset.
    pub async fn publish(
        &self,
        topic: &str,
        partition: u32,
        id: &str,
        key: Option<&str>,
        payload: &str,
    ) -> u64 {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        if let Some(k) = key {
            h.insert("Sluice-Key", k);
        }
        self.publish_with(topic, partition, h, payload).await
    }

    /// Publishes with arbitrary headers to a topic partition; returns the offset.
    pub async fn publish_with(
        &self,
        topic: &str,
        partition: u32,
        h: HeaderMap,
        payload: &str,
    ) -> u64 {
        self.publish_raw(names::topic_subject(&object(topic), partition), h, payload)
            .await
    }

    /// Publishes `payload` to a queue with a message id; returns the stream sequence.
    pub async fn publish_queue(&self, queue: &str, id: &str, payload: &str) -> u64 {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        self.publish_raw(names::queue_subject(&object(queue)), h, payload)
            .await
    }

    /// Every message of a stream, in order: (headers, payload).
    pub async fn stream_messages(&self, stream_name: &str) -> Vec<(HeaderMap, String)> {
        let stream = self
            .broker
            .jetstream()
            .get_stream(stream_name)
            .await
            .unwrap();
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push((m.headers, String::from_utf8_lossy(&m.payload).to_string()));
            }
        }
        out
    }

    /// Every message in a DLQ's stream: (headers, payload).
    pub async fn dlq_messages(&self, dlq: &str) -> Vec<(HeaderMap, String)> {
        self.stream_messages(&names::dlq_stream(&object(dlq))).await
    }

    /// The DLQ's messages with their decoded envelopes.
    pub async fn dead_letters(&self, dlq: &str) -> Vec<(DeadLetter, HeaderMap, String)> {
        self.dlq_messages(dlq)
            .await
            .into_iter()
            .map(|(h, p)| (DeadLetter::decode(&h).unwrap(), h, p))
            .collect()
    }

    /// Consumer info of the group's consumer on a stream.
    pub async fn consumer_info(
        &self,
        stream_name: &str,
        group: &str,
    ) -> async_nats::jetstream::consumer::Info {
        let durable = names::group_consumer(&object(group));
        let stream = self
            .broker
            .jetstream()
            .get_stream(stream_name)
            .await
            .unwrap();
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&durable).await.unwrap();
        c.info().await.unwrap().clone()
    }

    /// The partitions `member` last reported owning in its membership heartbeat.
    pub async fn owned_by(&self, group: &str, member: &str) -> Vec<u32> {
        let Ok(kv) = self
            .broker
            .jetstream()
            .get_key_value(names::MEMBERS_BUCKET)
            .await
        else {
            return Vec::new();
        };
        let key = names::member_key(&object(group), member);
        match kv.get(&key).await {
            Ok(Some(value)) => {
                serde_json::from_slice::<sluice_worker::membership::MemberRecord>(&value)
                    .map(|r| r.partitions)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Waits until `member` reports owning at least one partition.
    pub async fn wait_owns(&self, group: &str, member: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("{member} to own a partition"),
            async || !self.owned_by(group, member).await.is_empty(),
        )
        .await;
    }
}
