//! Errors of the broker crate, and the one error shape Sluice's crates share.
//!
//! [`Error<K>`] is a matchable kind `K` plus a message that names the resource and says what
//! the user can do, with the cause kept as its [`source`](std::error::Error::source). The broker
//! crate uses it with [`ErrorKind`]; the worker SDK (`sluice_worker::Error`,
//! `sluice_worker::ProducerError`) and the operator use the same struct with their own kind
//! enums, and convert a broker error with `?` by implementing [`FromBrokerErrorKind`] for their
//! kind.
//!
//! Failures of async-nats calls are classified by async-nats' typed error kinds and, for
//! JetStream API errors, by their error codes (see [`classify`]), never by matching text.

use std::error::Error as StdError;
use std::fmt;

use async_nats::jetstream;

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
    /// A request disagrees with what the broker holds (e.g. a group's partition count and its
    /// topic's); fix the request, or retry once the broker caught up with a change in flight.
    Mismatch,
}

impl ErrorKind {
    /// A short static label, usable as a metric label or event reason.
    ///
    /// ```
    /// assert_eq!(sluice_broker::ErrorKind::Unavailable.as_str(), "BrokerUnavailable");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidSpec => "InvalidSpec",
            ErrorKind::NotSupported => "NotSupported",
            ErrorKind::Unavailable => "BrokerUnavailable",
            ErrorKind::Broker => "BrokerError",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Decode => "DecodeError",
            ErrorKind::Process => "ProcessError",
            ErrorKind::Mismatch => "Mismatch",
        }
    }

    /// Whether retrying the same call later may succeed.
    ///
    /// ```
    /// assert!(sluice_broker::ErrorKind::Unavailable.is_transient());
    /// assert!(!sluice_broker::ErrorKind::InvalidSpec.is_transient());
    /// ```
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::Broker | ErrorKind::Mismatch
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cause of an [`Error`], kept as its source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error: a kind `K` the caller can match, a message for the user, and the cause.
///
/// `Error` alone is the broker crate's error (`K` = [`ErrorKind`]).
///
/// ```
/// use sluice_broker::{Error, ErrorKind};
/// let io = std::io::Error::other("boom");
/// let err = Error::with_source(ErrorKind::Broker, "failed to create stream x", io);
/// assert_eq!(err.kind(), ErrorKind::Broker);
/// assert_eq!(err.to_string(), "failed to create stream x: boom");
/// assert!(std::error::Error::source(&err).is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error<K = ErrorKind> {
    kind: K,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl<K> Error<K> {
    /// An error of `kind` with a message for the user.
    ///
    /// ```
    /// use sluice_broker::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::InvalidSpec, "bad name");
    /// assert_eq!(err.message(), "bad name");
    /// ```
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`; the message gets the source appended.
    ///
    /// ```
    /// use sluice_broker::{Error, ErrorKind};
    /// let err = Error::with_source(ErrorKind::Decode, "bad header", std::io::Error::other("x"));
    /// assert_eq!(err.to_string(), "bad header: x");
    /// ```
    pub fn with_source(kind: K, message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Self {
            kind,
            message: format!("{}: {}", message.into(), source),
            source: Some(source),
        }
    }

    /// What went wrong.
    ///
    /// ```
    /// use sluice_broker::{Error, ErrorKind};
    /// assert_eq!(Error::new(ErrorKind::NotFound, "x").kind(), ErrorKind::NotFound);
    /// ```
    pub fn kind(&self) -> K
    where
        K: Copy,
    {
        self.kind
    }

    /// The message (without the kind).
    ///
    /// ```
    /// use sluice_broker::{Error, ErrorKind};
    /// assert_eq!(Error::new(ErrorKind::NotFound, "no stream").message(), "no stream");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Maps the broker crate's [`ErrorKind`] onto another crate's kind, so that crate's
/// `Error<TheirKind>` converts from a broker [`Error`] with `?` (the broker error becomes the
/// source, its message is kept).
///
/// ```
/// use sluice_broker::error::{Error, ErrorKind, FromBrokerErrorKind};
/// #[derive(Debug, Clone, Copy, PartialEq)]
/// enum MyKind { Broker, Config }
/// impl FromBrokerErrorKind for MyKind {
///     fn from_broker_kind(kind: ErrorKind) -> Self {
///         match kind {
///             ErrorKind::InvalidSpec => MyKind::Config,
///             _ => MyKind::Broker,
///         }
///     }
/// }
/// let mine: Error<MyKind> = Error::new(ErrorKind::InvalidSpec, "bad name").into();
/// assert_eq!(mine.kind(), MyKind::Config);
/// assert_eq!(mine.to_string(), "bad name");
/// ```
pub trait FromBrokerErrorKind {
    /// This crate's kind for a broker error of `kind`.
    fn from_broker_kind(kind: ErrorKind) -> Self;
}

impl<K: FromBrokerErrorKind> From<Error<ErrorKind>> for Error<K> {
    fn from(e: Error<ErrorKind>) -> Self {
        Self {
            kind: K::from_broker_kind(e.kind),
            message: e.message.clone(),
            source: Some(Box::new(e)),
        }
    }
}

/// Result alias of the broker crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How an async-nats error kind maps onto [`ErrorKind`]; `None` when only its cause can tell
/// (a failed request, "other").
pub trait NatsErrorKind {
    /// The kind, if this level decides it.
    fn broker_kind(&self) -> Option<ErrorKind>;
}

/// Classifies an async-nats error: by its own kind where that decides, else by the first cause
/// that does (a JetStream API error by its code, a failed request by its kind); `Broker` when
/// nothing does.
pub fn classify<K>(err: &async_nats::error::Error<K>) -> ErrorKind
where
    K: NatsErrorKind + Clone + fmt::Debug + fmt::Display + PartialEq,
{
    err.kind()
        .broker_kind()
        .or_else(|| classify_cause(err.source()))
        .unwrap_or(ErrorKind::Broker)
}

/// Walks a cause chain for the first error whose kind decides.
fn classify_cause(mut cause: Option<&(dyn StdError + 'static)>) -> Option<ErrorKind> {
    while let Some(e) = cause {
        if let Some(api) = e.downcast_ref::<jetstream::Error>() {
            return Some(api_error_kind(api));
        }
        if let Some(k) = e
            .downcast_ref::<jetstream::context::RequestError>()
            .and_then(|r| r.kind().broker_kind())
        {
            return Some(k);
        }
        if let Some(k) = e
            .downcast_ref::<async_nats::RequestError>()
            .and_then(|r| r.kind().broker_kind())
        {
            return Some(k);
        }
        cause = e.source();
    }
    None
}

/// A JetStream API error by its error code (and its HTTP-like status where no code decides).
fn api_error_kind(e: &jetstream::Error) -> ErrorKind {
    use jetstream::ErrorCode as C;
    match e.error_code() {
        C::STREAM_NOT_FOUND | C::CONSUMER_NOT_FOUND | C::SEQUENCE_NOT_FOUND => ErrorKind::NotFound,
        C::JETSTREAM_NOT_ENABLED | C::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => ErrorKind::Unavailable,
        _ => match e.code() {
            404 => ErrorKind::NotFound,
            408 => ErrorKind::Unavailable,
            _ => ErrorKind::Broker,
        },
    }
}

/// Wraps an async-nats error with context, classified by its kind (see [`classify`]).
pub(crate) fn broker_err<K>(context: impl Into<String>, err: async_nats::error::Error<K>) -> Error
where
    K: NatsErrorKind + Clone + fmt::Debug + fmt::Display + PartialEq + Send + Sync + 'static,
{
    let kind = classify(&err);
    Error::with_source(kind, context, err)
}

mod kinds {
    //! [`NatsErrorKind`] for each async-nats error kind the Sluice crates meet.

    use super::{ErrorKind, NatsErrorKind, api_error_kind};
    use async_nats::jetstream::{consumer, context, kv, stream};

    impl NatsErrorKind for context::RequestErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::NoResponders | Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::InvalidSubject => Some(ErrorKind::InvalidSpec),
                Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for async_nats::RequestErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::NoResponders | Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::InvalidSubject => Some(ErrorKind::InvalidSpec),
                _ => None,
            }
        }
    }

    impl NatsErrorKind for context::GetStreamErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::EmptyName | Self::InvalidStreamName => Some(ErrorKind::InvalidSpec),
                Self::JetStream(e) => Some(api_error_kind(e)),
                Self::Request => None,
            }
        }
    }

    impl NatsErrorKind for context::CreateStreamErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::EmptyStreamName | Self::InvalidStreamName | Self::DomainAndExternalSet => {
                    Some(ErrorKind::InvalidSpec)
                }
                Self::JetStreamUnavailable | Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::JetStream(e) => Some(api_error_kind(e)),
                Self::NotFound => Some(ErrorKind::NotFound),
                Self::Response | Self::ResponseParse => None,
            }
        }
    }

    impl NatsErrorKind for context::ConsumerInfoErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::InvalidName => Some(ErrorKind::InvalidSpec),
                Self::NotFound | Self::StreamNotFound => Some(ErrorKind::NotFound),
                Self::Offline | Self::TimedOut | Self::NoResponders => Some(ErrorKind::Unavailable),
                Self::JetStream(e) => Some(api_error_kind(e)),
                Self::Request => None,
            }
        }
    }

    impl NatsErrorKind for stream::ConsumerErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::InvalidConsumerType | Self::InvalidName => Some(ErrorKind::InvalidSpec),
                Self::JetStream(e) => Some(api_error_kind(e)),
                Self::Request | Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for stream::ConsumerCreateStrictErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::InvalidConsumerType | Self::InvalidName => Some(ErrorKind::InvalidSpec),
                Self::AlreadyExists => Some(ErrorKind::Broker),
                Self::JetStream(e) => Some(api_error_kind(e)),
                Self::Request | Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for stream::ConsumerUpdateErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::InvalidConsumerType | Self::InvalidName => Some(ErrorKind::InvalidSpec),
                Self::DoesNotExist => Some(ErrorKind::NotFound),
                Self::JetStream(e) => Some(api_error_kind(e)),
                Self::Request | Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for stream::DeleteMessageErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::JetStream(e) => Some(api_error_kind(e)),
                Self::Request => None,
            }
        }
    }

    impl NatsErrorKind for stream::DirectGetErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::NotFound => Some(ErrorKind::NotFound),
                Self::InvalidSubject => Some(ErrorKind::InvalidSpec),
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::ErrorResponse(status, _) if status.as_u16() == 404 => {
                    Some(ErrorKind::NotFound)
                }
                Self::ErrorResponse(..) => Some(ErrorKind::Broker),
                Self::Request | Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for stream::LastRawMessageErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::NoMessageFound => Some(ErrorKind::NotFound),
                Self::InvalidSubject => Some(ErrorKind::InvalidSpec),
                Self::JetStream(e) => Some(api_error_kind(e)),
                Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for context::PublishErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::StreamNotFound => Some(ErrorKind::NotFound),
                Self::TimedOut | Self::BrokenPipe => Some(ErrorKind::Unavailable),
                Self::MaxPayloadExceeded => Some(ErrorKind::InvalidSpec),
                Self::WrongLastMessageId | Self::WrongLastSequence | Self::MaxAckPending => {
                    Some(ErrorKind::Broker)
                }
                Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for consumer::StreamErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for consumer::pull::MessagesErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::MissingHeartbeat | Self::NoResponders => Some(ErrorKind::Unavailable),
                Self::PushBasedConsumer => Some(ErrorKind::InvalidSpec),
                // Deleted while being read: a failure of the reader, not a missing object.
                Self::ConsumerDeleted | Self::RequestLimitExceeded => Some(ErrorKind::Broker),
                Self::Pull | Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for context::CreateKeyValueErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::InvalidStoreName | Self::TooLongHistory => Some(ErrorKind::InvalidSpec),
                Self::LimitMarkersNotSupported => Some(ErrorKind::NotSupported),
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::JetStream | Self::BucketCreate => None,
            }
        }
    }

    impl NatsErrorKind for context::KeyValueErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::InvalidStoreName => Some(ErrorKind::InvalidSpec),
                Self::GetBucket | Self::JetStream => None,
            }
        }
    }

    impl NatsErrorKind for kv::EntryErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::InvalidKey => Some(ErrorKind::InvalidSpec),
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for kv::PutErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::InvalidKey => Some(ErrorKind::InvalidSpec),
                Self::Publish | Self::Ack => None,
            }
        }
    }

    impl NatsErrorKind for kv::UpdateErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::InvalidKey => Some(ErrorKind::InvalidSpec),
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::WrongLastRevision => Some(ErrorKind::Broker),
                Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for kv::WatchErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            match self {
                Self::InvalidKey => Some(ErrorKind::InvalidSpec),
                Self::TimedOut => Some(ErrorKind::Unavailable),
                Self::ConsumerCreate | Self::Other => None,
            }
        }
    }

    impl NatsErrorKind for kv::WatcherErrorKind {
        fn broker_kind(&self) -> Option<ErrorKind> {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind, RequestErrorKind};

    fn api(json: &str) -> jetstream::Error {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn classify_recognises_transient_failures() {
        let timed_out = GetStreamError::with_source(
            GetStreamErrorKind::Request,
            jetstream::context::RequestError::new(RequestErrorKind::TimedOut),
        );
        assert_eq!(classify(&timed_out), ErrorKind::Unavailable);
        let no_responders = jetstream::context::RequestError::new(RequestErrorKind::NoResponders);
        assert_eq!(classify(&no_responders), ErrorKind::Unavailable);
        let not_found = GetStreamError::new(GetStreamErrorKind::JetStream(api(
            r#"{"code":404,"err_code":10059,"description":"stream not found"}"#,
        )));
        assert_eq!(classify(&not_found), ErrorKind::NotFound);
        let insufficient = GetStreamError::new(GetStreamErrorKind::JetStream(api(
            r#"{"code":500,"err_code":10023,"description":"insufficient resources"}"#,
        )));
        assert_eq!(classify(&insufficient), ErrorKind::Broker);
    }

    #[test]
    fn message_carries_context_and_source() {
        let io = std::io::Error::other("boom");
        let err = Error::with_source(ErrorKind::Broker, "failed to create stream x", io);
        assert_eq!(err.kind(), ErrorKind::Broker);
        assert_eq!(err.to_string(), "failed to create stream x: boom");
    }

    #[test]
    fn broker_err_keeps_the_cause_as_source() {
        let cause = GetStreamError::new(GetStreamErrorKind::EmptyName);
        let err = broker_err("failed to look up stream", cause);
        assert_eq!(err.kind(), ErrorKind::InvalidSpec);
        let source = err.source().unwrap();
        assert!(source.downcast_ref::<GetStreamError>().is_some());
    }
}
