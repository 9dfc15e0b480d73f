//! What keeps a run from being idle (`--until-idle`): running Jobs, groups with lag, delayed
//! messages not due yet, and queues that have not received all of their source topics.

use sluice_broker::ResourceRef;

use super::jobs::JobState;
use super::{DevSession, label};
use crate::controller::ns_name;
use crate::crd::Queue;
use crate::dev::error::DevError;

impl DevSession {
    /// Whether every Job finished, no group has lag or retries in flight, and every queue fed
    /// by topics has received all their messages.
    pub async fn is_idle(&self) -> Result<bool, DevError> {
        Ok(self.waiting_for().await?.is_empty())
    }

    /// What keeps the session from being idle, one line each (empty when idle): running Jobs,
    /// groups with lag, and queue source partitions not received in full.
    pub async fn waiting_for(&self) -> Result<Vec<String>, DevError> {
        let mut waiting = Vec::new();
        for (name, job) in &self.jobs {
            if matches!(job, JobState::Running(_)) {
                waiting.push(format!("job {} is still running", label(name)));
            }
        }
        for (name, runtime) in &self.groups {
            let lag = self.broker.group_lag(&runtime.config).await?;
            if lag.total() > 0 {
                waiting.push(format!(
                    "group {} has {} messages to handle ({} waiting, {} in flight)",
                    label(name),
                    lag.total(),
                    lag.partitions.iter().map(|p| p.pending).sum::<u64>(),
                    lag.partitions.iter().map(|p| p.ack_pending).sum::<u64>()
                ));
            }
        }
        for queue in &self.manifests.queues {
            if queue.spec.delay.as_ref().is_some_and(|d| d.enabled) {
                let (ns, name) = ns_name(queue);
                let r = ResourceRef::new(ns.clone(), name.clone())?;
                let scheduled: u64 = self
                    .broker
                    .queue_levels(&r)
                    .await?
                    .iter()
                    .map(|l| l.scheduled)
                    .sum();
                if scheduled > 0 {
                    waiting.push(format!(
                        "queue {ns}/{name} has {scheduled} delayed messages not due yet"
                    ));
                }
            }
            let sources = self.queue_sources(queue);
            if sources.is_empty() {
                continue;
            }
            let (ns, name) = ns_name(queue);
            let r = ResourceRef::new(ns.clone(), name.clone())?;
            for s in self.broker.fanout_status(&r, &sources).await? {
                if !s.caught_up() {
                    waiting.push(format!(
                        "queue {ns}/{name} has not received {} messages of topic {} partition {} (received up to offset {} of {})",
                        s.pending, s.topic, s.partition, s.received_offset, s.origin_last_offset
                    ));
                }
            }
        }
        Ok(waiting)
    }

    /// The source topics of a queue with their partition counts from the manifests.
    fn queue_sources(&self, queue: &Queue) -> Vec<sluice_broker::config::QueueSource> {
        let (ns, _) = ns_name(queue);
        queue
            .spec
            .sources
            .iter()
            .filter_map(|source| {
                let topic = self
                    .manifests
                    .topics
                    .iter()
                    .find(|t| ns_name(*t) == (ns.clone(), source.topic.clone()))?;
                Some(sluice_broker::config::QueueSource {
                    topic: source.topic.clone(),
                    partitions: topic.spec.partitions,
                })
            })
            .collect()
    }

    /// Whether every group with workers runs no more than its autoscaling minimum.
    pub async fn at_minimum(&self) -> bool {
        for runtime in self.groups.values() {
            if let (Some(pool), Some(scaler)) = (&runtime.pool, &runtime.scaler)
                && pool.len().await > scaler.policy().min as usize
            {
                return false;
            }
        }
        true
    }
}
