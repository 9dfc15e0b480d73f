//! The worker processes of one ConsumerGroup under `sluice dev`: a local stand-in for the
//! worker Deployment, scaled by the same autoscaler through [`ScaleTarget`]. Crashed members
//! are restarted (as a Deployment would), scale-down stops the newest members first with
//! SIGTERM so the SDK drains and hands its partitions over.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{info, warn};

use super::process::{LocalProcess, ProcessError, ProcessSpec};
use crate::autoscale::ScaleTarget;

/// How to start one member.
#[derive(Debug, Clone)]
pub struct MemberTemplate {
    /// `namespace/group`, for messages.
    pub owner: String,
    /// Group name (member ids are `<group>-<n>`).
    pub group: String,
    /// Command and arguments.
    pub argv: Vec<String>,
    /// Environment, including the `SLUICE_*` settings (without `SLUICE_MEMBER_ID`).
    pub env: BTreeMap<String, String>,
    /// Where member logs go.
    pub log_dir: PathBuf,
    /// SIGTERM-to-SIGKILL grace period.
    pub grace: Duration,
}

/// The members of one group.
#[derive(Debug)]
pub struct WorkerPool {
    template: Mutex<MemberTemplate>,
    members: Mutex<Vec<LocalProcess>>,
    next_index: AtomicU32,
    restarts: AtomicU32,
}

impl WorkerPool {
    /// An empty pool.
    pub fn new(template: MemberTemplate) -> Self {
        Self {
            template: Mutex::new(template),
            members: Mutex::new(Vec::new()),
            next_index: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
        }
    }

    async fn spawn_member(&self) -> Result<LocalProcess, ProcessError> {
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        let template = self.template.lock().await.clone();
        let id = format!("{}-{index}", template.group);
        let mut env = template.env.clone();
        env.insert("SLUICE_MEMBER_ID".into(), id.clone());
        let spec = ProcessSpec {
            owner: template.owner.clone(),
            argv: template.argv.clone(),
            env,
            log: template.log_dir.join(format!("{id}.log")),
        };
        LocalProcess::spawn(id, &spec)
    }

    /// Members running now.
    pub async fn len(&self) -> usize {
        self.members.lock().await.len()
    }

    /// Whether no member runs.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// How many crashed members were restarted so far.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Replaces members that exited by fresh ones (a Deployment keeps its replica count).
    pub async fn restart_exited(&self) -> Result<(), ProcessError> {
        let mut members = self.members.lock().await;
        let mut exited = Vec::new();
        for (i, member) in members.iter_mut().enumerate() {
            if let Some(status) = member.try_exit() {
                warn!(member = %member.id, %status, "worker exited; restarting it");
                exited.push(i);
            }
        }
        for i in exited.into_iter().rev() {
            members.remove(i);
            self.restarts.fetch_add(1, Ordering::Relaxed);
            members.push(self.spawn_member().await?);
        }
        Ok(())
    }

    /// Starts or stops members until `replicas` run; stops the newest first.
    pub async fn scale_to(&self, replicas: usize) -> Result<(), ProcessError> {
        let grace = self.template.lock().await.grace;
        let mut stopping = Vec::new();
        {
            let mut members = self.members.lock().await;
            while members.len() < replicas {
                members.push(self.spawn_member().await?);
            }
            while members.len() > replicas {
                if let Some(member) = members.pop() {
                    stopping.push(member);
                }
            }
        }
        // Stop outside the lock, all at once: each drains and leaves the group.
        futures::future::join_all(stopping.into_iter().map(|m| m.stop(grace))).await;
        Ok(())
    }

    /// Replaces the template (the manifest changed) and restarts every member with it.
    pub async fn roll(&self, template: MemberTemplate) -> Result<(), ProcessError> {
        let replicas = self.len().await;
        *self.template.lock().await = template;
        self.scale_to(0).await?;
        self.scale_to(replicas).await
    }

    /// Stops every member gracefully.
    pub async fn shutdown(&self) {
        let _ = self.scale_to(0).await;
    }
}

impl ScaleTarget for WorkerPool {
    type Error = ProcessError;

    async fn current_replicas(&self) -> Result<u32, Self::Error> {
        Ok(u32::try_from(self.len().await).unwrap_or(u32::MAX))
    }

    async fn set_replicas(&self, replicas: u32, reason: &str) -> Result<(), Self::Error> {
        let owner = self.template.lock().await.owner.clone();
        info!(group = %owner, replicas, reason, "scaling workers");
        self.scale_to(replicas as usize).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(dir: &std::path::Path, script: &str) -> MemberTemplate {
        MemberTemplate {
            owner: "default/g".into(),
            group: "g".into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: BTreeMap::new(),
            log_dir: dir.to_path_buf(),
            grace: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn scales_up_down_and_restarts_crashed_members() {
        let dir = tempfile::tempdir().unwrap();
        let pool = WorkerPool::new(template(
            dir.path(),
            "echo $SLUICE_MEMBER_ID; trap 'exit 0' TERM; while true; do sleep 0.05; done",
        ));
        pool.set_replicas(3, "test").await.unwrap();
        assert_eq!(pool.current_replicas().await.unwrap(), 3);
        pool.set_replicas(1, "test").await.unwrap();
        assert_eq!(pool.current_replicas().await.unwrap(), 1);
        // The survivor is the oldest member.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(dir.path().join("g-0.log"))
            .unwrap_or_default()
            .trim()
            != "g-0"
        {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pool.shutdown().await;
        assert!(pool.is_empty().await);

        let crashing = WorkerPool::new(template(dir.path(), "exit 3"));
        crashing.set_replicas(1, "test").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while crashing.restarts() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "crash was never noticed"
            );
            crashing.restart_exited().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(crashing.current_replicas().await.unwrap(), 1);
        crashing.shutdown().await;
    }
}
