//! Each ConsumerGroup's local runtime: its worker pool (the first container's command as
//! local processes) and its [`GroupScaler`], the autoscaling driver shared with the
//! Kubernetes runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_broker::GroupConfig;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{DevSession, RESYNC, label};
use crate::autoscale::{GroupScaler, autoscale_policy};
use crate::controller::{self, conditions, ns_name};
use crate::crd::ConsumerGroup;
use crate::desired::group::group_config;
use crate::dev::error::DevError;
use crate::dev::manifest;
use crate::dev::pool::{MemberTemplate, WorkerPool};

/// A group's local runtime.
pub(super) struct GroupRuntime {
    group: ConsumerGroup,
    pub(super) config: GroupConfig,
    pub(super) pool: Option<WorkerPool>,
    pub(super) scaler: Option<GroupScaler>,
    template_key: String,
    next_poll: Instant,
    pub(super) reason: String,
    pub(super) problem: Option<String>,
    pub(super) scaling: ScalingStats,
}

/// What the autoscaler did to one group during the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScalingStats {
    /// Scale-ups applied.
    pub scale_ups: u32,
    /// Scale-downs applied.
    pub scale_downs: u32,
    /// Most worker processes at once.
    pub max_replicas: u32,
    /// Worker processes at the end.
    pub replicas: u32,
}

impl DevSession {
    pub(super) async fn apply_group(&mut self, group: &ConsumerGroup) {
        let key = ns_name(group);
        let out = controller::group::reconcile(&self.reconcile, group, RESYNC).await;
        let ready = conditions::is_true(&out.outcome.status.conditions, conditions::READY);
        self.note(label(&key), "ConsumerGroup", &out.outcome.status.conditions);
        if !ready {
            let problem = conditions::get(&out.outcome.status.conditions, conditions::READY)
                .map(|c| format!("{}: {}", c.reason, c.message));
            if let Some(runtime) = self.groups.get_mut(&key) {
                runtime.problem = problem;
            }
            return;
        }
        let config = match self.group_config(group).await {
            Ok(c) => c,
            Err(e) => {
                self.problems
                    .insert(format!("ConsumerGroup {}", label(&key)), e.to_string());
                return;
            }
        };
        let template = out
            .deployment
            .as_ref()
            .map(|d| self.member_template(&key, d, &config));
        let template = match template.transpose() {
            Ok(t) => t,
            Err(message) => {
                self.problems
                    .insert(format!("ConsumerGroup {}", label(&key)), message);
                None
            }
        };
        let template_key = format!("{template:?}");
        let policy = match &group.spec.autoscaling {
            Some(spec) => autoscale_policy(spec),
            // No autoscaling block: one worker, as the operator's Deployment would run.
            None => Ok(crate::autoscale::AutoscalePolicy {
                min: 1,
                max: 1,
                ..Default::default()
            }),
        };
        match self.groups.get_mut(&key) {
            Some(runtime) => {
                runtime.group = group.clone();
                runtime.problem = None;
                runtime.config = config;
                if let (Ok(policy), Some(scaler)) = (&policy, runtime.scaler.as_mut()) {
                    scaler.update_policy(policy);
                }
                if runtime.template_key != template_key
                    && let (Some(pool), Some(template)) = (&runtime.pool, template)
                {
                    info!(group = %label(&key), "worker template changed; restarting workers");
                    if let Err(e) = pool.roll(template).await {
                        runtime.problem = Some(e.to_string());
                    }
                    runtime.template_key = template_key;
                }
            }
            None => {
                let scaler = match policy {
                    Ok(p) => GroupScaler::new(p).ok(),
                    Err(e) => {
                        self.problems
                            .insert(format!("ConsumerGroup {}", label(&key)), e.to_string());
                        None
                    }
                };
                self.groups.insert(
                    key,
                    GroupRuntime {
                        group: group.clone(),
                        config,
                        pool: template.map(WorkerPool::new),
                        scaler,
                        template_key,
                        next_poll: Instant::now(),
                        reason: "starting".into(),
                        problem: None,
                        scaling: ScalingStats::default(),
                    },
                );
            }
        }
    }

    async fn group_config(&self, group: &ConsumerGroup) -> Result<GroupConfig, DevError> {
        let (ns, name) = ns_name(group);
        let source = controller::group::resolve_source(&self.reconcile, &ns, group).await?;
        Ok(group_config(&ns, &name, &group.spec, &source).map_err(controller::Failure::from)?)
    }

    fn member_template(
        &self,
        key: &(String, String),
        deployment: &k8s_openapi::api::apps::v1::Deployment,
        config: &GroupConfig,
    ) -> Result<MemberTemplate, String> {
        let container = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .ok_or_else(|| format!("ConsumerGroup {} has no worker container", label(key)))?;
        let (argv, mut env) = manifest::container_argv(container)?;
        // Local workers share one host: a fixed metrics port (the one the cluster's worker
        // Deployment gets) would let only the first of them start. `sluice dev` reads lag from
        // the broker, not from the workers' metrics.
        env.remove(crate::desired::worker::METRICS_ADDR_ENV);
        let grace = Duration::from_millis(config.ack_wait_ms)
            .max(self.options.grace)
            .min(Duration::from_secs(120));
        Ok(MemberTemplate {
            owner: label(key),
            group: key.1.clone(),
            argv,
            env,
            log_dir: self.options.data_dir.join("logs"),
            grace,
        })
    }

    /// Starts each group's workers at its minimum.
    pub(super) async fn start_pools(&self) -> Result<(), DevError> {
        for runtime in self.groups.values() {
            if let (Some(pool), Some(scaler)) = (&runtime.pool, &runtime.scaler) {
                pool.scale_to(scaler.policy().min as usize).await?;
            }
        }
        Ok(())
    }

    /// Starts the workers of groups that have none (new after an edit) at their minimum.
    pub(super) async fn start_empty_pools(&self) -> Result<(), DevError> {
        for runtime in self.groups.values() {
            if let (Some(pool), Some(scaler)) = (&runtime.pool, &runtime.scaler)
                && pool.is_empty().await
            {
                pool.scale_to(scaler.policy().min as usize).await?;
            }
        }
        Ok(())
    }

    /// Restarts crashed workers and runs the autoscaler polls that are due.
    pub(super) async fn tick_groups(&mut self) -> Result<(), DevError> {
        let now = Instant::now();
        let since_start = now.duration_since(self.started);
        for (key, runtime) in self.groups.iter_mut() {
            let Some(pool) = &runtime.pool else { continue };
            pool.restart_exited().await?;
            let running = pool.len().await as u32;
            runtime.scaling.replicas = running;
            runtime.scaling.max_replicas = runtime.scaling.max_replicas.max(running);
            if now < runtime.next_poll {
                continue;
            }
            if let Some(scaler) = runtime.scaler.as_mut() {
                runtime.next_poll = now + scaler.policy().poll_interval;
                let before = pool.len().await as u32;
                match scaler
                    .poll(&self.broker, &runtime.config, pool, since_start)
                    .await
                {
                    Ok(step) => {
                        runtime.reason = step.decision.to_string();
                        if step.scaled {
                            if step.decision.desired > before {
                                runtime.scaling.scale_ups += 1;
                            } else {
                                runtime.scaling.scale_downs += 1;
                            }
                        }
                    }
                    Err(e) => {
                        warn!(group = %label(key), error = %e, "autoscaler step failed");
                        runtime.reason = format!("autoscaler: {e}");
                    }
                }
            }
        }
        Ok(())
    }

    /// What the autoscaler did, per group (`namespace/name`).
    pub fn scaling(&self) -> BTreeMap<String, ScalingStats> {
        self.groups
            .iter()
            .map(|(k, r)| (label(k), r.scaling))
            .collect()
    }
}
