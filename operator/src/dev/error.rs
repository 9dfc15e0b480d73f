//! [`DevError`]: why a `sluice dev` run could not go on.

use std::path::PathBuf;

use super::manifest::ManifestError;
use super::process::ProcessError;
use crate::controller::Failure;

/// An error of a `sluice dev` run; each says what failed and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The manifests could not be read or parsed: fix the named file.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A file or directory in the data directory could not be written.
    #[error("failed to {action} {}: {source}; check the --data-dir permissions", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded broker failed (start, connect, or a read).
    #[error(transparent)]
    Broker(#[from] sluice_broker::Error),
    /// A worker or Job process could not be started or restarted.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A group's references or spec do not work.
    #[error(transparent)]
    Reconcile(#[from] Failure),
    /// Reading the end-of-run accounting from the broker failed.
    #[error("failed to read the run's accounting from the broker: {0}")]
    Summary(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl DevError {
    /// An I/O error while doing `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DevError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
