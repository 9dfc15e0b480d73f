//! The autoscaler in the Kubernetes runtime: one [`Autoscaler`] per ConsumerGroup, kept in the
//! controller context and stepped by every group reconcile (which requeues every
//! `autoscaling.pollInterval`).
//!
//! **One writer of `spec.replicas`.** The worker Deployment is applied exactly once per
//! reconcile, by [`DeploymentTarget`], with the replica count the autoscaler decided; the
//! group's status only *reports* it and is never read back as an input. Without an
//! `autoscaling` block the Deployment is applied without `spec.replicas`, so the field is left
//! to whoever else manages it (`kubectl scale`, an HPA or KEDA scaling on the metrics below).
//!
//! **Which pods go first.** Before a scale-down the pods of the group get the annotation
//! `controller.kubernetes.io/pod-deletion-cost`, which the ReplicaSet controller uses to pick
//! the pods it removes. The worker SDK's membership (which member owns how many partitions) is
//! not readable by the operator yet, so the cost is the pod's age rank: the newest pod has
//! the lowest cost and goes first. A fresh member has taken over the fewest partitions and
//! warmed the fewest caches, so removing it moves the least work; not-ready pods go before
//! ready ones regardless (the ReplicaSet controller ranks them first).
//!
//! **Metrics.** Every decision sets `sluice_operator_group_lag_messages`,
//! `..._effective_lag_messages` and `..._desired_replicas` for the group, and every scale
//! counts `..._group_scale_events_total` and publishes a Kubernetes Event.

use std::sync::Mutex;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use super::{Failure, MANAGER, kube_api};
use crate::autoscale::{Autoscaler, ScaleTarget};
use crate::desired::autoscaling::LagHistory;
use crate::desired::worker::GROUP_LABEL;

/// Annotation the ReplicaSet controller reads to choose which pods to delete first.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The autoscaler state of one group, kept across reconciles.
#[derive(Debug)]
pub struct GroupScaler {
    /// Decision history and policy.
    pub autoscaler: Autoscaler,
    /// Previous lag reading, for processed/failed counts.
    pub history: LagHistory,
    /// The group's uid: a re-created group starts over.
    pub uid: String,
    /// Replicas last decided (the "current" count of a group without a Deployment).
    pub last_desired: Option<u32>,
}

/// The worker Deployment as a [`ScaleTarget`]: the current count is the stored
/// Deployment's `spec.replicas`, and "setting" replicas applies the whole built Deployment
/// with that count. [`DeploymentTarget::apply_unchanged`] applies it when no scale happened,
/// so each reconcile writes the Deployment once.
pub struct DeploymentTarget {
    client: Client,
    desired: Deployment,
    existing_replicas: Option<i32>,
    applied: Mutex<Option<Deployment>>,
}

impl std::fmt::Debug for DeploymentTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentTarget")
            .field("deployment", &self.desired.metadata.name)
            .field("existing_replicas", &self.existing_replicas)
            .finish_non_exhaustive()
    }
}

impl DeploymentTarget {
    /// A target for the built Deployment `desired`; reads the stored one's replicas.
    pub async fn new(client: &Client, desired: Deployment) -> Result<Self, Failure> {
        let ns = desired.namespace().unwrap_or_default();
        let existing: Option<Deployment> =
            kube_api::get_opt(client, &ns, &desired.name_any()).await?;
        Ok(Self {
            client: client.clone(),
            existing_replicas: existing.and_then(|d| d.spec.and_then(|s| s.replicas)),
            desired,
            applied: Mutex::new(None),
        })
    }

    /// Applies the Deployment keeping the stored replica count (the autoscaler did not
    /// change it). A Deployment that does not exist yet starts with the built count.
    pub async fn apply_unchanged(&self) -> Result<Deployment, Failure> {
        let mut d = self.desired.clone();
        if let (Some(spec), Some(r)) = (d.spec.as_mut(), self.existing_replicas) {
            spec.replicas = Some(r);
        }
        self.apply(d).await
    }

    /// The Deployment as stored by the apply of this reconcile, if it happened.
    pub fn applied(&self) -> Option<Deployment> {
        self.applied.lock().ok().and_then(|a| a.clone())
    }

    async fn apply(&self, d: Deployment) -> Result<Deployment, Failure> {
        let stored = kube_api::apply(&self.client, &d).await?;
        if let Ok(mut a) = self.applied.lock() {
            *a = Some(stored.clone());
        }
        Ok(stored)
    }
}

impl ScaleTarget for DeploymentTarget {
    type Error = Failure;

    async fn current_replicas(&self) -> Result<u32, Failure> {
        Ok(self
            .existing_replicas
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0))
    }

    async fn set_replicas(&self, replicas: u32, reason: &str) -> Result<(), Failure> {
        let current = self.current_replicas().await?;
        if replicas < current {
            prefer_newest_for_removal(&self.client, &self.desired).await;
        }
        debug!(
            replicas,
            reason, "applying worker Deployment with new replicas"
        );
        let mut d = self.desired.clone();
        if let Some(spec) = d.spec.as_mut() {
            spec.replicas = Some(i32::try_from(replicas).unwrap_or(i32::MAX));
        }
        self.apply(d).await.map(|_| ())
    }
}

/// A group without a Deployment (workers run elsewhere): decisions are only recorded.
#[derive(Debug)]
pub struct RecordedTarget {
    /// The replicas assumed to run.
    pub current: u32,
}

impl ScaleTarget for RecordedTarget {
    type Error = Failure;

    async fn current_replicas(&self) -> Result<u32, Failure> {
        Ok(self.current)
    }

    async fn set_replicas(&self, _replicas: u32, _reason: &str) -> Result<(), Failure> {
        Ok(())
    }
}

/// Deletion costs by age rank: index 0 is the oldest pod. The oldest gets the highest cost.
pub fn deletion_costs(pods_oldest_first: usize) -> Vec<i32> {
    (0..pods_oldest_first)
        .map(|i| i32::try_from(pods_oldest_first - i).unwrap_or(i32::MAX))
        .collect()
}

/// Sets `controller.kubernetes.io/pod-deletion-cost` on the group's pods, newest lowest.
/// Best effort: a failure is logged and the ReplicaSet's default choice applies.
async fn prefer_newest_for_removal(client: &Client, deployment: &Deployment) {
    let ns = deployment.namespace().unwrap_or_default();
    let Some(group) = deployment.labels().get(GROUP_LABEL).cloned() else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = format!("{GROUP_LABEL}={group}");
    let pods = match kube_api::bounded(
        || format!("failed to list the pods of group {ns}/{group}"),
        api.list(&ListParams::default().labels(&selector)),
    )
    .await
    {
        Ok(list) => list.items,
        Err(e) => {
            warn!(error = %e, "cannot rank pods for scale-down");
            return;
        }
    };
    let mut pods: Vec<Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by(|a, b| {
        a.creation_timestamp()
            .cmp(&b.creation_timestamp())
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    for (pod, cost) in pods.iter().zip(deletion_costs(pods.len())) {
        let cost = cost.to_string();
        if pod.annotations().get(POD_DELETION_COST) == Some(&cost) {
            continue;
        }
        let name = pod.name_any();
        let patch = serde_json::json!({"metadata": {"annotations": {POD_DELETION_COST: cost}}});
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        if let Err(e) = kube_api::bounded(
            || format!("failed to annotate pod {ns}/{name}"),
            api.patch(&name, &params, &Patch::Merge(&patch)),
        )
        .await
        {
            warn!(error = %e, "cannot set the pod deletion cost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_pod_costs_most() {
        assert_eq!(deletion_costs(3), [3, 2, 1]);
        assert!(deletion_costs(0).is_empty());
    }
}
