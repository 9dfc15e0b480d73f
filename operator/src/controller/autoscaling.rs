//! The autoscaler in the Kubernetes runtime: one [`GroupScaler`] per ConsumerGroup (the driver
//! shared with `sluice dev`, see [`crate::autoscale`]), kept in [`GroupScalers`] and stepped by
//! every group reconcile ([`scale_and_apply`], which requeues every `autoscaling.pollInterval`).
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
//! **Metrics.** Every decision sets `sluice_group_effective_lag_messages`,
//! `sluice_group_desired_replicas` and `sluice_group_scaling_reason{reason}` for the group,
//! and every scale counts `sluice_group_scale_events_total{direction}` and publishes a
//! Kubernetes Event; a group without `autoscaling` has none of these series. (Lag and worker
//! counts come from the group's status, see `super::metrics::observe`.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use super::group::GroupOutcome;
use super::metrics::{GroupDecision, GroupLabels, Metrics};
use super::{Failure, MANAGER, ObjectEvent, Outcome, Requeue, conditions, kube_api, ns_name};
use crate::autoscale::{AutoscalePolicy, GroupScaler, ScaleTarget, StepOutcome, autoscale_policy};
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, InvalidField};
use crate::desired::worker::{GROUP_LABEL, deployment_name, selector_labels};

/// Annotation the ReplicaSet controller reads to choose which pods to delete first.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The autoscalers of every ConsumerGroup, kept across reconciles by `(namespace, name)`, and
/// the monotonic clock they decide on.
#[derive(Debug)]
pub struct GroupScalers {
    scalers: Mutex<HashMap<(String, String), Tracked>>,
    clock: Instant,
}

/// A group's scaler and the uid of the group it belongs to: a re-created group starts over.
#[derive(Debug)]
struct Tracked {
    uid: String,
    scaler: GroupScaler,
}

impl Default for GroupScalers {
    fn default() -> Self {
        Self {
            scalers: Mutex::default(),
            clock: Instant::now(),
        }
    }
}

impl GroupScalers {
    /// Forgets the scaler of a deleted group.
    pub fn forget(&self, key: &(String, String)) {
        if let Ok(mut s) = self.scalers.lock() {
            s.remove(key);
        }
    }

    /// Takes the group's scaler out of the map (so no lock is held across awaits), with
    /// `policy` in effect; a new or re-created group gets a fresh one.
    fn take(
        &self,
        key: &(String, String),
        uid: &str,
        policy: &AutoscalePolicy,
    ) -> Result<GroupScaler, Failure> {
        let taken = self.scalers.lock().ok().and_then(|mut m| m.remove(key));
        match taken {
            Some(mut t) if t.uid == uid => {
                t.scaler.update_policy(policy);
                Ok(t.scaler)
            }
            _ => GroupScaler::new(policy.clone())
                .map_err(|e| Failure::InvalidSpec(InvalidField::new("autoscaling", e.to_string()))),
        }
    }

    /// Puts the scaler back after a step.
    fn put(&self, key: (String, String), uid: String, scaler: GroupScaler) {
        if let Ok(mut m) = self.scalers.lock() {
            m.insert(key, Tracked { uid, scaler });
        }
    }
}

/// Runs the group's autoscaler on the measured lag and applies the worker Deployment once,
/// with the decided replica count; fills the status fields of the decision and adds an Event
/// when the replicas changed.
pub async fn scale_and_apply(
    client: &Client,
    scalers: &GroupScalers,
    metrics: &Metrics,
    group: &ConsumerGroup,
    result: GroupOutcome,
) -> Result<Outcome<ConsumerGroupStatus>, Failure> {
    let mut outcome = result.outcome;
    let policy = match group
        .spec
        .autoscaling
        .as_ref()
        .map(autoscale_policy)
        .transpose()
    {
        Ok(p) => p,
        Err(invalid) => {
            let failure = Failure::InvalidSpec(invalid);
            conditions::failed(
                &mut outcome.status.conditions,
                &failure,
                group.metadata.generation,
            );
            outcome.requeue = failure.requeue();
            return Ok(outcome);
        }
    };
    let target = match result.deployment {
        Some(mut d) => {
            if policy.is_none()
                && let Some(spec) = d.spec.as_mut()
            {
                // No autoscaling: `spec.replicas` of the group, else the count the
                // Deployment has (whoever scaled it), never a reset to 1.
                spec.replicas = group.spec.replicas;
            }
            Some(DeploymentTarget::new(client, d).await?)
        }
        None => None,
    };
    let key = ns_name(group);
    if group.spec.template.is_none() {
        // The template was removed: the workers run elsewhere now.
        let name = deployment_name(&key.1);
        let uid = group.uid().unwrap_or_default();
        if kube_api::delete_controlled::<Deployment>(client, &key.0, &name, &uid).await? {
            outcome.events.push(ObjectEvent {
                warning: false,
                reason: "WorkersRemoved",
                message: format!("spec.template was removed: deleted the worker Deployment {name}"),
                action: Some("Delete".into()),
            });
        }
        outcome.status.replicas = None;
        outcome.status.ready_replicas = None;
        outcome.status.selector = None;
    }
    if policy.is_none() {
        metrics.group_not_autoscaled(&GroupLabels {
            namespace: key.0.clone(),
            group: key.1.clone(),
        });
    }
    let (Some(policy), Some(measured)) = (policy, result.measured) else {
        if let Some(t) = &target {
            let applied = if group.spec.replicas.is_some() {
                t.apply_built().await?
            } else {
                t.apply_unchanged().await?
            };
            set_worker_counts(&mut outcome.status, &applied, group);
        }
        return Ok(outcome);
    };
    if let Requeue::After(d) = outcome.requeue {
        outcome.requeue = Requeue::After(d.min(policy.poll_interval));
    }
    if let Some(event) = target
        .as_ref()
        .and_then(|t| scaled_elsewhere(t.existing_replicas, group))
    {
        outcome.events.push(event);
    }
    let uid = group.uid().unwrap_or_default();
    let mut scaler = scalers.take(&key, &uid, &policy)?;
    let now = scalers.clock.elapsed();
    let step = match &target {
        Some(t) => scaler.step(&measured, t, now).await,
        None => {
            let recorded = RecordedTarget {
                current: scaler.last_desired().unwrap_or(policy.min),
            };
            scaler.step(&measured, &recorded, now).await
        }
    };
    let record = scaler.record(time::OffsetDateTime::now_utc());
    let step = step
        .inspect_err(|e| warn!(error = %e, "autoscaler step failed; keeping the current replicas"))
        .ok();
    scalers.put(key.clone(), uid, scaler);
    let mut applied = target.as_ref().and_then(DeploymentTarget::applied);
    if let (Some(t), None) = (&target, &applied) {
        // No scale happened (or it failed): apply the Deployment once, keeping its replicas.
        applied = Some(t.apply_unchanged().await?);
    }
    if let Some(d) = &applied {
        set_worker_counts(&mut outcome.status, d, group);
    }
    if let Some(step) = step {
        let labels = GroupLabels {
            namespace: key.0,
            group: key.1,
        };
        report_decision(metrics, &labels, &step, &mut outcome);
    }
    let previous = outcome.status.autoscaling.take();
    outcome.status.autoscaling = match record {
        Some(mut r) => {
            if r.last_scale_time.is_none() {
                // No scale since the operator started: keep the time shown before.
                r.last_scale_time = previous.and_then(|p| p.last_scale_time);
            }
            Some(r)
        }
        None => previous,
    };
    Ok(outcome)
}

/// A Warning Event when the worker Deployment runs `existing` replicas although the
/// autoscaler's last decision (in the group's status) was another count: someone scaled it
/// by hand or an HPA targets it, and the autoscaler, which owns the count, will undo it.
fn scaled_elsewhere(existing: Option<i32>, group: &ConsumerGroup) -> Option<ObjectEvent> {
    let decided = group.status.as_ref()?.desired_replicas?;
    let existing = existing?;
    (existing != decided).then(|| ObjectEvent {
        warning: true,
        reason: "ScaledOutsideOperator",
        message: format!(
            "the worker Deployment was scaled to {existing} outside the operator; autoscaling owns the worker count (last decision: {decided}) and will set it again. To scale by hand, remove spec.autoscaling and set spec.replicas (or kubectl scale consumergroup)"
        ),
        action: Some("Scale".into()),
    })
}

/// Records a decision in the metrics and the status, and an Event when it scaled.
fn report_decision(
    metrics: &Metrics,
    labels: &GroupLabels,
    step: &StepOutcome,
    outcome: &mut Outcome<ConsumerGroupStatus>,
) {
    let d = &step.decision;
    metrics.group_decision(
        labels,
        GroupDecision {
            effective_lag: d.inputs.effective_lag,
            desired: d.desired,
            reason: d.reason.code(),
        },
    );
    outcome.status.desired_replicas = Some(i32::try_from(d.desired).unwrap_or(i32::MAX));
    outcome.status.scaling_reason = Some(d.to_string());
    if step.scaled {
        metrics.group_scaled(labels, d.desired > d.current);
        outcome.events.push(ObjectEvent {
            warning: false,
            reason: if d.desired > d.current {
                "ScaledUp"
            } else {
                "ScaledDown"
            },
            message: format!("{} -> {} workers: {d}", d.current, d.desired),
            action: Some(format!("Scale {}->{}", d.current, d.desired)),
        });
    }
}

/// The group's worker counts from its Deployment as stored after this reconcile's apply:
/// `replicas` is what it runs (`spec.replicas`, the autoscaler's "current"), `readyReplicas`
/// how many of those are ready; and the `WorkersAvailable` condition (see
/// [`conditions::workers`]).
fn set_worker_counts(status: &mut ConsumerGroupStatus, d: &Deployment, group: &ConsumerGroup) {
    let stored_ready = group
        .status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, conditions::READY));
    conditions::workers(
        &mut status.conditions,
        d,
        group.metadata.generation,
        stored_ready,
    );
    status.replicas = Some(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    status.selector = Some(
        selector_labels(&group.name_any())
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    status.ready_replicas = Some(
        d.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    );
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

    /// Applies the Deployment as built, replicas included (a fixed `spec.replicas`).
    pub async fn apply_built(&self) -> Result<Deployment, Failure> {
        self.apply(self.desired.clone()).await
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
