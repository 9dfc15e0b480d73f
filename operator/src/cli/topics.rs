//! `sluice topics`: the topics on the broker with partitions, offsets and messages.

use clap::Args;

use super::output::OutputArgs;
use super::report;
use super::target::BrokerArgs;

/// Arguments of `sluice topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
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

/// Prints one line per topic (or the report as JSON/YAML).
pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let connected = args.broker.connect().await?;
    let namespace = (!args.all_namespaces).then_some(args.broker.namespace.as_str());
    let result = report::topics(&connected.broker, namespace).await;
    connected.close().await;
    args.output.print(&result?, report::topics_table)
}
