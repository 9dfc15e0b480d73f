//! Fan-out from topics to queues must be lossless in every racy order: the reproduction of
//! issue 18 (a queue fed by a 3-partition topic received only some partitions, silently).
//!
//! Each iteration creates a fresh topic (3 partitions) and a queue sourcing it, in one of the
//! orders below, publishes a random number of messages to every partition, and then counts
//! what the queue received against what the topic holds: every message exactly once.
//!
//! | order | what races |
//! |---|---|
//! | `queue_first` | the queue (and its relay) exist before any partition; partitions appear one by one, each published to at once |
//! | `topic_first` | the partitions hold messages before the queue is created |
//! | `interleaved` | partition 0 with messages, then the queue, then partitions 1 and 2 |
//! | `publish_while_attaching` | a publisher writes to every partition while the queue is created |
//! | `growth` | the topic grows from 2 to 3 partitions after the queue exists |
//! | `restart` | the server is killed and restarted (with its data) between the steps |
//! | `late_sources_with_older_messages` | partition 0 is received at once; partitions 1 and 2 appear a moment after the queue, get messages, and then partition 0 gets newer ones before 1 and 2 are attached (the destination's last message is newer than theirs) |
//!
//! The CPU-stress test runs the same orders while busy threads load every core.
//!
//! `SLUICE_FANOUT_ITERATIONS` sets the iterations per order (default 40: 200 iterations in
//! the main test). `SLUICE_FANOUT_MECHANISM=jetstream` runs the same reproduction against
//! JetStream stream sourcing (what Sluice used before), which fails it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use async_nats::jetstream::stream;
use rand::Rng;
use sluice_broker::config::{QueueSettings, QueueSource, TopicSettings};
use sluice_broker::{FanoutRelays, ResourceRef, names};

/// How long a queue may take to receive everything (generous: a loaded 2-core machine).
const RECEIVE_DEADLINE: Duration = Duration::from_secs(30);
const PARTITIONS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    QueueFirst,
    TopicFirst,
    Interleaved,
    PublishWhileAttaching,
    Growth,
    Restart,
    LateSourcesWithOlderMessages,
}

const RACY_ORDERS: [Order; 5] = [
    Order::QueueFirst,
    Order::TopicFirst,
    Order::Interleaved,
    Order::PublishWhileAttaching,
    Order::Growth,
];

fn iterations() -> usize {
    std::env::var("SLUICE_FANOUT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn jetstream_sourcing() -> bool {
    std::env::var("SLUICE_FANOUT_MECHANISM").as_deref() == Ok("jetstream")
}

/// The test's nats-server and broker connection, with the relays that fill its queues.
struct Harness {
    nats: sluice_testkit::Harness,
    relays: FanoutRelays,
}

impl Harness {
    async fn start() -> Self {
        Self {
            nats: sluice_testkit::Harness::start().await,
            relays: FanoutRelays::new(),
        }
    }

    async fn create_partition(&self, topic: &ResourceRef, partitions: u32) {
        self.nats
            .broker
            .ensure_topic(
                topic,
                &TopicSettings {
                    partitions,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    async fn create_queue(&self, queue: &ResourceRef, topic: &ResourceRef, partitions: u32) {
        let sources = vec![QueueSource {
            topic: topic.name.clone(),
            partitions,
        }];
        if jetstream_sourcing() {
            // The mechanism Sluice used before: JetStream sources on the work-queue stream.
            let config = stream::Config {
                name: names::queue_stream(queue),
                subjects: vec![names::queue_subject(queue)],
                retention: stream::RetentionPolicy::WorkQueue,
                sources: Some(
                    (0..partitions)
                        .map(|p| stream::Source {
                            name: names::topic_stream(topic, p),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            };
            if self
                .nats
                .broker
                .jetstream()
                .get_stream(&config.name)
                .await
                .is_ok()
            {
                self.nats
                    .broker
                    .jetstream()
                    .update_stream(config)
                    .await
                    .unwrap();
            } else {
                self.nats
                    .broker
                    .jetstream()
                    .create_stream(config)
                    .await
                    .unwrap();
            }
            return;
        }
        let settings = QueueSettings {
            sources,
            ..Default::default()
        };
        self.nats
            .broker
            .ensure_queue(queue, &settings)
            .await
            .unwrap();
        self.relays
            .ensure(&self.nats.broker, queue, &settings.sources);
    }

    async fn publish(&self, topic: &ResourceRef, partition: u32, count: u64) {
        let js = self.nats.broker.jetstream();
        let mut acks = Vec::new();
        for i in 0..count {
            let payload = format!("{}-{partition}-{i}", topic.name);
            acks.push(
                js.publish(names::topic_subject(topic, partition), payload.into())
                    .await
                    .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap();
        }
    }

    /// Waits until the queue holds as many messages as the topic, then checks that they are
    /// exactly the topic's messages (no skip, no duplicate).
    async fn check(&self, queue: &ResourceRef, topic: &ResourceRef, what: &str) {
        let mut expected = Vec::new();
        for p in 0..PARTITIONS {
            let mut s = self
                .nats
                .broker
                .jetstream()
                .get_stream(names::topic_stream(topic, p))
                .await
                .unwrap();
            let last = s.info().await.unwrap().state.last_sequence;
            for seq in 1..=last {
                let m = s.get_raw_message(seq).await.unwrap();
                expected.push(String::from_utf8(m.payload.to_vec()).unwrap());
            }
        }
        expected.sort();
        let deadline = tokio::time::Instant::now() + RECEIVE_DEADLINE;
        let mut s = self
            .nats
            .broker
            .jetstream()
            .get_stream(names::queue_stream(queue))
            .await
            .unwrap();
        loop {
            let state = s.info().await.unwrap().state.clone();
            if state.messages >= expected.len() as u64 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let statuses = self
                    .nats
                    .broker
                    .fanout_status(
                        queue,
                        &[QueueSource {
                            topic: topic.name.clone(),
                            partitions: PARTITIONS,
                        }],
                    )
                    .await
                    .unwrap_or_default();
                panic!(
                    "{what}: the queue received {} of the topic's {} messages within {RECEIVE_DEADLINE:?}; sources: {statuses:?}",
                    state.messages,
                    expected.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Nothing more arrives late (duplicates would).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let state = s.info().await.unwrap().state.clone();
        let mut received = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = s.get_raw_message(seq).await {
                received.push(String::from_utf8(m.payload.to_vec()).unwrap());
            }
        }
        received.sort();
        assert_eq!(
            received, expected,
            "{what}: the queue's messages differ from the topic's"
        );
    }

    async fn remove(&self, queue: &ResourceRef, topic: &ResourceRef) {
        self.relays.stop(queue);
        self.nats.broker.delete_queue(queue).await.unwrap();
        self.nats.broker.delete_topic(topic).await.unwrap();
    }

    /// One iteration of `order`; returns the messages published.
    async fn run(&mut self, order: Order, n: usize) -> u64 {
        let ns = "fanout";
        let topic = ResourceRef::new(ns, format!("t{n}")).unwrap();
        let queue = ResourceRef::new(ns, format!("q{n}")).unwrap();
        let counts: Vec<u64> = {
            let mut rng = rand::rng();
            (0..PARTITIONS).map(|_| rng.random_range(1..=12)).collect()
        };
        let what = format!("iteration {n} ({order:?}, counts {counts:?})");
        match order {
            Order::QueueFirst => {
                self.create_queue(&queue, &topic, PARTITIONS).await;
                for p in 0..PARTITIONS {
                    self.create_partition(&topic, p + 1).await;
                    self.publish(&topic, p, counts[p as usize]).await;
                }
            }
            Order::TopicFirst => {
                self.create_partition(&topic, PARTITIONS).await;
                for p in 0..PARTITIONS {
                    self.publish(&topic, p, counts[p as usize]).await;
                }
                self.create_queue(&queue, &topic, PARTITIONS).await;
            }
            Order::Interleaved => {
                self.create_partition(&topic, 1).await;
                self.publish(&topic, 0, counts[0]).await;
                self.create_queue(&queue, &topic, PARTITIONS).await;
                self.create_partition(&topic, PARTITIONS).await;
                for p in 1..PARTITIONS {
                    self.publish(&topic, p, counts[p as usize]).await;
                }
            }
            Order::PublishWhileAttaching => {
                self.create_partition(&topic, PARTITIONS).await;
                let publisher = {
                    let broker = self.nats.broker.clone();
                    let topic = topic.clone();
                    let counts = counts.clone();
                    tokio::spawn(async move {
                        let js = broker.jetstream();
                        for p in 0..PARTITIONS {
                            for i in 0..counts[p as usize] {
                                let payload = format!("{}-{p}-{i}", topic.name);
                                js.publish(names::topic_subject(&topic, p), payload.into())
                                    .await
                                    .unwrap()
                                    .await
                                    .unwrap();
                            }
                        }
                    })
                };
                self.create_queue(&queue, &topic, PARTITIONS).await;
                publisher.await.unwrap();
            }
            Order::Growth => {
                self.create_partition(&topic, 2).await;
                self.create_queue(&queue, &topic, 2).await;
                self.publish(&topic, 0, counts[0]).await;
                self.publish(&topic, 1, counts[1]).await;
                self.create_partition(&topic, PARTITIONS).await;
                self.publish(&topic, 2, counts[2]).await;
                self.create_queue(&queue, &topic, PARTITIONS).await;
            }
            Order::LateSourcesWithOlderMessages => {
                self.create_partition(&topic, 1).await;
                self.create_queue(&queue, &topic, PARTITIONS).await;
                tokio::time::sleep(Duration::from_millis(rand::rng().random_range(300..1500)))
                    .await;
                self.create_partition(&topic, PARTITIONS).await;
                self.publish(&topic, 1, counts[1]).await;
                self.publish(&topic, 2, counts[2]).await;
                self.publish(&topic, 0, counts[0]).await;
            }
            Order::Restart => {
                self.create_partition(&topic, 1).await;
                self.publish(&topic, 0, counts[0]).await;
                self.create_queue(&queue, &topic, PARTITIONS).await;
                self.nats.server.kill().await.unwrap();
                self.nats.server.restart().await.unwrap();
                self.create_partition(&topic, PARTITIONS).await;
                for p in 1..PARTITIONS {
                    self.publish(&topic, p, counts[p as usize]).await;
                }
            }
        }
        self.check(&queue, &topic, &what).await;
        self.remove(&queue, &topic).await;
        counts.iter().sum()
    }
}

async fn run_orders(h: &mut Harness, orders: &[Order], per_order: usize, first: usize) -> usize {
    let mut n = first;
    for round in 0..per_order {
        for order in orders {
            h.run(*order, n).await;
            n += 1;
            if round == 0 {
                eprintln!("order {order:?} passed its first iteration");
            }
        }
    }
    eprintln!(
        "{} iterations of {orders:?}: every message received exactly once",
        n - first
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_receives_every_message_in_every_racy_order() {
    let mut h = Harness::start().await;
    run_orders(&mut h, &RACY_ORDERS, iterations(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_receives_late_sources_whose_messages_are_older_than_the_queues_last() {
    let mut h = Harness::start().await;
    run_orders(
        &mut h,
        &[Order::LateSourcesWithOlderMessages],
        iterations().div_ceil(2),
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_survives_broker_restarts_between_steps() {
    let mut h = Harness::start().await;
    run_orders(&mut h, &[Order::Restart], iterations().div_ceil(8), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_is_lossless_under_cpu_stress() {
    let _stress = sluice_testkit::CpuStress::start();
    let mut h = Harness::start().await;
    run_orders(&mut h, &RACY_ORDERS, iterations().div_ceil(4), 0).await;
}

/// Takes every message waiting in the queue (acknowledged, so the work queue deletes it) and
/// returns the payloads.
async fn drain(h: &Harness, queue: &ResourceRef) -> Vec<String> {
    use futures::StreamExt;
    let stream = h
        .nats
        .broker
        .jetstream()
        .get_stream(names::queue_stream(queue))
        .await
        .unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "drain",
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("drain".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer.fetch().max_messages(500).messages().await.unwrap();
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            out.push(String::from_utf8(m.payload.to_vec()).unwrap());
            m.double_ack().await.unwrap();
            got += 1;
        }
        if got == 0 {
            return out;
        }
    }
}

/// A work queue deletes what its workers acknowledged, so after a restart the queue may be
/// empty: the fan-out must resume where it was, neither skipping what arrives next nor (after
/// a clean shutdown of the server) copying the handled messages again. After a kill -9 of the
/// server, the relay's last acknowledgements may not have reached its disk: those messages are
/// copied again (at-least-once; counted, never skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_resumes_exactly_after_a_restart_of_a_drained_queue() {
    let mut h = Harness::start().await;
    let iterations = iterations().div_ceil(8).max(2);
    let mut copied_again_after_kill = 0;
    for n in 0..iterations {
        let topic = ResourceRef::new("drained", format!("t{n}")).unwrap();
        let queue = ResourceRef::new("drained", format!("q{n}")).unwrap();
        h.create_partition(&topic, PARTITIONS).await;
        h.create_queue(&queue, &topic, PARTITIONS).await;
        let mut published = 0u64;
        let mut handled = Vec::new();
        for round in 0..4u64 {
            for p in 0..PARTITIONS {
                let js = h.nats.broker.jetstream();
                for i in 0..5 {
                    let payload = format!("r{round}-p{p}-{i}");
                    js.publish(names::topic_subject(&topic, p), payload.into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    published += 1;
                }
            }
            let deadline = tokio::time::Instant::now() + RECEIVE_DEADLINE;
            loop {
                handled.extend(drain(&h, &queue).await);
                let mut unique = handled.clone();
                unique.sort();
                unique.dedup();
                if unique.len() as u64 >= published {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "iteration {n} round {round}: the queue received {} of {published} messages",
                    unique.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if round <= 2 {
                // Only clean restarts so far: not a single message copied twice.
                assert_eq!(
                    handled.len() as u64,
                    published,
                    "iteration {n} round {round}: messages copied twice"
                );
            }
            match round {
                0..=1 => h.nats.server.stop().await.unwrap(),
                2 => h.nats.server.kill().await.unwrap(),
                _ => break,
            }
            h.nats.server.restart().await.unwrap();
        }
        // What a kill -9 makes the relay copy again arrives now, if anything.
        tokio::time::sleep(Duration::from_millis(500)).await;
        handled.extend(drain(&h, &queue).await);
        let mut unique = handled.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len() as u64,
            published,
            "iteration {n}: skipped messages"
        );
        copied_again_after_kill += handled.len() - unique.len();
        h.remove(&queue, &topic).await;
    }
    eprintln!(
        "{iterations} iterations, each with 2 clean restarts and 1 kill -9: nothing skipped, nothing copied twice across clean restarts, {copied_again_after_kill} copied again after the kills"
    );
}

/// A queue provisioned by an older Sluice (JetStream sources on its stream) is moved to the
/// relay by the next ensure: its sources are removed and the relay consumers created.
#[tokio::test]
async fn ensure_moves_a_jetstream_sourced_queue_to_the_relay() {
    let h = Harness::start().await;
    let topic = ResourceRef::new("upgrade", "uploads").unwrap();
    let queue = ResourceRef::new("upgrade", "encode").unwrap();
    h.create_partition(&topic, 2).await;
    h.nats
        .broker
        .jetstream()
        .create_stream(stream::Config {
            name: names::queue_stream(&queue),
            subjects: vec![names::queue_subject(&queue)],
            retention: stream::RetentionPolicy::WorkQueue,
            sources: Some(
                (0..2)
                    .map(|p| stream::Source {
                        name: names::topic_stream(&topic, p),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    let settings = QueueSettings {
        sources: vec![QueueSource {
            topic: "uploads".into(),
            partitions: 2,
        }],
        ..Default::default()
    };
    let changes = h.nats.broker.ensure_queue(&queue, &settings).await.unwrap();
    assert_eq!(changes.updated, vec![names::queue_stream(&queue)]);
    assert_eq!(changes.created.len(), 2, "{changes:?}");
    let mut s = h
        .nats
        .broker
        .jetstream()
        .get_stream(names::queue_stream(&queue))
        .await
        .unwrap();
    let config = s.info().await.unwrap().config.clone();
    assert!(config.sources.unwrap_or_default().is_empty());
    assert!(
        h.nats
            .broker
            .ensure_queue(&queue, &settings)
            .await
            .unwrap()
            .is_noop()
    );
}

/// A queue that is no longer ensured (deleted without a cleanup hook) loses its relays after
/// the lease; ensuring it again resumes where the relays stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_of_a_queue_that_is_not_ensured_again_stop_after_their_lease() {
    let mut h = Harness::start().await;
    h.relays = FanoutRelays::with_lease(Duration::from_secs(1));
    let topic = ResourceRef::new("lease", "uploads").unwrap();
    let queue = ResourceRef::new("lease", "encode").unwrap();
    h.create_partition(&topic, 1).await;
    let sources = [QueueSource {
        topic: "uploads".into(),
        partitions: 1,
    }];
    h.nats
        .broker
        .ensure_queue(
            &queue,
            &QueueSettings {
                sources: sources.to_vec(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h.relays.ensure(&h.nats.broker, &queue, &sources);
    h.publish(&topic, 0, 3).await;
    let consumer = names::fanout_consumer(&queue);
    let deadline = tokio::time::Instant::now() + RECEIVE_DEADLINE;
    // Copied while leased; then the relay stops pulling (no waiting pull request left).
    loop {
        let stream = h
            .nats
            .broker
            .jetstream()
            .get_stream(names::topic_stream(&topic, 0))
            .await
            .unwrap();
        let info = stream.consumer_info(&consumer).await.unwrap();
        if info.ack_floor.stream_sequence == 3 && info.num_waiting == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay kept pulling after its lease: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.publish(&topic, 0, 2).await;
    h.relays.ensure(&h.nats.broker, &queue, &sources);
    let statuses = loop {
        let s = h.nats.broker.fanout_status(&queue, &sources).await.unwrap();
        if s[0].received_offset == 5 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline + RECEIVE_DEADLINE,
            "not resumed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(statuses[0].pending, 0);
}
