//! The `sluice` command line: one module per subcommand, each with its `Args` and `run`.
//! The binary (`src/bin/sluice.rs`) only parses flags and calls [`run`].

use clap::{Parser, Subcommand};

pub mod crds;
pub mod dev;
pub mod operator;

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
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds(args) => crds::run(&args),
        Command::Operator(args) => operator::run(args).await,
        Command::Dev(args) => dev::run(args).await,
    }
}
