//! `sluice topics`: the topics on the broker with partitions and messages.

use std::collections::BTreeMap;

use clap::Args;
use futures::TryStreamExt;
use sluice_broker::provision::{META_KIND, META_RESOURCE};

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
}

/// Prints one line per topic.
pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let connected = args.broker.connect().await?;
    let result = async {
        let mut topics: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        let mut streams = connected.broker.jetstream().streams();
        while let Some(info) = streams.try_next().await? {
            let meta = &info.config.metadata;
            if meta.get(META_KIND).map(String::as_str) != Some("topic") {
                continue;
            }
            let Some(resource) = meta.get(META_RESOURCE) else {
                continue;
            };
            if !args.all_namespaces && !resource.starts_with(&format!("{}/", args.broker.namespace))
            {
                continue;
            }
            topics
                .entry(resource.clone())
                .or_default()
                .push((info.state.messages, info.state.bytes));
        }
        println!("TOPIC                                PARTITIONS  MESSAGES  BYTES");
        for (name, parts) in &topics {
            let messages: u64 = parts.iter().map(|p| p.0).sum();
            let bytes: u64 = parts.iter().map(|p| p.1).sum();
            println!("{name:<37}{:<12}{messages:<10}{bytes}", parts.len());
        }
        anyhow::Ok(())
    }
    .await;
    connected.close().await;
    result
}
