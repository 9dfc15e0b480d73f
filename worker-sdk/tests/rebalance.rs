//! Membership, exclusivity, rebalancing and ordering against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_testkit::*;

/// Per partition, the offsets in handling order must be exactly publish order (no duplicates).
fn assert_exact_order(records: &[Record], partitions: u32, per_partition: u64) {
    let mut seen: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut rs: Vec<&Record> = records.iter().collect();
    rs.sort_by_key(|r| r.start);
    for r in rs {
        seen.entry(r.partition).or_default().push(r.offset);
    }
    for p in 0..partitions {
        let expected: Vec<u64> = (1..=per_partition).collect();
        assert_eq!(
            seen.get(&p).cloned().unwrap_or_default(),
            expected,
            "partition {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_joins_and_leaves_keep_order_exclusivity_and_deliver_nothing_twice() {
    let env = Harness::start().await;
    let cfg = topic_group("orders", "billing", 6);
    env.provision(&cfg).await;
    let records: Records = Default::default();
    let per_partition = 60u64;
    // Half now, half while members come and go.
    for i in 0..per_partition / 2 {
        for p in 0..6 {
            env.publish(
                "orders",
                p,
                &format!("m-{p}-{i}"),
                None,
                &format!("{p}:{i}"),
            )
            .await;
        }
    }
    let mut s = MemberSpec::new(&env, "billing", "a", &records);
    s.work = Duration::from_millis(25);
    let mut a = Member::spawn(s);
    wait_until(Duration::from_secs(20), "a to start", async || {
        records.lock().unwrap().len() >= 20
    })
    .await;
    let mut s = MemberSpec::new(&env, "billing", "b", &records);
    s.work = Duration::from_millis(25);
    let mut b = Member::spawn(s);
    let mut s = MemberSpec::new(&env, "billing", "c", &records);
    s.work = Duration::from_millis(25);
    let mut c = Member::spawn(s);
    env.wait_owns("billing", "b", Duration::from_secs(30)).await;
    env.wait_owns("billing", "c", Duration::from_secs(30)).await;
    for i in per_partition / 2..per_partition {
        for p in 0..6 {
            env.publish(
                "orders",
                p,
                &format!("m-{p}-{i}"),
                None,
                &format!("{p}:{i}"),
            )
            .await;
        }
    }
    b.stop().unwrap();
    let total = (per_partition * 6) as usize;
    wait_until(Duration::from_secs(60), "all messages", async || {
        records.lock().unwrap().len() >= total
    })
    .await;
    c.stop().unwrap();
    a.stop().unwrap();
    let records = records.lock().unwrap().clone();
    for m in ["a", "b", "c"] {
        assert!(
            records.iter().any(|r| r.member == m),
            "{m} never handled anything"
        );
    }
    assert_no_overlap(&records);
    let dups: Vec<_> = counts(&records)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(dups.is_empty(), "duplicates after clean handoffs: {dups:?}");
    assert_exact_order(&records, 6, per_partition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_members_partitions_resume_elsewhere_in_order_without_overlap() {
    let env = Harness::start().await;
    let cfg = topic_group("events", "audit", 4);
    env.provision(&cfg).await;
    let records: Records = Default::default();
    let per_partition = 60u64;
    for i in 0..per_partition {
        for p in 0..4 {
            env.publish(
                "events",
                p,
                &format!("e-{p}-{i}"),
                None,
                &format!("{p}:{i}"),
            )
            .await;
        }
    }
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        let mut s = MemberSpec::new(&env, "audit", id, &records);
        s.work = Duration::from_millis(20);
        members.push(Member::spawn(s));
    }
    wait_until(
        Duration::from_secs(30),
        "every member to work",
        async || {
            let r = records.lock().unwrap();
            ["a", "b", "c"]
                .iter()
                .all(|m| r.iter().any(|r| r.member == *m))
        },
    )
    .await;
    // Crash b: what partitions did it have?
    let owned_by_b: Vec<u32> = {
        let r = records.lock().unwrap();
        let last = r.iter().filter(|r| r.member == "b").map(|r| r.partition);
        let mut v: Vec<u32> = last.collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let killed_at = Instant::now();
    members[1].kill();
    wait_until(
        Duration::from_secs(30),
        "b's partitions to resume elsewhere",
        async || {
            let r = records.lock().unwrap();
            owned_by_b.iter().all(|p| {
                r.iter()
                    .any(|r| r.partition == *p && r.member != "b" && r.start > killed_at)
            })
        },
    )
    .await;
    let resumed = {
        let r = records.lock().unwrap();
        r.iter()
            .filter(|r| owned_by_b.contains(&r.partition) && r.member != "b" && r.start > killed_at)
            .map(|r| r.start.duration_since(killed_at))
            .min()
            .unwrap()
    };
    eprintln!("crash failover: first handling on another member {resumed:?} after the kill");
    let total = (per_partition * 4) as usize;
    wait_until(Duration::from_secs(60), "all messages", async || {
        counts(&records.lock().unwrap()).len() >= total
    })
    .await;
    for m in members.iter_mut() {
        if m.id != "b" {
            m.stop().unwrap();
        }
    }
    let records = records.lock().unwrap().clone();
    assert_no_overlap(&records);
    // Order: first handlings of each offset follow publish order; a repeat can only be a
    // message the crashed member handled without getting its ack out.
    let mut rs: Vec<&Record> = records.iter().collect();
    rs.sort_by_key(|r| r.start);
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for r in rs {
        let n = next.entry(r.partition).or_insert(1);
        if r.offset == *n {
            *n += 1;
        } else {
            assert!(
                r.offset < *n,
                "partition {} jumped to {} expecting {}",
                r.partition,
                r.offset,
                n
            );
            assert!(
                records
                    .iter()
                    .any(|o| o.member == "b" && o.partition == r.partition && o.offset == r.offset),
                "repeat of {}:{} not caused by the crash",
                r.partition,
                r.offset
            );
        }
    }
    assert!(next.values().all(|n| *n == per_partition + 1));
}

/// Per partition, the first handlings follow offset order; a repeat is only allowed for an
/// offset a crashed member handled (its ack may not have gone out). Every offset is handled.
fn assert_order_allowing_crash_repeats(
    records: &[Record],
    partitions: u32,
    per_partition: u64,
    crashed: &[&str],
) {
    let mut rs: Vec<&Record> = records.iter().collect();
    rs.sort_by_key(|r| r.start);
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for r in rs {
        let n = next.entry(r.partition).or_insert(1);
        if r.offset == *n {
            *n += 1;
            continue;
        }
        assert!(
            r.offset < *n,
            "partition {} jumped to {} expecting {}",
            r.partition,
            r.offset,
            n
        );
        assert!(
            records.iter().any(|o| crashed.contains(&o.member.as_str())
                && o.partition == r.partition
                && o.offset == r.offset),
            "repeat of {}:{} not caused by a crash",
            r.partition,
            r.offset
        );
    }
    for p in 0..partitions {
        assert_eq!(
            next.get(&p).copied().unwrap_or(1),
            per_partition + 1,
            "partition {p} not fully handled"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_joins_leaves_and_crashes_never_overlaps_and_handles_everything() {
    let env = Harness::start().await;
    let cfg = topic_group("clicks", "stats", 6);
    env.provision(&cfg).await;
    let records: Records = Default::default();
    let per_partition = 80u64;
    let publish = |from: u64, to: u64| {
        let env = &env;
        async move {
            for i in from..to {
                for p in 0..6 {
                    env.publish(
                        "clicks",
                        p,
                        &format!("c-{p}-{i}"),
                        None,
                        &format!("{p}:{i}"),
                    )
                    .await;
                }
            }
        }
    };
    publish(0, per_partition / 4).await;
    let start = |id: &str| {
        let mut s = MemberSpec::new(&env, "stats", id, &records);
        s.work = Duration::from_millis(10);
        Member::spawn(s)
    };
    let mut a = start("a");
    let mut b = start("b");
    let mut c = start("c");
    for id in ["a", "b", "c"] {
        env.wait_owns("stats", id, Duration::from_secs(30)).await;
    }
    let mut d = start("d");
    env.wait_owns("stats", "d", Duration::from_secs(30)).await;
    publish(per_partition / 4, per_partition / 2).await;
    b.stop().unwrap();
    let mut e = start("e");
    let mut f = start("f");
    env.wait_owns("stats", "e", Duration::from_secs(30)).await;
    env.wait_owns("stats", "f", Duration::from_secs(30)).await;
    publish(per_partition / 2, 3 * per_partition / 4).await;
    c.kill();
    d.stop().unwrap();
    publish(3 * per_partition / 4, per_partition).await;
    let total = (per_partition * 6) as usize;
    wait_until(Duration::from_secs(90), "every message", async || {
        counts(&records.lock().unwrap()).len() >= total
    })
    .await;
    for m in [&mut a, &mut e, &mut f] {
        m.stop().unwrap();
    }
    let records = records.lock().unwrap().clone();
    assert_no_overlap(&records);
    assert_order_allowing_crash_repeats(&records, 6, per_partition, &["c"]);
    // Clean leaves hand over without handling anything twice: only the crash may repeat.
    let repeats: Vec<_> = counts(&records)
        .into_iter()
        .filter(|(k, n)| {
            *n > 1
                && !records
                    .iter()
                    .any(|r| r.member == "c" && (r.partition, r.offset) == *k)
        })
        .collect();
    assert!(
        repeats.is_empty(),
        "repeats not caused by the crash: {repeats:?}"
    );
}
