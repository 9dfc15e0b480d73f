//! The `sluice` command line: one module per subcommand, each with its `Args` and `run`.
//! The binary (`src/bin/sluice.rs`) only parses flags and calls [`run`].

use clap::{Parser, Subcommand};

pub mod cluster;
pub mod crds;
pub mod dev;
pub mod dlq;
pub mod lag;
pub mod offsets;
pub mod operator;
pub mod port_forward;
pub mod queues;
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
    }
}
