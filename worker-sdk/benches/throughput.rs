//! Throughput of the Sluice SDK against raw async-nats, in the same run, on the same embedded
//! nats-server (R1, file storage), with the same message size and count.
//!
//! ```sh
//! cargo bench -p sluice-worker --bench throughput
//! SLUICE_BENCH_MESSAGES=200000 SLUICE_BENCH_RUNS=5 cargo bench -p sluice-worker --bench throughput
//! SLUICE_BENCH_ONLY=consume cargo bench -p sluice-worker --bench throughput   # one side only
//! ```
//!
//! Publish cases (each publishes into its own fresh 1-partition topic):
//! - `raw publish`: async-nats JetStream publish with pipelined async acks (window = in-flight limit).
//! - `sluice producer keyless`: [`sluice_worker::producer`], same window, receipts dropped, one flush.
//! - `raw publish + Sluice-Key header`: raw, with the header a keyed SDK publish carries.
//! - `sluice producer keyed`: the SDK with a key per message (murmur2 + `Sluice-Key` header).
//!
//! Consume cases (each reads the N messages of a topic filled beforehand):
//! - `raw pull consumer`: a durable pull consumer, explicit ack of every message.
//! - `sluice Worker`: one [`sluice_worker::Worker`] member of a group on that topic
//!   (at-least-once, handler only counts), with ordering=partition and ordering=none.
//!
//! Consume cases are timed from the first message handled to the last, so consumer creation
//! and the worker's group join are not counted.
//!
//! Each case runs `SLUICE_BENCH_RUNS` times (default 3); the median is reported, with the
//! SDK/raw ratio. Output is a Markdown table (pasted into docs/benchmarks.md).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use sluice_broker::GroupConfig;
use sluice_broker::config::TopicSettings;
use sluice_broker::config::{Ordering, SourceKind, SourceRef};
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{Broker, ConnectOptions, ResourceRef, names};
use sluice_worker::producer::{Producer, ProducerConfig, Record};
use sluice_worker::{HandlerError, Worker, WorkerOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

const PAYLOAD_BYTES: usize = 128;
const IN_FLIGHT: usize = 1024;
const NAMESPACE: &str = "bench";

/// Shared state of one benchmark run.
struct Bench {
    broker: Broker,
    url: String,
    messages: u64,
    payload: bytes::Bytes,
    topic_seq: u32,
}

impl Bench {
    /// A fresh 1-partition R1 file-storage topic.
    async fn fresh_topic(&mut self, prefix: &str) -> Result<ResourceRef> {
        self.topic_seq += 1;
        let topic = ResourceRef::new(NAMESPACE, format!("{prefix}-{}", self.topic_seq))?;
        self.broker
            .ensure_topic(
                &topic,
                &TopicSettings {
                    partitions: 1,
                    replicas: 1,
                    ..Default::default()
                },
            )
            .await?;
        Ok(topic)
    }

    async fn delete(&self, topic: &ResourceRef) -> Result<()> {
        self.broker.delete_topic(topic).await?;
        Ok(())
    }
}

/// A publish case: publishes `bench.messages` messages into `topic`, returns the elapsed time.
type PublishCase =
    for<'a> fn(&'a Bench, &'a ResourceRef) -> futures::future::BoxFuture<'a, Result<Duration>>;

/// A consume case: consumes the `bench.messages` messages already in `topic`.
type ConsumeCase = PublishCase;

fn raw_publish<'a>(
    bench: &'a Bench,
    topic: &'a ResourceRef,
) -> futures::future::BoxFuture<'a, Result<Duration>> {
    Box::pin(raw_publish_run(bench, topic, false))
}

fn raw_publish_keyed<'a>(
    bench: &'a Bench,
    topic: &'a ResourceRef,
) -> futures::future::BoxFuture<'a, Result<Duration>> {
    Box::pin(raw_publish_run(bench, topic, true))
}

/// Raw pipelined publish; `keyed` adds the same `Sluice-Key` header the SDK sends (no
/// partitioning), to separate the cost of the header from the SDK's own.
async fn raw_publish_run(bench: &Bench, topic: &ResourceRef, keyed: bool) -> Result<Duration> {
    {
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(IN_FLIGHT)
            .backpressure_on_inflight(true)
            .build(bench.broker.client().clone());
        let subject = names::topic_subject(topic, 0);
        let started = Instant::now();
        let mut window = VecDeque::with_capacity(IN_FLIGHT);
        for i in 0..bench.messages {
            if window.len() >= IN_FLIGHT
                && let Some(ack) = window.pop_front()
            {
                ack_of(ack).await?;
            }
            let ack = if keyed {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    sluice_broker::dlq::headers::KEY,
                    format!("key-{}", i % 64).as_str(),
                );
                js.publish_with_headers(subject.clone(), headers, bench.payload.clone())
                    .await?
            } else {
                js.publish(subject.clone(), bench.payload.clone()).await?
            };
            window.push_back(ack);
        }
        for ack in window {
            ack_of(ack).await?;
        }
        Ok(started.elapsed())
    }
}

async fn ack_of(
    ack: jetstream::context::PublishAckFuture,
) -> Result<jetstream::publish::PublishAck> {
    Ok(ack.await?)
}

fn sdk_publish(keyed: bool) -> PublishCase {
    fn keyless<'a>(
        bench: &'a Bench,
        topic: &'a ResourceRef,
    ) -> futures::future::BoxFuture<'a, Result<Duration>> {
        Box::pin(sdk_publish_run(bench, topic, false))
    }
    fn keyed_case<'a>(
        bench: &'a Bench,
        topic: &'a ResourceRef,
    ) -> futures::future::BoxFuture<'a, Result<Duration>> {
        Box::pin(sdk_publish_run(bench, topic, true))
    }
    if keyed { keyed_case } else { keyless }
}

async fn sdk_publish_run(bench: &Bench, topic: &ResourceRef, keyed: bool) -> Result<Duration> {
    let producer = Producer::new(
        bench.broker.clone(),
        ProducerConfig {
            max_in_flight: IN_FLIGHT,
            partition_refresh: None,
            ..Default::default()
        },
    )?;
    let handle = producer.topic(&topic.namespace, &topic.name).await?;
    let started = Instant::now();
    for i in 0..bench.messages {
        let mut record = Record::new(bench.payload.clone());
        if keyed {
            record = record.key(format!("key-{}", i % 64));
        }
        drop(handle.send(record).await?);
    }
    producer.flush().await?;
    let elapsed = started.elapsed();
    let stats = producer.stats();
    if stats.acked != bench.messages || stats.failed != 0 {
        bail!("sluice producer: {stats:?} for {} messages", bench.messages);
    }
    Ok(elapsed)
}

fn raw_consume<'a>(
    bench: &'a Bench,
    topic: &'a ResourceRef,
) -> futures::future::BoxFuture<'a, Result<Duration>> {
    Box::pin(async move {
        let js = bench.broker.jetstream();
        let stream = js.get_stream(names::topic_stream(topic, 0)).await?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut seen = 0;
        let mut started = None;
        while seen < bench.messages {
            let message = messages
                .next()
                .await
                .context("pull consumer ended early")?
                .map_err(|e| anyhow::anyhow!("pull failed: {e}"))?;
            started.get_or_insert_with(Instant::now);
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack failed: {e}"))?;
            seen += 1;
        }
        Ok(started.map(|s| s.elapsed()).unwrap_or_default())
    })
}

fn worker_partition_ordered<'a>(
    bench: &'a Bench,
    topic: &'a ResourceRef,
) -> futures::future::BoxFuture<'a, Result<Duration>> {
    Box::pin(worker_consume_run(bench, topic, Ordering::Partition))
}

fn worker_unordered<'a>(
    bench: &'a Bench,
    topic: &'a ResourceRef,
) -> futures::future::BoxFuture<'a, Result<Duration>> {
    Box::pin(worker_consume_run(bench, topic, Ordering::None))
}

/// One `sluice_worker::Worker` (at-least-once: handle, then ack) with a handler that only counts;
/// timed from the first handled message to the last, like the raw consumer (so the group join
/// is not counted).
async fn worker_consume_run(
    bench: &Bench,
    topic: &ResourceRef,
    ordering: Ordering,
) -> Result<Duration> {
    let group = format!("g-{}", topic.name);
    let mut cfg = GroupConfig::new(
        &topic.namespace,
        &group,
        SourceRef {
            kind: SourceKind::Topic,
            name: topic.name.clone(),
            partitions: 1,
        },
    );
    cfg.ordering = ordering;
    bench.broker.ensure_group(&cfg).await?;
    bench.broker.publish_group_config(&cfg).await?;

    let handled = Arc::new(AtomicU64::new(0));
    let first: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
    let worker = Worker::new(WorkerOptions::new(
        &bench.url,
        &topic.namespace,
        &group,
        "bench-0",
    ))
    .handle_signals(false);
    let shutdown = worker.shutdown_handle();
    let total = bench.messages;
    let counter = handled.clone();
    let first_seen = first.clone();
    let running = tokio::spawn(worker.run(move |_msg, _ctx| {
        first_seen.get_or_init(Instant::now);
        if counter.fetch_add(1, AtomicOrdering::AcqRel) + 1 == total
            && let Some(tx) = done_tx.lock().ok().and_then(|mut g| g.take())
        {
            let _ = tx.send(Instant::now());
        }
        async { Ok::<(), HandlerError>(()) }
    }));
    let finished = tokio::time::timeout(Duration::from_secs(600), done_rx).await;
    shutdown.shutdown();
    running.await??;
    let finished = finished
        .context("the worker did not handle every message within 10 minutes")?
        .context("the worker stopped before handling every message")?;
    let started = first.get().copied().unwrap_or(finished);
    bench.broker.delete_group(&cfg).await?;
    Ok(finished.duration_since(started))
}

/// A named case and the index of the raw case it is compared with.
struct Case {
    name: &'static str,
    run: PublishCase,
    baseline: usize,
}

fn publish_cases() -> Vec<Case> {
    vec![
        Case {
            name: "raw async-nats publish (pipelined acks)",
            run: raw_publish,
            baseline: 0,
        },
        Case {
            name: "sluice Producer, keyless",
            run: sdk_publish(false),
            baseline: 0,
        },
        Case {
            name: "raw async-nats publish + Sluice-Key header",
            run: raw_publish_keyed,
            baseline: 2,
        },
        Case {
            name: "sluice Producer, keyed",
            run: sdk_publish(true),
            baseline: 2,
        },
    ]
}

/// The raw baseline first; SDK consumer cases (the `Worker`) are compared with it.
fn consume_cases() -> Vec<Case> {
    let raw: ConsumeCase = raw_consume;
    vec![
        Case {
            name: "raw async-nats pull consumer (explicit ack each)",
            run: raw,
            baseline: 0,
        },
        Case {
            name: "sluice Worker, ordering=partition (at-least-once)",
            run: worker_partition_ordered,
            baseline: 0,
        },
        Case {
            name: "sluice Worker, ordering=none (at-least-once, 16 concurrent)",
            run: worker_unordered,
            baseline: 0,
        },
    ]
}

/// Fills a fresh topic with `bench.messages` messages (raw publish) for a consume case.
async fn filled_topic(bench: &mut Bench) -> Result<ResourceRef> {
    let topic = bench.fresh_topic("consume").await?;
    raw_publish(bench, &topic).await?;
    Ok(topic)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

struct Row {
    section: &'static str,
    name: &'static str,
    elapsed: Duration,
    rate: f64,
    ratio: f64,
    baseline: &'static str,
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let messages = env_u64("SLUICE_BENCH_MESSAGES", 100_000)?;
    let runs = env_u64("SLUICE_BENCH_RUNS", 3)?.max(1);
    let server = NatsServer::start(ServerOptions {
        max_file_store: 8 << 30,
        ..Default::default()
    })
    .await?;
    let broker = Broker::connect(&ConnectOptions::from_url_list(&server.url())).await?;
    let mut bench = Bench {
        broker,
        url: server.url(),
        messages,
        payload: bytes::Bytes::from(vec![b'x'; PAYLOAD_BYTES]),
        topic_seq: 0,
    };
    eprintln!(
        "nats-server at {}, {messages} messages of {PAYLOAD_BYTES} B per case, {runs} runs, median reported",
        server.url()
    );

    // `SLUICE_BENCH_ONLY=consume` (or `publish`) runs one side only.
    let only = std::env::var("SLUICE_BENCH_ONLY").unwrap_or_default();
    let mut rows = Vec::new();
    for (section, cases, consume) in [
        ("publish", publish_cases(), false),
        ("consume", consume_cases(), true),
    ] {
        if !only.is_empty() && only != section {
            continue;
        }
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
        // Interleave the cases run by run, so drift of a shared machine hits them alike.
        for run in 0..runs {
            for (i, case) in cases.iter().enumerate() {
                let name = case.name;
                let topic = if consume {
                    filled_topic(&mut bench).await?
                } else {
                    bench.fresh_topic("publish").await?
                };
                let elapsed = (case.run)(&bench, &topic)
                    .await
                    .with_context(|| format!("case {name:?}, run {run}"))?;
                eprintln!(
                    "  run {run}: {name}: {elapsed:.2?} ({:.0} msg/s)",
                    messages as f64 / elapsed.as_secs_f64()
                );
                samples[i].push(elapsed);
                bench.delete(&topic).await?;
            }
        }
        let medians: Vec<Duration> = samples.into_iter().map(median).collect();
        for (case, &elapsed) in cases.iter().zip(&medians) {
            let baseline = medians.get(case.baseline).copied().unwrap_or(elapsed);
            rows.push(Row {
                section,
                name: case.name,
                baseline: cases.get(case.baseline).map_or("", |c| c.name),
                elapsed,
                rate: messages as f64 / elapsed.as_secs_f64(),
                ratio: baseline.as_secs_f64() / elapsed.as_secs_f64(),
            });
        }
    }

    println!("| side | case | median time | msgs/s | ratio | compared with |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.3} s | {:.0} | {:.2} | {} |",
            row.section,
            row.name,
            row.elapsed.as_secs_f64(),
            row.rate,
            row.ratio,
            row.baseline
        );
    }
    Ok(())
}
