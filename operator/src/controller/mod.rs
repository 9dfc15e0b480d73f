//! Controllers for Topic, Queue, DeadLetterQueue and ConsumerGroup.
//!
//! Each reconcile is the same pipeline:
//!
//! 1. **dereference** — read what the object points to (its Broker, source Topic or Queue,
//!    dead-letter queue, credentials Secret) through [`context::Lookup`];
//! 2. **validate** — pure checks in [`crate::desired`] that name the offending field;
//! 3. **build** — pure conversion to the broker's shapes (`TopicSettings`, `GroupConfig`, ...)
//!    and, for groups, the worker Deployment ([`crate::desired::worker`]);
//! 4. **apply** — idempotent `ensure_*` calls on the broker (which re-create objects deleted
//!    behind the operator's back on every periodic resync) and server-side apply of the
//!    Deployment with field manager [`MANAGER`] and an owner reference;
//! 5. **status** — conditions (`Ready`, `InvalidSpec`, `BrokerUnavailable`, `NotSupported`,
//!    ...), `observedGeneration`, and what the broker reports (partitions, depth, lag).
//!
//! Steps 1-4 and the status computation live in the per-kind modules and need no Kubernetes
//! client (with [`context::Lookup::Memory`]), so they are tested against a real nats-server and
//! reused by `sluice dev`. [`runtime`] wires them into kube-runtime: watches guarded by
//! `DeserializeGuard` (a malformed object cannot break a watch) and shared through [`watch`]
//! (references read from its stores; a Broker, Topic, Queue or DeadLetterQueue that changes
//! reconciles what points to it), `finalizer()` for cleanup,
//! status patches, Events, and requeue policy: invalid specs wait for a change, transient
//! failures back off, healthy objects resync periodically.

pub mod autoscaling;
pub mod broker;
pub mod broker_resource;
pub mod broker_tls;
pub mod broker_users;
pub mod conditions;
pub mod context;
pub mod dereference;
pub mod dlq;
pub mod group;
pub mod group_identity;
pub mod in_process;
pub mod kube_api;
pub mod metrics;
pub mod monitor;
pub mod queue;
pub mod runtime;
pub mod topic;
pub mod watch;

use std::time::Duration;

use crate::crd::InvalidField;

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "sluice-operator";
/// Finalizer on resources whose deletion touches the broker.
pub const FINALIZER: &str = "sluice.dev/cleanup";
/// Requeue of healthy objects: re-creates broker objects deleted behind the operator's back
/// and refreshes the status.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);
/// Requeue while a referenced object is missing, by default. The object's watch reconciles
/// the waiting objects as soon as it appears (see [`watch`]); this is the safety net.
pub const MISSING_RETRY: Duration = Duration::from_secs(15);

/// The error that caused a [`Failure`], kept as its `source` (a [`sluice_broker::Error`], an
/// async-nats or serde error); the failure's message already includes its text.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a reconcile could not finish.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The spec can never work as written: fix the manifest.
    #[error("{0}")]
    InvalidSpec(InvalidField),
    /// A referenced object does not exist (yet).
    #[error("{message}")]
    Missing {
        /// Condition reason, e.g. `BrokerNotFound`.
        reason: &'static str,
        /// What is missing and what to do.
        message: String,
    },
    /// The change cannot be made in place.
    #[error("{message}")]
    NotSupported {
        /// What cannot be done and what to do instead.
        message: String,
        /// The error that said so, when one did.
        #[source]
        source: Option<Cause>,
    },
    /// The broker cannot be reached right now.
    #[error("{message}")]
    Unavailable {
        /// Which broker and what was tried.
        message: String,
        /// The connection or request error, when there was one.
        #[source]
        source: Option<Cause>,
    },
    /// The broker refused a request.
    #[error("{message}")]
    Broker {
        /// What was being done.
        message: String,
        /// The broker's (or the client's) error.
        #[source]
        source: Option<Cause>,
    },
    /// An object the operator would create exists already and belongs to someone else: the
    /// operator never takes over objects it did not create.
    #[error("{0}")]
    NameConflict(String),
    /// A Kubernetes API call did not finish within [`kube_api::API_TIMEOUT`].
    #[error("{0}")]
    Timeout(String),
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client error.
        source: kube::Error,
    },
}

impl Failure {
    /// A Kubernetes error with context.
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Failure::Kube {
            context: context.into(),
            source,
        }
    }

    /// A broker error with context, classified by its kind; the error is kept as the source.
    pub fn broker(context: &str, err: sluice_broker::Error) -> Self {
        use sluice_broker::ErrorKind;
        let message = format!("{context}: {err}");
        match err.kind() {
            ErrorKind::InvalidSpec => Failure::InvalidSpec(InvalidField::new("", message)),
            ErrorKind::NotSupported => Failure::NotSupported {
                message,
                source: Some(Box::new(err)),
            },
            ErrorKind::Unavailable => Failure::Unavailable {
                message,
                source: Some(Box::new(err)),
            },
            ErrorKind::NotFound => Failure::Missing {
                reason: "NotFoundOnBroker",
                message,
            },
            _ => Failure::Broker {
                message,
                source: Some(Box::new(err)),
            },
        }
    }

    /// The broker cannot be reached: `message` says which and what was tried; `source` is
    /// the error that said so, if any (its text should be part of `message`).
    pub fn unavailable(message: impl Into<String>, source: Option<Cause>) -> Self {
        Failure::Unavailable {
            message: message.into(),
            source,
        }
    }

    /// The broker (or its client) refused a request: `message` says what was being done and
    /// includes the text of `source`.
    pub fn broker_refused(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Failure::Broker {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Static category for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::InvalidSpec(_) => "InvalidSpec",
            Failure::Missing { reason, .. } => reason,
            Failure::NotSupported { .. } => "NotSupported",
            Failure::Unavailable { .. } => "BrokerUnavailable",
            Failure::Broker { .. } => "BrokerError",
            Failure::NameConflict(_) => "NameConflict",
            Failure::Timeout(_) => "KubernetesTimeout",
            Failure::Kube { .. } => "KubernetesError",
        }
    }

    /// What to do next.
    pub fn requeue(&self) -> Requeue {
        match self {
            Failure::InvalidSpec(_) | Failure::NotSupported { .. } => Requeue::AwaitChange,
            // Retried like a missing reference: the other object may be removed or renamed.
            Failure::Missing { .. } | Failure::NameConflict(_) => Requeue::Missing,
            Failure::Unavailable { .. }
            | Failure::Broker { .. }
            | Failure::Timeout(_)
            | Failure::Kube { .. } => Requeue::Backoff,
        }
    }
}

impl From<InvalidField> for Failure {
    fn from(value: InvalidField) -> Self {
        Failure::InvalidSpec(value)
    }
}

/// When to look at an object again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// After a fixed time (resync, or waiting for a missing object).
    After(Duration),
    /// Only when the object changes (invalid spec).
    AwaitChange,
    /// When the missing object it points to appears, or after the missing-reference retry
    /// ([`MISSING_RETRY`] unless configured).
    Missing,
    /// After an exponential backoff (transient failure).
    Backoff,
}

/// A Kubernetes Event to publish about the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Text for `kubectl describe`.
    pub message: String,
    /// The Event's action, `Reconcile` when `None`. The recorder folds Events with the same
    /// reason and action into one series (a count on the first message), so an Event that
    /// reports a distinct decision names its own action (each scaling decision: `Scale 1->4`).
    pub action: Option<String>,
}

/// The result of one reconcile: the new status, the next requeue, and Events to publish.
#[derive(Debug, Clone)]
pub struct Outcome<S> {
    /// Status to write.
    pub status: S,
    /// When to come back.
    pub requeue: Requeue,
    /// Events to publish.
    pub events: Vec<ObjectEvent>,
}

/// Namespace and name of an object, which every reconciled object has.
pub fn ns_name<K: kube::Resource>(obj: &K) -> (String, String) {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}
