//! [`ScaleRecord`]: the autoscaler's entry in a ConsumerGroup's status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use super::decide::Decision;

/// The last autoscaling decision of a consumer group, as shown in its status.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleRecord {
    /// Replicas the autoscaler wants.
    pub desired: u32,
    /// Replicas that were running when it decided.
    pub current: u32,
    /// Why, as a sentence.
    pub reason: String,
    /// Why, as a short CamelCase code (e.g. `ScaleUp`, `HoldScaleDown`, `FailuresDominate`).
    pub reason_code: String,
    /// When the autoscaler last changed the replica count (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Pending plus unacknowledged messages over all partitions.
    pub lag_total: u64,
    /// The lag that drove the decision: without messages waiting out a retry backoff and
    /// without the lag of stuck partitions.
    pub effective_lag: u64,
    /// Messages waiting out a retry backoff.
    #[serde(default)]
    pub backoff_waiting: u64,
    /// Ordered partitions making no progress (likely blocked by a poison message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck_partitions: Vec<u32>,
    /// Failed / (processed + failed) handling attempts over the recent window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_ratio: Option<f64>,
}

impl ScaleRecord {
    /// The record of `decision`; `last_scale_time` is when the replicas last changed.
    pub fn from_decision(
        decision: &Decision,
        last_scale_time: Option<time::OffsetDateTime>,
    ) -> Self {
        Self {
            desired: decision.desired,
            current: decision.current,
            reason: decision.to_string(),
            reason_code: decision.reason.code().to_owned(),
            last_scale_time: last_scale_time.and_then(|t| t.format(&Rfc3339).ok()),
            lag_total: decision.inputs.total_lag,
            effective_lag: decision.inputs.effective_lag,
            backoff_waiting: decision.inputs.backoff_waiting,
            stuck_partitions: decision.inputs.stuck_partitions.clone(),
            failure_ratio: decision.inputs.failure_ratio,
        }
    }
}
