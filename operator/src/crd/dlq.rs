//! `DeadLetterQueue`: where messages go after their last failed attempt.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, DeletionPolicy, Retention};

/// Where a ConsumerGroup puts messages that failed their last attempt, with the error and
/// attempt history, for inspection and replay (`sluice dlq`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "DeadLetterQueue",
    namespaced,
    status = "DeadLetterQueueStatus",
    shortname = "dlq",
    derive = "PartialEq",
    doc = "A dead-letter queue on a Sluice Broker.",
    printcolumn(name = "Depth", type_ = "integer", json_path = ".status.depth"),
    printcolumn(name = "Oldest", type_ = "string", json_path = ".status.oldestAge"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterQueueSpec {
    /// Name of the Broker (in the same namespace) that stores this queue. Cannot be changed.
    #[x_kube(validation = Rule::new("self == oldSelf").message("broker cannot be changed; create a new DeadLetterQueue on the other broker"))]
    #[schemars(length(min = 1, max = 253))]
    pub broker: String,
    /// Copies kept on different broker servers: 1, 3 or 5. Default: 3 on a
    /// Broker of 3 or more servers, else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5]").message("replicas must be 1, 3 or 5"))]
    pub replicas: Option<u32>,
    /// When dead letters are discarded. Default: kept until replayed or purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Raise a Warning Event and the `AlertThresholdExceeded` condition when this many
    /// messages are waiting. Unset: never alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_threshold: Option<AlertThreshold>,
    /// What happens to the dead letters when this resource is deleted: `Retain` (default)
    /// keeps the stream on the broker, `Delete` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// When a dead-letter queue alerts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertThreshold {
    /// Number of waiting dead letters at or above which the queue alerts.
    #[schemars(range(min = 1))]
    pub depth: u64,
}

/// Observed state of a DeadLetterQueue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterQueueStatus {
    /// Ready, AlertThresholdExceeded and friends.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Dead letters waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    /// Age of the oldest waiting dead letter (e.g. `3h12m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_age: Option<String>,
}
