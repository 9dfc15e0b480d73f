//! [`Worker`]: connect, read the group's config from the config channel (and follow it live),
//! join the group, run the handler, and shut down cleanly on SIGTERM/SIGINT or a
//! [`ShutdownHandle`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use sluice_broker::config::SourceKind;
use sluice_broker::tls::TrustedCa;
use sluice_broker::{Broker, ConfigUpdate, ConnectOptions, GroupConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::coordinator::run_topic_member;
use crate::error::{Error, ErrorKind, HandlerError, Result};
use crate::hooks::{Fanout, Observer};
use crate::idempotency::IdempotencyStore;
use crate::kv::ttl_secs;
use crate::membership::Coordination;
use crate::message::{Context, Message};
use crate::metrics::{METRICS_ADDR_ENV, MetricsServer, WorkerMetrics, parse_listen_addr};
use crate::outputs::Outputs;
use crate::process::{BoxHandler, Shared};
use crate::queue::run_queue_member;

/// Stops a running [`Worker`]: it stops fetching, finishes in-flight messages (within the
/// drain timeout), acknowledges them, leaves the group and `run` returns `Ok`.
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle {
    token: CancellationToken,
}

impl ShutdownHandle {
    /// Asks the worker to shut down.
    ///
    /// ```no_run
    /// # async fn run() -> sluice_worker::Result<()> {
    /// let worker = sluice_worker::Worker::from_env()?;
    /// let stop = worker.shutdown_handle();
    /// tokio::spawn(async move {
    ///     tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    ///     stop.shutdown(); // run() drains, leaves the group and returns Ok
    /// });
    /// worker.run(|_msg, _ctx| async { Ok(()) }).await
    /// # }
    /// ```
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Whether shutdown was asked for.
    ///
    /// ```
    /// let handle = sluice_worker::ShutdownHandle::default();
    /// assert!(!handle.is_shutting_down());
    /// handle.shutdown();
    /// assert!(handle.is_shutting_down());
    /// ```
    pub fn is_shutting_down(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How to reach the broker.
    pub connect: ConnectOptions,
    /// Namespace of the group.
    pub namespace: String,
    /// Group name.
    pub group: String,
    /// This member's id (pod name or process id); unique within the group.
    pub member_id: String,
    /// How long shutdown and partition handoff wait for running handlers.
    pub drain_timeout: Duration,
    /// How long to wait for the group's config to appear on the config channel.
    pub config_timeout: Duration,
    /// Whether `run` shuts down on SIGTERM and SIGINT.
    pub handle_signals: bool,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`SLUICE_METRICS_ADDR`); `None`
    /// serves nothing (the metrics are still recorded, see [`Worker::metrics`]).
    pub metrics_addr: Option<SocketAddr>,
    /// Whether `run` logs to stderr (filtered by `RUST_LOG`, default `info`) when the program
    /// installed no tracing subscriber of its own: on with [`WorkerOptions::from_env`], off
    /// with [`WorkerOptions::new`]. A subscriber the program installs always wins.
    pub default_logging: bool,
}

impl WorkerOptions {
    /// Options for one group with defaults for everything else.
    ///
    /// ```
    /// let options = sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0");
    /// assert_eq!(options.group, "billing");
    /// ```
    pub fn new(
        urls: &str,
        namespace: impl Into<String>,
        group: impl Into<String>,
        member_id: impl Into<String>,
    ) -> Self {
        Self {
            connect: ConnectOptions::from_url_list(urls),
            namespace: namespace.into(),
            group: group.into(),
            member_id: member_id.into(),
            drain_timeout: Duration::from_secs(30),
            config_timeout: Duration::from_secs(60),
            handle_signals: true,
            metrics_addr: None,
            default_logging: false,
        }
    }

    /// Reads `SLUICE_BROKER_URL` (comma-separated), `SLUICE_BROKER_USER`,
    /// `SLUICE_BROKER_PASSWORD`, `SLUICE_NAMESPACE` (default `default`), `SLUICE_GROUP` and
    /// `SLUICE_MEMBER_ID` (default `<hostname>-<pid>`), `SLUICE_METRICS_ADDR` (optional,
    /// `host:port` or `:port`) and the broker's CA, `SLUICE_BROKER_CA` (PEM) or
    /// `SLUICE_BROKER_CA_FILE` (a path): with a CA every connection uses TLS and verifies the
    /// server against it (the operator injects `SLUICE_BROKER_CA` into worker pods).
    ///
    /// ```no_run
    /// # fn f() -> sluice_worker::Result<()> {
    /// let options = sluice_worker::WorkerOptions::from_env()?;
    /// println!("member {} of {}/{}", options.member_id, options.namespace, options.group);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when `SLUICE_BROKER_URL` or `SLUICE_GROUP` is not set,
    /// `SLUICE_METRICS_ADDR` is not a listen address, or the CA cannot be read.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let need = |k: &str| {
            get(k).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("{k} is not set: the operator sets it on worker pods; set it yourself when running a worker by hand"),
                )
            })
        };
        let urls = need("SLUICE_BROKER_URL")?;
        let group = need("SLUICE_GROUP")?;
        let namespace = get("SLUICE_NAMESPACE")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "default".into());
        let member_id = get("SLUICE_MEMBER_ID")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                let host = get("HOSTNAME").unwrap_or_else(|| "worker".into());
                format!("{host}-{}", std::process::id())
            });
        let mut options = Self::new(&urls, namespace, group, member_id);
        options.connect.set_credentials(
            get("SLUICE_BROKER_USER").filter(|v| !v.is_empty()),
            get("SLUICE_BROKER_PASSWORD"),
            get(sluice_broker::client::INBOX_PREFIX_ENV),
        );
        options.connect.ca = TrustedCa::from_lookup(&get).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!(
                    "bad broker CA in {} or {}",
                    sluice_broker::tls::BROKER_CA_ENV,
                    sluice_broker::tls::BROKER_CA_FILE_ENV
                ),
                e,
            )
        })?;
        options.connect.name = format!("sluice-worker {}", options.member_id);
        options.default_logging = true;
        options.metrics_addr = match get(METRICS_ADDR_ENV).filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(
                parse_listen_addr(&v)
                    .map_err(|e| Error::with_source(ErrorKind::Config, "bad metrics address", e))?,
            ),
            None => None,
        };
        Ok(options)
    }
}

/// A member of a consumer group. Build it with [`Worker::new`] or [`Worker::from_env`], then
/// [`run`](Worker::run) it with your handler.
///
/// ```no_run
/// use sluice_worker::{HandlerError, Worker};
/// # async fn run() -> sluice_worker::Result<()> {
/// Worker::from_env()?
///     .run(|msg, _ctx| async move {
///         println!("partition {} offset {}: {:?}", msg.partition, msg.offset, msg.payload);
///         Ok::<(), HandlerError>(())
///     })
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct Worker {
    options: WorkerOptions,
    shutdown: ShutdownHandle,
    metrics: WorkerMetrics,
    observers: Vec<Arc<dyn Observer>>,
}

impl Worker {
    /// A worker with explicit options. It records [`WorkerMetrics`] labelled with its group.
    ///
    /// ```
    /// let worker = sluice_worker::Worker::new(sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0"));
    /// assert_eq!(worker.options().group, "billing");
    /// ```
    pub fn new(options: WorkerOptions) -> Self {
        let metrics = WorkerMetrics::new(options.group.clone());
        Self {
            options,
            shutdown: ShutdownHandle::default(),
            metrics,
            observers: Vec::new(),
        }
    }

    /// A worker configured from the `SLUICE_*` environment (see [`WorkerOptions::from_env`]).
    ///
    /// ```no_run
    /// # fn f() -> sluice_worker::Result<()> {
    /// let worker = sluice_worker::Worker::from_env()?;
    /// # let _ = worker; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`WorkerOptions::from_env`].
    pub fn from_env() -> Result<Self> {
        Ok(Self::new(WorkerOptions::from_env()?))
    }

    /// Sets how long shutdown and handoff wait for running handlers.
    ///
    /// ```
    /// # let worker = sluice_worker::Worker::new(sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0"));
    /// let worker = worker.drain_timeout(std::time::Duration::from_secs(10));
    /// assert_eq!(worker.options().drain_timeout.as_secs(), 10);
    /// ```
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.options.drain_timeout = timeout;
        self
    }

    /// Whether to shut down on SIGTERM/SIGINT (default true).
    ///
    /// ```
    /// # let worker = sluice_worker::Worker::new(sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0"));
    /// // Embedded in a bigger program that handles signals itself (stop it with a ShutdownHandle).
    /// let worker = worker.handle_signals(false);
    /// assert!(!worker.options().handle_signals);
    /// ```
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.options.handle_signals = yes;
        self
    }

    /// Whether `run` logs to stderr when the program installed no tracing subscriber (on for
    /// [`Worker::from_env`], off for [`Worker::new`]; see [`WorkerOptions::default_logging`]).
    ///
    /// ```no_run
    /// # fn f() -> sluice_worker::Result<()> {
    /// // This program ships its logs elsewhere and wants none on stderr.
    /// let worker = sluice_worker::Worker::from_env()?.default_logging(false);
    /// # Ok(()) }
    /// ```
    pub fn default_logging(mut self, yes: bool) -> Self {
        self.options.default_logging = yes;
        self
    }

    /// Also reports message events (processed, failed, retried, dead-lettered, duplicate) to
    /// `observer`, after the worker's own metrics. Can be called more than once.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sluice_worker::hooks::{LogObserver};
    /// # let worker = sluice_worker::Worker::new(sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0"));
    /// let worker = worker.observer(Arc::new(LogObserver));
    /// # let _ = worker;
    /// ```
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Records into `metrics` instead of a fresh registry (e.g. one your program serves or
    /// extends itself).
    ///
    /// ```
    /// use sluice_worker::WorkerMetrics;
    /// let shared = WorkerMetrics::new("billing");
    /// # let worker = sluice_worker::Worker::new(sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0"));
    /// let worker = worker.with_metrics(shared.clone());
    /// # let _ = worker;
    /// ```
    pub fn with_metrics(mut self, metrics: WorkerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The worker's metrics (a handle on the same registry the worker records into).
    ///
    /// ```
    /// let worker = sluice_worker::Worker::new(sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0"));
    /// let text = worker.metrics().encode().unwrap_or_default();
    /// # let _ = text;
    /// ```
    pub fn metrics(&self) -> WorkerMetrics {
        self.metrics.clone()
    }

    /// A handle that shuts this worker down.
    ///
    /// ```
    /// let worker = sluice_worker::Worker::new(sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0"));
    /// let stop = worker.shutdown_handle();
    /// assert!(!stop.is_shutting_down());
    /// ```
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The options.
    ///
    /// ```
    /// let worker = sluice_worker::Worker::new(sluice_worker::WorkerOptions::new("nats://127.0.0.1:4222", "shop", "billing", "billing-0"));
    /// assert_eq!(worker.options().namespace, "shop");
    /// ```
    pub fn options(&self) -> &WorkerOptions {
        &self.options
    }

    /// Joins the group and handles messages until shutdown; returns `Ok` after a clean
    /// shutdown, an error when the broker or the group config is unusable.
    ///
    /// ```no_run
    /// # async fn run() -> sluice_worker::Result<()> {
    /// use sluice_worker::{HandlerError, Worker};
    /// Worker::from_env()?
    ///     .run(|msg, ctx| async move {
    ///         ctx.queue("emails").send(msg.payload).await.map_err(HandlerError::retryable)?;
    ///         Ok(())
    ///     })
    ///     .await
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the options or the group's config are invalid;
    /// [`ErrorKind::Broker`] when the broker cannot be reached or refuses the group's consumers;
    /// [`ErrorKind::GroupNotFound`] when the group's config does not appear on the config channel
    /// within `config_timeout`; [`ErrorKind::GroupRemoved`] when the group is deleted while the
    /// worker runs.
    pub async fn run<F, Fut>(self, handler: F) -> Result<()>
    where
        F: Fn(Message, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        if self.options.default_logging && !tracing::dispatcher::has_been_set() {
            // Before the worker's span exists, so it is recorded by the new subscriber.
            if let Err(e) = crate::telemetry::init_stderr_logging() {
                eprintln!("sluice: cannot log to stderr: {e}");
            }
        }
        let handler: BoxHandler =
            Arc::new(move |m, c| -> BoxFuture<'static, _> { Box::pin(handler(m, c)) });
        let o = &self.options;
        let span = info_span!("sluice.worker", group = %format!("{}/{}", o.namespace, o.group), member = %o.member_id);
        self.run_inner(handler).instrument(span).await
    }

    async fn run_inner(self, handler: BoxHandler) -> Result<()> {
        let o = self.options;
        let metrics = self.metrics;
        let shutdown = self.shutdown.token.clone();
        if o.handle_signals {
            tokio::spawn(wait_for_signal(shutdown.clone()));
        }
        // Served from the start so /healthz answers; /readyz turns 200 once the worker joined.
        let server =
            match o.metrics_addr {
                Some(addr) => Some(MetricsServer::serve(addr, metrics.clone()).await.map_err(
                    |e| {
                        Error::with_source(
                            ErrorKind::Config,
                            "failed to start the metrics endpoint",
                            e,
                        )
                    },
                )?),
                None => None,
            };
        // Not ready any more as soon as shutdown starts (the pod leaves the Service first).
        let unready = tokio::spawn({
            let (shutdown, metrics) = (shutdown.clone(), metrics.clone());
            async move {
                shutdown.cancelled().await;
                metrics.set_ready(false);
            }
        });
        let mut observers: Vec<Arc<dyn Observer>> = vec![Arc::new(metrics.clone())];
        observers.extend(self.observers);
        let result = run_member(
            o,
            handler,
            shutdown,
            metrics.clone(),
            Arc::new(Fanout::new(observers)),
        )
        .await;
        unready.abort();
        metrics.set_ready(false);
        if let Some(server) = server {
            server.shutdown().await;
        }
        result
    }
}

async fn run_member(
    o: WorkerOptions,
    handler: BoxHandler,
    shutdown: CancellationToken,
    metrics: WorkerMetrics,
    observer: Arc<dyn Observer>,
) -> Result<()> {
    let broker = Broker::connect(&o.connect).await?;
    let store = broker.group_config_store().await?;
    let mut updates = Box::pin(store.watch(&o.namespace, &o.group).await?);
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        u = tokio::time::timeout(o.config_timeout, updates.next()) => u,
    };
    let cfg = match first {
        Ok(Some(ConfigUpdate::Put(cfg))) => *cfg,
        Ok(Some(ConfigUpdate::Removed)) | Ok(None) | Err(_) => {
            return Err(Error::new(
                ErrorKind::GroupNotFound,
                format!(
                    "no config for group {}/{} on the config channel within {:?}: is the ConsumerGroup applied and Ready?",
                    o.namespace, o.group, o.config_timeout
                ),
            ));
        }
    };
    cfg.validate()?;
    info!(source = %cfg.source.name, delivery = ?cfg.delivery, ordering = ?cfg.ordering, "group config loaded");
    let kind = cfg.source.kind;
    let pin = Duration::from_millis(cfg.pin_timeout_ms);
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg));
    let removed = CancellationToken::new();
    let follower = tokio::spawn(follow_config(
        updates,
        cfg_tx,
        removed.clone(),
        shutdown.clone(),
    ));
    let js = broker.jetstream().clone();
    let outputs = Outputs::new(broker.clone(), o.namespace.clone()).map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            "failed to set up the handler's outputs",
            e,
        )
    })?;
    let shared = Arc::new(Shared {
        client: broker.client().clone(),
        js: js.clone(),
        config: cfg_rx,
        handler,
        member_id: o.member_id.clone(),
        idempotency: IdempotencyStore::new(js.clone()),
        observer,
        outputs: Arc::new(outputs),
    });
    let result = match kind {
        SourceKind::Topic => {
            let group = sluice_broker::ResourceRef::new(o.namespace.clone(), o.group.clone())?;
            let ttl = Duration::from_secs(ttl_secs(pin));
            let coord = Coordination::open(&js, &group, &o.member_id, ttl).await?;
            metrics.set_ready(true);
            run_topic_member(shared, coord, shutdown.clone(), o.drain_timeout).await
        }
        SourceKind::Queue => {
            run_queue_member(shared, shutdown.clone(), o.drain_timeout, || {
                metrics.set_ready(true)
            })
            .await
        }
    };
    follower.abort();
    let _ = broker.client().flush().await;
    if removed.is_cancelled() {
        return Err(Error::new(
            ErrorKind::GroupRemoved,
            format!(
                "group {}/{} was deleted: stopped consuming",
                o.namespace, o.group
            ),
        ));
    }
    result
}

async fn follow_config(
    mut updates: std::pin::Pin<Box<impl futures::Stream<Item = ConfigUpdate>>>,
    tx: watch::Sender<Arc<GroupConfig>>,
    removed: CancellationToken,
    shutdown: CancellationToken,
) {
    while let Some(update) = updates.next().await {
        match update {
            ConfigUpdate::Put(cfg) => match cfg.validate() {
                Ok(()) => {
                    info!("group config changed: applying");
                    tx.send_replace(Arc::new(*cfg));
                }
                Err(e) => warn!(error = %e, "ignoring invalid group config"),
            },
            ConfigUpdate::Removed => {
                warn!("group config removed: shutting down");
                removed.cancel();
                shutdown.cancel();
                return;
            }
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            warn!("cannot install signal handlers: use the ShutdownHandle");
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
            _ = shutdown.cancelled() => return,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("Ctrl-C: shutting down"),
            _ = shutdown.cancelled() => return,
        }
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_is_read_with_defaults_and_clear_errors() {
        let env: HashMap<&str, &str> = [
            ("SLUICE_BROKER_URL", "nats://a:4222, nats://b:4222"),
            ("SLUICE_GROUP", "billing"),
            ("SLUICE_BROKER_USER", "app"),
            ("SLUICE_BROKER_PASSWORD", "pw"),
            ("SLUICE_MEMBER_ID", "billing-0"),
        ]
        .into_iter()
        .collect();
        let o = WorkerOptions::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(o.connect.urls, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(o.namespace, "default");
        assert_eq!(o.member_id, "billing-0");
        assert_eq!(o.connect.user.as_deref(), Some("app"));
        assert!(
            o.default_logging,
            "workers from the environment log to stderr"
        );
        assert!(!WorkerOptions::new("nats://a:4222", "ns", "g", "m").default_logging);
        let err = WorkerOptions::from_lookup(|_| None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("SLUICE_BROKER_URL"));
    }
}
