//! The controllers run inside another process (a test, a tool embedding Sluice): started
//! for some namespaces with the Brokers' URLs given, stopped on request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use super::runtime::{self, Settings};

/// The controllers running in-process, watching one namespace, with Broker `main` reached at
/// a given URL; [`InProcessOperator::stop`] shuts them down.
#[derive(Debug)]
pub struct InProcessOperator {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl InProcessOperator {
    /// Starts the controllers for `namespace` with the given resync period and metrics; the
    /// Broker named `main` is reached at `broker_url` instead of its in-cluster Service.
    pub fn start(
        client: &Client,
        namespace: &str,
        broker_url: &str,
        resync: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::start_with(
            client,
            Settings {
                namespaces: vec![namespace.to_string()],
                broker_urls: BTreeMap::from([("main".to_string(), broker_url.to_string())]),
                resync,
                ..Settings::default()
            },
            metrics,
        )
    }

    /// Starts the controllers with `settings`.
    pub fn start_with(client: &Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runtime::run(
            client.clone(),
            settings,
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Self { stop, task }
    }

    /// Stops the controllers and waits until they ended.
    ///
    /// # Errors
    ///
    /// The controllers' task panicked or was cancelled.
    pub async fn stop(self) -> Result<(), tokio::task::JoinError> {
        let _ = self.stop.send(());
        self.task.await
    }
}
