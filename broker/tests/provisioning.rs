//! Provisioning against a real nats-server started by the harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use async_nats::jetstream::consumer::{PriorityPolicy, pull};
use futures::StreamExt;
use sluice_broker::config::{
    DlqSettings, QueueSettings, QueueSource, Retention, SourceKind, SourceRef, TopicSettings,
};
use sluice_broker::{ConfigUpdate, ErrorKind, GroupConfig, ResourceRef, names};
use sluice_testkit::Harness;

fn topic_settings(partitions: u32) -> TopicSettings {
    TopicSettings {
        partitions,
        ..Default::default()
    }
}

#[tokio::test]
async fn topic_ensure_is_idempotent_updates_in_place_and_refuses_shrink() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let orders = ResourceRef::new("shop", "orders").unwrap();

    let created = broker
        .ensure_topic(&orders, &topic_settings(3))
        .await
        .unwrap();
    assert_eq!(created.created.len(), 3, "{created:?}");
    for p in 0..3 {
        let mut s = broker
            .jetstream()
            .get_stream(names::topic_stream(&orders, p))
            .await
            .unwrap();
        assert_eq!(
            s.info().await.unwrap().config.subjects,
            vec![names::topic_subject(&orders, p)]
        );
    }

    let again = broker
        .ensure_topic(&orders, &topic_settings(3))
        .await
        .unwrap();
    assert!(again.is_noop(), "{again:?}");
    assert_eq!(again.unchanged.len(), 3);

    // Write something so we can check nothing is lost by updates or a refused shrink.
    for i in 0..10u32 {
        broker
            .jetstream()
            .publish(names::topic_subject(&orders, i % 3), format!("m{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut retained = topic_settings(3);
    retained.retention = Retention {
        max_age_ms: Some(3_600_000),
        max_bytes: None,
        max_messages: Some(1000),
    };
    let updated = broker.ensure_topic(&orders, &retained).await.unwrap();
    assert_eq!(updated.updated.len(), 3, "{updated:?}");
    let mut s0 = broker
        .jetstream()
        .get_stream(names::topic_stream(&orders, 0))
        .await
        .unwrap();
    let info = s0.info().await.unwrap().clone();
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.config.max_messages, 1000);
    assert_eq!(info.state.messages, 4, "update kept the messages");

    let err = broker
        .ensure_topic(&orders, &topic_settings(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported);
    assert!(err.to_string().contains("has 3 partitions"), "{err}");
    assert_eq!(broker.topic_partition_count(&orders).await.unwrap(), 3);
    let status = broker.topic_status(&orders, 3).await.unwrap();
    assert_eq!(status.iter().map(|p| p.messages).sum::<u64>(), 10);

    retained.partitions = 5;
    let grown = broker.ensure_topic(&orders, &retained).await.unwrap();
    assert_eq!(grown.created.len(), 2);
    assert_eq!(grown.unchanged.len(), 3);

    assert_eq!(broker.delete_topic(&orders).await.unwrap(), 5);
    assert_eq!(broker.topic_partition_count(&orders).await.unwrap(), 0);
}

#[tokio::test]
async fn group_consumers_carry_backoff_max_deliver_and_pin() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let orders = ResourceRef::new("shop", "orders").unwrap();
    broker
        .ensure_topic(&orders, &topic_settings(3))
        .await
        .unwrap();
    let mut cfg = GroupConfig::new(
        "shop",
        "billing",
        SourceRef {
            kind: SourceKind::Topic,
            name: "orders".into(),
            partitions: 3,
        },
    );
    cfg.retry.max_attempts = 3;
    cfg.ack_wait_ms = 2_000;
    cfg.retry.backoff.initial_ms = 1_000;
    cfg.retry.backoff.multiplier = 3.0;
    cfg.retry.backoff.max_ms = 60_000;

    let changes = broker.ensure_group(&cfg).await.unwrap();
    assert_eq!(
        changes.created.len(),
        4,
        "3 consumers + config: {changes:?}"
    );
    for p in 0..3 {
        let stream = broker
            .jetstream()
            .get_stream(names::topic_stream(&orders, p))
            .await
            .unwrap();
        let info = stream.consumer_info("G__billing").await.unwrap();
        assert_eq!(info.config.max_deliver, 4);
        assert_eq!(
            info.config.backoff,
            vec![
                Duration::from_secs(2),
                Duration::from_secs(3),
                Duration::from_secs(9)
            ]
        );
        assert_eq!(info.config.priority_policy, PriorityPolicy::PinnedClient);
        assert_eq!(info.config.priority_groups, vec!["sluice".to_string()]);
    }
    assert!(broker.ensure_group(&cfg).await.unwrap().is_noop());

    cfg.retry.max_attempts = 5;
    let changes = broker.ensure_group(&cfg).await.unwrap();
    assert_eq!(changes.updated.len(), 4, "{changes:?}");

    let store = broker.group_config_store().await.unwrap();
    assert_eq!(
        store.get("shop", "billing").await.unwrap(),
        Some(cfg.clone())
    );

    broker.delete_group(&cfg).await.unwrap();
    assert_eq!(store.get("shop", "billing").await.unwrap(), None);
    let stream = broker
        .jetstream()
        .get_stream(names::topic_stream(&orders, 0))
        .await
        .unwrap();
    assert!(stream.consumer_info("G__billing").await.is_err());
}

#[tokio::test]
async fn group_on_missing_source_is_not_found() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let cfg = GroupConfig::new(
        "shop",
        "billing",
        SourceRef {
            kind: SourceKind::Queue,
            name: "nope".into(),
            partitions: 1,
        },
    );
    let err = broker.ensure_group(&cfg).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("create the Queue first"), "{err}");
}

#[tokio::test]
async fn lag_is_published_minus_acknowledged() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let orders = ResourceRef::new("shop", "orders").unwrap();
    broker
        .ensure_topic(&orders, &topic_settings(2))
        .await
        .unwrap();
    let cfg = GroupConfig::new(
        "shop",
        "audit",
        SourceRef {
            kind: SourceKind::Topic,
            name: "orders".into(),
            partitions: 2,
        },
    );
    broker.ensure_group(&cfg).await.unwrap();
    for i in 0..20u32 {
        broker
            .jetstream()
            .publish(names::topic_subject(&orders, i % 2), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(broker.group_lag(&cfg).await.unwrap().total(), 20);

    // Acknowledge 4 of partition 0's 10 messages through the pinned consumer.
    let stream = broker
        .jetstream()
        .get_stream(names::topic_stream(&orders, 0))
        .await
        .unwrap();
    let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> =
        stream.get_consumer("G__audit").await.unwrap();
    let mut messages = consumer
        .stream()
        .group(names::PRIORITY_GROUP)
        .max_messages_per_batch(4)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    for _ in 0..4 {
        let msg = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        msg.double_ack().await.unwrap();
    }
    drop(messages);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let lag = broker.group_lag(&cfg).await.unwrap();
        if lag.total() == 16 && lag.partitions[0].acked_offset == 4 {
            assert_eq!(lag.partitions[1].lag(), 10);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag never settled at 16: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn queue_fans_in_from_topic_and_refuses_retention_change() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let uploads = ResourceRef::new("media", "uploads").unwrap();
    broker
        .ensure_topic(&uploads, &topic_settings(2))
        .await
        .unwrap();
    let encode = ResourceRef::new("media", "encode").unwrap();
    let settings = QueueSettings {
        sources: vec![QueueSource {
            topic: "uploads".into(),
            partitions: 2,
        }],
        ..Default::default()
    };
    // The stream and one relay consumer per source partition.
    assert_eq!(
        broker
            .ensure_queue(&encode, &settings)
            .await
            .unwrap()
            .created
            .len(),
        3
    );
    let relays = sluice_broker::FanoutRelays::new();
    relays.ensure(&broker, &encode, &settings.sources);
    assert!(
        broker
            .ensure_queue(&encode, &settings)
            .await
            .unwrap()
            .is_noop()
    );
    for i in 0..6u32 {
        broker
            .jetstream()
            .publish(names::topic_subject(&uploads, i % 2), "video".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = broker
            .jetstream()
            .get_stream(names::queue_stream(&encode))
            .await
            .unwrap();
        if s.info().await.unwrap().state.messages == 6 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fan-out relay never copied the messages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A topic stream of the same name as a queue would need another retention kind.
    let clash = ResourceRef::new("media", "clash").unwrap();
    broker
        .jetstream()
        .create_stream(async_nats::jetstream::stream::Config {
            name: names::queue_stream(&clash),
            subjects: vec![names::queue_subject(&clash)],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = broker
        .ensure_queue(&clash, &QueueSettings::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported);
}

#[tokio::test]
async fn dlq_depth_and_config_channel_watch() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let dlq = ResourceRef::new("shop", "orders-dlq").unwrap();
    broker
        .ensure_dlq(&dlq, &DlqSettings::default())
        .await
        .unwrap();
    let empty = broker.dlq_status(&dlq).await.unwrap();
    assert_eq!((empty.depth, empty.oldest_age), (0, None));
    broker
        .jetstream()
        .publish(names::dlq_subject(&dlq), "dead".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let status = broker.dlq_status(&dlq).await.unwrap();
    assert_eq!(status.depth, 1);
    assert!(status.oldest_age.is_some());

    let store = broker.group_config_store().await.unwrap();
    let mut cfg = GroupConfig::new(
        "shop",
        "billing",
        SourceRef {
            kind: SourceKind::Topic,
            name: "orders".into(),
            partitions: 1,
        },
    );
    store.put(&cfg).await.unwrap();
    let mut watch = store.watch("shop", "billing").await.unwrap().boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, ConfigUpdate::Put(Box::new(cfg.clone())));
    cfg.retry.max_attempts = 9;
    store.put(&cfg).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second, ConfigUpdate::Put(Box::new(cfg.clone())));
    store.remove("shop", "billing").await.unwrap();
    let third = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third, ConfigUpdate::Removed);
}

#[tokio::test]
async fn group_whose_partitions_fall_short_of_its_topic_is_a_mismatch() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let orders = ResourceRef::new("shop", "orders").unwrap();
    broker
        .ensure_topic(&orders, &topic_settings(3))
        .await
        .unwrap();
    let source = |partitions| SourceRef {
        kind: SourceKind::Topic,
        name: "orders".into(),
        partitions,
    };
    let short = GroupConfig::new("shop", "billing", source(2));
    let err = broker.ensure_group(&short).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Mismatch);
    assert!(err.to_string().contains("has 3 on the broker"), "{err}");
    // Nothing was created for the mismatched group.
    let stream = broker
        .jetstream()
        .get_stream(names::topic_stream(&orders, 0))
        .await
        .unwrap();
    assert!(stream.consumer_info("G__billing").await.is_err());

    let right = GroupConfig::new("shop", "billing", source(3));
    broker.ensure_group(&right).await.unwrap();
    let by_name = broker
        .group_lag_by_name(&ResourceRef::new("shop", "billing").unwrap())
        .await
        .unwrap();
    assert_eq!(by_name, broker.group_lag(&right).await.unwrap());
    let missing = broker
        .group_lag_by_name(&ResourceRef::new("shop", "nobody").unwrap())
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn dead_letters_are_listed_read_and_removed() {
    use sluice_broker::dlq::DeadLetter;
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let dlq = ResourceRef::new("shop", "orders-dlq").unwrap();
    broker
        .ensure_dlq(&dlq, &DlqSettings::default())
        .await
        .unwrap();
    let letter = DeadLetter {
        source_kind: SourceKind::Topic,
        source_name: "orders".into(),
        source_subject: names::topic_subject(&ResourceRef::new("shop", "orders").unwrap(), 1),
        partition: 1,
        offset: 7,
        group: "billing".into(),
        attempts: 3,
        last_error: "card declined".into(),
        first_failure: time::OffsetDateTime::UNIX_EPOCH,
        last_failure: time::OffsetDateTime::UNIX_EPOCH,
        original_id: "order-7".into(),
    };
    let mut original = async_nats::HeaderMap::new();
    original.insert(sluice_broker::dlq::headers::KEY, "customer-7");
    broker
        .jetstream()
        .publish_with_headers(
            names::dlq_subject(&dlq),
            letter.encode(Some(&original)),
            "order 7".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    broker
        .jetstream()
        .publish(names::dlq_subject(&dlq), "not written by sluice".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let read = broker.dead_letters(&dlq).await.unwrap();
    assert_eq!(read.letters.len(), 1);
    assert_eq!(read.skipped.len(), 1);
    assert_eq!(read.skipped[0].kind(), ErrorKind::Decode);
    let first = &read.letters[0];
    assert_eq!(first.sequence, 1);
    assert_eq!(first.envelope, letter);
    assert_eq!(first.key(), Some("customer-7"));
    assert_eq!(&first.payload[..], b"order 7");

    let one = broker.dead_letter(&dlq, 1).await.unwrap();
    assert_eq!(one.envelope, letter);
    assert_eq!(
        broker.dead_letter(&dlq, 2).await.unwrap_err().kind(),
        ErrorKind::Decode
    );
    broker.remove_dead_letter(&dlq, 1).await.unwrap();
    assert_eq!(
        broker.dead_letter(&dlq, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(broker.dead_letters(&dlq).await.unwrap().letters.is_empty());
}

#[tokio::test]
async fn queues_with_delay_and_priorities_get_level_subjects_consumers_and_schedules() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let q = ResourceRef::new("shop", "render").unwrap();
    let plain = QueueSettings::default();
    broker.ensure_queue(&q, &plain).await.unwrap();
    let leveled = QueueSettings {
        priorities: 3,
        delay: Some(sluice_broker::config::DelaySettings {
            max_delay_ms: 60_000,
        }),
        ..Default::default()
    };
    // Turning both on is an in-place update.
    let changes = broker.ensure_queue(&q, &leveled).await.unwrap();
    assert_eq!(changes.updated.len(), 1, "{changes:?}");
    assert!(broker.ensure_queue(&q, &leveled).await.unwrap().is_noop());
    let mut stream = broker
        .jetstream()
        .get_stream(names::queue_stream(&q))
        .await
        .unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert!(config.allow_message_schedules);
    assert_eq!(
        config.subjects,
        vec![
            "sluice.q.shop.render",
            "sluice.q.shop.render.p1",
            "sluice.q.shop.render.p2",
            "sluice.q.shop.render.sched.>"
        ]
    );
    let features = broker.queue_features(&q).await.unwrap();
    assert_eq!(features.priorities, 3);
    assert_eq!(features.max_delay, Some(Duration::from_secs(60)));
    // Levels only grow.
    let err = broker.ensure_queue(&q, &plain).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported);
    assert!(err.to_string().contains("only grow"), "{err}");
    // Delay off: the stream keeps schedules (JetStream cannot switch them off), producers learn
    // that delays are off.
    let no_delay = QueueSettings {
        priorities: 3,
        ..Default::default()
    };
    broker.ensure_queue(&q, &no_delay).await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert!(config.allow_message_schedules);
    assert_eq!(broker.queue_features(&q).await.unwrap().max_delay, None);

    // One filtered consumer per level.
    let mut cfg = GroupConfig::new(
        "shop",
        "renderers",
        SourceRef {
            kind: SourceKind::Queue,
            name: "render".into(),
            partitions: 1,
        },
    );
    cfg.priorities = 3;
    broker.ensure_group(&cfg).await.unwrap();
    for (level, durable) in [(0, "G__renderers"), (2, "G__renderers__p2")] {
        let info = stream.consumer_info(durable).await.unwrap();
        assert_eq!(
            info.config.filter_subject,
            names::queue_level_subject(&q, level)
        );
    }
    let lag = broker.group_lag(&cfg).await.unwrap();
    assert_eq!(lag.partitions.len(), 3);
    let levels = broker.queue_levels(&q).await.unwrap();
    assert_eq!(levels.len(), 3);
    assert!(levels.iter().all(|l| l.due == 0 && l.scheduled == 0));
}

#[tokio::test]
async fn stream_catalog_answers_for_topics_exactly_as_desired_only() {
    let Harness {
        server: _server,
        broker,
    } = Harness::start().await;
    let orders = ResourceRef::new("shop", "orders").unwrap();
    let payments = ResourceRef::new("shop", "payments").unwrap();
    broker
        .ensure_topic(&orders, &topic_settings(3))
        .await
        .unwrap();
    broker
        .ensure_topic(&payments, &topic_settings(2))
        .await
        .unwrap();
    broker
        .jetstream()
        .publish(names::topic_subject(&orders, 1), "one".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // A stream of 300 more so the listing spans two pages (256 a page).
    for i in 0..300 {
        broker
            .jetstream()
            .create_stream(async_nats::jetstream::stream::Config {
                name: format!("filler-{i}"),
                subjects: vec![format!("filler.{i}")],
                storage: async_nats::jetstream::stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let catalog = broker.stream_catalog().await.unwrap();
    assert_eq!(catalog.len(), 305, "every stream of every page is listed");
    let parts = catalog
        .topic_in_place(&orders, &topic_settings(3))
        .expect("the topic's streams are as desired");
    assert_eq!(parts.len(), 3);
    assert_eq!(
        parts.iter().map(|p| p.messages).collect::<Vec<_>>(),
        [0, 1, 0],
        "state comes from the listing"
    );
    assert_eq!(parts[1].last_offset, 1);

    let longer = TopicSettings {
        retention: Retention {
            max_age_ms: Some(3_600_000),
            ..Default::default()
        },
        ..topic_settings(3)
    };
    assert!(
        catalog.topic_in_place(&orders, &longer).is_none(),
        "a changed retention needs provisioning"
    );
    assert!(
        catalog
            .topic_in_place(&orders, &topic_settings(4))
            .is_none(),
        "a missing partition needs provisioning"
    );
    assert!(
        catalog
            .topic_in_place(&orders, &topic_settings(2))
            .is_none(),
        "a shrink is for provisioning to refuse"
    );
    let unknown = ResourceRef::new("shop", "unknown").unwrap();
    assert!(
        catalog
            .topic_in_place(&unknown, &topic_settings(1))
            .is_none()
    );
}
