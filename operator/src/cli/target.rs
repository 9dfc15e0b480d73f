//! Which broker an operations command talks to: `--broker-url` (or `SLUICE_BROKER_URL`),
//! `--dev DIR`, the broker of a `sluice dev --data-dir DIR` session (started on that store
//! when the session is not running), or else a Broker of the cluster of the kubeconfig
//! (`--broker NAME`, default the only one in `--namespace`), reached by a port-forward.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use sluice_broker::embedded::NatsServer;
use sluice_broker::{Broker, ConnectOptions};

use super::cluster;
use super::port_forward::PortForward;
use crate::dev::session::{start_broker, url_file};

/// Broker selection shared by the operations commands.
#[derive(Clone, Args)]
pub struct BrokerArgs {
    /// Broker URL(s), comma-separated.
    #[arg(long, env = "SLUICE_BROKER_URL")]
    pub broker_url: Option<String>,
    /// Broker user.
    #[arg(long, env = "SLUICE_BROKER_USER")]
    pub user: Option<String>,
    /// Broker password.
    #[arg(long, env = "SLUICE_BROKER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// PEM file with the broker's CA (the `ca.crt` of its `<broker>-tls` Secret): the
    /// connection uses TLS and verifies the server against it. A Broker reached through the
    /// kubeconfig needs none: its CA is read from the cluster.
    #[arg(long, env = "SLUICE_BROKER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The data directory of a `sluice dev --data-dir DIR` session.
    #[arg(long, conflicts_with = "broker_url")]
    pub dev: Option<PathBuf>,
    /// The Broker resource in --namespace to reach through the kubeconfig (default: the only
    /// Broker there). Used when neither --broker-url nor --dev is given.
    #[arg(long = "broker", value_name = "NAME", conflicts_with_all = ["broker_url", "dev"])]
    pub broker_name: Option<String>,
    /// Namespace of the resources.
    #[arg(long, short = 'n', env = "SLUICE_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

impl std::fmt::Debug for BrokerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerArgs")
            .field("broker_url", &self.broker_url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dev", &self.dev)
            .field("broker_name", &self.broker_name)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// A connection, plus the embedded server it needed (kept alive while the command runs).
#[derive(Debug)]
pub struct Connected {
    /// The broker.
    pub broker: Broker,
    /// The server started for `--dev` when no session was running.
    pub server: Option<NatsServer>,
    /// The port-forward to a cluster's broker pod, when the broker was found via kubeconfig.
    pub forward: Option<PortForward>,
}

impl BrokerArgs {
    /// Connects to the chosen broker.
    pub async fn connect(&self) -> anyhow::Result<Connected> {
        if let Some(dir) = &self.dev {
            if let Ok(url) = std::fs::read_to_string(url_file(dir))
                && let Ok(broker) = Broker::connect(&self.options(url.trim())?).await
            {
                return Ok(Connected {
                    broker,
                    server: None,
                    forward: None,
                });
            }
            let server = start_broker(dir, None)
                .await
                .with_context(|| format!("failed to start the broker of {}", dir.display()))?;
            let broker = Broker::connect(&self.options(&server.url())?).await?;
            return Ok(Connected {
                broker,
                server: Some(server),
                forward: None,
            });
        }
        let Some(url) = self.broker_url.as_deref() else {
            return self.connect_cluster().await;
        };
        let broker = Broker::connect(&self.options(url)?)
            .await
            .with_context(|| format!("failed to connect to {url}"))?;
        Ok(Connected {
            broker,
            server: None,
            forward: None,
        })
    }

    /// Reaches the Broker through the kubeconfig; `--user`/`--password` override the
    /// credentials of its Secret.
    async fn connect_cluster(&self) -> anyhow::Result<Connected> {
        let reached = cluster::reach(&self.namespace, self.broker_name.as_deref()).await?;
        let url = reached.forward.url();
        let mut options = self.options(&url)?;
        if options.ca.is_none()
            && let Some(pem) = &reached.ca
        {
            options.ca = Some(
                sluice_broker::tls::TrustedCa::from_pem(pem)
                    .context("the Broker's ca.crt is not a PEM certificate")?,
            );
        }
        // The servers advertise pod IPs, unreachable from here: stay on the forwarded port.
        options.ignore_discovered_servers = true;
        let (user, password) = reached.credentials;
        options.user = self.user.clone().or(Some(user));
        options.password = self.password.clone().or(Some(password));
        let broker = Broker::connect(&options)
            .await
            .with_context(|| format!("failed to connect to the broker through {url}"))?;
        Ok(Connected {
            broker,
            server: None,
            forward: Some(reached.forward),
        })
    }

    fn options(&self, url: &str) -> anyhow::Result<ConnectOptions> {
        let mut options = ConnectOptions::from_url_list(url);
        options.name = "sluice-cli".into();
        options.user = self.user.clone();
        options.password = self.password.clone();
        if let Some(path) = &self.ca_file {
            options.ca = Some(sluice_broker::tls::TrustedCa::from_file(path)?);
        }
        Ok(options)
    }
}

impl Connected {
    /// Stops the server started for `--dev` and the port-forward, if any.
    pub async fn close(self) {
        if let Some(forward) = self.forward {
            forward.stop();
        }
        if let Some(mut server) = self.server {
            let _ = server.stop().await;
        }
    }
}
