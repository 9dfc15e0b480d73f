//! DeadLetterQueue: dereference the Broker -> validate and build `DlqSettings` ->
//! `ensure_dlq` -> status with depth and oldest age, plus the alert condition and a Warning
//! Event when the depth reaches the threshold.

use std::future::Future;
use std::time::Duration;

use tracing::{info, instrument, warn};

use super::broker_resource::BrokerResource;
use super::context::ReconcileContext;
use super::dereference::{broker_of, cleanup_broker, connect, resource_ref};
use super::{Failure, ObjectEvent, Outcome, Requeue, conditions, ns_name};
use crate::crd::{Broker, ConditionStatus, DeadLetterQueue, DeadLetterQueueStatus, DeletionPolicy};
use crate::desired::{dlq::dlq_settings, dlq::over_threshold, stream_replicas};

/// Reconciles one DeadLetterQueue against its broker.
#[instrument(skip_all, fields(dlq = %format!("{}/{}", ns_name(dlq).0, ns_name(dlq).1)))]
pub async fn reconcile(
    ctx: &ReconcileContext,
    dlq: &DeadLetterQueue,
    resync: std::time::Duration,
) -> Outcome<DeadLetterQueueStatus> {
    let generation = dlq.metadata.generation;
    let mut status = dlq.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    status.observed_generation = generation;
    match apply(ctx, dlq).await {
        Ok(state) => {
            status.depth = Some(state.depth);
            status.oldest_age = state.oldest_age.map(|d| {
                humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
            });
            conditions::ready(
                &mut status.conditions,
                "dead-letter stream provisioned",
                generation,
            );
            let was_alerting = conditions::is_true(&status.conditions, conditions::ALERT);
            if over_threshold(&dlq.spec, state.depth) {
                let threshold = dlq.spec.alert_threshold.as_ref().map_or(0, |t| t.depth);
                let message = format!(
                    "{} dead letters waiting (threshold {threshold}); inspect them with `sluice dlq` and replay or purge",
                    state.depth
                );
                if !was_alerting {
                    events.push(ObjectEvent {
                        warning: true,
                        reason: "AlertThresholdExceeded",
                        message: message.clone(),
                        action: None,
                    });
                }
                conditions::set(
                    &mut status.conditions,
                    conditions::ALERT,
                    ConditionStatus::True,
                    "DepthOverThreshold",
                    message,
                    generation,
                );
            } else {
                conditions::set(
                    &mut status.conditions,
                    conditions::ALERT,
                    ConditionStatus::False,
                    "BelowThreshold",
                    "",
                    generation,
                );
            }
            Outcome {
                status,
                requeue: Requeue::After(resync),
                events,
            }
        }
        Err(failure) => {
            warn!(reason = failure.reason(), error = %failure, "dead-letter queue not ready");
            conditions::failed(&mut status.conditions, &failure, generation);
            Outcome {
                requeue: failure.requeue(),
                status,
                events,
            }
        }
    }
}

/// Steps 2-3 (validate + build, pure): the dead-letter stream as the broker should have it.
#[derive(Debug, Clone)]
struct DesiredDlq {
    rr: sluice_broker::ResourceRef,
    settings: sluice_broker::config::DlqSettings,
}

/// Validates the spec against its Broker and builds the settings.
fn desired(
    ns: &str,
    name: &str,
    dlq: &DeadLetterQueue,
    broker: &Broker,
) -> Result<DesiredDlq, Failure> {
    let mut settings = dlq_settings(&dlq.spec)?;
    settings.replicas = stream_replicas(dlq.spec.replicas, &dlq.spec.broker, broker.spec.replicas)?;
    Ok(DesiredDlq {
        rr: resource_ref(ns, name)?,
        settings,
    })
}

/// Step 4 (apply): creates or updates the stream; returns the connection for the status.
async fn provision(
    ctx: &ReconcileContext,
    broker: &Broker,
    desired: &DesiredDlq,
) -> Result<sluice_broker::Broker, Failure> {
    let rr = &desired.rr;
    let connection = connect(ctx, &rr.namespace, broker).await?;
    let changes = connection
        .ensure_dlq(rr, &desired.settings)
        .await
        .map_err(|e| Failure::broker(&format!("failed to provision dead-letter queue {rr}"), e))?;
    if !changes.is_noop() {
        info!(created = ?changes.created, updated = ?changes.updated, "dead-letter queue provisioned");
    }
    Ok(connection)
}

/// The pipeline: dereference the Broker, then [`desired`], [`provision`], and step 5
/// (status): the depth and oldest age.
async fn apply(
    ctx: &ReconcileContext,
    dlq: &DeadLetterQueue,
) -> Result<sluice_broker::DlqStatus, Failure> {
    let (ns, name) = ns_name(dlq);
    let broker = broker_of(ctx, &ns, &dlq.spec.broker).await?;
    let desired = desired(&ns, &name, dlq, &broker)?;
    let connection = provision(ctx, &broker, &desired).await?;
    connection
        .dlq_status(&desired.rr)
        .await
        .map_err(|e| Failure::broker(&format!("failed to read dead-letter queue {ns}/{name}"), e))
}

/// Cleans up a deleted DeadLetterQueue (only with `deletionPolicy: Delete`).
#[instrument(skip_all, fields(dlq = %format!("{}/{}", ns_name(dlq).0, ns_name(dlq).1)))]
pub async fn cleanup(ctx: &ReconcileContext, dlq: &DeadLetterQueue) -> Result<(), Failure> {
    let (ns, name) = ns_name(dlq);
    let policy = dlq.spec.deletion_policy.unwrap_or_default();
    let kept = "the dead-letter stream";
    let Some(broker) = cleanup_broker(ctx, &ns, &dlq.spec.broker, policy, kept).await? else {
        return Ok(());
    };
    broker
        .delete_dlq(&resource_ref(&ns, &name)?)
        .await
        .map_err(|e| {
            Failure::broker(
                &format!("failed to delete dead-letter queue {ns}/{name}"),
                e,
            )
        })?;
    Ok(())
}

impl BrokerResource for DeadLetterQueue {
    const KIND: &'static str = "DeadLetterQueue";

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy.unwrap_or_default()
    }

    fn reconcile<'a>(
        &'a self,
        ctx: &'a ReconcileContext,
        resync: Duration,
    ) -> impl Future<Output = Outcome<DeadLetterQueueStatus>> + Send + 'a {
        reconcile(ctx, self, resync)
    }

    fn cleanup<'a>(
        &'a self,
        ctx: &'a ReconcileContext,
    ) -> impl Future<Output = Result<(), Failure>> + Send + 'a {
        cleanup(ctx, self)
    }
}
