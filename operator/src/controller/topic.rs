//! Topic: dereference the Broker -> validate and build `TopicSettings` -> `ensure_topic` ->
//! status with per-partition offsets. Cleanup deletes the streams only with
//! `deletionPolicy: Delete`.

use std::future::Future;
use std::time::Duration;

use tracing::{info, instrument, warn};

use super::broker_resource::BrokerResource;
use super::context::ReconcileContext;
use super::dereference::{broker_of, cleanup_broker, connect, resource_ref};
use super::{Failure, ObjectEvent, Outcome, Requeue, conditions, ns_name};
use crate::crd::topic::PartitionStatus;
use crate::crd::{Broker, DeletionPolicy, Topic, TopicStatus};
use crate::desired::{stream_replicas, topic::topic_settings};

/// Reconciles one Topic against its broker.
#[instrument(skip_all, fields(topic = %format!("{}/{}", ns_name(topic).0, ns_name(topic).1)))]
pub async fn reconcile(
    ctx: &ReconcileContext,
    topic: &Topic,
    resync: std::time::Duration,
) -> Outcome<TopicStatus> {
    let generation = topic.metadata.generation;
    let mut status = topic.status.clone().unwrap_or_default();
    let was_ready = conditions::is_true(&status.conditions, conditions::READY);
    let mut events = Vec::new();
    match apply(ctx, topic, resync).await {
        Ok((parts, recreated, replicas)) => {
            if recreated && was_ready {
                warn!("partition streams were missing on the broker and have been re-created");
                events.push(ObjectEvent {
                    warning: true,
                    reason: "Recreated",
                    message: "partition streams were missing on the broker and have been re-created (their messages are lost)".into(),
                    action: None,
                });
            }
            status.messages = Some(parts.iter().map(|p| p.messages).sum());
            status.replicas = Some(replicas);
            let n = parts.len();
            status.partitions = parts;
            conditions::ready(
                &mut status.conditions,
                format!("{n} partition streams provisioned"),
                generation,
            );
            status.observed_generation = generation;
            Outcome {
                status,
                requeue: Requeue::After(resync),
                events,
            }
        }
        Err(failure) => {
            warn!(reason = failure.reason(), error = %failure, "topic not ready");
            conditions::failed(&mut status.conditions, &failure, generation);
            status.observed_generation = generation;
            Outcome {
                requeue: failure.requeue(),
                status,
                events,
            }
        }
    }
}

/// Steps 2-3 (validate + build, pure): the topic's streams as the broker should have them.
#[derive(Debug, Clone)]
struct DesiredTopic {
    rr: sluice_broker::ResourceRef,
    settings: sluice_broker::config::TopicSettings,
}

/// Step 4 (apply): what provisioning changed.
#[derive(Debug)]
struct Provisioned {
    broker: sluice_broker::Broker,
    recreated: bool,
}

/// Validates the spec against its Broker and builds the settings.
fn desired(ns: &str, name: &str, topic: &Topic, broker: &Broker) -> Result<DesiredTopic, Failure> {
    let mut settings = topic_settings(&topic.spec)?;
    settings.replicas = stream_replicas(
        topic.spec.replicas,
        &topic.spec.broker,
        broker.spec.replicas,
    )?;
    Ok(DesiredTopic {
        rr: resource_ref(ns, name)?,
        settings,
    })
}

/// Creates or updates the partition streams.
async fn provision(
    connection: sluice_broker::Broker,
    desired: &DesiredTopic,
) -> Result<Provisioned, Failure> {
    let rr = &desired.rr;
    let changes = connection
        .ensure_topic(rr, &desired.settings)
        .await
        .map_err(|e| Failure::broker(&format!("failed to provision topic {rr}"), e))?;
    if !changes.is_noop() {
        info!(created = ?changes.created, updated = ?changes.updated, "topic provisioned");
    }
    Ok(Provisioned {
        broker: connection,
        recreated: !changes.created.is_empty(),
    })
}

/// Step 5 (status): the partitions as the broker reports them.
async fn observe(
    provisioned: &Provisioned,
    desired: &DesiredTopic,
) -> Result<Vec<PartitionStatus>, Failure> {
    let rr = &desired.rr;
    let parts = provisioned
        .broker
        .topic_status(rr, desired.settings.partitions)
        .await
        .map_err(|e| Failure::broker(&format!("failed to read status of topic {rr}"), e))?;
    Ok(partition_statuses(parts))
}

fn partition_statuses(parts: Vec<sluice_broker::PartitionStatus>) -> Vec<PartitionStatus> {
    parts
        .into_iter()
        .map(|p| PartitionStatus {
            partition: p.partition,
            first_offset: p.first_offset,
            last_offset: p.last_offset,
            messages: p.messages,
            bytes: p.bytes,
            leader: p.leader,
        })
        .collect()
}

/// The pipeline: dereference the Broker, then [`desired`]; when the spec was seen before and
/// the Broker's stream listing (at most half a resync period old) shows the streams as
/// desired, their status comes from it with no request of its own (a resync); otherwise
/// [`provision`] and [`observe`]. Returns the
/// partitions, whether streams were re-created, and the replicas in effect.
async fn apply(
    ctx: &ReconcileContext,
    topic: &Topic,
    resync: Duration,
) -> Result<(Vec<PartitionStatus>, bool, u32), Failure> {
    let (ns, name) = ns_name(topic);
    let broker = broker_of(ctx, &ns, &topic.spec.broker).await?;
    let desired = desired(&ns, &name, topic, &broker)?;
    let connection = connect(ctx, &ns, &broker).await?;
    let broker_name = kube::ResourceExt::name_any(&broker);
    let spec_observed = topic.metadata.generation.is_some()
        && topic.status.as_ref().and_then(|s| s.observed_generation) == topic.metadata.generation;
    if spec_observed
        && let Some(catalog) = ctx
            .pool
            .stream_catalog(&ns, &broker_name, &connection, resync / 2)
            .await
        && let Some(parts) = catalog.topic_in_place(&desired.rr, &desired.settings)
    {
        return Ok((partition_statuses(parts), false, desired.settings.replicas));
    }
    let provisioned = provision(connection, &desired).await?;
    let parts = observe(&provisioned, &desired).await?;
    Ok((parts, provisioned.recreated, desired.settings.replicas))
}

/// Cleans up a deleted Topic: with `deletionPolicy: Delete` removes its streams; lets go
/// when the Broker resource is gone.
#[instrument(skip_all, fields(topic = %format!("{}/{}", ns_name(topic).0, ns_name(topic).1)))]
pub async fn cleanup(ctx: &ReconcileContext, topic: &Topic) -> Result<(), Failure> {
    let (ns, name) = ns_name(topic);
    let policy = topic.spec.deletion_policy.unwrap_or_default();
    let kept = "the partition streams";
    let Some(broker) = cleanup_broker(ctx, &ns, &topic.spec.broker, policy, kept).await? else {
        return Ok(());
    };
    let deleted = broker
        .delete_topic(&resource_ref(&ns, &name)?)
        .await
        .map_err(|e| Failure::broker(&format!("failed to delete topic {ns}/{name}"), e))?;
    info!(deleted, "partition streams deleted");
    Ok(())
}

impl BrokerResource for Topic {
    const KIND: &'static str = "Topic";

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy.unwrap_or_default()
    }

    fn reconcile<'a>(
        &'a self,
        ctx: &'a ReconcileContext,
        resync: Duration,
    ) -> impl Future<Output = Outcome<TopicStatus>> + Send + 'a {
        reconcile(ctx, self, resync)
    }

    fn cleanup<'a>(
        &'a self,
        ctx: &'a ReconcileContext,
    ) -> impl Future<Output = Result<(), Failure>> + Send + 'a {
        cleanup(ctx, self)
    }
}
