//! `sluice queues`: the queues on the broker with their depth and, for queues fed by topics,
//! how far each source partition has been received.

use clap::Args;
use futures::TryStreamExt;
use sluice_broker::ResourceRef;
use sluice_broker::provision::{META_KIND, META_RESOURCE, META_SOURCES, decode_sources};

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
}

/// Prints one line per queue, then one line per source partition.
pub async fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let connected = args.broker.connect().await?;
    let result = async {
        let mut queues = Vec::new();
        let mut streams = connected.broker.jetstream().streams();
        while let Some(info) = streams.try_next().await? {
            let meta = &info.config.metadata;
            if meta.get(META_KIND).map(String::as_str) != Some("queue") {
                continue;
            }
            let Some(resource) = meta.get(META_RESOURCE) else {
                continue;
            };
            if !args.all_namespaces && !resource.starts_with(&format!("{}/", args.broker.namespace))
            {
                continue;
            }
            let sources = meta
                .get(META_SOURCES)
                .map(|v| decode_sources(v))
                .unwrap_or_default();
            queues.push((resource.clone(), info.state.messages, sources));
        }
        queues.sort_by(|a, b| a.0.cmp(&b.0));
        println!("QUEUE                                MESSAGES  SOURCE              LAST-OFFSET  RECEIVED  PENDING");
        for (resource, messages, sources) in &queues {
            println!("{resource:<37}{messages:<10}");
            let Some((ns, name)) = resource.split_once('/') else {
                continue;
            };
            let queue = ResourceRef::new(ns, name)?;
            for s in connected.broker.fanout_status(&queue, sources).await? {
                let source = format!("{}/{}", s.topic, s.partition);
                let note = if !s.origin_exists {
                    "  (partition not created yet)"
                } else if !s.relay_attached {
                    "  (relay not attached yet)"
                } else {
                    ""
                };
                println!(
                    "{:<47}{source:<20}{:<13}{:<10}{}{note}",
                    "", s.origin_last_offset, s.received_offset, s.pending
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    connected.close().await;
    result
}
