//! `sluice crds`: writes the generated CRD YAML.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::crdgen;

/// Flags of `sluice crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write the files into this directory only. Default: `crds/` and `charts/sluice/crds/`
    /// below the current directory (run it from the repository root).
    #[arg(long, value_name = "DIR", conflicts_with = "stdout")]
    pub out: Option<PathBuf>,
    /// Print all CRDs as one multi-document YAML stream instead (e.g. to pipe into
    /// `kubectl apply -f -`).
    #[arg(long)]
    pub stdout: bool,
}

/// Runs `sluice crds`.
pub fn run(args: &CrdsArgs) -> anyhow::Result<()> {
    if args.stdout {
        let mut out = std::io::stdout().lock();
        for file in crdgen::render_all()? {
            writeln!(out, "---\n{}", file.yaml).context("failed to write to stdout")?;
        }
        return Ok(());
    }
    let dirs: Vec<PathBuf> = match &args.out {
        Some(dir) => vec![dir.clone()],
        None => crdgen::CRD_DIRS.iter().map(PathBuf::from).collect(),
    };
    for dir in dirs {
        for path in crdgen::write_all(&dir)? {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
