//! [`decide`]: the pure decision function, and what it returns ([`Decision`], [`ScaleReason`],
//! [`ScaleNote`], [`DecisionInputs`]). The algorithm is described in the [module doc](super).

use std::fmt;
use std::time::Duration;

use sluice_broker::config::Ordering;

use super::policy::AutoscalePolicy;
use super::snapshot::LagSnapshot;
use super::state::ScalerState;

/// Why the autoscaler wants the replica count it wants. `Display` gives a sentence for humans
/// (status, Events, `sluice lag`); [`ScaleReason::code`] a static label.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScaleReason {
    /// The replica count already matches the lag.
    Steady {
        /// Replicas running and wanted.
        replicas: u32,
        /// Lag that counts.
        lag: u64,
    },
    /// Lag needs more replicas.
    ScaleUp {
        /// Replicas before.
        from: u32,
        /// Replicas after.
        to: u32,
        /// What the lag alone asks for (after caps and clamps); above `to` when the scale-up limit applied.
        recommended: u32,
        /// Lag that counts.
        lag: u64,
    },
    /// The group runs fewer replicas than its minimum.
    RaiseToMin {
        /// Replicas before.
        from: u32,
        /// The minimum.
        to: u32,
    },
    /// A group at zero replicas got enough lag to wake up.
    Activate {
        /// Replicas after.
        to: u32,
        /// Lag that counts.
        lag: u64,
        /// The activation threshold.
        activation_lag: u64,
    },
    /// The group stays at zero: lag is below the activation threshold.
    Idle {
        /// Lag that counts.
        lag: u64,
        /// The activation threshold.
        activation_lag: u64,
    },
    /// Failures dominate, so the group is not scaled up.
    FailuresDominate {
        /// Replicas kept.
        current: u32,
        /// What the lag alone asks for.
        recommended: u32,
        /// failed / (processed + failed) within the failure window.
        failure_ratio: f64,
        /// The policy threshold.
        threshold: f64,
        /// Handling attempts (processed + failed) within the failure window.
        attempts: u64,
    },
    /// Lag needs fewer replicas and the stabilization window agrees.
    ScaleDown {
        /// Replicas before.
        from: u32,
        /// Replicas after: the highest recommendation within the window.
        to: u32,
        /// What the lag alone asks for now.
        recommended: u32,
    },
    /// Lag needs fewer replicas but a higher recommendation is still within the window.
    HoldScaleDown {
        /// Replicas kept.
        current: u32,
        /// What the lag alone asks for now.
        recommended: u32,
        /// The stabilization window.
        window: Duration,
    },
    /// No lag for `idle_for`: scale to zero.
    ScaleToZero {
        /// Replicas before.
        from: u32,
        /// How long the lag has been zero.
        idle_for: Duration,
    },
}

impl ScaleReason {
    /// A static CamelCase label, usable as an Event reason or metric label.
    pub fn code(&self) -> &'static str {
        match self {
            ScaleReason::Steady { .. } => "Steady",
            ScaleReason::ScaleUp { .. } => "ScaleUp",
            ScaleReason::RaiseToMin { .. } => "RaiseToMin",
            ScaleReason::Activate { .. } => "Activate",
            ScaleReason::Idle { .. } => "Idle",
            ScaleReason::FailuresDominate { .. } => "FailuresDominate",
            ScaleReason::ScaleDown { .. } => "ScaleDown",
            ScaleReason::HoldScaleDown { .. } => "HoldScaleDown",
            ScaleReason::ScaleToZero { .. } => "ScaleToZero",
        }
    }
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

fn percent(ratio: f64) -> f64 {
    (ratio * 1000.0).round() / 10.0
}

impl fmt::Display for ScaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleReason::Steady { replicas, lag } => {
                write!(
                    f,
                    "lag of {lag} messages is handled by the current {replicas} replicas"
                )
            }
            ScaleReason::ScaleUp {
                from,
                to,
                recommended,
                lag,
            } => {
                write!(
                    f,
                    "lag of {lag} messages needs {recommended} replicas; scaling up from {from} to {to}"
                )?;
                if to < recommended {
                    write!(
                        f,
                        " (the scale-up limit allows {} more per decision)",
                        to - from
                    )?;
                }
                Ok(())
            }
            ScaleReason::RaiseToMin { from, to } => {
                write!(
                    f,
                    "{from} replicas is below the minimum of {to}; scaling up to {to}"
                )
            }
            ScaleReason::Activate {
                to,
                lag,
                activation_lag,
            } => write!(
                f,
                "lag of {lag} messages reached the activation threshold of {activation_lag}; waking up from zero to {to} replicas"
            ),
            ScaleReason::Idle {
                lag,
                activation_lag,
            } => write!(
                f,
                "staying at zero replicas: lag of {lag} messages is below the activation threshold of {activation_lag}"
            ),
            ScaleReason::FailuresDominate {
                current,
                recommended,
                failure_ratio,
                threshold,
                attempts,
            } => write!(
                f,
                "not scaling up to {recommended}: {}% of the last {attempts} handling attempts failed (threshold {}%), \
                 so more workers would only add load on whatever is failing; keeping {current} replicas",
                percent(*failure_ratio),
                percent(*threshold)
            ),
            ScaleReason::ScaleDown {
                from,
                to,
                recommended,
            } => {
                write!(
                    f,
                    "lag needs only {recommended} replicas; scaling down from {from} to {to}"
                )?;
                if to > recommended {
                    write!(
                        f,
                        ", the highest recommendation within the stabilization window"
                    )?;
                }
                Ok(())
            }
            ScaleReason::HoldScaleDown {
                current,
                recommended,
                window,
            } => write!(
                f,
                "lag needs only {recommended} replicas, but more were recommended within the last {}; keeping {current} until the stabilization window has passed",
                human(*window)
            ),
            ScaleReason::ScaleToZero { from, idle_for } => write!(
                f,
                "no lag for {}; scaling down from {from} to zero replicas",
                human(*idle_for)
            ),
        }
    }
}

/// Facts that shaped a decision beyond its main reason.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScaleNote {
    /// ordering=partition: no more replicas than partitions.
    CappedAtPartitions {
        /// What the lag asked for.
        wanted: u32,
        /// The partition count.
        partitions: u32,
    },
    /// The policy's `max` limited the recommendation.
    ClampedToMax {
        /// What the lag (and partition cap) asked for.
        wanted: u32,
        /// The maximum.
        max: u32,
    },
    /// The policy's `min` raised the recommendation.
    ClampedToMin {
        /// What the lag asked for.
        wanted: u32,
        /// The minimum.
        min: u32,
    },
    /// Ordered partitions that made no progress; their lag was not counted.
    StuckPartitions {
        /// The stuck partitions.
        partitions: Vec<u32>,
        /// Their lag, left out.
        lag: u64,
        /// How long without progress makes a partition stuck.
        stuck_after: Duration,
    },
    /// Messages waiting out a retry backoff were not counted.
    BackoffExcluded {
        /// How many.
        messages: u64,
    },
}

impl fmt::Display for ScaleNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleNote::CappedAtPartitions { wanted, partitions } => write!(
                f,
                "capped at {partitions} replicas, the partition count: with ordering=partition each partition is \
                 handled by one worker, so more would sit idle (lag alone asked for {wanted})"
            ),
            ScaleNote::ClampedToMax { wanted, max } => {
                write!(
                    f,
                    "limited to the maximum of {max} replicas (lag asked for {wanted})"
                )
            }
            ScaleNote::ClampedToMin { wanted, min } => {
                write!(
                    f,
                    "kept at the minimum of {min} replicas (lag asked for {wanted})"
                )
            }
            ScaleNote::StuckPartitions {
                partitions,
                lag,
                stuck_after,
            } => {
                let list = partitions
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                write!(
                    f,
                    "partition(s) {list} cannot progress: the message at their head is retrying in place \
                     or made no progress for {} (a poison message?); their lag of {lag} messages is not \
                     counted, since more workers cannot unblock an ordered partition",
                    human(*stuck_after)
                )
            }
            ScaleNote::BackoffExcluded { messages } => write!(
                f,
                "{messages} messages waiting out a retry backoff are not counted as lag"
            ),
        }
    }
}

/// The inputs a decision was made from, for status and logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecisionInputs {
    /// pending + unacked over all partitions, including backoff-waiting and stuck messages.
    pub total_lag: u64,
    /// The lag that drove the decision (backoff-waiting and stuck partitions left out).
    pub effective_lag: u64,
    /// Messages waiting out a retry backoff.
    pub backoff_waiting: u64,
    /// Partitions found stuck.
    pub stuck_partitions: Vec<u32>,
    /// Lag of the stuck partitions (not counted).
    pub stuck_lag: u64,
    /// Partition count of the source.
    pub partitions: u32,
    /// Ordering of the group.
    pub ordering: Ordering,
    /// Successful handlings within the failure window.
    pub processed_in_window: u64,
    /// Failed handling attempts (retries + dead-letters) within the failure window.
    pub failed_in_window: u64,
    /// failed / (processed + failed) within the window, when anything was handled.
    pub failure_ratio: Option<f64>,
    /// What lag, caps and clamps recommend before the scale-up limit, failure check and
    /// stabilization window are applied.
    pub recommended: u32,
}

/// What the autoscaler wants and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas running when the decision was made.
    pub current: u32,
    /// The main reason.
    pub reason: ScaleReason,
    /// Further facts that shaped the decision.
    pub notes: Vec<ScaleNote>,
    /// The inputs, summarized.
    pub inputs: DecisionInputs,
}

impl Decision {
    /// Whether the decision changes the replica count.
    pub fn changes_replicas(&self) -> bool {
        self.desired != self.current
    }

    /// Whether a note of the given kind is attached (tests and callers branch on this).
    pub fn has_note(&self, pred: impl Fn(&ScaleNote) -> bool) -> bool {
        self.notes.iter().any(pred)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// Decides how many replicas the group should run. Pure: no clock, no I/O; `now` is a monotonic
/// time on the caller's clock and `state` is the history the caller keeps between calls.
///
/// `decide` records its recommendation in `state`; the caller reports an applied scale with
/// [`ScalerState::record_scale`]. It never panics, even on a policy that fails
/// [`AutoscalePolicy::validate`] (`max` then wins over `min`, a zero target counts as 1).
pub fn decide(
    policy: &AutoscalePolicy,
    snapshot: &LagSnapshot,
    current: u32,
    now: Duration,
    state: &mut ScalerState,
) -> Decision {
    let mut notes = Vec::new();
    let ordered = snapshot.ordering == Ordering::Partition;

    // 1. Lag: leave out backoff waits, and the lag of ordered partitions that make no progress.
    let mut inputs = DecisionInputs {
        partitions: snapshot.partitions,
        ordering: snapshot.ordering,
        ..Default::default()
    };
    for sample in &snapshot.samples {
        inputs.total_lag = inputs.total_lag.saturating_add(sample.total_lag());
        inputs.backoff_waiting = inputs.backoff_waiting.saturating_add(sample.backoff());
        let watch = ordered && current > 0;
        if state.track_partition(sample, now, policy.stuck_after, watch) {
            inputs.stuck_partitions.push(sample.partition);
            inputs.stuck_lag = inputs.stuck_lag.saturating_add(sample.effective_lag());
        } else {
            inputs.effective_lag = inputs.effective_lag.saturating_add(sample.effective_lag());
        }
    }
    state.retain_partitions(|p| snapshot.samples.iter().any(|s| s.partition == p));
    state.track_zero_lag(now, inputs.total_lag);
    if inputs.backoff_waiting > 0 {
        notes.push(ScaleNote::BackoffExcluded {
            messages: inputs.backoff_waiting,
        });
    }
    if !inputs.stuck_partitions.is_empty() {
        notes.push(ScaleNote::StuckPartitions {
            partitions: inputs.stuck_partitions.clone(),
            lag: inputs.stuck_lag,
            stuck_after: policy.stuck_after,
        });
    }

    // 2. Failures within the window.
    let (processed, failed) = state.add_outcomes(
        now,
        snapshot.processed,
        snapshot.failed,
        policy.failure_window,
    );
    inputs.processed_in_window = processed;
    inputs.failed_in_window = failed;
    let attempts = processed.saturating_add(failed);
    inputs.failure_ratio = (attempts > 0).then(|| failed as f64 / attempts as f64);
    let failures_dominate = attempts >= policy.failure_min_events
        && inputs
            .failure_ratio
            .is_some_and(|r| r > policy.failure_ratio_threshold);

    // 3. The recommendation: lag / target, activation, partition cap, floor, max.
    let lag = inputs.effective_lag;
    let activation_lag = policy.activation_lag.max(1);
    let activated = current > 0 || lag >= activation_lag;
    let mut from_lag = if activated {
        let needed = lag.div_ceil(policy.target_lag_per_replica.max(1));
        u32::try_from(needed).unwrap_or(u32::MAX)
    } else {
        0
    };
    if ordered && snapshot.partitions > 0 && from_lag > snapshot.partitions {
        notes.push(ScaleNote::CappedAtPartitions {
            wanted: from_lag,
            partitions: snapshot.partitions,
        });
        from_lag = snapshot.partitions;
    }
    let idle_for = state.zero_lag_since().map(|t| now.saturating_sub(t));
    let idle = policy.scale_to_zero && idle_for.is_some_and(|d| d >= policy.idle_before_zero);
    let floor = if !policy.scale_to_zero {
        policy.min
    } else if idle || (current == 0 && !activated) {
        0
    } else {
        policy.min.max(1)
    };
    let floor = floor.min(policy.max);
    let recommended = from_lag.max(floor).min(policy.max);
    if from_lag > policy.max {
        notes.push(ScaleNote::ClampedToMax {
            wanted: from_lag,
            max: policy.max,
        });
    } else if from_lag < floor && current > 0 {
        notes.push(ScaleNote::ClampedToMin {
            wanted: from_lag,
            min: floor,
        });
    }
    inputs.recommended = recommended;
    let window_max =
        state.add_recommendation(now, recommended, current, policy.scale_down_stabilization);
    state.mark_decision(now);

    // 4. From the recommendation to the desired count.
    let (desired, reason) = if recommended > current {
        if failures_dominate && current >= floor {
            (
                current,
                ScaleReason::FailuresDominate {
                    current,
                    recommended,
                    failure_ratio: inputs.failure_ratio.unwrap_or(0.0),
                    threshold: policy.failure_ratio_threshold,
                    attempts,
                },
            )
        } else if failures_dominate || from_lag <= current {
            (
                floor,
                ScaleReason::RaiseToMin {
                    from: current,
                    to: floor,
                },
            )
        } else {
            let ceiling = policy.scale_up_limit.ceiling_from(current).max(floor);
            let to = recommended.min(ceiling);
            if current == 0 {
                (
                    to,
                    ScaleReason::Activate {
                        to,
                        lag,
                        activation_lag,
                    },
                )
            } else {
                (
                    to,
                    ScaleReason::ScaleUp {
                        from: current,
                        to,
                        recommended,
                        lag,
                    },
                )
            }
        }
    } else if recommended < current {
        if idle && recommended == 0 {
            (
                0,
                ScaleReason::ScaleToZero {
                    from: current,
                    idle_for: idle_for.unwrap_or_default(),
                },
            )
        } else {
            let to = window_max.min(policy.max).min(current).max(recommended);
            if to < current {
                (
                    to,
                    ScaleReason::ScaleDown {
                        from: current,
                        to,
                        recommended,
                    },
                )
            } else {
                (
                    current,
                    ScaleReason::HoldScaleDown {
                        current,
                        recommended,
                        window: policy.scale_down_stabilization,
                    },
                )
            }
        }
    } else if current == 0 {
        (
            0,
            ScaleReason::Idle {
                lag,
                activation_lag,
            },
        )
    } else {
        (
            current,
            ScaleReason::Steady {
                replicas: current,
                lag,
            },
        )
    };

    Decision {
        desired,
        current,
        reason,
        notes,
        inputs,
    }
}
