//! The view model of the live view: one [`Frame`] of topics, groups, DLQs, Jobs and problems.

use sluice_broker::config::SourceKind;
use sluice_broker::{GroupConfig, ResourceRef};

use super::jobs::JobState;
use super::{DevSession, label};
use crate::controller::ns_name;
use crate::dev::pool::WorkerPool;
use crate::dev::view::{DlqRow, Frame, GroupRow, TopicRow};

impl DevSession {
    /// The current view.
    pub async fn frame(&self) -> Frame {
        let mut frame = Frame {
            broker: self.server.url(),
            elapsed_secs: self.started.elapsed().as_secs(),
            ..Default::default()
        };
        for topic in &self.manifests.topics {
            let (ns, name) = ns_name(topic);
            let Ok(r) = ResourceRef::new(ns, name) else {
                continue;
            };
            if let Ok(parts) = self.broker.topic_status(&r, topic.spec.partitions).await {
                frame.topics.push(TopicRow {
                    name: r.to_string(),
                    partitions: parts.iter().map(|p| p.messages).collect(),
                });
            }
        }
        for (key, runtime) in &self.groups {
            let lag = self.broker.group_lag(&runtime.config).await.ok();
            let replicas = match &runtime.pool {
                Some(p) => p.len().await as u32,
                None => 0,
            };
            frame.groups.push(GroupRow {
                name: label(key),
                source: source_label(&runtime.config),
                lag: lag
                    .map(|l| l.partitions.iter().map(|p| p.lag()).collect())
                    .unwrap_or_default(),
                replicas,
                restarts: runtime.pool.as_ref().map_or(0, WorkerPool::restarts),
                reason: runtime.reason.clone(),
                problem: runtime.problem.clone(),
            });
        }
        for dlq in &self.manifests.dlqs {
            let (ns, name) = ns_name(dlq);
            let Ok(r) = ResourceRef::new(ns, name) else {
                continue;
            };
            if let Ok(status) = self.broker.dlq_status(&r).await {
                frame.dlqs.push(DlqRow {
                    name: r.to_string(),
                    depth: status.depth,
                });
            }
        }
        for (key, state) in &self.jobs {
            let text = match state {
                JobState::Running(_) => "running".to_string(),
                JobState::Done(s) => s.clone(),
            };
            frame.jobs.push((label(key), text));
        }
        frame.problems = self
            .problems
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        frame
    }
}

fn source_label(config: &GroupConfig) -> String {
    match config.source.kind {
        SourceKind::Topic => format!("topic/{}", config.source.name),
        SourceKind::Queue => format!("queue/{}", config.source.name),
    }
}
