//! `sluice lag <group>`: a group's lag per partition, read from the broker.

use anyhow::Context as _;
use clap::Args;

use super::target::BrokerArgs;

/// Arguments of `sluice lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    /// ConsumerGroup name.
    pub group: String,
    /// Which broker.
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Prints the lag table.
pub async fn run(args: LagArgs) -> anyhow::Result<()> {
    let connected = args.broker.connect().await?;
    let ns = &args.broker.namespace;
    let result = async {
        let store = connected.broker.group_config_store().await?;
        let cfg = store.get(ns, &args.group).await?.with_context(|| {
            format!("group {ns}/{} has no config on the broker: is the ConsumerGroup applied and Ready?", args.group)
        })?;
        let lag = connected.broker.group_lag(&cfg).await?;
        println!("PARTITION  PENDING  UNACKED  RETRYING  ACKED-OFFSET");
        for p in &lag.partitions {
            println!(
                "{:<11}{:<9}{:<9}{:<10}{}",
                p.partition, p.pending, p.ack_pending, p.retrying, p.acked_offset
            );
        }
        println!("total lag {} (without retrying: {})", lag.total(), lag.effective_total());
        anyhow::Ok(())
    }
    .await;
    connected.close().await;
    result
}
