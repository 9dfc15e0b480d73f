//! Publishes N keyed messages to a topic, pipelined, and reports where they went.
//!
//! ```sh
//! SLUICE_BROKER_URL=nats://127.0.0.1:4222 SLUICE_NAMESPACE=default \
//!   cargo run -p sluice-worker --example producer -- orders 1000
//! ```
//!
//! Arguments: topic name (required), message count (default 100). Keys are `key-<i % 16>`,
//! so every key keeps its order on its partition. The Topic must exist (created by the operator,
//! `sluice dev`, or `Broker::ensure_topic`).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use sluice_worker::producer::{Producer, ProducerConfig, Record};

#[tokio::main]
async fn main() -> Result<()> {
    let _tracing = sluice_worker::telemetry::init_tracing()?;
    let mut args = std::env::args().skip(1);
    let Some(topic) = args.next() else {
        bail!("usage: producer <topic> [count]   (env: SLUICE_BROKER_URL, SLUICE_NAMESPACE)");
    };
    let count: u64 = match args.next() {
        Some(n) => n
            .parse()
            .with_context(|| format!("count {n:?} is not a number"))?,
        None => 100,
    };
    let namespace = std::env::var("SLUICE_NAMESPACE").unwrap_or_else(|_| "default".into());

    let producer = Producer::connect_from_env(ProducerConfig::default()).await?;
    let handle = producer.topic(&namespace, &topic).await?;
    tracing::info!(%namespace, %topic, partitions = handle.partitions(), count, "publishing");

    let started = Instant::now();
    let mut receipts = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..count {
        let record = Record::new(format!("message {i}"))
            .key(format!("key-{}", i % 16))
            .id(format!("example-{}-{i}", std::process::id()));
        receipts.push(handle.send(record).await?);
    }
    let mut per_partition: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for receipt in receipts {
        let at = receipt.await?;
        let entry = per_partition.entry(at.partition).or_insert((0, at.offset));
        entry.0 += 1;
        entry.1 = entry.1.max(at.offset);
    }
    let elapsed = started.elapsed();
    for (partition, (messages, last_offset)) in &per_partition {
        println!("partition {partition}: {messages} messages, last offset {last_offset}");
    }
    println!(
        "published {count} messages in {elapsed:.2?} ({:.0} msg/s)",
        count as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
