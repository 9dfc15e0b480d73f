//! `sluice lag <group>`: a group's lag per partition, with each partition's owner, read from
//! the broker.

use anyhow::Context as _;
use clap::Args;

use super::output::OutputArgs;
use super::report;
use super::target::BrokerArgs;

/// Arguments of `sluice lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    /// ConsumerGroup name.
    pub group: String,
    /// Which broker.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Prints the lag table (or the report as JSON/YAML).
pub async fn run(args: LagArgs) -> anyhow::Result<()> {
    let connected = args.broker.connect().await?;
    let ns = &args.broker.namespace;
    let result = async {
        let store = connected.broker.group_config_store().await?;
        let cfg = store.get(ns, &args.group).await?.with_context(|| {
            format!("group {ns}/{} has no config on the broker: is the ConsumerGroup applied and Ready?", args.group)
        })?;
        report::group(&connected.broker, &cfg).await
    }
    .await;
    connected.close().await;
    args.output.print(&result?, report::group_table)
}
