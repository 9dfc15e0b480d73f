//! `sluice queues`: the queues on the broker with their depth, per priority level (queues with
//! priorities or delayed delivery) the messages due and the delayed ones not due yet, and, for
//! queues fed by topics, how far each source partition has been received.

use clap::Args;

use super::report::{self, ListArgs};

/// Arguments of `sluice queues`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Broker, namespaces, format.
    #[command(flatten)]
    pub list: ListArgs,
}

/// Prints one line per queue, then one line per level and source partition.
pub async fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let connected = args.list.broker.connect().await?;
    let result = report::queues(&connected.broker, args.list.namespace()).await;
    connected.close().await;
    args.list.output.print(&result?, report::queues_table)
}
