//! Priority levels on queues against a real nats-server: a high-priority message overtakes a
//! backlog of low-priority work (within one in-flight window), and the starvation guard gives
//! lower levels their share while higher levels stay busy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use sluice_broker::config::{DelaySettings, QueueSettings};
use sluice_testkit::*;
use sluice_worker::producer::{Producer, ProducerConfig, Record};

fn prioritized(levels: u32) -> QueueSettings {
    QueueSettings {
        priorities: levels,
        delay: Some(DelaySettings::default()),
        ..Default::default()
    }
}

async fn backlog(jobs: &sluice_worker::producer::QueueHandle, level: u32, n: usize) {
    for i in 0..n {
        drop(
            jobs.send_with_priority(level, Record::new(format!("p{level}-{i}")))
                .await
                .unwrap(),
        );
    }
    jobs.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_message_overtakes_a_low_priority_backlog() {
    let env = Harness::start().await;
    let mut cfg = queue_group("jobs", "crew");
    cfg.priorities = 3;
    cfg.max_concurrency = 4;
    cfg.low_priority_share = 10;
    env.provision_queue_with(&cfg, &prioritized(3)).await;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default()).unwrap();
    let jobs = producer.queue(NS, "jobs").await.unwrap();
    backlog(&jobs, 0, 200).await;
    let records: Records = Default::default();
    let mut spec = MemberSpec::new(&env, "crew", "a", &records);
    spec.work = Duration::from_millis(30);
    let _a = Member::spawn(spec);
    wait_until(
        Duration::from_secs(30),
        "the backlog is being worked",
        async || records.lock().unwrap().len() >= 20,
    )
    .await;
    jobs.publish(Record::new("urgent").priority(2))
        .await
        .unwrap();
    let published = Instant::now();
    // A delayed high-priority message also lands on its level when due.
    jobs.send_after(
        Duration::from_secs(1),
        Record::new("urgent-later").priority(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), "urgent handled", async || {
        let r = records.lock().unwrap();
        r.iter().any(|r| r.payload == "urgent") && r.iter().any(|r| r.payload == "urgent-later")
    })
    .await;
    let records = records.lock().unwrap().clone();
    let urgent = records.iter().find(|r| r.payload == "urgent").unwrap();
    let overtaken_by = records
        .iter()
        .filter(|r| r.payload.starts_with("p0-") && r.start > published && r.start < urgent.start)
        .count();
    println!(
        "low-priority handlings started between publish and handling of the urgent one: {overtaken_by}"
    );
    assert!(
        overtaken_by <= cfg.max_concurrency as usize,
        "{overtaken_by} low-priority messages started before the urgent one (window {})",
        cfg.max_concurrency
    );
    let low_left = records
        .iter()
        .filter(|r| r.payload.starts_with("p0-"))
        .count();
    assert!(
        low_left < 200,
        "the urgent message waited for the whole backlog"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_starvation_guard_gives_lower_levels_their_share() {
    let env = Harness::start().await;
    let mut cfg = queue_group("mixed", "crew");
    cfg.priorities = 2;
    cfg.max_concurrency = 2;
    cfg.low_priority_share = 25;
    env.provision_queue_with(&cfg, &prioritized(2)).await;
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default()).unwrap();
    let jobs = producer.queue(NS, "mixed").await.unwrap();
    backlog(&jobs, 1, 700).await;
    backlog(&jobs, 0, 700).await;
    let records: Records = Default::default();
    let mut spec = MemberSpec::new(&env, "crew", "a", &records);
    spec.work = Duration::from_millis(2);
    let _a = Member::spawn(spec);
    wait_until(Duration::from_secs(90), "800 handled", async || {
        records.lock().unwrap().len() >= 800
    })
    .await;
    let mut records = records.lock().unwrap().clone();
    records.sort_by_key(|r| r.start);
    // While both levels have work (the first 800 of 1400), every window of 100 handlings gives
    // the lower level its share (25, with slack for batching) and the top level the rest.
    let lows: Vec<usize> = records
        .chunks(100)
        .take(8)
        .map(|w| w.iter().filter(|r| r.payload.starts_with("p0-")).count())
        .collect();
    println!(
        "low-priority handlings per window of 100 with both levels backlogged (share 25%): {lows:?}"
    );
    for (i, low) in lows.iter().enumerate() {
        assert!(*low >= 15, "window {i}: low priority starved ({lows:?})");
        assert!(*low <= 50, "window {i}: priority not applied ({lows:?})");
    }
    wait_until(Duration::from_secs(60), "everything handled", async || {
        env.consumer_info(
            &sluice_broker::names::queue_stream(
                &sluice_broker::ResourceRef::new(NS, "mixed").unwrap(),
            ),
            "crew",
        )
        .await
        .num_pending
            == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_members_pick_up_new_priority_levels() {
    let env = Harness::start().await;
    let mut cfg = queue_group("grow", "crew");
    env.provision_queue_with(&cfg, &QueueSettings::default())
        .await;
    let records: Records = Default::default();
    let _a = Member::spawn(MemberSpec::new(&env, "crew", "a", &records));
    let producer = Producer::new(env.broker.clone(), ProducerConfig::default()).unwrap();
    let jobs = producer.queue(NS, "grow").await.unwrap();
    jobs.publish(Record::new("before")).await.unwrap();
    wait_until(
        Duration::from_secs(20),
        "handled before the change",
        async || {
            records
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.payload == "before")
        },
    )
    .await;
    // The operator's order: the queue's levels, then the group's consumers and config.
    cfg.priorities = 3;
    env.provision_queue_with(&cfg, &prioritized(3)).await;
    jobs.publish(Record::new("urgent").priority(2))
        .await
        .unwrap();
    jobs.publish(Record::new("normal")).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "both handled after the change",
        async || {
            let r = records.lock().unwrap();
            r.iter().any(|r| r.payload == "urgent") && r.iter().any(|r| r.payload == "normal")
        },
    )
    .await;
}
