//! The broker side of autoscaling as a [`LagSource`]: reads a group's lag (and its DLQ depth)
//! from the broker and turns it into the autoscaler's [`LagSnapshot`] with
//! [`LagHistory`](crate::desired::autoscaling::LagHistory), which documents how processed and
//! failed counts are derived. Used by `sluice dev`; the Kubernetes runtime keeps a
//! `LagHistory` per group in its controller context.

use std::sync::Mutex;

use sluice_broker::{Broker, GroupConfig, ResourceRef};

use crate::autoscale::{LagSnapshot, LagSource};
use crate::desired::autoscaling::LagHistory;

/// Takes [`LagSnapshot`]s of one group from the broker.
#[derive(Debug)]
pub struct BrokerLagSource {
    broker: Broker,
    config: GroupConfig,
    history: Mutex<LagHistory>,
}

impl BrokerLagSource {
    /// A source for the group `config`.
    pub fn new(broker: Broker, config: GroupConfig) -> Self {
        Self {
            broker,
            config,
            history: Mutex::new(LagHistory::default()),
        }
    }

    /// Replaces the group config (it changed), keeping the history.
    pub fn set_config(&mut self, config: GroupConfig) {
        self.config = config;
    }

    fn dlq(&self) -> Option<ResourceRef> {
        let name = self.config.dead_letter.as_ref()?;
        ResourceRef::new(self.config.namespace.clone(), name.clone()).ok()
    }
}

impl LagSource for BrokerLagSource {
    type Error = sluice_broker::Error;

    async fn snapshot(&self) -> Result<LagSnapshot, Self::Error> {
        let lag = self.broker.group_lag(&self.config).await?;
        let dlq_depth = match self.dlq() {
            Some(dlq) => Some(self.broker.dlq_status(&dlq).await?.depth),
            None => None,
        };
        let mut history = self
            .history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(history.snapshot(
            &lag,
            self.config.source.partitions,
            self.config.ordering,
            dlq_depth,
        ))
    }
}
