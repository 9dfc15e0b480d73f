//! The producer against a real nats-server (one per test).

use std::collections::HashMap;

use anyhow::Result;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use sluice_broker::config::{QueueSettings, TopicSettings};
use sluice_broker::dlq::headers;
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::partitioner::partition_for_key;
use sluice_broker::{Broker, ConnectOptions, ResourceRef, names};
use sluice_worker::producer::{Producer, ProducerConfig, ProducerErrorKind, Record};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

struct Env {
    _server: NatsServer,
    broker: Broker,
    topic: ResourceRef,
}

async fn env_with_topic(partitions: u32) -> Result<Env> {
    let server = NatsServer::start(ServerOptions::default()).await?;
    let broker = Broker::connect(&ConnectOptions::from_url_list(&server.url())).await?;
    let topic = ResourceRef::new("shop", "orders")?;
    broker
        .ensure_topic(
            &topic,
            &TopicSettings {
                partitions,
                ..Default::default()
            },
        )
        .await?;
    Ok(Env {
        _server: server,
        broker,
        topic,
    })
}

async fn stored(broker: &Broker, topic: &ResourceRef, partition: u32) -> Result<u64> {
    let mut stream = broker
        .jetstream()
        .get_stream(names::topic_stream(topic, partition))
        .await?;
    Ok(stream.info().await?.state.messages)
}

#[tokio::test]
async fn keyed_messages_land_on_the_kafka_murmur2_partition_with_their_key() -> Result<()> {
    let env = env_with_topic(4).await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let orders = producer.topic("shop", "orders").await?;
    assert_eq!(orders.partitions(), 4);

    let mut receipts = Vec::new();
    for i in 0..40 {
        let key = format!("customer-{}", i % 13);
        let receipt = orders
            .send(Record::new(format!("order {i}")).key(key.clone()))
            .await?;
        receipts.push((key, i, receipt));
    }
    let mut seen_partitions = std::collections::HashSet::new();
    for (key, i, receipt) in receipts {
        let expected = partition_for_key(key.as_bytes(), 4);
        assert_eq!(receipt.partition(), expected);
        let at = receipt.await?;
        assert_eq!(at.partition, expected, "key {key}");
        seen_partitions.insert(at.partition);
        // The broker stored exactly this message at that partition and offset.
        let stream = env
            .broker
            .jetstream()
            .get_stream(names::topic_stream(&env.topic, at.partition))
            .await?;
        let message = stream.get_raw_message(at.offset).await?;
        assert_eq!(message.payload, format!("order {i}").as_bytes());
        assert_eq!(
            message.headers.get(headers::KEY).map(|v| v.as_str()),
            Some(key.as_str())
        );
    }
    assert!(
        seen_partitions.len() > 1,
        "13 keys all hashed to one partition"
    );
    Ok(())
}

#[tokio::test]
async fn keyless_messages_spread_evenly_over_partitions() -> Result<()> {
    let env = env_with_topic(3).await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let orders = producer.topic("shop", "orders").await?;
    let mut per_partition: HashMap<u32, u64> = HashMap::new();
    let receipts = orders
        .send_all((0..300).map(|i| Record::new(format!("m{i}"))))
        .await?;
    for receipt in receipts {
        *per_partition.entry(receipt.await?.partition).or_default() += 1;
    }
    for p in 0..3 {
        assert_eq!(per_partition.get(&p), Some(&100), "{per_partition:?}");
        assert_eq!(stored(&env.broker, &env.topic, p).await?, 100);
    }
    Ok(())
}

#[tokio::test]
async fn a_message_id_is_stored_once() -> Result<()> {
    let env = env_with_topic(2).await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let orders = producer.topic("shop", "orders").await?;
    let first = orders
        .publish(Record::new("pay 10").key("c1").id("payment-1"))
        .await?;
    let again = orders
        .publish(Record::new("pay 10").key("c1").id("payment-1"))
        .await?;
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset),
        (first.partition, first.offset)
    );
    let other = orders
        .publish(Record::new("pay 20").key("c1").id("payment-2"))
        .await?;
    assert_eq!(other.offset, first.offset + 1);
    assert_eq!(stored(&env.broker, &env.topic, first.partition).await?, 2);
    let stream = env
        .broker
        .jetstream()
        .get_stream(names::topic_stream(&env.topic, first.partition))
        .await?;
    let message = stream.get_raw_message(first.offset).await?;
    assert_eq!(
        message
            .headers
            .get(headers::NATS_MSG_ID)
            .map(|v| v.as_str()),
        Some("payment-1")
    );
    Ok(())
}

#[tokio::test]
async fn outstanding_acks_never_exceed_the_limit_and_resolve_in_offset_order() -> Result<()> {
    let env = env_with_topic(1).await?;
    let limit = 8;
    let producer = Producer::new(
        env.broker.clone(),
        ProducerConfig {
            max_in_flight: limit,
            ..Default::default()
        },
    )?;
    let orders = producer.topic("shop", "orders").await?;
    let mut receipts = Vec::new();
    for i in 0..500 {
        receipts.push(
            orders
                .send(Record::new(vec![b'x'; 128]).key(format!("k{i}")))
                .await?,
        );
        let stats = producer.stats();
        assert!(stats.in_flight <= limit, "{stats:?}");
    }
    producer.flush().await?;
    let stats = producer.stats();
    assert!(stats.peak_in_flight <= limit, "{stats:?}");
    assert!(
        stats.peak_in_flight > 1,
        "publishes were not pipelined: {stats:?}"
    );
    assert_eq!((stats.in_flight, stats.acked, stats.failed), (0, 500, 0));
    for (i, receipt) in receipts.into_iter().enumerate() {
        let at = receipt.await?;
        assert_eq!((at.partition, at.offset), (0, i as u64 + 1));
    }
    assert_eq!(stored(&env.broker, &env.topic, 0).await?, 500);
    Ok(())
}

#[tokio::test]
async fn a_missing_topic_or_queue_is_a_clear_not_found() -> Result<()> {
    let env = env_with_topic(1).await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let err = producer.topic("shop", "nope").await.unwrap_err();
    assert_eq!(err.kind(), ProducerErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains("topic shop/nope does not exist on the broker: create the Topic first"),
        "{err}"
    );
    let err = producer.queue("shop", "nope").await.unwrap_err();
    assert_eq!(err.kind(), ProducerErrorKind::NotFound);
    assert!(err.to_string().contains("create the Queue first"), "{err}");

    // A topic deleted under a live handle: JetStream answers "no responders".
    let orders = producer.topic("shop", "orders").await?;
    env.broker.delete_topic(&env.topic).await?;
    let err = orders.publish(Record::new("lost?")).await.unwrap_err();
    assert_eq!(err.kind(), ProducerErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains("topic shop/orders does not exist on the broker: create the Topic first"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_ack_with_a_dropped_receipt_fails_the_next_flush() -> Result<()> {
    let env = env_with_topic(1).await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let orders = producer.topic("shop", "orders").await?;
    drop(orders.send(Record::new("ok")).await?);
    producer.flush().await?;
    env.broker.delete_topic(&env.topic).await?;
    for _ in 0..3 {
        drop(orders.send(Record::new("lost")).await?);
    }
    let err = producer.flush().await.unwrap_err();
    assert!(err.to_string().contains("3 publish(es) failed"), "{err}");
    assert!(err.to_string().contains("create the Topic first"), "{err}");
    // Reported once.
    producer.flush().await?;
    assert_eq!(producer.stats().failed, 3);
    Ok(())
}

#[tokio::test]
async fn a_refresh_picks_up_new_partitions() -> Result<()> {
    let env = env_with_topic(2).await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let orders = producer.topic("shop", "orders").await?;
    assert_eq!(orders.partitions(), 2);
    env.broker
        .ensure_topic(
            &env.topic,
            &TopicSettings {
                partitions: 5,
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(orders.refresh().await?, 5);
    for i in 0..20 {
        let key = format!("user-{i}");
        let at = orders.publish(Record::new("x").key(key.clone())).await?;
        assert_eq!(at.partition, partition_for_key(key.as_bytes(), 5));
    }
    Ok(())
}

#[tokio::test]
async fn queues_receive_messages_at_partition_zero() -> Result<()> {
    let env = env_with_topic(1).await?;
    let jobs = ResourceRef::new("shop", "jobs")?;
    env.broker
        .ensure_queue(&jobs, &QueueSettings::default())
        .await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let queue = producer.queue("shop", "jobs").await?;
    let first = queue.publish(Record::new("job 1").key("tenant-a")).await?;
    let second = queue.publish(Record::new("job 2")).await?;
    assert_eq!((first.partition, first.offset), (0, 1));
    assert_eq!((second.partition, second.offset), (0, 2));
    let stream = env
        .broker
        .jetstream()
        .get_stream(names::queue_stream(&jobs))
        .await?;
    let message = stream.get_raw_message(1).await?;
    assert_eq!(
        message.headers.get(headers::KEY).map(|v| v.as_str()),
        Some("tenant-a")
    );
    Ok(())
}

#[tokio::test]
async fn invalid_records_are_refused_before_sending() -> Result<()> {
    let env = env_with_topic(1).await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let orders = producer.topic("shop", "orders").await?;
    let err = orders
        .send(Record::new("x").key("a\r\nInjected: 1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProducerErrorKind::InvalidMessage);
    let err = orders.send(Record::new("x").id("")).await.unwrap_err();
    assert_eq!(err.kind(), ProducerErrorKind::InvalidMessage);
    let err = Producer::new(
        env.broker.clone(),
        ProducerConfig {
            max_in_flight: 0,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ProducerErrorKind::InvalidConfig);
    assert_eq!(stored(&env.broker, &env.topic, 0).await?, 0);
    Ok(())
}

#[tokio::test]
async fn the_current_trace_travels_in_the_message_headers() -> Result<()> {
    let env = env_with_topic(1).await?;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default())?;
    let orders = producer.topic("shop", "orders").await?;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // #[tokio::test] runs on one thread, so a thread-local default covers the publish.
    let _guard = tracing::subscriber::set_default(subscriber);
    let span = tracing::info_span!("checkout");
    let trace_id = span.context().span().span_context().trace_id();
    let at = orders
        .send(Record::new("traced"))
        .instrument(span.clone())
        .await?
        .await?;
    let stream = env
        .broker
        .jetstream()
        .get_stream(names::topic_stream(&env.topic, 0))
        .await?;
    let message = stream.get_raw_message(at.offset).await?;
    let traceparent = message
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "traceparent {traceparent:?}, trace {trace_id}"
    );
    let consumer = tracing::info_span!("handle");
    assert!(sluice_worker::telemetry::set_parent_from_headers(
        &consumer,
        &message.headers
    ));
    assert_eq!(
        consumer.context().span().span_context().trace_id(),
        trace_id
    );
    Ok(())
}
