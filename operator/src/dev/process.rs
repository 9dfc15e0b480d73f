//! Local processes of `sluice dev`: worker members of a ConsumerGroup and one-shot Jobs.
//!
//! A process gets the container's literal environment plus the `SLUICE_*` settings of the
//! architecture contract; `PATH` is prefixed with the directory of the `sluice` binary so the
//! example binaries cargo builds beside it are found by their bare names. Output goes to a log
//! file per process under `<data dir>/logs/`. Stopping sends SIGTERM (the SDK drains and leaves
//! the group) and kills only after a grace period.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{info, warn};

/// A process could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Spawning failed (command not found, not executable, ...).
    #[error(
        "failed to start {command:?} for {owner}: {source}; is it built and on PATH (cargo build --workspace)?"
    )]
    Spawn {
        /// Who the process is for (`group default/billing`, `job default/seed`).
        owner: String,
        /// argv[0].
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The log file could not be opened.
    #[error("failed to open log file {path}: {source}")]
    Log {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Who the process is for, for messages.
    pub owner: String,
    /// Command and arguments.
    pub argv: Vec<String>,
    /// Environment (added to the inherited one).
    pub env: BTreeMap<String, String>,
    /// Log file.
    pub log: PathBuf,
}

/// A running local process.
#[derive(Debug)]
pub struct LocalProcess {
    /// Member id / label.
    pub id: String,
    child: Child,
}

/// `PATH` with the directory of the running executable first.
pub fn path_with_exe_dir() -> String {
    let current = std::env::var("PATH").unwrap_or_default();
    match std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        Some(dir) => format!("{}:{current}", dir.display()),
        None => current,
    }
}

impl LocalProcess {
    /// Starts the process.
    pub fn spawn(id: impl Into<String>, spec: &ProcessSpec) -> Result<Self, ProcessError> {
        let id = id.into();
        if let Some(parent) = spec.log.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|source| ProcessError::Log {
                path: spec.log.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| ProcessError::Log {
            path: spec.log.clone(),
            source,
        })?;
        let program = spec.argv.first().cloned().unwrap_or_default();
        let child = Command::new(&program)
            .args(spec.argv.iter().skip(1))
            .envs(&spec.env)
            .env("PATH", path_with_exe_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                owner: spec.owner.clone(),
                command: program.clone(),
                source,
            })?;
        info!(owner = %spec.owner, id = %id, pid = ?child.id(), "process started");
        Ok(Self { id, child })
    }

    /// The exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM, waits up to `grace`, then kills. Returns whether it exited on its own.
    pub async fn stop(mut self, grace: Duration) -> bool {
        if self.try_exit().is_some() {
            return true;
        }
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(_) => true,
            Err(_) => {
                warn!(id = %self.id, ?grace, "process did not stop within its grace period; killing it");
                let _ = self.child.kill().await;
                false
            }
        }
    }

    /// Waits for the process to end.
    pub async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.wait().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], dir: &Path) -> ProcessSpec {
        ProcessSpec {
            owner: "test".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: [("GREETING".to_string(), "hello".to_string())].into(),
            log: dir.join("p.log"),
        }
    }

    #[tokio::test]
    async fn environment_and_output_reach_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut p =
            LocalProcess::spawn("p", &spec(&["sh", "-c", "echo $GREETING"], dir.path())).unwrap();
        assert!(p.wait().await.unwrap().success());
        let log = std::fs::read_to_string(dir.path().join("p.log")).unwrap();
        assert_eq!(log.trim(), "hello");
    }

    #[tokio::test]
    async fn stop_sends_sigterm_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProcess::spawn(
            "p",
            &spec(
                &[
                    "sh",
                    "-c",
                    "trap 'echo drained; exit 0' TERM; echo ready; while true; do sleep 0.05; done",
                ],
                dir.path(),
            ),
        )
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(dir.path().join("p.log"))
            .unwrap_or_default()
            .contains("ready")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "shell never installed its trap"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(p.stop(Duration::from_secs(20)).await, "exited on SIGTERM");
        let log = std::fs::read_to_string(dir.path().join("p.log")).unwrap();
        assert!(log.contains("drained"), "{log}");
    }

    #[test]
    fn missing_command_says_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            LocalProcess::spawn("p", &spec(&["no-such-binary-sluice"], dir.path())).unwrap_err();
        assert!(err.to_string().contains("cargo build"), "{err}");
    }
}
