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
        if cfg.source.kind == sluice_broker::config::SourceKind::Queue {
            print_fanout(&connected.broker, &cfg).await?;
        }
        anyhow::Ok(())
    }
    .await;
    connected.close().await;
    result
}

/// For a group on a queue fed by topics: what the queue has not received from them yet (lag
/// that is still upstream of the queue).
async fn print_fanout(
    broker: &sluice_broker::Broker,
    cfg: &sluice_broker::GroupConfig,
) -> anyhow::Result<()> {
    let queue = cfg.source_ref()?;
    let mut stream = broker
        .jetstream()
        .get_stream(sluice_broker::names::queue_stream(&queue))
        .await?;
    let info = stream.info().await?;
    let Some(meta) = info
        .config
        .metadata
        .get(sluice_broker::provision::META_SOURCES)
    else {
        return Ok(());
    };
    let sources = sluice_broker::provision::decode_sources(meta);
    println!("queue {queue} is fed by topics; not yet received from them:");
    println!("SOURCE              LAST-OFFSET  RECEIVED  PENDING");
    let mut upstream = 0;
    for s in broker.fanout_status(&queue, &sources).await? {
        upstream += s.pending;
        println!(
            "{:<20}{:<13}{:<10}{}",
            format!("{}/{}", s.topic, s.partition),
            s.origin_last_offset,
            s.received_offset,
            s.pending
        );
    }
    println!("upstream lag {upstream}");
    Ok(())
}
