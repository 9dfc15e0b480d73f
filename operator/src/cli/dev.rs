//! `sluice dev <dir or files>`: run manifests on a laptop (see [`crate::dev`]).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::time::Instant;

use crate::dev::session::{DevSession, SessionOptions};
use crate::dev::view;

/// Arguments of `sluice dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Manifest files or directories (read recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Exit once every Job has finished and every group has handled everything (no lag, no
    /// retries pending); prints the summary. Exit code 1 if anything was lost or a Job failed.
    #[arg(long)]
    pub until_idle: bool,
    /// With --until-idle, also wait until the autoscaler has scaled every group back to its
    /// minimum (shows scale-down; mind the groups' scaleDownStabilization).
    #[arg(long, requires = "until_idle")]
    pub wait_scale_down: bool,
    /// With --until-idle: give up after this long without reaching idleness, print what is
    /// still awaited (which group, which queue source partition, how many messages) and exit
    /// with code 1.
    #[arg(long, alias = "timeout", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Keep the broker's data, logs and Job records here (default: a temp dir removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Client port of the embedded broker (default: a free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Plain log lines instead of the live view (default when stdout is not a terminal).
    #[arg(long)]
    pub no_ui: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

/// Runs `sluice dev`.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let temp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("sluice-dev-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let ui = !args.no_ui && std::io::stdout().is_terminal();
    init_logging(ui, &data_dir)?;

    let mut session = DevSession::start(SessionOptions {
        paths: args.paths.clone(),
        data_dir: data_dir.clone(),
        port: args.port,
        grace: Duration::from_secs(30),
    })
    .await?;
    println!(
        "sluice dev: broker {} (data in {})",
        session.broker_url(),
        data_dir.display()
    );
    for (object, problem) in session.problems() {
        println!("! {object}: {problem}");
    }
    session.start_workloads().await?;

    let started = Instant::now();
    let mut next_resync = Instant::now() + Duration::from_secs(5);
    let mut next_line = Instant::now();
    let mut idle_streak = 0u32;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Outcome::Interrupted,
            _ = ticker.tick() => {}
        }
        session.tick().await?;
        if Instant::now() >= next_resync {
            session.resync().await;
            next_resync = Instant::now() + Duration::from_secs(5);
        }
        if ui {
            let frame = session.frame().await;
            print!("\x1b[2J\x1b[H{}", view::render(&frame));
            let _ = std::io::stdout().flush();
        } else if Instant::now() >= next_line {
            let frame = session.frame().await;
            let lag: u64 = frame.groups.iter().flat_map(|g| g.lag.iter()).sum();
            let workers: u32 = frame.groups.iter().map(|g| g.replicas).sum();
            let dead: u64 = frame.dlqs.iter().map(|d| d.depth).sum();
            println!(
                "[{:>4}s] lag={lag} workers={workers} dead-lettered={dead}",
                frame.elapsed_secs
            );
            next_line = Instant::now() + Duration::from_secs(5);
        }
        if args.until_idle {
            if session.is_idle().await? && (!args.wait_scale_down || session.at_minimum().await) {
                idle_streak += 1;
                // Idle on three consecutive ticks: nothing arrives from sources or retries.
                if idle_streak >= 3 {
                    break Outcome::Idle;
                }
            } else {
                idle_streak = 0;
            }
            if started.elapsed() > args.idle_timeout {
                break Outcome::TimedOut(
                    session
                        .waiting_for()
                        .await
                        .unwrap_or_else(|e| vec![format!("(could not read the broker: {e})")]),
                );
            }
        }
    };

    let summary = session.summary().await;
    let failed_jobs = session.failed_jobs();
    println!("stopping workers...");
    session.shutdown().await;
    let summary = summary?;
    for g in &summary.groups {
        println!(
            "group {}: expected={} processed={} dead-lettered={} lost={} (workers: max {}, {} scale-ups, {} scale-downs)",
            g.group,
            g.expected,
            g.processed,
            g.dead_lettered,
            g.lost,
            g.scaling.max_replicas,
            g.scaling.scale_ups,
            g.scaling.scale_downs
        );
    }
    println!("{}", summary.totals.line());
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    for job in &failed_jobs {
        println!("! job {job}");
    }
    match outcome {
        Outcome::TimedOut(waiting) => {
            println!("not idle after {:?}; still waiting for:", args.idle_timeout);
            for line in &waiting {
                println!("  - {line}");
            }
            anyhow::bail!(
                "not idle after {:?} (see what is awaited above and the logs in {})",
                args.idle_timeout,
                data_dir.join("logs").display()
            )
        }
        _ if summary.totals.lost > 0 => anyhow::bail!("{} messages were lost", summary.totals.lost),
        _ if !failed_jobs.is_empty() => anyhow::bail!("{} job(s) failed", failed_jobs.len()),
        _ => Ok(()),
    }
}

enum Outcome {
    Idle,
    Interrupted,
    /// What was still awaited.
    TimedOut(Vec<String>),
}

/// Logs go to `<data dir>/sluice-dev.log` while the live view owns the terminal, else to
/// stderr (warnings and errors unless RUST_LOG says otherwise).
fn init_logging(ui: bool, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if ui { "info" } else { "warn" }));
    if ui {
        let file = std::fs::File::create(data_dir.join("sluice-dev.log"))?;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    Ok(())
}
