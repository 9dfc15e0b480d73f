//! `sluice operator`: runs the controllers as a service — telemetry, the health and metrics
//! endpoint, the CRDs applied at start, and (with `--leader-election`) only while this
//! replica holds the leader Lease.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::ArgAction;

use crate::broker_cluster::OperatorPeer;
use crate::controller::metrics::Metrics;
use crate::controller::runtime::{self, Settings};
use crate::service::http::{self, Health};
use crate::service::leader::{self, Elector, LeaderConfig};
use crate::service::telemetry::LogFormat;
use crate::service::{crds, telemetry};

/// Where the operator runs, when Broker NetworkPolicies are wanted.
fn operator_peer(args: &OperatorArgs) -> anyhow::Result<Option<OperatorPeer>> {
    if !args.broker_network_policy {
        return Ok(None);
    }
    let (Some(namespace), Some(labels)) = (&args.operator_namespace, &args.operator_pod_labels)
    else {
        anyhow::bail!(
            "--broker-network-policy needs --operator-namespace and --operator-pod-labels (the chart sets both)"
        );
    };
    let mut pod_labels = std::collections::BTreeMap::new();
    for pair in labels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            anyhow::bail!("--operator-pod-labels: {pair:?} is not key=value");
        };
        pod_labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    anyhow::ensure!(
        !pod_labels.is_empty(),
        "--operator-pod-labels is empty: give the labels of the operator's pods"
    );
    Ok(Some(OperatorPeer {
        namespace: namespace.clone(),
        pod_labels,
    }))
}

/// Flags of `sluice operator`. The Helm chart passes `--namespace` and the `SLUICE_*`
/// environment variables.
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
    /// Retry period of an object whose Broker, source or dead-letter queue does not exist
    /// yet. Objects are also reconciled as soon as what they point to appears (it is
    /// watched); this is the safety net.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub missing_retry: std::time::Duration,
    /// How long a shutdown (SIGTERM) waits for in-flight reconciles; keep it below the pod's
    /// terminationGracePeriodSeconds (30 s in the chart).
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// DNS domain of the cluster: broker servers find each other at
    /// `<pod>.<broker>-headless.<namespace>.svc.<domain>`.
    #[arg(long, env = "SLUICE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Build a NetworkPolicy per Broker admitting clients only from the namespace's workers,
    /// pods labelled `sluice.dev/broker-client=true` and the operator (needs
    /// --operator-namespace and --operator-pod-labels), routes only from its own servers.
    #[arg(long, env = "SLUICE_BROKER_NETWORK_POLICY", default_value_t = false, action = ArgAction::Set)]
    pub broker_network_policy: bool,
    /// Namespace the operator runs in (the chart sets it from the downward API).
    #[arg(long, env = "SLUICE_OPERATOR_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Labels selecting the operator's pods, `key=value,key=value`.
    #[arg(long, env = "SLUICE_OPERATOR_POD_LABELS")]
    pub operator_pod_labels: Option<String>,
    /// Address of the /healthz, /readyz and /metrics endpoint.
    #[arg(long, env = "SLUICE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Run the controllers only while holding the leader Lease (needed with several replicas).
    #[arg(long, env = "SLUICE_LEADER_ELECTION", default_value_t = false, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease. Default: the pod's namespace, else the client's default.
    #[arg(long, env = "SLUICE_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "sluice-operator-leader")]
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events. Default: the host name plus a
    /// random suffix.
    #[arg(long, env = "SLUICE_POD_NAME")]
    pub pod_name: Option<String>,
    /// Log lines as plain `text` (coloured only on a terminal) or one `json` object per line.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, ignore_case = true)]
    pub log_format: LogFormat,
    /// Apply (create or update) the Sluice CRDs at start with server-side apply.
    #[arg(long, env = "SLUICE_APPLY_CRDS", default_value_t = true, action = ArgAction::Set)]
    pub apply_crds: bool,
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

fn identity(pod_name: Option<String>) -> String {
    pod_name.filter(|n| !n.is_empty()).unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sluice-operator".into());
        format!(
            "{host}-{}",
            crate::broker_cluster::generate_password()
                .get(..8)
                .unwrap_or("x")
                .to_lowercase()
        )
    })
}

/// How long an object's broker readings stay in `/metrics` after they were taken: 5 minutes,
/// or 4 resync periods when that is longer (a healthy object is read every resync).
pub fn stale_after(resync: std::time::Duration) -> std::time::Duration {
    (resync * 4).max(crate::controller::metrics::objects::DEFAULT_STALE_AFTER)
}

/// Runs `sluice operator` until SIGTERM or Ctrl-C.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let _telemetry =
        telemetry::init(args.log_format).context("failed to set up logging and tracing")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        leader_election = args.leader_election,
        "sluice operator starting"
    );
    let settings = Settings {
        namespaces: args.namespaces.clone(),
        broker_urls: parse_overrides(&args.broker_urls)?,
        resync: args.resync,
        missing_retry: args.missing_retry,
        cluster_domain: args.cluster_domain.clone(),
        broker_network_policy: operator_peer(&args)?,
        shutdown_grace: args.shutdown_grace,
    };
    let metrics = Arc::new(Metrics::with_stale_after(stale_after(args.resync)));
    let health = Arc::new(Health::default());
    let listener = http::bind(args.metrics_addr).await.with_context(|| {
        format!(
            "failed to listen on {} (--metrics-addr / SLUICE_METRICS_ADDR)",
            args.metrics_addr
        )
    })?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        async {
            let _ = http_stopped.await;
        },
    ));

    let client = kube::Client::try_default().await.context(
        "failed to connect to Kubernetes: set KUBECONFIG or run in a pod with a service account",
    )?;
    if args.apply_crds {
        crds::apply_crds(&client).await?;
    }
    health.set_ready();

    if args.leader_election {
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let config = LeaderConfig::new(
            namespace,
            args.lease_name.clone(),
            identity(args.pod_name.clone()),
        );
        tracing::info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, "campaigning for the leader lease");
        let elector = Elector::new(client.clone(), config);
        let lead_metrics = metrics.clone();
        leader::run(elector, metrics.clone(), shutdown_signal(), move |stop| {
            runtime::run(client.clone(), settings.clone(), lead_metrics.clone(), stop)
        })
        .await;
    } else {
        metrics.set_leader(true);
        runtime::run(client, settings, metrics.clone(), shutdown_signal()).await;
    }
    let _ = stop_http.send(());
    let _ = server.await;
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
    fn chart_environment_is_understood() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: OperatorArgs,
        }
        // The chart passes `--namespace` flags and SLUICE_* variables; clap maps each
        // variable to the flag of the same meaning, exercised here through the flags.
        let cli = Cli::try_parse_from([
            "operator",
            "--namespace",
            "team-a",
            "--namespace",
            "team-b",
            "--leader-election",
            "true",
            "--leader-election-namespace",
            "sluice-system",
            "--pod-name",
            "sluice-abc",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--log-format",
            "JSON",
        ])
        .unwrap();
        assert_eq!(cli.args.log_format, LogFormat::Json);
        assert_eq!(
            stale_after(std::time::Duration::from_secs(30)).as_secs(),
            300
        );
        assert_eq!(
            stale_after(std::time::Duration::from_secs(600)).as_secs(),
            2400
        );
        assert_eq!(cli.args.namespaces, ["team-a", "team-b"]);
        assert!(cli.args.leader_election);
        assert_eq!(
            cli.args.leader_election_namespace.as_deref(),
            Some("sluice-system")
        );
        assert_eq!(cli.args.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert!(cli.args.apply_crds, "CRDs are applied unless switched off");
        assert_eq!(identity(cli.args.pod_name), "sluice-abc");
        assert!(identity(None).len() > 9);
    }

    #[test]
    fn overrides_parse_and_reject_garbage() {
        let m = parse_overrides(&["main=nats://127.0.0.1:4222".into()]).unwrap();
        assert_eq!(m["main"], "nats://127.0.0.1:4222");
        assert!(parse_overrides(&["main".into()]).is_err());
        assert!(parse_overrides(&["=nats://x".into()]).is_err());
    }
}
