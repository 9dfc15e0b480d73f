//! Worker metrics in the Prometheus/OpenMetrics format, and the small HTTP endpoint that serves
//! them together with the health probes.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `sluice_worker_messages_processed_total` | `group` | messages handled successfully |
//! | `sluice_worker_messages_failed_total` | `group` | handler attempts that failed |
//! | `sluice_worker_messages_retried_total` | `group` | redeliveries scheduled after a failure |
//! | `sluice_worker_messages_dead_lettered_total` | `group` | messages moved to the dead-letter queue |
//! | `sluice_worker_handler_duration_seconds` | `group`, `outcome` (`success`/`failure`) | handler latency |
//! | `sluice_worker_partition_lag` | `group`, `partition` | messages not yet handled, per owned partition |
//! | `sluice_worker_ready` | `group` | 1 while the worker is ready |
//!
//! Every label value is bounded: the group name, a two-valued outcome, and partition numbers
//! (at most the topic's partition count). The HTTP endpoint ([`MetricsServer`]) serves
//! `/metrics`, `/healthz` (the process answers) and `/readyz` (200 once the worker called
//! [`WorkerMetrics::set_ready`] with `true`, 503 otherwise).
//!
//! ```no_run
//! # async fn run() -> Result<(), sluice_worker::metrics::MetricsError> {
//! use sluice_worker::metrics::{MetricsServer, WorkerMetrics};
//! let metrics = WorkerMetrics::new("billing");
//! let _server = MetricsServer::serve_from_env(metrics.clone()).await?; // SLUICE_METRICS_ADDR
//! metrics.set_ready(true);
//! metrics.record_processed(std::time::Duration::from_millis(12));
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

/// Environment variable with the metrics endpoint's listen address (`0.0.0.0:9090` or `:9090`).
pub const METRICS_ADDR_ENV: &str = "SLUICE_METRICS_ADDR";

/// Content type of the `/metrics` response.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a handler call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handler returned success.
    Success,
    /// The handler returned an error (or timed out).
    Failure,
}

impl Outcome {
    /// The label value: `success` or `failure`.
    ///
    /// ```
    /// assert_eq!(sluice_worker::metrics::Outcome::Success.as_str(), "success");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    group: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PartitionLabels {
    group: String,
    partition: u32,
}

type HistogramFamily = Family<OutcomeLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s, doubling.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metrics a worker records; cheap to clone (all clones update the same registry).
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    group: String,
    registry: Arc<Registry>,
    processed: Family<GroupLabels, Counter>,
    failed: Family<GroupLabels, Counter>,
    retried: Family<GroupLabels, Counter>,
    dead_lettered: Family<GroupLabels, Counter>,
    handler_duration: HistogramFamily,
    partition_lag: Family<PartitionLabels, Gauge>,
    ready_gauge: Family<GroupLabels, Gauge>,
    ready: Arc<AtomicBool>,
}

impl WorkerMetrics {
    /// Metrics of the consumer group `group`, in a fresh registry.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// assert_eq!(m.group(), "billing");
    /// ```
    pub fn new(group: impl Into<String>) -> Self {
        let group = group.into();
        let processed = Family::<GroupLabels, Counter>::default();
        let failed = Family::<GroupLabels, Counter>::default();
        let retried = Family::<GroupLabels, Counter>::default();
        let dead_lettered = Family::<GroupLabels, Counter>::default();
        let handler_duration: HistogramFamily =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let partition_lag = Family::<PartitionLabels, Gauge>::default();
        let ready_gauge = Family::<GroupLabels, Gauge>::default();

        let mut registry = Registry::with_prefix("sluice_worker");
        registry.register(
            "messages_processed",
            "Messages handled successfully",
            processed.clone(),
        );
        registry.register(
            "messages_failed",
            "Handler attempts that failed",
            failed.clone(),
        );
        registry.register(
            "messages_retried",
            "Redeliveries scheduled after a failed attempt",
            retried.clone(),
        );
        registry.register(
            "messages_dead_lettered",
            "Messages moved to the dead-letter queue",
            dead_lettered.clone(),
        );
        registry.register_with_unit(
            "handler_duration",
            "Time spent in the message handler",
            Unit::Seconds,
            handler_duration.clone(),
        );
        registry.register(
            "partition_lag",
            "Messages not yet handled, per partition owned by this worker",
            partition_lag.clone(),
        );
        registry.register(
            "ready",
            "1 while the worker is ready to handle messages",
            ready_gauge.clone(),
        );
        let metrics = Self {
            group,
            registry: Arc::new(registry),
            processed,
            failed,
            retried,
            dead_lettered,
            handler_duration,
            partition_lag,
            ready_gauge,
            ready: Arc::new(AtomicBool::new(false)),
        };
        // Make every series visible (at zero) from the first scrape.
        let labels = metrics.group_labels();
        metrics.processed.get_or_create(&labels).inc_by(0);
        metrics.failed.get_or_create(&labels).inc_by(0);
        metrics.retried.get_or_create(&labels).inc_by(0);
        metrics.dead_lettered.get_or_create(&labels).inc_by(0);
        metrics.ready_gauge.get_or_create(&labels).set(0);
        metrics
    }

    fn group_labels(&self) -> GroupLabels {
        GroupLabels {
            group: self.group.clone(),
        }
    }

    /// The group these metrics are labelled with.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// assert_eq!(m.group(), "billing");
    /// ```
    pub fn group(&self) -> &str {
        &self.group
    }

    /// A message was handled successfully in `duration`.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.record_processed(std::time::Duration::from_millis(3));
    /// ```
    pub fn record_processed(&self, duration: Duration) {
        self.processed.get_or_create(&self.group_labels()).inc();
        self.observe_handler(Outcome::Success, duration);
    }

    /// A handler attempt failed.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.record_failed();
    /// ```
    pub fn record_failed(&self) {
        self.failed.get_or_create(&self.group_labels()).inc();
    }

    /// A handler attempt failed after `duration` (counts the failure and its latency).
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.record_failed_after(std::time::Duration::from_millis(3));
    /// ```
    pub fn record_failed_after(&self, duration: Duration) {
        self.record_failed();
        self.observe_handler(Outcome::Failure, duration);
    }

    /// A failed message was scheduled for another attempt.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.record_retried();
    /// ```
    pub fn record_retried(&self) {
        self.retried.get_or_create(&self.group_labels()).inc();
    }

    /// A message was moved to the dead-letter queue.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.record_dead_lettered();
    /// ```
    pub fn record_dead_lettered(&self) {
        self.dead_lettered.get_or_create(&self.group_labels()).inc();
    }

    /// Records one handler call's latency.
    ///
    /// ```
    /// use sluice_worker::metrics::Outcome;
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.observe_handler(Outcome::Success, std::time::Duration::from_millis(3));
    /// ```
    pub fn observe_handler(&self, outcome: Outcome, duration: Duration) {
        self.handler_duration
            .get_or_create(&OutcomeLabels {
                group: self.group.clone(),
                outcome,
            })
            .observe(duration.as_secs_f64());
    }

    /// Sets the lag of an owned partition (queues use partition 0).
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.set_partition_lag(2, 150);
    /// ```
    pub fn set_partition_lag(&self, partition: u32, lag: u64) {
        self.partition_lag
            .get_or_create(&PartitionLabels {
                group: self.group.clone(),
                partition,
            })
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Drops the lag series of a partition this worker no longer owns.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.set_partition_lag(2, 150);
    /// m.remove_partition_lag(2); // partition 2 moved to another member
    /// ```
    pub fn remove_partition_lag(&self, partition: u32) {
        self.partition_lag.remove(&PartitionLabels {
            group: self.group.clone(),
            partition,
        });
    }

    /// Marks the worker ready (or not) for `/readyz`.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.set_ready(true);
    /// assert!(m.is_ready());
    /// ```
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.ready_gauge
            .get_or_create(&self.group_labels())
            .set(i64::from(ready));
    }

    /// Whether the worker is ready.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// assert!(!m.is_ready());
    /// ```
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The metrics in the OpenMetrics text format.
    ///
    /// ```
    /// let m = sluice_worker::WorkerMetrics::new("billing");
    /// m.record_retried();
    /// let text = m.encode().unwrap_or_default();
    /// assert!(text.contains("sluice_worker"));
    /// ```
    ///
    /// # Errors
    /// [`MetricsError::Encode`] when the registry cannot be encoded (a bug).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|_| MetricsError::Encode)?;
        Ok(out)
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match req.uri().path() {
            "/metrics" => match self.encode() {
                Ok(text) => {
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
                    );
                    response
                }
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            },
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/readyz" if self.is_ready() => plain(StatusCode::OK, "ready\n"),
            "/readyz" => plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz\n",
            ),
        }
    }
}

/// Plugs the metrics into a [`Worker`](crate::Worker):
/// `worker.observer(Arc::new(metrics.clone()))`.
impl crate::hooks::Observer for WorkerMetrics {
    fn event(&self, e: &crate::hooks::MessageEvent<'_>) {
        use crate::hooks::Event;
        match (e.event, e.latency) {
            (Event::Processed, Some(latency)) => self.record_processed(latency),
            (Event::Processed, None) => {
                self.processed.get_or_create(&self.group_labels()).inc();
            }
            (Event::Failed, Some(latency)) => self.record_failed_after(latency),
            (Event::Failed, None) => self.record_failed(),
            (Event::Retried, _) => self.record_retried(),
            (Event::DeadLettered, _) => self.record_dead_lettered(),
            // Duplicates skipped by exactly-once delivery are neither handled nor failed.
            _ => {}
        }
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// `SLUICE_METRICS_ADDR` is not a socket address.
    #[error(
        "invalid {METRICS_ADDR_ENV} {value:?}: use host:port, e.g. 0.0.0.0:9090 (or :9090 for all interfaces)"
    )]
    InvalidAddress {
        /// The rejected value.
        value: String,
    },
    /// The listen socket could not be bound.
    #[error(
        "failed to listen for metrics on {addr}: {source}: pick a free port in {METRICS_ADDR_ENV}"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The registry could not be encoded (a bug: please report it).
    #[error("failed to encode metrics")]
    Encode,
}

/// Parses a listen address; `:9090` means every interface, port 9090.
///
/// ```
/// let addr = sluice_worker::metrics::parse_listen_addr(":9090").unwrap();
/// assert_eq!(addr.port(), 9090);
/// ```
///
/// # Errors
/// [`MetricsError::InvalidAddress`] when `value` is neither `host:port` nor `:port`.
pub fn parse_listen_addr(value: &str) -> Result<SocketAddr, MetricsError> {
    let trimmed = value.trim();
    let candidate = if trimmed.starts_with(':') {
        format!("0.0.0.0{trimmed}")
    } else {
        trimmed.to_string()
    };
    candidate.parse().map_err(|_| MetricsError::InvalidAddress {
        value: value.to_string(),
    })
}

/// The HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sluice_worker::metrics::MetricsError> {
    /// use sluice_worker::{MetricsServer, WorkerMetrics};
    /// let server = MetricsServer::serve("127.0.0.1:0".parse().unwrap(), WorkerMetrics::new("billing")).await?;
    /// println!("metrics at http://{}/metrics", server.local_addr());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`MetricsError::Bind`] when the address cannot be bound (in use, no permission).
    #[instrument(skip(metrics), fields(group = %metrics.group))]
    pub async fn serve(addr: SocketAddr, metrics: WorkerMetrics) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, metrics, cancel.clone()));
        info!(addr = %local_addr, "serving /metrics, /healthz and /readyz");
        Ok(Self {
            local_addr,
            cancel,
            task: Some(task),
        })
    }

    /// Serves on `SLUICE_METRICS_ADDR` when it is set; `Ok(None)` when it is not.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sluice_worker::metrics::MetricsError> {
    /// use sluice_worker::{MetricsServer, WorkerMetrics};
    /// if let Some(server) = MetricsServer::serve_from_env(WorkerMetrics::new("billing")).await? {
    ///     println!("serving on {}", server.local_addr());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`MetricsError::InvalidAddress`] when `SLUICE_METRICS_ADDR` is not a listen address;
    /// [`MetricsError::Bind`] when it cannot be bound.
    pub async fn serve_from_env(metrics: WorkerMetrics) -> Result<Option<Self>, MetricsError> {
        match std::env::var(METRICS_ADDR_ENV) {
            Ok(value) if !value.trim().is_empty() => {
                let addr = parse_listen_addr(&value)?;
                Self::serve(addr, metrics).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The bound address.
    ///
    /// ```no_run
    /// # async fn run(server: sluice_worker::MetricsServer) {
    /// let port = server.local_addr().port();
    /// # let _ = port; }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for the accept loop to end.
    ///
    /// ```no_run
    /// # async fn run(server: sluice_worker::MetricsServer) {
    /// server.shutdown().await;
    /// # }
    /// ```
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept_loop(listener: TcpListener, metrics: WorkerMetrics, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!(error = %e, "failed to accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = metrics.respond(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = cancel.cancelled() => {}
                result = connection => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "metrics connection ended with an error");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_accept_the_port_only_form() {
        assert_eq!(
            parse_listen_addr(":9090").unwrap(),
            "0.0.0.0:9090".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(matches!(
            parse_listen_addr("nope"),
            Err(MetricsError::InvalidAddress { .. })
        ));
    }

    #[test]
    fn recorded_values_appear_in_the_encoding() {
        let m = WorkerMetrics::new("billing");
        m.record_processed(Duration::from_millis(3));
        m.record_processed(Duration::from_millis(5));
        m.record_failed_after(Duration::from_millis(7));
        m.record_retried();
        m.record_dead_lettered();
        m.set_partition_lag(2, 42);
        m.set_partition_lag(3, 1);
        m.remove_partition_lag(3);
        let text = m.encode().unwrap();
        for line in [
            "sluice_worker_messages_processed_total{group=\"billing\"} 2",
            "sluice_worker_messages_failed_total{group=\"billing\"} 1",
            "sluice_worker_messages_retried_total{group=\"billing\"} 1",
            "sluice_worker_messages_dead_lettered_total{group=\"billing\"} 1",
            "sluice_worker_handler_duration_seconds_count{group=\"billing\",outcome=\"success\"} 2",
            "sluice_worker_handler_duration_seconds_count{group=\"billing\",outcome=\"failure\"} 1",
            "sluice_worker_partition_lag{group=\"billing\",partition=\"2\"} 42",
            "sluice_worker_ready{group=\"billing\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("partition=\"3\""), "{text}");
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        (status, response)
    }

    #[tokio::test]
    async fn endpoint_serves_metrics_and_probes_over_loopback() {
        let m = WorkerMetrics::new("orders");
        let server = MetricsServer::serve("127.0.0.1:0".parse().unwrap(), m.clone())
            .await
            .unwrap();
        let addr = server.local_addr();

        let (status, _) = get(addr, "/healthz").await;
        assert_eq!(status, 200);
        let (status, _) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        m.set_ready(true);
        let (status, _) = get(addr, "/readyz").await;
        assert_eq!(status, 200);

        m.record_processed(Duration::from_millis(20));
        m.set_partition_lag(0, 17);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains(OPENMETRICS_CONTENT_TYPE), "{body}");
        assert!(
            body.contains("sluice_worker_messages_processed_total{group=\"orders\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("sluice_worker_partition_lag{group=\"orders\",partition=\"0\"} 17"),
            "{body}"
        );
        assert!(
            body.contains("sluice_worker_ready{group=\"orders\"} 1"),
            "{body}"
        );
        let (status, _) = get(addr, "/nope").await;
        assert_eq!(status, 404);

        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn worker_events_feed_the_counters() {
        use crate::hooks::{Event, MessageEvent, Observer};
        let m = WorkerMetrics::new("g");
        let on = |event, partition, latency| MessageEvent {
            event,
            partition,
            offset: 1,
            key: None,
            latency,
        };
        m.event(&on(Event::Processed, 0, Some(Duration::from_millis(2))));
        m.event(&on(Event::Failed, 0, Some(Duration::from_millis(2))));
        m.event(&on(Event::Retried, 0, None));
        m.event(&on(Event::DeadLettered, 1, None));
        m.event(&on(Event::Duplicate, 1, None));
        let text = m.encode().unwrap();
        for line in [
            "sluice_worker_messages_processed_total{group=\"g\"} 1",
            "sluice_worker_messages_failed_total{group=\"g\"} 1",
            "sluice_worker_messages_retried_total{group=\"g\"} 1",
            "sluice_worker_messages_dead_lettered_total{group=\"g\"} 1",
            "sluice_worker_handler_duration_seconds_count{group=\"g\",outcome=\"failure\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
