//! `sluice queues`: the queues on the broker with their depth, per priority level (queues with
//! priorities or delayed delivery) the messages due and the delayed ones not due yet, and, for
//! queues fed by topics, how far each source partition has been received.

use clap::Args;
use sluice_broker::ResourceRef;
use sluice_broker::provision::{META_SOURCES, decode_sources};
use sluice_broker::schedule::QueueFeatures;

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
        let namespace = (!args.all_namespaces).then_some(args.broker.namespace.as_str());
        let mut queues = Vec::new();
        for (resource, info) in super::streams_of_kind(&connected.broker, "queue", namespace).await? {
            let sources = info
                .config
                .metadata
                .get(META_SOURCES)
                .map(|v| decode_sources(v))
                .unwrap_or_default();
            let features = QueueFeatures::from_metadata(&info.config.metadata);
            let levels = features.priorities > 1
                || features.max_delay.is_some()
                || info.config.allow_message_schedules;
            queues.push((resource, info.state.messages, sources, levels));
        }
        queues.sort_by(|a, b| a.0.cmp(&b.0));
        println!("QUEUE                                MESSAGES  SOURCE              LAST-OFFSET  RECEIVED  PENDING");
        for (resource, messages, sources, levels) in &queues {
            println!("{resource:<37}{messages:<10}");
            let Some((ns, name)) = resource.split_once('/') else {
                continue;
            };
            let queue = ResourceRef::new(ns, name)?;
            if *levels {
                for l in connected.broker.queue_levels(&queue).await?.iter().rev() {
                    println!(
                        "  priority {:<26}{:<10}due={} scheduled={}",
                        l.level,
                        l.due + l.scheduled,
                        l.due,
                        l.scheduled
                    );
                }
            }
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
