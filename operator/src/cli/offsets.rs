//! `sluice offsets reset <group> --to earliest|latest|<RFC 3339 time>`: move a topic group's
//! position, e.g. to replay a topic for one group.
//!
//! JetStream cannot move a durable consumer, so the group's consumers are re-created with the
//! new start position (the group's config on the broker is updated to match). Other groups
//! are not affected. Workers running meanwhile pick the new consumers up; messages they were
//! handling may be delivered again.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use sluice_broker::config::{SourceKind, StartFrom};
use sluice_broker::names;

use super::target::BrokerArgs;

/// Arguments of `sluice offsets`.
#[derive(Debug, Args)]
pub struct OffsetsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: OffsetsCommand,
}

/// `sluice offsets` subcommands.
#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Restart a group from earliest, latest or a time.
    Reset {
        /// ConsumerGroup name.
        group: String,
        /// `earliest`, `latest` or an RFC 3339 time such as 2026-11-26T10:00:00Z.
        #[arg(long)]
        to: String,
        /// Which broker.
        #[command(flatten)]
        broker: BrokerArgs,
    },
}

/// Parses `--to`.
pub fn parse_position(to: &str) -> anyhow::Result<StartFrom> {
    match to {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        time => {
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--to {time:?}: use earliest, latest or an RFC 3339 time like 2026-11-26T10:00:00Z"))?;
            Ok(StartFrom::Time(time.to_string()))
        }
    }
}

/// Runs `sluice offsets`.
pub async fn run(args: OffsetsArgs) -> anyhow::Result<()> {
    let OffsetsCommand::Reset { group, to, broker } = args.command;
    let position = parse_position(&to)?;
    let connected = broker.connect().await?;
    let ns = broker.namespace.clone();
    let result = async {
        let store = connected.broker.group_config_store().await?;
        let mut cfg = store.get(&ns, &group).await?.with_context(|| {
            format!("group {ns}/{group} has no config on the broker: is the ConsumerGroup applied and Ready?")
        })?;
        if cfg.source.kind != SourceKind::Topic {
            bail!("group {ns}/{group} reads a queue; only topic groups have offsets to reset");
        }
        let durable = names::group_consumer(&cfg.group_ref()?);
        for stream_name in sluice_broker::group::group_streams(&cfg)? {
            let stream = connected.broker.jetstream().get_stream(&stream_name).await?;
            if let Err(e) = stream.delete_consumer(&durable).await {
                let text = e.to_string();
                if !text.contains("not found") {
                    bail!("failed to remove consumer {stream_name}/{durable}: {text}");
                }
            }
        }
        cfg.start_from = position;
        let changes = connected.broker.ensure_group(&cfg).await?;
        println!(
            "group {ns}/{group} restarts from {to} on {} partition(s)",
            changes.created.iter().filter(|c| c.contains('/')).count()
        );
        anyhow::Ok(())
    }
    .await;
    connected.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse() {
        assert_eq!(parse_position("earliest").unwrap(), StartFrom::Earliest);
        assert_eq!(parse_position("latest").unwrap(), StartFrom::Latest);
        assert_eq!(
            parse_position("2026-11-26T10:00:00Z").unwrap(),
            StartFrom::Time("2026-11-26T10:00:00Z".into())
        );
        assert!(
            parse_position("yesterday")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }
}
