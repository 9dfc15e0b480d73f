//! Errors of the worker SDK: [`Error`] for the worker itself (matchable with [`Error::kind`]) and
//! [`HandlerError`], what a handler returns to ask for a retry or give up on a message.

use std::fmt;

/// What went wrong in the worker, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The worker's settings are missing or invalid (fix the environment or the builder call).
    Config,
    /// The broker could not be reached or refused a request (usually transient).
    Broker,
    /// The group's configuration was removed from the config channel (the group was deleted).
    GroupRemoved,
    /// The group's configuration never appeared on the config channel.
    GroupNotFound,
}

impl ErrorKind {
    /// A short static label, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "Config",
            ErrorKind::Broker => "Broker",
            ErrorKind::GroupRemoved => "GroupRemoved",
            ErrorKind::GroupNotFound => "GroupNotFound",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the worker SDK: a kind plus a message that says what failed and what to do.
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
        Self {
            kind,
            message: format!("{}: {}", message.into(), source),
            source: Some(Box::new(source)),
        }
    }

    /// A broker failure while doing `context`.
    pub(crate) fn broker(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::with_source(ErrorKind::Broker, context, source)
    }

    /// A broker failure whose cause is only available as text.
    pub(crate) fn broker_text(context: impl Into<String>, source: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Broker, format!("{}: {source}", context.into()))
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<sluice_broker::Error> for Error {
    fn from(e: sluice_broker::Error) -> Self {
        let kind = match e.kind() {
            sluice_broker::ErrorKind::InvalidSpec => ErrorKind::Config,
            _ => ErrorKind::Broker,
        };
        Self {
            kind,
            message: e.message().to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// Result alias of the worker SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a handler returns when it could not handle a message.
///
/// - [`HandlerError::Retryable`]: the message is tried again after the group's backoff delay,
///   until `retry.maxAttempts` deliveries were made; then it is dead-lettered.
/// - [`HandlerError::Permanent`]: retrying cannot help (bad input); the message goes straight
///   to the dead-letter queue.
///
/// A handler that panics counts as a retryable failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// A transient failure: try again later.
    #[error("retryable: {0}")]
    Retryable(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A permanent failure: dead-letter without further attempts.
    #[error("permanent: {0}")]
    Permanent(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl HandlerError {
    /// A retryable failure from any error or message.
    pub fn retryable(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Retryable(e.into())
    }

    /// A permanent failure from any error or message.
    pub fn permanent(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Permanent(e.into())
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_errors_say_what_they_are() {
        let e = HandlerError::retryable("db down");
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "retryable: db down");
        let e = HandlerError::permanent(std::io::Error::other("bad json"));
        assert!(!e.is_retryable());
        assert_eq!(e.to_string(), "permanent: bad json");
    }

    #[test]
    fn broker_errors_keep_their_message() {
        let b = sluice_broker::Error::new(sluice_broker::ErrorKind::InvalidSpec, "bad name");
        let e: Error = b.into();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert_eq!(e.to_string(), "bad name");
    }
}
