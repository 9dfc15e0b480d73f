//! The `sluice` command line: one module per subcommand, each with its `Args` and `run`.
//! The binary (`src/bin/sluice.rs`) only parses flags and calls [`run`].

use clap::{Parser, Subcommand};

pub mod cluster;
pub mod completions;
pub mod crds;
pub mod dev;
pub mod dlq;
pub mod lag;
pub mod offsets;
pub mod operator;
pub mod output;
pub mod port_forward;
pub mod queues;
pub mod report;
pub mod status;
pub mod target;
pub mod topics;

/// Sluice: message queues and event streams on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the CustomResourceDefinitions as YAML.
    Crds(crds::CrdsArgs),
    /// Run the controllers (Topic, Queue, DeadLetterQueue, ConsumerGroup).
    Operator(operator::OperatorArgs),
    /// Run manifests locally: embedded broker, local worker processes, live view.
    Dev(dev::DevArgs),
    /// List topics with partitions and messages.
    Topics(topics::TopicsArgs),
    /// List queues with their depth and how far each source topic partition was received.
    Queues(queues::QueuesArgs),
    /// Show a group's lag per partition.
    Lag(lag::LagArgs),
    /// Inspect and replay dead-lettered messages.
    Dlq(dlq::DlqArgs),
    /// Reset a topic group's position (replay a topic for one group).
    Offsets(offsets::OffsetsArgs),
    /// One-screen overview: broker, topics, queues, groups (lag, members, owners), DLQs.
    Status(status::StatusArgs),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
}

/// The streams Sluice made for resources of `kind` (`topic`, `queue`, ...), with the resource
/// (`namespace/name`) each belongs to; only `namespace`'s unless it is `None`.
pub(crate) async fn streams_of_kind(
    broker: &sluice_broker::Broker,
    kind: &str,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<(String, async_nats::jetstream::stream::Info)>> {
    use futures::TryStreamExt;
    use sluice_broker::provision::{META_KIND, META_RESOURCE};
    let mut out = Vec::new();
    let mut streams = broker.jetstream().streams();
    while let Some(info) = streams.try_next().await? {
        let meta = &info.config.metadata;
        if meta.get(META_KIND).map(String::as_str) != Some(kind) {
            continue;
        }
        let Some(resource) = meta.get(META_RESOURCE).cloned() else {
            continue;
        };
        if namespace.is_some_and(|ns| !resource.starts_with(&format!("{ns}/"))) {
            continue;
        }
        out.push((resource, info));
    }
    Ok(out)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds(args) => crds::run(&args),
        Command::Operator(args) => operator::run(args).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Topics(args) => topics::run(args).await,
        Command::Queues(args) => queues::run(args).await,
        Command::Lag(args) => lag::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Offsets(args) => offsets::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Completions(args) => completions::run(&args),
    }
}
