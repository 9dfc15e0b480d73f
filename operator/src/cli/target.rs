//! Which broker an operations command talks to: `--broker-url` (or `SLUICE_BROKER_URL`), or
//! `--dev DIR`, the broker of a `sluice dev --data-dir DIR` session (started on that store
//! when the session is not running).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use sluice_broker::embedded::NatsServer;
use sluice_broker::{Broker, ConnectOptions};

use crate::dev::session::{start_broker, url_file};

/// Broker selection shared by the operations commands.
#[derive(Debug, Clone, Args)]
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
    /// The data directory of a `sluice dev --data-dir DIR` session.
    #[arg(long, conflicts_with = "broker_url")]
    pub dev: Option<PathBuf>,
    /// Namespace of the resources.
    #[arg(long, short = 'n', env = "SLUICE_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

/// A connection, plus the embedded server it needed (kept alive while the command runs).
#[derive(Debug)]
pub struct Connected {
    /// The broker.
    pub broker: Broker,
    /// The server started for `--dev` when no session was running.
    pub server: Option<NatsServer>,
}

impl BrokerArgs {
    /// Connects to the chosen broker.
    pub async fn connect(&self) -> anyhow::Result<Connected> {
        if let Some(dir) = &self.dev {
            if let Ok(url) = std::fs::read_to_string(url_file(dir))
                && let Ok(broker) = Broker::connect(&self.options(url.trim())).await
            {
                return Ok(Connected {
                    broker,
                    server: None,
                });
            }
            let server = start_broker(dir, None)
                .await
                .with_context(|| format!("failed to start the broker of {}", dir.display()))?;
            let broker = Broker::connect(&self.options(&server.url())).await?;
            return Ok(Connected {
                broker,
                server: Some(server),
            });
        }
        let url = self.broker_url.as_deref().context(
            "no broker given: use --broker-url nats://HOST:4222 (or SLUICE_BROKER_URL), or --dev DIR for a `sluice dev --data-dir DIR` session",
        )?;
        let broker = Broker::connect(&self.options(url))
            .await
            .with_context(|| format!("failed to connect to {url}"))?;
        Ok(Connected {
            broker,
            server: None,
        })
    }

    fn options(&self, url: &str) -> ConnectOptions {
        let mut options = ConnectOptions::from_url_list(url);
        options.name = "sluice-cli".into();
        options.user = self.user.clone();
        options.password = self.password.clone();
        options
    }
}

impl Connected {
    /// Stops the server started for `--dev`, if any.
    pub async fn close(self) {
        if let Some(mut server) = self.server {
            let _ = server.stop().await;
        }
    }
}
