//! `sluice topics`: the topics on the broker with partitions and messages.

use std::collections::BTreeMap;

use clap::Args;

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
        let namespace = (!args.all_namespaces).then_some(args.broker.namespace.as_str());
        let mut topics: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for (resource, info) in
            super::streams_of_kind(&connected.broker, "topic", namespace).await?
        {
            topics
                .entry(resource)
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
