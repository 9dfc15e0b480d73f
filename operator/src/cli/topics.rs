//! `sluice topics`: the topics on the broker with partitions, offsets and messages.

use clap::Args;

use super::report::{self, ListArgs};

/// Arguments of `sluice topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// Broker, namespaces, format.
    #[command(flatten)]
    pub list: ListArgs,
}

/// Prints one line per topic (or the report as JSON/YAML).
pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let connected = args.list.broker.connect().await?;
    let result = report::topics(&connected.broker, args.list.namespace()).await;
    connected.close().await;
    args.list.output.print(&result?, report::topics_table)
}
