//! [`measure`]: the one lag reading of a consumer group on the broker, taken the same way by
//! the Kubernetes runtime (each group reconcile) and by `sluice dev` (each poll).

use sluice_broker::config::Ordering;
use sluice_broker::{Broker, GroupConfig, GroupLag, ResourceRef};
use tracing::warn;

/// The broker's view of a group at one reading: the autoscaler's input.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Lag per partition.
    pub lag: GroupLag,
    /// Partitions of the source (1 for a queue).
    pub partitions: u32,
    /// The group's ordering.
    pub ordering: Ordering,
    /// Depth of the group's dead-letter queue, when it has one and it could be read.
    pub dlq_depth: Option<u64>,
}

/// Reads the lag of the group `config` and the depth of its dead-letter queue.
///
/// # Errors
///
/// Fails only when the lag cannot be read. A dead-letter queue whose depth cannot be read is
/// logged and left out (`dlq_depth: None`): the autoscaler then counts no dead-letters this
/// time, which is better than not scaling at all.
pub async fn measure(
    broker: &Broker,
    config: &GroupConfig,
) -> Result<Measured, sluice_broker::Error> {
    let lag = broker.group_lag(config).await?;
    let dlq_depth = match &config.dead_letter {
        Some(dlq) => match ResourceRef::new(config.namespace.clone(), dlq.clone()) {
            Ok(rr) => match broker.dlq_status(&rr).await {
                Ok(d) => Some(d.depth),
                Err(e) => {
                    warn!(error = %e, dlq = %dlq, "cannot read the dead-letter queue's depth; the autoscaler counts no dead-letters this time");
                    None
                }
            },
            Err(_) => None,
        },
        None => None,
    };
    Ok(Measured {
        lag,
        partitions: config.source.partitions,
        ordering: config.ordering,
        dlq_depth,
    })
}
