//! `sluice operator`: runs the controllers.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use crate::controller::runtime::{self, Settings};

/// Flags of `sluice operator`.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// Watch only this namespace (repeatable). Default: all namespaces.
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Reach broker NAME at URL instead of its client Service (repeatable), e.g.
    /// `--broker-url main=nats://127.0.0.1:4222`.
    #[arg(long = "broker-url", value_name = "NAME=URL")]
    pub broker_urls: Vec<String>,
    /// Resync period of healthy objects (re-creates broker objects deleted behind the
    /// operator's back), e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync: std::time::Duration,
}

/// Parses `name=url` pairs.
pub fn parse_overrides(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some((name, url)) = pair.split_once('=') else {
            bail!("--broker-url {pair:?}: expected NAME=URL, e.g. main=nats://127.0.0.1:4222");
        };
        if name.is_empty() || url.is_empty() {
            bail!("--broker-url {pair:?}: both NAME and URL are required");
        }
        out.insert(name.to_string(), url.to_string());
    }
    Ok(out)
}

/// Runs `sluice operator` until SIGTERM or Ctrl-C.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "sluice operator starting"
    );
    let settings = Settings {
        namespaces: args.namespaces,
        broker_urls: parse_overrides(&args.broker_urls)?,
        resync: args.resync,
    };
    let client = kube::Client::try_default().await.context(
        "failed to connect to Kubernetes: set KUBECONFIG or run in a pod with a service account",
    )?;
    runtime::run(
        client,
        settings,
        std::sync::Arc::default(),
        shutdown_signal(),
    )
    .await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_reject_garbage() {
        let m = parse_overrides(&["main=nats://127.0.0.1:4222".into()]).unwrap();
        assert_eq!(m["main"], "nats://127.0.0.1:4222");
        assert!(parse_overrides(&["main".into()]).is_err());
        assert!(parse_overrides(&["=nats://x".into()]).is_err());
    }
}
