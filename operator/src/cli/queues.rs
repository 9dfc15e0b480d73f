//! `sluice queues`: the queues on the broker with their depth, per priority level (queues with
//! priorities or delayed delivery) the messages due and the delayed ones not due yet, and, for
//! queues fed by topics, how far each source partition has been received.

use clap::Args;

use super::output::OutputArgs;
use super::report;
use super::target::BrokerArgs;

/// Arguments of `sluice queues`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Which broker.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Every namespace, not only `--namespace`.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Prints one line per queue, then one line per level and source partition.
pub async fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let connected = args.broker.connect().await?;
    let namespace = (!args.all_namespaces).then_some(args.broker.namespace.as_str());
    let result = report::queues(&connected.broker, namespace).await;
    connected.close().await;
    args.output.print(&result?, report::queues_table)
}
