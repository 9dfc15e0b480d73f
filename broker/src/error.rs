//! Errors of the broker crate: a matchable [`ErrorKind`] plus a message that names the
//! resource and says what the user can do.

use std::fmt;

/// What went wrong, for callers that branch on it (tests assert on this, never on text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A name or spec that can never be valid (fix the manifest).
    InvalidSpec,
    /// A change JetStream cannot make in place (e.g. shrinking partitions).
    NotSupported,
    /// The broker could not be reached or did not answer in time (transient; retry).
    Unavailable,
    /// The broker answered with an error for this request.
    Broker,
    /// The object does not exist on the broker.
    NotFound,
    /// Data read from the broker could not be decoded.
    Decode,
    /// The embedded nats-server could not be started or stopped.
    Process,
}

impl ErrorKind {
    /// A short static label, usable as a metric label or event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidSpec => "InvalidSpec",
            ErrorKind::NotSupported => "NotSupported",
            ErrorKind::Unavailable => "BrokerUnavailable",
            ErrorKind::Broker => "BrokerError",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Decode => "DecodeError",
            ErrorKind::Process => "ProcessError",
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Broker)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the broker crate.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message for the user.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`; the message gets the source appended.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let message = format!("{}: {}", message.into(), source);
        Self {
            kind,
            message,
            source: Some(Box::new(source)),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Result alias of the broker crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Classifies an async-nats JetStream/KV error text into a kind: timeouts and
/// connection problems are `Unavailable`, everything else `Broker`.
pub(crate) fn classify(text: &str) -> ErrorKind {
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("no responders")
        || lower.contains("disconnected")
        || lower.contains("connection")
        || lower.contains("jetstream not enabled")
    {
        ErrorKind::Unavailable
    } else if lower.contains("not found") {
        ErrorKind::NotFound
    } else {
        ErrorKind::Broker
    }
}

/// Wraps any displayable async-nats error with context, classifying its kind.
pub(crate) fn broker_err<E>(context: impl Into<String>, err: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let kind = classify(&err.to_string());
    Error::with_source(kind, context, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_recognises_transient_failures() {
        assert_eq!(classify("request timed out"), ErrorKind::Unavailable);
        assert_eq!(classify("no responders"), ErrorKind::Unavailable);
        assert_eq!(classify("stream not found"), ErrorKind::NotFound);
        assert_eq!(classify("insufficient resources"), ErrorKind::Broker);
    }

    #[test]
    fn message_carries_context_and_source() {
        let io = std::io::Error::other("boom");
        let err = Error::with_source(ErrorKind::Broker, "failed to create stream x", io);
        assert_eq!(err.kind(), ErrorKind::Broker);
        assert_eq!(err.to_string(), "failed to create stream x: boom");
    }
}
