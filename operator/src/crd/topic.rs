//! `Topic`: a partitioned event log (one JetStream stream per partition).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, DeletionPolicy, DurationString, Retention, StorageType};

/// A partitioned, replicated event log. Every ConsumerGroup reading it gets every message;
/// within a partition, messages keep the order they were published in.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "topic",
    derive = "PartialEq",
    doc = "A partitioned, replicated event log on a Sluice Broker.",
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Messages", type_ = "integer", json_path = ".status.messages"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("(has(self.storage) ? self.storage : 'file') == (has(oldSelf.storage) ? oldSelf.storage : 'file')").message("storage cannot be changed: JetStream cannot move a stream between file and memory; create a new Topic").field_path(".storage"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Name of the Broker (in the same namespace) that stores this topic. Cannot be changed:
    /// create a new Topic to move data to another broker.
    #[x_kube(validation = Rule::new("self == oldSelf").message("broker cannot be changed; create a new Topic on the other broker"))]
    #[schemars(length(min = 1, max = 253))]
    pub broker: String,
    /// Number of partitions. Partitions can be added but never removed, because removing one
    /// would drop its messages and move keys to other partitions.
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions can only grow; create a new Topic to use fewer partitions"))]
    #[schemars(range(min = 1, max = 1024))]
    pub partitions: u32,
    /// Copies of each partition kept on different broker servers: 1, 3 or 5. Default: 3 on a
    /// Broker of 3 or more servers, else 1.
    /// Must not exceed the Broker's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5]").message("replicas must be 1, 3 or 5"))]
    pub replicas: Option<u32>,
    /// When old messages are discarded; limits apply to each partition. Default: keep everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// How long the broker remembers message ids to drop duplicate publishes (default `2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("must be longer than 0s (de-duplication needs a window)"))]
    pub duplicate_window: Option<DurationString>,
    /// `file` (default, survives restarts) or `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageType>,
    /// What happens to the messages when this Topic is deleted: `Retain` (default) keeps the
    /// streams on the broker, `Delete` removes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Applications allowed to publish to this Topic (names, unique in the namespace). For
    /// each name the operator makes the Secret `<name>-producer-identity` with
    /// `SLUICE_BROKER_URL`, `SLUICE_BROKER_USER`, `SLUICE_BROKER_PASSWORD`, `SLUICE_BROKER_CA`
    /// and `SLUICE_NAMESPACE` for `envFrom`: a login that may publish to the Topics and Queues
    /// naming it and do nothing else. Delete the Secret to rotate its password.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub producers: Vec<String>,
}

/// Observed state of a Topic.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Ready and friends (InvalidSpec, BrokerUnavailable, NotSupported).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Copies of each partition in effect (`spec.replicas`, or the default for the Broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Messages currently stored, summed over partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Per-partition offsets, sizes and leaders.
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
}

/// Observed state of one partition.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Partition number, from 0.
    pub partition: u32,
    /// Offset of the oldest retained message.
    pub first_offset: u64,
    /// Offset of the newest message.
    pub last_offset: u64,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Broker server leading this partition's replication group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}
