//! The producer's error: [`ProducerError`], the shared error shape with a
//! [`ProducerErrorKind`], and how publish failures map onto it.

use std::fmt;
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use sluice_broker::ResourceRef;
use sluice_broker::error::FromBrokerErrorKind;

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProducerErrorKind {
    /// The producer configuration or a resource name is invalid.
    InvalidConfig,
    /// The record cannot be published as it is (bad key or id, too large).
    InvalidMessage,
    /// The topic or queue does not exist on the broker.
    NotFound,
    /// The broker did not acknowledge in time; the message may or may not be stored.
    Timeout,
    /// The broker could not be reached.
    Unavailable,
    /// The broker refused the publish or request.
    Broker,
    /// The producer's background task is gone (the runtime is shutting down).
    Closed,
}

impl ProducerErrorKind {
    /// A short static label, usable as a metric label.
    ///
    /// ```
    /// use sluice_worker::producer::ProducerErrorKind;
    /// assert_eq!(ProducerErrorKind::Timeout.as_str(), "Timeout");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ProducerErrorKind::InvalidConfig => "InvalidConfig",
            ProducerErrorKind::InvalidMessage => "InvalidMessage",
            ProducerErrorKind::NotFound => "NotFound",
            ProducerErrorKind::Timeout => "Timeout",
            ProducerErrorKind::Unavailable => "BrokerUnavailable",
            ProducerErrorKind::Broker => "BrokerError",
            ProducerErrorKind::Closed => "Closed",
        }
    }

    /// Whether publishing the same record again later may succeed.
    ///
    /// ```
    /// use sluice_worker::producer::ProducerErrorKind;
    /// assert!(ProducerErrorKind::Timeout.is_transient());
    /// assert!(!ProducerErrorKind::InvalidMessage.is_transient());
    /// ```
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ProducerErrorKind::Timeout | ProducerErrorKind::Unavailable | ProducerErrorKind::Broker
        )
    }
}

impl fmt::Display for ProducerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the producer: a [`ProducerErrorKind`] plus a message naming the target and what
/// the user can do, with the cause kept as its source (the shared shape,
/// [`sluice_broker::error::Error`]).
///
/// ```
/// use sluice_worker::producer::{ProducerError, ProducerErrorKind};
/// let err = ProducerError::new(ProducerErrorKind::NotFound, "topic shop/orders does not exist");
/// assert!(!err.kind().is_transient());
/// ```
pub type ProducerError = sluice_broker::error::Error<ProducerErrorKind>;

impl FromBrokerErrorKind for ProducerErrorKind {
    fn from_broker_kind(kind: sluice_broker::ErrorKind) -> Self {
        use sluice_broker::ErrorKind as K;
        match kind {
            K::InvalidSpec => ProducerErrorKind::InvalidConfig,
            K::Unavailable => ProducerErrorKind::Unavailable,
            K::NotFound => ProducerErrorKind::NotFound,
            _ => ProducerErrorKind::Broker,
        }
    }
}

/// The producer's acknowledgement task is gone.
pub(super) fn closed() -> ProducerError {
    ProducerError::new(
        ProducerErrorKind::Closed,
        "the producer's acknowledgement task has stopped (is the Tokio runtime shutting down?)",
    )
}

/// What to tell the user when a topic or queue does not exist.
pub(super) fn not_found_message(kind: &str, resource: &ResourceRef) -> String {
    let upper = if kind == "topic" { "Topic" } else { "Queue" };
    format!("{kind} {resource} does not exist on the broker: create the {upper} first")
}

/// A failed publish to `subject`, by async-nats' publish error kind.
pub(super) fn publish_error(
    e: PublishError,
    subject: &Subject,
    not_found: &str,
    ack_timeout: Duration,
) -> ProducerError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => ProducerError::with_source(
            ProducerErrorKind::NotFound,
            format!("{not_found} (no stream takes subject {subject})"),
            e,
        ),
        PublishErrorKind::TimedOut => ProducerError::with_source(
            ProducerErrorKind::Timeout,
            format!(
                "no acknowledgement for {subject} within {ack_timeout:?}: the message may or may not be stored; re-send it with the same id to stay de-duplicated"
            ),
            e,
        ),
        PublishErrorKind::MaxPayloadExceeded => ProducerError::with_source(
            ProducerErrorKind::InvalidMessage,
            format!(
                "message to {subject} is too large for the broker: send smaller messages or raise max_payload"
            ),
            e,
        ),
        PublishErrorKind::BrokenPipe => ProducerError::with_source(
            ProducerErrorKind::Unavailable,
            format!(
                "connection lost before {subject} was acknowledged: re-send it (with an id to stay de-duplicated)"
            ),
            e,
        ),
        _ => ProducerError::with_source(
            ProducerErrorKind::Broker,
            format!("the broker refused the publish to {subject}"),
            e,
        ),
    }
}
