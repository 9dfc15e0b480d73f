//! Errors of the worker SDK: [`Error`] for the worker itself (matchable with [`Error::kind`]) and
//! [`HandlerError`], what a handler returns to ask for a retry or give up on a message.

use std::fmt;

use sluice_broker::error::{BoxError, FromBrokerErrorKind};

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
    ///
    /// ```
    /// assert_eq!(sluice_worker::ErrorKind::Config.as_str(), "Config");
    /// ```
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

/// An error of the worker SDK: an [`ErrorKind`] plus a message that says what failed and what
/// to do, with the cause kept as its source. The same shape as the broker crate's errors
/// ([`sluice_broker::error::Error`]); a broker error converts with `?`.
///
/// ```
/// use sluice_worker::{Error, ErrorKind};
/// let err = Error::new(ErrorKind::Config, "SLUICE_GROUP is not set: set it to the group name");
/// assert_eq!(err.kind(), ErrorKind::Config);
/// ```
pub type Error = sluice_broker::error::Error<ErrorKind>;

impl FromBrokerErrorKind for ErrorKind {
    fn from_broker_kind(kind: sluice_broker::ErrorKind) -> Self {
        match kind {
            sluice_broker::ErrorKind::InvalidSpec => ErrorKind::Config,
            _ => ErrorKind::Broker,
        }
    }
}

/// A broker failure while doing `context`, with the failure kept as the source.
pub(crate) fn broker(context: impl Into<String>, source: impl Into<BoxError>) -> Error {
    Error::with_source(ErrorKind::Broker, context, source)
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
    ///
    /// ```
    /// let e = sluice_worker::HandlerError::retryable("database unavailable");
    /// assert!(e.is_retryable());
    /// ```
    pub fn retryable(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Retryable(e.into())
    }

    /// A permanent failure from any error or message.
    ///
    /// ```
    /// let e = sluice_worker::HandlerError::permanent("not an order");
    /// assert!(!e.is_retryable());
    /// ```
    pub fn permanent(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Permanent(e.into())
    }

    /// Whether another attempt may succeed.
    ///
    /// ```
    /// assert!(sluice_worker::HandlerError::retryable("x").is_retryable());
    /// ```
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
