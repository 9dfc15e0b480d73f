//! Simulations on synthetic lag series: each test steps simulated time in poll intervals and
//! asserts on the sequence of desired replicas and reasons.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::time::Duration;

use sluice_broker::config::Ordering;

use super::*;

const POLL: Duration = Duration::from_secs(5);

/// A simulated group: applies every decision at once (the runtime always succeeds).
struct Sim {
    policy: AutoscalePolicy,
    state: ScalerState,
    current: u32,
    now: Duration,
    /// Acknowledged offset per partition, advanced on healthy partitions each step.
    progress: u64,
}

impl Sim {
    fn new(policy: AutoscalePolicy, current: u32) -> Self {
        Self {
            policy,
            state: ScalerState::default(),
            current,
            now: Duration::from_secs(1_000),
            progress: 0,
        }
    }

    fn step(&mut self, snapshot: &LagSnapshot) -> Decision {
        let d = decide(
            &self.policy,
            snapshot,
            self.current,
            self.now,
            &mut self.state,
        );
        if d.changes_replicas() {
            self.state.record_scale(self.now, self.current, d.desired);
        }
        self.current = d.desired;
        self.now += POLL;
        d
    }

    /// Runs `steps` polls with lag from `series(step)` and returns every decision.
    fn run(&mut self, steps: usize, series: impl Fn(usize, u64) -> LagSnapshot) -> Vec<Decision> {
        (0..steps)
            .map(|i| {
                self.progress += 10;
                let snapshot = series(i, self.progress);
                self.step(&snapshot)
            })
            .collect()
    }
}

/// `total` lag spread over `partitions` healthy partitions (offsets advance with `progress`).
fn spread(total: u64, partitions: u32, ordering: Ordering, progress: u64) -> LagSnapshot {
    let mut s = LagSnapshot::new(partitions, ordering);
    let n = u64::from(partitions.max(1));
    for p in 0..partitions.max(1) {
        let share = total / n + u64::from(u64::from(p) < total % n);
        s.samples.push(PartitionSample {
            partition: p,
            pending: share,
            ack_floor: progress,
            delivered: progress,
            ..Default::default()
        });
    }
    s.processed = 100;
    s
}

fn desired(ds: &[Decision]) -> Vec<u32> {
    ds.iter().map(|d| d.desired).collect()
}

fn scale_events(ds: &[Decision]) -> usize {
    ds.iter().filter(|d| d.changes_replicas()).count()
}

fn policy() -> AutoscalePolicy {
    AutoscalePolicy {
        min: 1,
        max: 10,
        target_lag_per_replica: 100,
        ..Default::default()
    }
}

#[test]
fn burst_scales_up_within_one_poll_limited_per_decision() {
    // (scale-up limit, expected desired per poll); lag jumps from 0 to 1000 at poll 2.
    let cases = [
        (ScaleUpLimit::default(), vec![1, 1, 5, 10, 10]),
        (ScaleUpLimit::UNLIMITED, vec![1, 1, 10, 10, 10]),
        (
            ScaleUpLimit {
                replicas: 2,
                percent: 0,
            },
            vec![1, 1, 3, 5, 7],
        ),
    ];
    for (limit, expected) in cases {
        let mut sim = Sim::new(
            AutoscalePolicy {
                scale_up_limit: limit,
                ..policy()
            },
            1,
        );
        let ds = sim.run(5, |i, p| {
            spread(if i < 2 { 0 } else { 1000 }, 10, Ordering::None, p)
        });
        assert_eq!(desired(&ds), expected, "limit {limit:?}");
        assert!(matches!(
            ds[2].reason,
            ScaleReason::ScaleUp {
                from: 1,
                recommended: 10,
                lag: 1000,
                ..
            }
        ));
        let text = ds[2].to_string();
        assert!(text.contains("needs 10 replicas"), "{text}");
        if limit != ScaleUpLimit::UNLIMITED {
            assert!(text.contains("scale-up limit"), "{text}");
        }
    }
}

#[test]
fn drain_scales_down_only_after_the_stabilization_window() {
    let window = Duration::from_secs(300);
    let polls_in_window = (window.as_secs() / POLL.as_secs()) as usize; // 60
    // (lag after the drain, replicas expected after the window)
    for (after, expected_low) in [(0u64, 1u32), (400, 4)] {
        let mut sim = Sim::new(
            AutoscalePolicy {
                scale_down_stabilization: window,
                ..policy()
            },
            10,
        );
        // Lag 1000 for 3 polls, then drained.
        let ds = sim.run(3 + polls_in_window + 3, |i, p| {
            spread(if i < 3 { 1000 } else { after }, 10, Ordering::None, p)
        });
        let last_high = 2;
        for d in &ds[..last_high + polls_in_window] {
            assert_eq!(d.desired, 10, "{d}");
        }
        for d in &ds[last_high + 1..last_high + polls_in_window] {
            assert!(
                matches!(d.reason, ScaleReason::HoldScaleDown { current: 10, .. }),
                "{d}"
            );
            assert!(d.to_string().contains("stabilization window"), "{d}");
        }
        let down = &ds[last_high + polls_in_window];
        assert_eq!(down.desired, expected_low, "{down}");
        assert!(
            matches!(down.reason, ScaleReason::ScaleDown { from: 10, .. }),
            "{down}"
        );
        assert_eq!(
            scale_events(&ds),
            1,
            "one scale-down, no intermediate steps"
        );
        assert!(
            ds[last_high + polls_in_window + 1..]
                .iter()
                .all(|d| d.desired == expected_low)
        );
    }
}

#[test]
fn fresh_state_does_not_scale_down_before_a_whole_window() {
    // An operator restart finds 8 replicas and no lag: it must watch a whole window first.
    let mut sim = Sim::new(policy(), 8);
    let ds = sim.run(61, |_, p| spread(0, 4, Ordering::None, p));
    assert!(ds[..60].iter().all(|d| d.desired == 8));
    assert_eq!(ds[60].desired, 1);
}

#[test]
fn square_wave_does_not_flap() {
    // Lag alternates between 1000 and 0 every 30 s for 10 minutes.
    let wave = |i: usize, p: u64| {
        spread(
            if (i / 6).is_multiple_of(2) { 1000 } else { 0 },
            10,
            Ordering::None,
            p,
        )
    };
    let mut stabilized = Sim::new(policy(), 1);
    let ds = stabilized.run(120, wave);
    assert_eq!(
        scale_events(&ds),
        2,
        "1 -> 5 -> 10, then held: {:?}",
        desired(&ds)
    );
    assert!(ds[2..].iter().all(|d| d.desired == 10));

    // Control: without a window the same wave flaps, so the assertion above means something.
    let mut unstabilized = Sim::new(
        AutoscalePolicy {
            scale_down_stabilization: Duration::ZERO,
            ..policy()
        },
        1,
    );
    let flappy = unstabilized.run(120, wave);
    assert!(scale_events(&flappy) >= 20, "{:?}", desired(&flappy));
}

#[test]
fn failure_dominated_group_is_not_scaled_up() {
    let mut sim = Sim::new(policy(), 2);
    // 90% of attempts fail for 10 polls, then the dependency recovers.
    let series = |i: usize, p: u64| {
        let mut s = spread(1000, 10, Ordering::None, p);
        (s.processed, s.failed) = if i < 10 { (5, 45) } else { (100, 0) };
        s
    };
    let ds = sim.run(25, series);
    for d in &ds[..10] {
        assert_eq!(d.desired, 2, "{d}");
        match &d.reason {
            ScaleReason::FailuresDominate {
                current: 2,
                recommended: 10,
                failure_ratio,
                ..
            } => assert!((failure_ratio - 0.9).abs() < 1e-9),
            other => panic!("expected FailuresDominate, got {other:?}"),
        }
        let text = d.to_string();
        assert!(
            text.contains("90% of the last") && text.contains("failed"),
            "{text}"
        );
    }
    // Once the window's ratio falls under the threshold, scaling up resumes.
    let resumed = ds.iter().position(|d| d.desired > 2).unwrap();
    assert!((11..=22).contains(&resumed), "resumed at poll {resumed}");
    assert!(matches!(ds[resumed].reason, ScaleReason::ScaleUp { .. }));
    assert_eq!(ds.last().unwrap().desired, 10);
}

#[test]
fn failure_check_needs_enough_attempts() {
    // 3 of 3 attempts failed: below failure_min_events, so lag decides.
    let mut sim = Sim::new(policy(), 2);
    let ds = sim.run(1, |_, p| {
        let mut s = spread(1000, 10, Ordering::None, p);
        (s.processed, s.failed) = (0, 3);
        s
    });
    assert!(
        matches!(ds[0].reason, ScaleReason::ScaleUp { .. }),
        "{}",
        ds[0]
    );
    assert_eq!(ds[0].inputs.failure_ratio, Some(1.0));
}

#[test]
fn failure_dominated_group_still_scales_down() {
    let mut sim = Sim::new(
        AutoscalePolicy {
            scale_down_stabilization: Duration::from_secs(30),
            ..policy()
        },
        6,
    );
    let ds = sim.run(8, |_, p| {
        let mut s = spread(100, 4, Ordering::None, p);
        (s.processed, s.failed) = (0, 50);
        s
    });
    assert_eq!(ds.last().unwrap().desired, 1);
}

/// 4 ordered partitions; partition 0 is blocked (ack floor fixed), the others healthy and empty.
fn blocked_partition(lag: u64, backoff: u64, redeliveries: u64, progress: u64) -> LagSnapshot {
    let mut s = spread(0, 4, Ordering::Partition, progress);
    s.samples[0] = PartitionSample {
        partition: 0,
        pending: lag,
        unacked: 1,
        backoff_waiting: backoff,
        ack_floor: 7,
        delivered: 8 + redeliveries,
    };
    s
}

#[test]
fn partition_with_head_in_backoff_does_not_drive_scale_up() {
    let mut sim = Sim::new(policy(), 1);
    let ds = sim.run(20, |i, p| {
        blocked_partition(500 + 20 * i as u64, 1, i as u64, p)
    });
    for d in &ds {
        assert_eq!(d.desired, 1, "{d}");
        assert_eq!(d.inputs.stuck_partitions, vec![0]);
        assert_eq!(d.inputs.effective_lag, 0);
        assert!(d.has_note(
            |n| matches!(n, ScaleNote::StuckPartitions { partitions, .. } if partitions == &[0])
        ));
        assert!(
            d.to_string().contains("partition(s) 0 cannot progress"),
            "{d}"
        );
    }
    // Control: the same lag on a partition that makes progress scales up to the partition count.
    let mut control = Sim::new(policy(), 1);
    let ds = control.run(2, |_, p| {
        let mut s = blocked_partition(500, 0, 0, p);
        s.samples[0].ack_floor = p;
        s
    });
    assert_eq!(desired(&ds), vec![4, 4]);
}

#[test]
fn partition_without_progress_is_excluded_after_stuck_after() {
    // No backoff signal (e.g. JetStream redelivery only): the lag counts until the partition has
    // been redelivered without progress for `stuck_after`, then it stops counting.
    let stuck_after = Duration::from_secs(15);
    let mut sim = Sim::new(
        AutoscalePolicy {
            stuck_after,
            scale_down_stabilization: Duration::from_secs(60),
            ..policy()
        },
        1,
    );
    // The poison message arrives when lag is small; lag grows 60 per poll behind it.
    let ds = sim.run(30, |i, p| blocked_partition(60 * i as u64, 0, i as u64, p));
    assert_eq!(
        desired(&ds)[..3],
        [1, 1, 2],
        "lag counts before stuck_after (known cost)"
    );
    assert!(ds[2].inputs.stuck_partitions.is_empty());
    for d in &ds[3..] {
        assert_eq!(d.inputs.stuck_partitions, vec![0], "{d}");
        assert!(
            d.desired <= 2,
            "a stuck partition must not drive scale-up: {d}"
        );
    }
    assert_eq!(
        ds.last().unwrap().desired,
        1,
        "back to min once the window passes"
    );
}

#[test]
fn unserved_partition_is_not_stuck() {
    // Offsets stand still but nothing is delivered or held: nobody serves it, so its lag counts.
    let mut sim = Sim::new(policy(), 1);
    let ds = sim.run(12, |_, p| {
        let mut s = blocked_partition(300, 0, 0, p);
        s.samples[0].unacked = 0;
        s
    });
    assert!(ds.iter().all(|d| d.inputs.stuck_partitions.is_empty()));
    assert_eq!(ds.last().unwrap().desired, 3);
}

#[test]
fn idle_group_scales_to_zero_and_activates_back_to_min() {
    let policy = AutoscalePolicy {
        min: 2,
        scale_to_zero: true,
        idle_before_zero: Duration::from_secs(60),
        activation_lag: 10,
        ..policy()
    };
    let mut sim = Sim::new(policy, 3);
    // 12 polls (60 s) idle at 3, then zero; lag 5 (below activation), then 50.
    let series = |i: usize, p: u64| {
        let lag = match i {
            0..20 => 0,
            20..25 => 5,
            _ => 50,
        };
        spread(lag, 4, Ordering::None, p)
    };
    let ds = sim.run(28, series);
    assert!(
        ds[..12].iter().all(|d| d.desired == 3),
        "{:?}",
        desired(&ds)
    );
    assert!(
        matches!(ds[12].reason, ScaleReason::ScaleToZero { from: 3, idle_for } if idle_for == Duration::from_secs(60))
    );
    assert_eq!(ds[12].desired, 0);
    assert!(ds[12].to_string().contains("no lag for 1m"), "{}", ds[12]);
    for d in &ds[13..25] {
        assert_eq!(d.desired, 0, "{d}");
        assert!(matches!(d.reason, ScaleReason::Idle { .. }), "{d}");
    }
    assert!(
        ds[20]
            .to_string()
            .contains("below the activation threshold of 10"),
        "{}",
        ds[20]
    );
    // Lag 50 needs 1 replica, but activation goes to at least min.
    assert!(
        matches!(
            ds[25].reason,
            ScaleReason::Activate {
                to: 2,
                lag: 50,
                activation_lag: 10
            }
        ),
        "{}",
        ds[25]
    );
    assert_eq!(desired(&ds)[25..], [2, 2, 2]);
}

#[test]
fn without_scale_to_zero_the_group_never_goes_below_min() {
    let mut sim = Sim::new(AutoscalePolicy { min: 2, ..policy() }, 2);
    let ds = sim.run(200, |_, p| spread(0, 4, Ordering::None, p));
    assert!(ds.iter().all(|d| d.desired == 2));
    assert!(ds[0].has_note(|n| matches!(n, ScaleNote::ClampedToMin { min: 2, .. })));
}

#[test]
fn messages_in_backoff_block_scale_to_zero() {
    let mut sim = Sim::new(
        AutoscalePolicy {
            scale_to_zero: true,
            idle_before_zero: Duration::from_secs(10),
            ..policy()
        },
        1,
    );
    let ds = sim.run(10, |_, p| {
        let mut s = spread(0, 1, Ordering::None, p);
        s.samples[0].unacked = 3;
        s.samples[0].backoff_waiting = 3;
        s
    });
    assert!(ds.iter().all(|d| d.desired == 1), "{:?}", desired(&ds));
}

#[test]
fn partition_cap_applies_to_ordering_partition_only() {
    // (ordering, expected replicas) for lag 2000 on 4 partitions, max 10.
    let cases = [
        (Ordering::Partition, 4, true),
        (Ordering::Key, 10, false),
        (Ordering::None, 10, false),
    ];
    for (ordering, expected, capped) in cases {
        let mut sim = Sim::new(
            AutoscalePolicy {
                scale_up_limit: ScaleUpLimit::UNLIMITED,
                ..policy()
            },
            1,
        );
        let d = &sim.run(1, |_, p| spread(2000, 4, ordering, p))[0];
        assert_eq!(d.desired, expected, "{ordering:?}: {d}");
        assert_eq!(
            d.has_note(|n| matches!(
                n,
                ScaleNote::CappedAtPartitions {
                    wanted: 20,
                    partitions: 4
                }
            )),
            capped,
            "{ordering:?}: {d}"
        );
        if capped {
            assert!(d.to_string().contains("the partition count"), "{d}");
        }
    }
}

#[test]
fn min_max_clamping() {
    // (min, max, current, lag, expected desired, expected reason code)
    let cases = [
        (2, 10, 2, 0, 2, "Steady"),
        (2, 10, 2, 50, 2, "Steady"),
        (2, 10, 2, 5_000, 6, "ScaleUp"), // limited to +4
        (1, 5, 5, 5_000, 5, "Steady"),
        (1, 5, 8, 5_000, 5, "ScaleDown"), // above max (max lowered): down at once
        (3, 10, 1, 0, 3, "RaiseToMin"),   // below min (min raised): up at once
        (0, 10, 0, 0, 0, "Idle"),
        (0, 10, 0, 150, 2, "Activate"),
    ];
    for (min, max, current, lag, expected, code) in cases {
        let mut sim = Sim::new(
            AutoscalePolicy {
                min,
                max,
                ..policy()
            },
            current,
        );
        let d = &sim.run(1, |_, p| spread(lag, 4, Ordering::None, p))[0];
        assert_eq!(
            (d.desired, d.reason.code()),
            (expected, code),
            "min {min} max {max} current {current} lag {lag}: {d}"
        );
        if lag == 5_000 {
            assert!(
                d.has_note(|n| matches!(n, ScaleNote::ClampedToMax { wanted: 50, .. })),
                "{d}"
            );
        }
    }
}

#[test]
fn backoff_waiting_messages_are_not_lag() {
    // 300 unacked of which 250 wait out a backoff: 50 effective, 1 replica.
    let snapshot = |backoff: u64, p: u64| {
        let mut s = spread(0, 1, Ordering::None, p);
        s.samples[0].unacked = 300;
        s.samples[0].backoff_waiting = backoff;
        s
    };
    let mut sim = Sim::new(policy(), 1);
    let d = &sim.run(1, |_, p| snapshot(250, p))[0];
    assert_eq!(d.desired, 1, "{d}");
    assert_eq!(
        (
            d.inputs.total_lag,
            d.inputs.effective_lag,
            d.inputs.backoff_waiting
        ),
        (300, 50, 250)
    );
    assert!(
        d.to_string()
            .contains("250 messages waiting out a retry backoff are not counted"),
        "{d}"
    );
    // Control: without backoff the same unacked count scales up.
    let mut control = Sim::new(policy(), 1);
    assert_eq!(control.run(1, |_, p| snapshot(0, p))[0].desired, 3);
    // A backoff count above unacked is capped, never underflows.
    let mut odd = Sim::new(policy(), 1);
    let d = &odd.run(1, |_, p| snapshot(1_000, p))[0];
    assert_eq!((d.inputs.effective_lag, d.inputs.backoff_waiting), (0, 300));
}

#[test]
fn invalid_policy_never_panics() {
    let bad = AutoscalePolicy {
        min: 5,
        max: 2,
        target_lag_per_replica: 0,
        ..Default::default()
    };
    let mut sim = Sim::new(bad, 0);
    let d = &sim.run(1, |_, p| spread(10, 1, Ordering::None, p))[0];
    assert_eq!(d.desired, 2, "max wins over min: {d}");
}

// ---- driver ----

/// An in-memory runtime that counts `set_replicas` calls.
#[derive(Debug, Default)]
struct FakeTarget {
    replicas: AtomicU32,
    calls: AtomicU32,
    reasons: Mutex<Vec<String>>,
    fail: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("deployment default/orders-workers: connection refused")]
struct FakeError;

impl ScaleTarget for FakeTarget {
    type Error = FakeError;

    async fn current_replicas(&self) -> Result<u32, FakeError> {
        Ok(self.replicas.load(AtomicOrdering::SeqCst))
    }

    async fn set_replicas(&self, replicas: u32, reason: &str) -> Result<(), FakeError> {
        self.calls.fetch_add(1, AtomicOrdering::SeqCst);
        if self.fail {
            return Err(FakeError);
        }
        self.reasons.lock().unwrap().push(reason.to_owned());
        self.replicas.store(replicas, AtomicOrdering::SeqCst);
        Ok(())
    }
}

/// Hands out queued snapshots.
#[derive(Debug, Default)]
struct Queue(Mutex<VecDeque<LagSnapshot>>);

impl LagSource for Queue {
    type Error = FakeError;

    async fn snapshot(&self) -> Result<LagSnapshot, FakeError> {
        self.0.lock().unwrap().pop_front().ok_or(FakeError)
    }
}

#[tokio::test]
async fn driver_calls_set_replicas_only_on_change() {
    let target = FakeTarget {
        replicas: AtomicU32::new(1),
        ..Default::default()
    };
    let lags = [50u64, 50, 1000, 1000, 1000, 1000];
    let source = Queue(Mutex::new(
        lags.iter()
            .map(|&l| spread(l, 10, Ordering::None, 0))
            .collect(),
    ));
    let mut autoscaler = Autoscaler::new(policy()).unwrap();
    let mut now = Duration::from_secs(10);
    let mut seen = Vec::new();
    for _ in lags {
        let out = autoscaler.poll(&source, &target, now).await.unwrap();
        seen.push((out.decision.desired, out.scaled));
        now += POLL;
    }
    assert_eq!(
        seen,
        [
            (1, false),
            (1, false),
            (5, true),
            (10, true),
            (10, false),
            (10, false)
        ]
    );
    assert_eq!(target.calls.load(AtomicOrdering::SeqCst), 2);
    assert_eq!(target.replicas.load(AtomicOrdering::SeqCst), 10);
    let reasons = target.reasons.lock().unwrap().clone();
    assert!(reasons[0].contains("scaling up from 1 to 5"), "{reasons:?}");
    assert_eq!(
        autoscaler.state().last_scale(),
        Some(LastScale {
            at: Duration::from_secs(25),
            from: 5,
            to: 10
        })
    );

    // Status record: last scale 2 polls (10 s) before the last decision.
    let wall = time::macros::datetime!(2026-05-01 12:00:00 UTC);
    let record = autoscaler.record(wall).unwrap();
    assert_eq!(record.desired, 10);
    assert_eq!(record.current, 10);
    assert_eq!(record.reason_code, "Steady");
    assert_eq!(record.lag_total, 1000);
    assert_eq!(
        record.last_scale_time.as_deref(),
        Some("2026-05-01T11:59:50Z")
    );
    // Later records (later reconciles, a clock that moved on) keep that time: an idle group's
    // status does not change.
    let later = autoscaler
        .record(wall + time::Duration::milliseconds(30_123))
        .unwrap();
    assert_eq!(later, record);

    // The source is exhausted: a snapshot error, nothing applied.
    let err = autoscaler.poll(&source, &target, now).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Snapshot);
    assert_eq!(target.calls.load(AtomicOrdering::SeqCst), 2);
}

#[tokio::test]
async fn driver_reports_a_failed_scale_and_does_not_record_it() {
    let target = FakeTarget {
        replicas: AtomicU32::new(1),
        fail: true,
        ..Default::default()
    };
    let mut autoscaler = Autoscaler::new(policy()).unwrap();
    let snapshot = spread(1000, 10, Ordering::None, 0);
    let err = autoscaler
        .step(&target, &snapshot, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SetReplicas);
    let text = err.to_string();
    assert!(
        text.contains("from 1 to 5") && text.contains("orders-workers"),
        "{text}"
    );
    assert_eq!(autoscaler.state().last_scale(), None);
}

#[test]
fn driver_rejects_an_invalid_policy() {
    let err = Autoscaler::new(AutoscalePolicy {
        min: 3,
        max: 1,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPolicy);
}

#[test]
fn scale_record_round_trips_and_has_a_schema() {
    let record = ScaleRecord {
        desired: 3,
        current: 2,
        reason: "lag of 300 messages needs 3 replicas; scaling up from 2 to 3".into(),
        reason_code: "ScaleUp".into(),
        last_scale_time: Some("2026-05-01T12:00:00Z".into()),
        lag_total: 320,
        effective_lag: 300,
        backoff_waiting: 20,
        stuck_partitions: vec![],
        failure_ratio: Some(0.25),
    };
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(json["reasonCode"], "ScaleUp");
    assert_eq!(json["lastScaleTime"], "2026-05-01T12:00:00Z");
    assert!(json.get("stuckPartitions").is_none());
    let back: ScaleRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, record);
    let schema = serde_json::to_value(schemars::schema_for!(ScaleRecord)).unwrap();
    assert!(schema["properties"]["effectiveLag"].is_object(), "{schema}");
}
