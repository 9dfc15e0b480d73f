//! The `sluice` command (also installable as the kubectl plugin `kubectl-sluice`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = sluice_operator::cli::Cli::parse();
    sluice_operator::cli::run(cli).await
}
