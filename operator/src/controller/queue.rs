//! Queue: dereference the Broker and source Topics -> validate and build `QueueSettings` ->
//! `ensure_queue` -> status with the number of waiting messages.

use tracing::{info, instrument, warn};

use super::env::Env;
use super::topic::live_broker;
use super::{Failure, Outcome, Requeue, broker_of, conditions, ns_name, resource_ref};
use crate::crd::{DeletionPolicy, Queue, QueueStatus, Topic};
use crate::desired::queue::{ResolvedTopic, queue_settings};
use crate::desired::stream_replicas;

/// Reconciles one Queue against its broker.
#[instrument(skip_all, fields(queue = %format!("{}/{}", ns_name(queue).0, ns_name(queue).1)))]
pub async fn reconcile(
    env: &Env,
    queue: &Queue,
    resync: std::time::Duration,
) -> Outcome<QueueStatus> {
    let generation = queue.metadata.generation;
    let mut status = queue.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    match apply(env, queue).await {
        Ok(messages) => {
            status.messages = Some(messages);
            conditions::ready(
                &mut status.conditions,
                "queue stream provisioned",
                generation,
            );
            Outcome {
                status,
                requeue: Requeue::After(resync),
                notes: Vec::new(),
            }
        }
        Err(failure) => {
            warn!(reason = failure.reason(), error = %failure, "queue not ready");
            conditions::failed(&mut status.conditions, &failure, generation);
            Outcome {
                requeue: failure.requeue(),
                status,
                notes: Vec::new(),
            }
        }
    }
}

async fn apply(env: &Env, queue: &Queue) -> Result<u64, Failure> {
    let (ns, name) = ns_name(queue);
    let broker_obj = broker_of(env, &ns, &queue.spec.broker).await?;
    let mut topics = Vec::new();
    for (i, source) in queue.spec.sources.iter().enumerate() {
        let topic = env.lookup.get::<Topic>(&ns, &source.topic).await?.ok_or_else(|| Failure::Missing {
            reason: "SourceNotFound",
            message: format!("spec.sources[{i}].topic: Topic {} does not exist in namespace {ns}; create it or fix the source", source.topic),
        })?;
        topics.push(ResolvedTopic {
            name: source.topic.clone(),
            broker: topic.spec.broker.clone(),
            partitions: topic.spec.partitions,
        });
    }
    let mut settings = queue_settings(&queue.spec, &topics)?;
    settings.replicas = stream_replicas(
        queue.spec.replicas,
        &queue.spec.broker,
        broker_obj.spec.replicas,
    )?;
    let rr = resource_ref(&ns, &name)?;
    let broker = super::connect(env, &ns, &broker_obj).await?;
    let changes = broker
        .ensure_queue(&rr, &settings)
        .await
        .map_err(|e| Failure::broker(&format!("failed to provision queue {ns}/{name}"), e))?;
    if !changes.is_noop() {
        info!(created = ?changes.created, updated = ?changes.updated, "queue provisioned");
    }
    let stream_name = sluice_broker::names::queue_stream(&rr);
    let mut stream = broker
        .jetstream()
        .get_stream(&stream_name)
        .await
        .map_err(|e| {
            Failure::Broker(format!(
                "failed to look up stream {stream_name} of queue {ns}/{name}: {e}"
            ))
        })?;
    let info = stream.info().await.map_err(|e| {
        Failure::Broker(format!(
            "failed to read stream {stream_name} of queue {ns}/{name}: {e}"
        ))
    })?;
    Ok(info.state.messages)
}

/// Cleans up a deleted Queue (only with `deletionPolicy: Delete`).
#[instrument(skip_all, fields(queue = %format!("{}/{}", ns_name(queue).0, ns_name(queue).1)))]
pub async fn cleanup(env: &Env, queue: &Queue) -> Result<(), Failure> {
    if queue.spec.deletion_policy.unwrap_or_default() != DeletionPolicy::Delete {
        info!("deletionPolicy Retain: keeping the queue stream");
        return Ok(());
    }
    let (ns, name) = ns_name(queue);
    let Some(broker_obj) = live_broker(env, &ns, &queue.spec.broker).await? else {
        return Ok(());
    };
    let broker = super::connect(env, &ns, &broker_obj).await?;
    broker
        .delete_queue(&resource_ref(&ns, &name)?)
        .await
        .map_err(|e| Failure::broker(&format!("failed to delete queue {ns}/{name}"), e))?;
    Ok(())
}
