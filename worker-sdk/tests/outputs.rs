//! Outputs by name (`Context::topic`, `Context::queue`) and observer events that name their
//! message, against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_broker::config::{QueueSettings, TopicSettings};
use sluice_broker::partitioner::partition_for_key;
use sluice_broker::{ResourceRef, names};
use sluice_testkit::*;
use sluice_worker::{Event, HandlerError, MessageEvent, Observer, Worker, WorkerOptions};

/// An event as seen: event, partition, offset, key.
type Sighting = (Event, u32, u64, Option<String>);

#[derive(Debug, Default)]
struct Seen(Mutex<Vec<Sighting>>);

impl Observer for Seen {
    fn event(&self, e: &MessageEvent<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((e.event, e.partition, e.offset, e.key.map(String::from)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_go_to_topics_and_queues_by_name_partitioned_by_key() {
    let env = Harness::start().await;
    let cfg = topic_group("orders", "billing", 1);
    env.provision(&cfg).await;
    let invoices = ResourceRef::new(NS, "invoices").unwrap();
    env.broker
        .ensure_topic(
            &invoices,
            &TopicSettings {
                partitions: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let emails = ResourceRef::new(NS, "emails").unwrap();
    env.broker
        .ensure_queue(&emails, &QueueSettings::default())
        .await
        .unwrap();

    let seen = Arc::new(Seen::default());
    let worker = Worker::new(WorkerOptions::new(&env.url(), NS, "billing", "m1"))
        .handle_signals(false)
        .observer(seen.clone());
    let stop = worker.shutdown_handle();
    let run = tokio::spawn(worker.run(|msg, ctx| async move {
        let key = msg.key.clone().unwrap_or_default();
        ctx.topic("invoices")
            .send(key, msg.payload.clone())
            .await
            .map_err(HandlerError::retryable)?;
        ctx.queue("emails")
            .send(msg.payload)
            .await
            .map_err(HandlerError::retryable)?;
        Ok(())
    }));
    let offset = env
        .publish("orders", 0, "order-1", Some("customer-7"), "o1")
        .await;

    let p = partition_for_key(b"customer-7", 4);
    let invoice_stream = env
        .broker
        .jetstream()
        .get_stream(names::topic_stream(&invoices, p))
        .await
        .unwrap();
    let email_stream = env
        .broker
        .jetstream()
        .get_stream(names::queue_stream(&emails))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (invoice, email) = loop {
        if let (Ok(i), Ok(e)) = (
            invoice_stream.get_raw_message(1).await,
            email_stream.get_raw_message(1).await,
        ) {
            break (i, e);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outputs never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(&invoice.payload[..], b"o1");
    assert_eq!(
        invoice.headers.get("Nats-Msg-Id").unwrap().as_str(),
        "order-1/0"
    );
    assert_eq!(
        invoice.headers.get("Sluice-Key").unwrap().as_str(),
        "customer-7"
    );
    assert_eq!(
        email.headers.get("Nats-Msg-Id").unwrap().as_str(),
        "order-1/1"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let processed = seen
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.0 == Event::Processed)
            .cloned();
        if let Some(s) = processed {
            assert_eq!(s, (Event::Processed, 0, offset, Some("customer-7".into())));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Processed event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.shutdown();
    run.await.unwrap().unwrap();
}
