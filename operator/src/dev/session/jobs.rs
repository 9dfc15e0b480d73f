//! `batch/v1` Jobs run once per data directory: a Job that succeeded leaves a record and is
//! not run again.

use std::path::PathBuf;

use tracing::info;

use super::{DevSession, label};
use crate::dev::error::DevError;
use crate::dev::manifest::LocalJob;
use crate::dev::process::{LocalProcess, ProcessSpec};

/// What a Job process did.
#[derive(Debug)]
pub(super) enum JobState {
    Running(LocalProcess),
    Done(String),
}

impl DevSession {
    fn job_record(&self, job: &LocalJob) -> PathBuf {
        self.options
            .data_dir
            .join("jobs")
            .join(format!("{}.{}.done", job.namespace, job.name))
    }

    pub(super) fn start_job(&mut self, job: &LocalJob) -> Result<(), DevError> {
        let key = (job.namespace.clone(), job.name.clone());
        if self.jobs.contains_key(&key) {
            return Ok(());
        }
        if self.job_record(job).exists() {
            self.jobs.insert(
                key,
                JobState::Done("succeeded earlier (not run again)".into()),
            );
            return Ok(());
        }
        let mut env = job.env.clone();
        env.insert("SLUICE_BROKER_URL".into(), self.server.url());
        env.insert("SLUICE_NAMESPACE".into(), job.namespace.clone());
        let spec = ProcessSpec {
            owner: format!("job {}", label(&key)),
            argv: job.argv.clone(),
            env,
            log: self
                .options
                .data_dir
                .join("logs")
                .join(format!("job-{}.log", job.name)),
        };
        let process = LocalProcess::spawn(job.name.clone(), &spec)?;
        self.jobs.insert(key, JobState::Running(process));
        Ok(())
    }

    /// Records the Jobs that exited.
    pub(super) fn reap_jobs(&mut self) -> Result<(), DevError> {
        let records: Vec<(PathBuf, (String, String))> = self
            .manifests
            .jobs
            .iter()
            .map(|j| (self.job_record(j), (j.namespace.clone(), j.name.clone())))
            .collect();
        for (record, key) in records {
            if let Some(JobState::Running(p)) = self.jobs.get_mut(&key)
                && let Some(status) = p.try_exit()
            {
                let state = if status.success() {
                    if let Some(parent) = record.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| DevError::io("create directory", parent, e))?;
                    }
                    std::fs::write(&record, "succeeded\n")
                        .map_err(|e| DevError::io("write", &record, e))?;
                    "succeeded".to_string()
                } else {
                    format!(
                        "failed ({status}); see {}",
                        self.options.data_dir.join("logs").display()
                    )
                };
                info!(job = %label(&key), %state, "job finished");
                self.jobs.insert(key, JobState::Done(state));
            }
        }
        Ok(())
    }

    /// Jobs that failed.
    pub fn failed_jobs(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter_map(|(k, s)| match s {
                JobState::Done(text) if text.starts_with("failed") => {
                    Some(format!("{}: {text}", label(k)))
                }
                _ => None,
            })
            .collect()
    }
}
