//! `ConsumerGroup`: a pool of workers reading one Topic or one Queue.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, DurationString, PodTemplate};

/// A pool of workers reading one Topic (every group gets every message; each partition is
/// handled by one member at a time) or one Queue (competing consumers), with the delivery,
/// ordering, retry and dead-letter policy, autoscaling, and the worker pod template.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    namespaced,
    status = "ConsumerGroupStatus",
    shortname = "cg",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    doc = "A pool of autoscaled workers consuming a Sluice Topic or Queue.",
    printcolumn(name = "Source", type_ = "string", json_path = ".status.source"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "ReadyReplicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag"),
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
#[x_kube(validation = Rule::new("has(self.broker) == has(oldSelf.broker) && (!has(self.broker) || self.broker == oldSelf.broker)").message("broker cannot be changed; create a new ConsumerGroup"))]
#[x_kube(validation = Rule::new("!has(self.replicas) || !has(self.autoscaling)").message("set either replicas (a fixed worker count, also what `kubectl scale` sets) or autoscaling, not both; remove autoscaling to scale by hand"))]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupSpec {
    /// Name of the Broker (same namespace). Default: the broker of the source. Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub broker: Option<String>,
    /// What the group reads: exactly one of `topic` or `queue`. Cannot be changed.
    #[x_kube(validation = Rule::new("self == oldSelf").message("source cannot be changed; create a new ConsumerGroup"))]
    pub source: GroupSource,
    /// `atMostOnce`, `atLeastOnce` (default) or `exactlyOnce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryMode>,
    /// `partition` (default: offset order within a partition), `key` (order per message key,
    /// more parallelism) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingMode>,
    /// Where a new group starts reading a topic (default `earliest`). Ignored for queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_from: Option<StartFromSpec>,
    /// How failed messages are retried before they are dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Where messages go after their last failed attempt. Unset: such a message is given up
    /// (terminated, with a warning in the worker's log): removed from a Queue; on a Topic it
    /// stays in the partition's log (readable by offset) but the group moves past it. Set a
    /// dead-letter queue to keep every failed message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,
    /// How long a worker may take to acknowledge a message before it is delivered again
    /// (default: the Queue's visibilityTimeout, else `30s`). Workers get this plus 10s to
    /// drain on shutdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("must be longer than 0s (at least 1s)"))]
    pub ack_wait: Option<DurationString>,
    /// Messages handled concurrently by one worker with `key` or `none` ordering (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrency: Option<u32>,
    /// The Topics and Queues (same namespace) the handlers publish to with `ctx.topic()` and
    /// `ctx.queue()`. The group's broker identity may publish there and nowhere else: an
    /// output not listed here is refused by the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<GroupOutputsSpec>,
    /// Scaling of the worker Deployment from the group's lag. The autoscaler owns the worker
    /// count: a `kubectl scale` of the Deployment is undone (with a Warning Event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// A fixed worker count, without autoscaling (`kubectl scale consumergroup` and an
    /// HorizontalPodAutoscaler set it through the scale subresource). Unset and without
    /// autoscaling: the Deployment keeps the count it has (1 when created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: Option<i32>,
    /// Pod template of the workers (a `PodTemplateSpec`). The operator adds the `SLUICE_*`
    /// environment. Unset: no Deployment is created (workers run elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplate>,
}

/// Where a group's handlers publish (`spec.outputs`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupOutputsSpec {
    /// Topic names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Queue names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// Application KV buckets (broker-wide names, e.g. a results store) the handlers create,
    /// read and write through `ctx.jetstream()`. Names starting with `SLUICE` are Sluice's own
    /// and refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<String>,
}

/// The topic or queue a group reads.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.topic) != has(self.queue)").message("set exactly one of source.topic or source.queue"))]
#[serde(rename_all = "camelCase")]
pub struct GroupSource {
    /// Name of a Topic in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub topic: Option<String>,
    /// Name of a Queue in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub queue: Option<String>,
}

/// Delivery guarantee.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(transform = super::common::field_docs_win)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryMode {
    /// Acknowledge before handling: never handled twice, may be lost if a worker crashes.
    AtMostOnce,
    /// Acknowledge after handling: never lost, may be handled again after a crash.
    AtLeastOnce,
    /// At-least-once plus an idempotency store: a completed message is never handled again.
    ExactlyOnce,
}

/// Ordering guarantee.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(transform = super::common::field_docs_win)]
#[serde(rename_all = "camelCase")]
pub enum OrderingMode {
    /// Offset order within each partition; a failing message holds up its partition.
    Partition,
    /// Offset order for each key; different keys are handled in parallel.
    Key,
    /// No ordering; maximal parallelism.
    None,
}

/// Start position of a new group.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.position == 'time' ? has(self.time) : !has(self.time)").message("set startFrom.time exactly when startFrom.position is time"))]
#[serde(rename_all = "camelCase")]
pub struct StartFromSpec {
    /// `earliest` (oldest retained message), `latest` (only new messages) or `time`.
    pub position: StartPosition,
    /// With `position: time`: start at messages published at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub time: Option<String>,
}

/// Named start positions.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(transform = super::common::field_docs_win)]
#[serde(rename_all = "camelCase")]
pub enum StartPosition {
    /// The oldest retained message.
    Earliest,
    /// Only messages published after the group is created.
    Latest,
    /// Messages published at or after `time`.
    Time,
}

/// Retry policy.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.backoffDelay) || !has(self.backoffMax) || self.backoffDelay.contains('d') || self.backoffMax.contains('d') || duration(self.backoffDelay) <= duration(self.backoffMax)").message("retry.backoffDelay must not be longer than retry.backoffMax").field_path(".backoffMax"))]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Deliveries of a message, including ones that crashed the worker, before it is
    /// dead-lettered (default 5; at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("retry.maxAttempts must be at least 1"))]
    #[schemars(range(max = 1000))]
    pub max_attempts: Option<u32>,
    /// `exponential` (default: each delay is the previous times `multiplier`) or `constant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    /// Delay before the second attempt (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<DurationString>,
    /// Growth factor of the delay with `exponential` backoff (default 2; at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1.0").message("retry.multiplier must be at least 1"))]
    pub multiplier: Option<f64>,
    /// Longest delay between attempts (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<DurationString>,
    /// Add random jitter to each delay so retries of many messages spread out (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
}

/// Backoff shapes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(transform = super::common::field_docs_win)]
#[serde(rename_all = "camelCase")]
pub enum BackoffPolicy {
    /// Delays grow by `multiplier` up to `backoffMax`.
    Exponential,
    /// Every delay is `backoffDelay`.
    Constant,
}

/// Dead-letter target.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// Name of a DeadLetterQueue in the same namespace and on the same Broker.
    #[schemars(length(min = 1, max = 253))]
    pub queue: String,
}

/// Lag-based autoscaling of the workers.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest workers while the group is active (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<u32>,
    /// Most workers. With `ordering: partition` the operator never runs more workers than
    /// the topic has partitions.
    #[schemars(range(min = 1))]
    pub max_replicas: u32,
    /// Lag (pending plus unacknowledged messages, not counting ones waiting out a retry
    /// backoff) one worker is expected to keep up with (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_lag_per_replica: Option<u64>,
    /// Lag at which a group scaled to zero wakes up (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub activation_lag: Option<u64>,
    /// Most workers added in one scaling step (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub scale_up_limit: Option<u32>,
    /// How long a lower worker count must be recommended before scaling down (default `300s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_stabilization: Option<DurationString>,
    /// How often the lag is measured (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("must be longer than 0s"))]
    pub poll_interval: Option<DurationString>,
    /// Scale to zero workers when the group has been idle for `idleBeforeZero` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<bool>,
    /// Idle time (no lag) before scaling to zero (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_before_zero: Option<DurationString>,
}

/// Observed state of a ConsumerGroup.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    /// Ready and friends (InvalidSpec, BrokerUnavailable, NotSupported, and
    /// WorkersAvailable: the worker Deployment is Available or scaled to zero). Ready holds
    /// only when the consumers are provisioned and the workers are available.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The source as `topic/<name>` or `queue/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The Broker the group's consumers were provisioned on: cleanup finds them there even
    /// when the source Topic or Queue was deleted first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Workers the worker Deployment runs (its `spec.replicas`): the count the autoscaler's
    /// `scalingReason` speaks of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the worker pods (`key=value,...`), for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Workers that are ready (their pods pass the readiness probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Workers the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Why the autoscaler chose `desiredReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_reason: Option<String>,
    /// Total lag: pending plus unacknowledged messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Lag per partition (one entry for queues).
    #[serde(default)]
    pub partitions: Vec<PartitionLagStatus>,
    /// The autoscaler's last decision: inputs, desired replicas, reason and last scale time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<crate::autoscale::ScaleRecord>,
}

/// Lag of one partition.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLagStatus {
    /// Partition number (0 for queues).
    pub partition: u32,
    /// Messages not yet delivered to the group.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Messages waiting out a retry backoff (not counted as lag).
    pub waiting_backoff: u64,
}
