//! `Queue`: a work queue (one work-queue-retention JetStream stream).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, DeletionPolicy, DurationString, StorageType};

/// A work queue: each message is handled by one worker of the queue's ConsumerGroup and
/// removed once acknowledged (like SQS or a RabbitMQ queue).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Queue",
    namespaced,
    status = "QueueStatus",
    shortname = "q",
    derive = "PartialEq",
    doc = "A work queue on a Sluice Broker: messages are removed once acknowledged.",
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
#[x_kube(validation = Rule::new("(has(self.storage) ? self.storage : 'file') == (has(oldSelf.storage) ? oldSelf.storage : 'file')").message("storage cannot be changed: JetStream cannot move a stream between file and memory; create a new Queue").field_path(".storage"))]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Name of the Broker (in the same namespace) that stores this queue. Cannot be changed.
    #[x_kube(validation = Rule::new("self == oldSelf").message("broker cannot be changed; create a new Queue on the other broker"))]
    #[schemars(length(min = 1, max = 253))]
    pub broker: String,
    /// Copies of the queue kept on different broker servers: 1, 3 or 5. Default: 3 on a
    /// Broker of 3 or more servers, else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5]").message("replicas must be 1, 3 or 5"))]
    pub replicas: Option<u32>,
    /// How long a received message stays invisible to other workers before it is delivered
    /// again if not acknowledged (default `30s`). The ConsumerGroup's `ackWait` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("must be longer than 0s"))]
    pub visibility_timeout: Option<DurationString>,
    /// When unhandled messages are discarded. Default: kept until handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<QueueRetention>,
    /// Topics whose every message is copied into this queue (fan-out from a log to a queue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub sources: Vec<QueueSourceSpec>,
    /// `file` (default, survives restarts) or `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageType>,
    /// What happens to waiting messages when this Queue is deleted: `Retain` (default) keeps
    /// the stream on the broker, `Delete` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Applications allowed to publish to this Queue (names, unique in the namespace). For
    /// each name the operator makes the Secret `<name>-producer-identity` with
    /// `SLUICE_BROKER_URL`, `SLUICE_BROKER_USER`, `SLUICE_BROKER_PASSWORD`, `SLUICE_BROKER_CA`
    /// and `SLUICE_NAMESPACE` for `envFrom`: a login that may publish to the Topics and Queues
    /// naming it and do nothing else. Delete the Secret to rotate its password.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub producers: Vec<String>,
    /// Delayed delivery: producers may send a message that workers see only later
    /// (`send_after`, `send_at`), like SQS DelaySeconds. Off by default. Needs nats-server
    /// 2.12 or newer (message schedules); once on, the stream keeps schedules allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<QueueDelay>,
    /// Priority levels (1 to 10, default 1 = none): producers pick a level from 0 (lowest) to
    /// `priorities - 1`, workers take higher levels first. Can only grow (messages waiting on a
    /// removed level would never be handled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("priorities can only grow: messages waiting on a removed level would never be handled; create a new Queue"))]
    pub priorities: Option<u32>,
    /// Percent (0 to 100, default 10) of each worker's handling reserved for the levels below
    /// the highest while it has work, so low-priority messages are never starved. 0 = strict
    /// priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub low_priority_share: Option<u32>,
}

/// Delayed delivery on a queue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueDelay {
    /// Whether producers may delay messages (default false).
    #[serde(default)]
    pub enabled: bool,
    /// The longest delay a producer may ask for (default `7d`); a longer one is refused
    /// when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("must be longer than 0s"))]
    pub max_delay: Option<DurationString>,
}

/// Retention of a queue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueRetention {
    /// Discard messages that waited longer than this (e.g. `4d`). Unset: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("must be longer than 0s; leave it unset for no age limit"))]
    pub max_age: Option<DurationString>,
}

/// A topic feeding a queue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSourceSpec {
    /// Name of a Topic in the same namespace and on the same Broker.
    #[schemars(length(min = 1, max = 253))]
    pub topic: String,
}

/// Observed state of a Queue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Ready and friends (InvalidSpec, BrokerUnavailable, NotSupported, and SourcingStalled
    /// when a source partition's messages stop arriving).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Messages waiting in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Copies of the queue stream in effect (`spec.replicas`, or the default for the Broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// How far the queue has received each partition of its source topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<QueueSourceStatus>,
}

/// How far a queue has received one partition of a source topic (copied in by the fan-out
/// relay).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSourceStatus {
    /// Source topic.
    pub topic: String,
    /// Partition of the topic.
    pub partition: u32,
    /// The partition's last offset.
    pub last_offset: u64,
    /// Every message up to this offset is in the queue.
    pub received_offset: u64,
    /// Messages of the partition the queue has not received yet.
    pub pending: u64,
}
