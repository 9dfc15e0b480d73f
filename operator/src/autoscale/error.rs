//! Errors of the autoscaler: a matchable [`ErrorKind`] plus a message that says what failed.

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The policy can never work (fix the ConsumerGroup's `autoscaling` block).
    InvalidPolicy,
    /// The lag snapshot could not be taken (usually transient: the broker is unreachable).
    Snapshot,
    /// The current replica count could not be read from the runtime.
    ReadReplicas,
    /// The new replica count could not be applied by the runtime.
    SetReplicas,
}

impl ErrorKind {
    /// A short static label, usable as a metric label or Event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidPolicy => "InvalidAutoscalePolicy",
            ErrorKind::Snapshot => "LagSnapshotFailed",
            ErrorKind::ReadReplicas => "ReadReplicasFailed",
            ErrorKind::SetReplicas => "SetReplicasFailed",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the autoscaler.
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

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}
