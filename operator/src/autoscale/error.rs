//! Errors of the autoscaler: one variant per [`ErrorKind`], each keeping its cause as its
//! `source` (the runtime's or the broker's own error), never flattened to text.

/// A runtime's error, kept as the cause of an [`Error`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

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
#[non_exhaustive]
pub enum Error {
    /// The policy can never work; the message names the setting.
    #[error("{0}")]
    InvalidPolicy(String),
    /// The lag could not be measured.
    #[error(
        "failed to measure consumer group lag; the autoscaler keeps the current replicas and retries at the next poll: {0}"
    )]
    Snapshot(#[source] Cause),
    /// The runtime could not say how many replicas run.
    #[error("failed to read the current worker replicas: {0}")]
    ReadReplicas(#[source] Cause),
    /// The runtime could not apply the decided count.
    #[error("failed to scale workers from {from} to {to} replicas: {source}")]
    SetReplicas {
        /// Replicas before.
        from: u32,
        /// Replicas decided.
        to: u32,
        /// The runtime's error.
        #[source]
        source: Cause,
    },
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidPolicy(_) => ErrorKind::InvalidPolicy,
            Error::Snapshot(_) => ErrorKind::Snapshot,
            Error::ReadReplicas(_) => ErrorKind::ReadReplicas,
            Error::SetReplicas { .. } => ErrorKind::SetReplicas,
        }
    }
}
