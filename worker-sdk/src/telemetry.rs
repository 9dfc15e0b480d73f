//! Tracing set-up and W3C trace-context propagation through NATS message headers.
//!
//! A producer calls [`inject_current`] (the [`Producer`](crate::producer::Producer) does it for
//! every publish) so the message carries `traceparent`/`tracestate` of the span it was sent
//! from; a consumer calls [`set_parent_from_headers`] on its handling span, so the handling shows
//! up in the producer's trace. Propagation always uses the W3C [`TraceContextPropagator`],
//! whatever global propagator is installed, because that is the wire format other Sluice
//! components (and other languages' OpenTelemetry SDKs) read.
//!
//! [`init_tracing`] installs the usual subscriber of a Sluice binary: human-readable logs filtered
//! by `RUST_LOG`, plus an OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Log lines are
//! plain text, coloured only when written to a terminal; `SLUICE_LOG_FORMAT=json` writes one
//! JSON object per line instead (for log collectors), as the operator does.
//!
//! ```
//! use sluice_worker::telemetry;
//! let mut headers = async_nats::HeaderMap::new();
//! let span = tracing::info_span!("publish");
//! telemetry::inject(&span, &mut headers);
//! // ... on the consumer side:
//! let handling = tracing::info_span!("handle");
//! telemetry::set_parent_from_headers(&handling, &headers);
//! ```

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Header carrying the W3C trace parent (`00-<trace id>-<span id>-<flags>`).
pub const TRACEPARENT: &str = "traceparent";
/// Header carrying vendor-specific W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// Environment variable that switches OTLP export on.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Environment variable choosing the log format: `json`, or text otherwise.
pub const LOG_FORMAT_ENV: &str = "SLUICE_LOG_FORMAT";

/// Whether `SLUICE_LOG_FORMAT` asks for JSON log lines (`json`, any case); anything else,
/// or nothing, means plain text.
///
/// ```
/// assert!(sluice_worker::telemetry::json_logs(Some(" JSON ")));
/// assert!(!sluice_worker::telemetry::json_logs(Some("text")));
/// assert!(!sluice_worker::telemetry::json_logs(None));
/// ```
pub fn json_logs(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("json"))
}

fn json_logs_from_env() -> bool {
    json_logs(std::env::var(LOG_FORMAT_ENV).ok().as_deref())
}

/// The fmt layer writing to `writer`: JSON lines when `json`, else text with ANSI colours
/// only when `terminal`.
fn log_layer<S, W>(
    writer: W,
    json: bool,
    terminal: bool,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true);
    if json {
        layer.json().boxed()
    } else {
        layer.with_ansi(terminal).boxed()
    }
}

/// Writes into a NATS header map.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads from a NATS header map.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Injects an OpenTelemetry context into `headers` as `traceparent`/`tracestate`.
/// An empty context (no OpenTelemetry layer installed, or a disabled span) writes nothing.
///
/// ```
/// let mut headers = async_nats::HeaderMap::new();
/// sluice_worker::telemetry::inject_context(&opentelemetry::Context::current(), &mut headers);
/// ```
pub fn inject_context(cx: &opentelemetry::Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// Injects the trace context of `span` into `headers`.
///
/// ```
/// let mut headers = async_nats::HeaderMap::new();
/// let span = tracing::info_span!("publish");
/// sluice_worker::telemetry::inject(&span, &mut headers);
/// ```
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    inject_context(&span.context(), headers);
}

/// Injects the trace context of the current span into `headers`.
///
/// ```
/// let mut headers = async_nats::HeaderMap::new();
/// sluice_worker::telemetry::inject_current(&mut headers); // then publish with these headers
/// ```
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&Span::current(), headers);
}

/// Extracts the OpenTelemetry context carried by `headers` (empty when there is none or it is
/// malformed: a bad header never fails message handling).
///
/// ```
/// let cx = sluice_worker::telemetry::extract(&async_nats::HeaderMap::new());
/// # let _ = cx;
/// ```
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` a child of the trace carried by `headers`, if any. Returns whether a parent was
/// set (false when the headers carry no valid trace context or no OpenTelemetry layer records
/// `span`); failing to link a trace never fails message handling.
///
/// ```
/// let span = tracing::info_span!("handle");
/// let linked = sluice_worker::telemetry::set_parent_from_headers(&span, &async_nats::HeaderMap::new());
/// assert!(!linked); // no trace context in these headers
/// ```
pub fn set_parent_from_headers(span: &Span, headers: &HeaderMap) -> bool {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = extract(headers);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// Errors of [`init_tracing`].
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` could not be parsed.
    #[error("invalid RUST_LOG filter: {0}: use e.g. RUST_LOG=info,sluice_worker=debug")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The OTLP exporter could not be built.
    #[error(
        "failed to set up the OTLP trace exporter for {endpoint}: {source}: check {OTLP_ENDPOINT_ENV} or unset it"
    )]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter builder reported.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed: call init_tracing once, at start")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
    /// The stderr subscriber could not be installed (usually: one is installed already).
    #[error("failed to install the stderr log subscriber: {0}")]
    Init(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Keeps the OTLP pipeline alive; flushes and shuts it down when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard stops trace export: keep it until the program ends"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    /// Whether spans are exported over OTLP.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sluice_worker::telemetry::TelemetryError> {
    /// let guard = sluice_worker::telemetry::init_tracing()?;
    /// println!("exporting over OTLP: {}", guard.exports_otlp());
    /// # Ok(()) }
    /// ```
    pub fn exports_otlp(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.force_flush() {
                eprintln!("sluice: failed to flush traces: {e}");
            }
            if let Err(e) = provider.shutdown() {
                eprintln!("sluice: failed to shut down the trace exporter: {e}");
            }
        }
    }
}

/// Installs a global subscriber that writes fmt logs to stderr (text, coloured only on a
/// terminal, or JSON lines with `SLUICE_LOG_FORMAT=json`), filtered by `RUST_LOG`
/// (default `info`): what [`Worker::run`](crate::Worker::run) installs for a worker built
/// with [`Worker::from_env`](crate::Worker::from_env) when the program installed none, so
/// fencing and heartbeat warnings are never invisible.
///
/// # Errors
/// `RUST_LOG` does not parse, or a subscriber is installed already.
///
/// ```no_run
/// sluice_worker::telemetry::init_stderr_logging().ok();
/// ```
pub fn init_stderr_logging() -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(value)?,
        _ => EnvFilter::new("info"),
    };
    use std::io::IsTerminal;
    let fmt = log_layer(
        std::io::stderr,
        json_logs_from_env(),
        std::io::stderr().is_terminal(),
    );
    tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init()
        .map_err(|e| TelemetryError::Init(Box::new(e)))
}

/// Installs the global tracing subscriber: fmt logs on stdout filtered by `RUST_LOG` (default
/// `info`; text coloured only on a terminal, or JSON lines with `SLUICE_LOG_FORMAT=json`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer exporting spans over
/// OTLP/gRPC (the other standard `OTEL_*` variables, such as `OTEL_SERVICE_NAME`, are honoured
/// by the SDK). Also installs the W3C propagator globally.
///
/// Call it once, inside a Tokio runtime (the gRPC exporter needs one), and keep the guard.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let _guard = sluice_worker::telemetry::init_tracing()?; // keep it until the program ends
///     Ok(())
/// }
/// ```
///
/// # Errors
/// `RUST_LOG` does not parse, the OTLP exporter cannot be built, or a subscriber is installed
/// already.
pub fn init_tracing() -> Result<TracingGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(value)?,
        _ => EnvFilter::new("info"),
    };
    use std::io::IsTerminal;
    let fmt = log_layer(
        std::io::stdout,
        json_logs_from_env(),
        std::io::stdout().is_terminal(),
    );
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let endpoint = std::env::var(OTLP_ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.trim().is_empty());
    let (otel_layer, provider) = match endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig as _;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|source| TelemetryError::Exporter { endpoint, source })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            opentelemetry::global::set_tracer_provider(provider.clone());
            let tracer = provider.tracer("sluice");
            let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt)
        .with(filter)
        .try_init()?;
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Ok(TracingGuard { provider })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_subscriber::Registry;

    fn subscriber() -> (impl tracing::Subscriber + Send + Sync, SdkTracerProvider) {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let subscriber =
            Registry::default().with(tracing_opentelemetry::layer().with_tracer(tracer));
        (subscriber, provider)
    }

    #[test]
    fn trace_id_survives_inject_then_extract() {
        let (subscriber, _provider) = subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = HeaderMap::new();
            let producer = tracing::info_span!("produce");
            let sent_trace = {
                let _enter = producer.enter();
                inject_current(&mut headers);
                producer.context().span().span_context().trace_id()
            };
            let traceparent = headers.get(TRACEPARENT).map(|v| v.as_str().to_string());
            let traceparent = traceparent.unwrap();
            assert!(
                traceparent.starts_with(&format!("00-{sent_trace}-")),
                "{traceparent}"
            );

            let consumer = tracing::info_span!("consume");
            assert!(set_parent_from_headers(&consumer, &headers));
            let received = consumer.context().span().span_context().clone();
            assert_eq!(received.trace_id(), sent_trace);
            // A child span, not the producer's span itself.
            let producer_span = producer.context().span().span_context().span_id();
            assert_ne!(received.span_id(), producer_span);
        });
    }

    #[test]
    fn missing_or_garbage_headers_set_no_parent() {
        let (subscriber, _provider) = subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("consume");
            assert!(!set_parent_from_headers(&span, &HeaderMap::new()));
            let mut bad = HeaderMap::new();
            bad.insert(TRACEPARENT, "not-a-trace");
            assert!(!set_parent_from_headers(&span, &bad));
        });
    }

    /// A writer capturing into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    fn logged(json: bool) -> String {
        let out = Captured::default();
        let subscriber = Registry::default().with(log_layer(out.clone(), json, false));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(partition = 3, "fenced");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn logs_off_a_terminal_are_plain_text_or_json_lines() {
        let text = logged(false);
        assert!(
            text.contains("fenced") && text.contains("partition=3"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "no ANSI escape codes: {text:?}");
        let json = logged(true);
        let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(line["fields"]["message"], "fenced");
        assert_eq!(line["level"], "WARN");
    }

    #[test]
    fn nothing_is_injected_without_an_opentelemetry_layer() {
        let mut headers = HeaderMap::new();
        let span = tracing::info_span!("produce");
        inject(&span, &mut headers);
        assert!(headers.get(TRACEPARENT).is_none());
    }
}
