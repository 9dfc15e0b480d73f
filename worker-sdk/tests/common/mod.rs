//! Test harness: a real nats-server, provisioning, members on their own runtimes (so a
//! "crash" drops every task and the connection at once), and handler records.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use sluice_broker::config::{DlqSettings, SourceKind, SourceRef, TopicSettings};
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{Broker, ConnectOptions, GroupConfig, ResourceRef, names};
use sluice_worker::{Context, HandlerError, Message, ShutdownHandle, Worker, WorkerOptions};
use tokio::sync::oneshot;

pub const NS: &str = "default";

pub struct Env {
    pub server: NatsServer,
    pub broker: Broker,
}

pub async fn env() -> Env {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let broker = Broker::connect(&ConnectOptions::from_url_list(&server.url()))
        .await
        .unwrap();
    Env { server, broker }
}

/// A topic group config with test-friendly timings.
pub fn topic_group(topic: &str, group: &str, partitions: u32) -> GroupConfig {
    let mut cfg = GroupConfig::new(
        NS,
        group,
        SourceRef {
            kind: SourceKind::Topic,
            name: topic.into(),
            partitions,
        },
    );
    cfg.ack_wait_ms = 2_000;
    cfg.pin_timeout_ms = 2_000;
    cfg.retry.backoff.initial_ms = 100;
    cfg.retry.backoff.max_ms = 1_000;
    cfg.retry.backoff.jitter = false;
    cfg
}

impl Env {
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn provision(&self, cfg: &GroupConfig) {
        let topic = ResourceRef::new(NS, cfg.source.name.clone()).unwrap();
        self.broker
            .ensure_topic(
                &topic,
                &TopicSettings {
                    partitions: cfg.source.partitions,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if let Some(dlq) = &cfg.dead_letter {
            self.broker
                .ensure_dlq(
                    &ResourceRef::new(NS, dlq.clone()).unwrap(),
                    &DlqSettings::default(),
                )
                .await
                .unwrap();
        }
        self.broker.ensure_group(cfg).await.unwrap();
    }

    /// Publishes `payload` to a partition with a message id and optional key.
    pub async fn publish(
        &self,
        topic: &str,
        partition: u32,
        id: &str,
        key: Option<&str>,
        payload: &str,
    ) -> u64 {
        let t = ResourceRef::new(NS, topic).unwrap();
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        if let Some(k) = key {
            h.insert("Sluice-Key", k);
        }
        self.broker
            .jetstream()
            .publish_with_headers(
                names::topic_subject(&t, partition),
                h,
                payload.to_string().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// Every message in the DLQ stream: (headers, payload).
    pub async fn dlq_messages(&self, dlq: &str) -> Vec<(HeaderMap, String)> {
        let stream_name = names::dlq_stream(&ResourceRef::new(NS, dlq).unwrap());
        let stream = self
            .broker
            .jetstream()
            .get_stream(&stream_name)
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut seq = 1;
        loop {
            match stream.get_raw_message(seq).await {
                Ok(m) => out.push((m.headers, String::from_utf8_lossy(&m.payload).to_string())),
                Err(_) => break,
            }
            seq += 1;
        }
        out
    }
}

/// One handler call as seen by the test.
#[derive(Debug, Clone)]
pub struct Record {
    pub member: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<String>,
    pub payload: String,
    pub attempt: u32,
    pub start: Instant,
    pub end: Instant,
    pub ok: bool,
}

pub type Records = Arc<Mutex<Vec<Record>>>;

/// What the shared test handler does with a message.
pub type Behaviour = Arc<dyn Fn(&Message) -> Result<(), HandlerError> + Send + Sync>;

pub fn ok_behaviour() -> Behaviour {
    Arc::new(|_| Ok(()))
}

pub struct Member {
    pub id: String,
    pub shutdown: ShutdownHandle,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<sluice_worker::Result<()>>>>,
}

impl Member {
    /// Crash: drops the member's runtime (every task and its connection), no cleanup.
    pub fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Clean shutdown; returns what `run` returned.
    pub fn stop(&mut self) -> sluice_worker::Result<()> {
        self.shutdown.shutdown();
        let t = self.thread.take().expect("member already stopped");
        t.join().unwrap().expect("member was killed")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct MemberSpec {
    pub url: String,
    pub group: String,
    pub id: String,
    pub records: Records,
    pub behaviour: Behaviour,
    pub work: Duration,
    pub observer: Option<Arc<dyn sluice_worker::Observer>>,
    pub output_subject: Option<String>,
}

/// Starts a member on its own single-threaded runtime.
pub fn spawn_member(spec: MemberSpec) -> Member {
    let mut options = WorkerOptions::new(&spec.url, NS, spec.group.clone(), spec.id.clone());
    options.handle_signals = false;
    options.drain_timeout = Duration::from_secs(10);
    let mut worker = Worker::new(options);
    if let Some(o) = spec.observer.clone() {
        worker = worker.observer(o);
    }
    let shutdown = worker.shutdown_handle();
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let id = spec.id.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let records = spec.records.clone();
        let behaviour = spec.behaviour.clone();
        let member = spec.id.clone();
        let work = spec.work;
        let output = spec.output_subject.clone();
        let handler = move |msg: Message, ctx: Context| {
            let records = records.clone();
            let behaviour = behaviour.clone();
            let member = member.clone();
            let output = output.clone();
            async move {
                let start = Instant::now();
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                let result = behaviour(&msg);
                if result.is_ok()
                    && let Some(subject) = output
                {
                    ctx.publish(subject, None, msg.payload.clone())
                        .await
                        .map_err(HandlerError::retryable)?;
                }
                records.lock().unwrap().push(Record {
                    member,
                    partition: msg.partition,
                    offset: msg.offset,
                    key: msg.key.clone(),
                    payload: String::from_utf8_lossy(&msg.payload).to_string(),
                    attempt: msg.attempt,
                    start,
                    end: Instant::now(),
                    ok: result.is_ok(),
                });
                result
            }
        };
        let out = rt.block_on(async move {
            tokio::select! {
                r = worker.run(handler) => Some(r),
                _ = kill_rx => None,
            }
        });
        rt.shutdown_background();
        out
    });
    Member {
        id,
        shutdown,
        kill: Some(kill_tx),
        thread: Some(thread),
    }
}

pub fn spec(env: &Env, group: &str, id: &str, records: &Records) -> MemberSpec {
    MemberSpec {
        url: env.url(),
        group: group.into(),
        id: id.into(),
        records: records.clone(),
        behaviour: ok_behaviour(),
        work: Duration::ZERO,
        observer: None,
        output_subject: None,
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts no two members ever handled the same partition at overlapping times.
pub fn assert_no_overlap(records: &[Record]) {
    let mut by_p: std::collections::BTreeMap<u32, Vec<&Record>> = Default::default();
    for r in records {
        by_p.entry(r.partition).or_default().push(r);
    }
    let mut overlaps = 0;
    for (p, mut rs) in by_p {
        rs.sort_by_key(|r| r.start);
        for w in rs.windows(2) {
            if w[0].member != w[1].member && w[1].start < w[0].end {
                overlaps += 1;
                eprintln!("overlap on partition {p}: {:?} and {:?}", w[0], w[1]);
            }
        }
    }
    assert_eq!(overlaps, 0, "partitions handled by two members at once");
}

/// Successful handlings per (partition, offset).
pub fn counts(records: &[Record]) -> std::collections::BTreeMap<(u32, u64), usize> {
    let mut c = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r.ok) {
        *c.entry((r.partition, r.offset)).or_insert(0) += 1;
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Queues, streams, DLQ envelopes and worker child processes (delivery, DLQ, exactly-once,
// shutdown and queue tests).

/// A queue group config with test-friendly timings.
pub fn queue_group(queue: &str, group: &str) -> GroupConfig {
    let mut cfg = topic_group(queue, group, 1);
    cfg.source.kind = SourceKind::Queue;
    cfg
}

impl Env {
    /// Provisions the queue stream, the DLQ (if any) and the group.
    pub async fn provision_queue(&self, cfg: &GroupConfig) {
        let queue = ResourceRef::new(NS, cfg.source.name.clone()).unwrap();
        self.broker
            .ensure_queue(&queue, &sluice_broker::config::QueueSettings::default())
            .await
            .unwrap();
        if let Some(dlq) = &cfg.dead_letter {
            self.broker
                .ensure_dlq(
                    &ResourceRef::new(NS, dlq.clone()).unwrap(),
                    &DlqSettings::default(),
                )
                .await
                .unwrap();
        }
        self.broker.ensure_group(cfg).await.unwrap();
    }

    /// Publishes `payload` to a queue with a message id.
    pub async fn publish_queue(&self, queue: &str, id: &str, payload: &str) -> u64 {
        let q = ResourceRef::new(NS, queue).unwrap();
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        self.broker
            .jetstream()
            .publish_with_headers(names::queue_subject(&q), h, payload.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// Publishes with arbitrary headers to a topic partition.
    pub async fn publish_with(&self, topic: &str, partition: u32, h: HeaderMap, payload: &str) {
        let t = ResourceRef::new(NS, topic).unwrap();
        self.broker
            .jetstream()
            .publish_with_headers(
                names::topic_subject(&t, partition),
                h,
                payload.to_string().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The DLQ's messages with their decoded envelopes.
    pub async fn dead_letters(
        &self,
        dlq: &str,
    ) -> Vec<(sluice_broker::dlq::DeadLetter, HeaderMap, String)> {
        self.dlq_messages(dlq)
            .await
            .into_iter()
            .map(|(h, p)| {
                let dl = sluice_broker::dlq::DeadLetter::decode(&h).unwrap();
                (dl, h, p)
            })
            .collect()
    }

    /// Every message of a stream: (headers, payload).
    pub async fn stream_messages(&self, stream_name: &str) -> Vec<(HeaderMap, String)> {
        let stream = self
            .broker
            .jetstream()
            .get_stream(stream_name)
            .await
            .unwrap();
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push((m.headers, String::from_utf8_lossy(&m.payload).to_string()));
            }
        }
        out
    }

    /// Consumer info of the group's consumer on a stream.
    pub async fn consumer_info(
        &self,
        stream_name: &str,
        group: &str,
    ) -> async_nats::jetstream::consumer::Info {
        let durable = names::group_consumer(&ResourceRef::new(NS, group).unwrap());
        let stream = self
            .broker
            .jetstream()
            .get_stream(stream_name)
            .await
            .unwrap();
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&durable).await.unwrap();
        c.info().await.unwrap().clone()
    }
}

/// Async version of [`wait_until`] for conditions that need the broker.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Handler calls per payload, successful ones only.
pub fn ok_by_payload(records: &[Record]) -> std::collections::BTreeMap<String, usize> {
    let mut c = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r.ok) {
        *c.entry(r.payload.clone()).or_insert(0) += 1;
    }
    c
}

/// Spawns a member with a fully built worker (for options the [`MemberSpec`] does not cover).
pub fn spawn_worker(worker: Worker, spec: MemberSpec) -> Member {
    let shutdown = worker.shutdown_handle();
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let id = spec.id.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let records = spec.records.clone();
        let behaviour = spec.behaviour.clone();
        let member = spec.id.clone();
        let work = spec.work;
        let handler = move |msg: Message, _ctx: Context| {
            let records = records.clone();
            let behaviour = behaviour.clone();
            let member = member.clone();
            async move {
                let start = Instant::now();
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                let result = behaviour(&msg);
                records.lock().unwrap().push(Record {
                    member,
                    partition: msg.partition,
                    offset: msg.offset,
                    key: msg.key.clone(),
                    payload: String::from_utf8_lossy(&msg.payload).to_string(),
                    attempt: msg.attempt,
                    start,
                    end: Instant::now(),
                    ok: result.is_ok(),
                });
                result
            }
        };
        let out = rt.block_on(async move {
            tokio::select! {
                r = worker.run(handler) => Some(r),
                _ = kill_rx => None,
            }
        });
        rt.shutdown_background();
        out
    });
    Member {
        id,
        shutdown,
        kill: Some(kill_tx),
        thread: Some(thread),
    }
}

/// Worker options of a test member (no signal handling, short drain).
pub fn member_options(env: &Env, group: &str, id: &str) -> WorkerOptions {
    let mut options = WorkerOptions::new(&env.url(), NS, group, id);
    options.handle_signals = false;
    options.drain_timeout = Duration::from_secs(10);
    options
}

/// Counts events by kind.
#[derive(Debug, Default)]
pub struct EventCounter(pub Mutex<std::collections::HashMap<sluice_worker::Event, usize>>);

impl EventCounter {
    pub fn get(&self, e: sluice_worker::Event) -> usize {
        self.0.lock().unwrap().get(&e).copied().unwrap_or(0)
    }
}

impl sluice_worker::Observer for EventCounter {
    fn event(&self, e: &sluice_worker::MessageEvent<'_>) {
        *self.0.lock().unwrap().entry(e.event).or_insert(0) += 1;
    }
}

// --- worker child processes -------------------------------------------------------------------
//
// A test binary re-executes itself as a worker process: `spawn_child` runs the test named
// `child_worker` (ignored, so it never runs on its own) with `SLUICE_TEST_CHILD=1`, and that test
// calls `child_main`. The worker reads the real `SLUICE_*` environment; the handler appends one
// line per event to `SLUICE_TEST_LOG` and reacts to payload prefixes:
// - `abort:` aborts the process (every attempt), after logging `start`;
// - `abort-once:` publishes its output, then aborts the first time a handler sees it;
// - `crash-before-ack:` completes (logs `done`) the first time and the process aborts in
//   the worker's Processed hook, i.e. after the idempotency key was recorded, before the ack;
// - `fail:` returns a retryable error.
// `SLUICE_TEST_WORK_MS` makes each handling sleep; `SLUICE_TEST_OUTPUT` makes it publish its
// payload there through `Context::publish`.

/// The name of the test every test binary declares as the child entry point.
pub const CHILD_TEST: &str = "child_worker";

/// One line of a child's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEvent {
    pub event: String,
    pub member: String,
    pub key: String,
    pub attempt: u32,
    pub payload: String,
}

pub fn read_child_log(path: &std::path::Path) -> Vec<ChildEvent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(5, '\t').collect();
            (f.len() == 5).then(|| ChildEvent {
                event: f[0].into(),
                member: f[1].into(),
                key: f[2].into(),
                attempt: f[3].parse().unwrap_or(0),
                payload: f[4].into(),
            })
        })
        .collect()
}

/// Counts events of one kind per payload.
pub fn child_counts(log: &[ChildEvent], event: &str) -> std::collections::BTreeMap<String, usize> {
    let mut c = std::collections::BTreeMap::new();
    for e in log.iter().filter(|e| e.event == event) {
        *c.entry(e.payload.clone()).or_insert(0) += 1;
    }
    c
}

fn child_log_line(event: &str, member: &str, key: &str, attempt: u32, payload: &str) {
    use std::io::Write;
    let Ok(path) = std::env::var("SLUICE_TEST_LOG") else {
        return;
    };
    let line = format!("{event}\t{member}\t{key}\t{attempt}\t{payload}\n");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
    f.sync_data().unwrap();
}

/// Whether the log holds exactly one `start` of `key` (the current handling's).
fn first_start(key: &str) -> bool {
    let Ok(path) = std::env::var("SLUICE_TEST_LOG") else {
        return true;
    };
    read_child_log(std::path::Path::new(&path))
        .iter()
        .filter(|e| e.event == "start" && e.key == key)
        .count()
        == 1
}

static CRASH_ON_PROCESSED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[derive(Debug)]
struct ChildObserver {
    member: String,
}

impl sluice_worker::Observer for ChildObserver {
    fn event(&self, e: &sluice_worker::MessageEvent<'_>) {
        match e.event {
            sluice_worker::Event::Processed
                if CRASH_ON_PROCESSED.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                child_log_line("crash-before-ack", &self.member, "", 0, "");
                std::process::abort();
            }
            sluice_worker::Event::Duplicate => {
                child_log_line("dup", &self.member, "", 0, "");
            }
            _ => {}
        }
    }
}

/// The body of every test binary's `child_worker` test.
pub fn child_main() {
    if std::env::var("SLUICE_TEST_CHILD").is_err() {
        eprintln!("child_worker is a worker process entry point: run by the other tests");
        return;
    }
    // `SLUICE_TEST_DEFAULT_LOGGING`: install nothing, as a worker binary that does not set up
    // tracing itself.
    if std::env::var("SLUICE_TEST_DEFAULT_LOGGING").is_err() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .try_init();
    }
    let work = Duration::from_millis(
        std::env::var("SLUICE_TEST_WORK_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let output = std::env::var("SLUICE_TEST_OUTPUT").ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async move {
        let worker = Worker::from_env().unwrap();
        let member = worker.options().member_id.clone();
        let worker = worker.observer(Arc::new(ChildObserver {
            member: member.clone(),
        }));
        worker
            .run(move |msg: Message, ctx: Context| {
                let member = member.clone();
                let output = output.clone();
                async move {
                    let payload = String::from_utf8_lossy(&msg.payload).to_string();
                    let log = |event: &str| {
                        child_log_line(event, &member, &msg.idempotency_key, msg.attempt, &payload)
                    };
                    log("start");
                    if payload.starts_with("abort:") {
                        std::process::abort();
                    }
                    if !work.is_zero() {
                        tokio::time::sleep(work).await;
                    }
                    if let Some(subject) = output {
                        ctx.publish(subject, None, msg.payload.clone())
                            .await
                            .map_err(HandlerError::retryable)?;
                    }
                    if payload.starts_with("abort-once:") && first_start(&msg.idempotency_key) {
                        std::process::abort();
                    }
                    if payload.starts_with("fail:") {
                        log("fail");
                        return Err(HandlerError::retryable("told to fail"));
                    }
                    if payload.starts_with("crash-before-ack:") && first_start(&msg.idempotency_key)
                    {
                        CRASH_ON_PROCESSED.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    log("done");
                    Ok(())
                }
            })
            .await
    });
    result.unwrap();
}

/// A worker child process; killed when dropped.
pub struct Child {
    pub member: String,
    pub proc: std::process::Child,
}

impl Child {
    /// Whether it exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.try_wait().unwrap()
    }

    /// Sends SIGTERM (the real signal, through `kill`).
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.proc.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            if Instant::now() > deadline {
                panic!("child {} did not exit within {timeout:?}", self.member);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// How to start worker children of one group.
#[derive(Clone)]
pub struct ChildSpec {
    pub url: String,
    pub group: String,
    pub log: std::path::PathBuf,
    pub env: Vec<(String, String)>,
}

impl ChildSpec {
    pub fn new(env: &Env, group: &str, dir: &std::path::Path) -> Self {
        Self {
            url: env.url(),
            group: group.into(),
            log: dir.join("handled.log"),
            env: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn spawn(&self, member: &str) -> Child {
        let exe = std::env::current_exe().unwrap();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log.with_extension("stderr"))
            .unwrap();
        let proc = std::process::Command::new(exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SLUICE_TEST_CHILD", "1")
            .env("SLUICE_BROKER_URL", &self.url)
            .env("SLUICE_NAMESPACE", NS)
            .env("SLUICE_GROUP", &self.group)
            .env("SLUICE_MEMBER_ID", member)
            .env("SLUICE_TEST_LOG", &self.log)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Child {
            member: member.into(),
            proc,
        }
    }

    pub fn events(&self) -> Vec<ChildEvent> {
        read_child_log(&self.log)
    }

    /// The children's stderr, for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default()
    }
}

/// Keeps one worker child running, restarting it (under a new member id) whenever it dies.
pub struct Supervisor {
    pub spec: ChildSpec,
    pub child: Child,
    pub crashes: u32,
}

impl Supervisor {
    pub fn start(spec: ChildSpec) -> Self {
        let child = spec.spawn("w0");
        Self {
            spec,
            child,
            crashes: 0,
        }
    }

    /// Restarts the child if it died; call while polling.
    pub fn tend(&mut self) {
        if let Some(status) = self.child.exited() {
            assert!(
                !status.success() || status.code().is_none(),
                "worker exited cleanly while it should be running: {status}\n{}",
                self.spec.stderr()
            );
            self.crashes += 1;
            self.child = self.spec.spawn(&format!("w{}", self.crashes));
        }
    }
}

impl Env {
    /// The partitions `member` last reported owning in its membership heartbeat.
    pub async fn owned_by(&self, group: &str, member: &str) -> Vec<u32> {
        let Ok(kv) = self
            .broker
            .jetstream()
            .get_key_value(names::MEMBERS_BUCKET)
            .await
        else {
            return Vec::new();
        };
        let key = names::member_key(&ResourceRef::new(NS, group).unwrap(), member);
        match kv.get(&key).await {
            Ok(Some(value)) => {
                serde_json::from_slice::<sluice_worker::membership::MemberRecord>(&value)
                    .map(|r| r.partitions)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Polls until `member` reports owning at least one partition.
    pub async fn wait_owns(&self, group: &str, member: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.owned_by(group, member).await.is_empty() {
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {member} to own a partition");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// --- a TCP proxy that can cut members off the broker ------------------------------------------

/// A loopback TCP proxy in front of a nats-server: members connect through it, and the test
/// cuts every connection ([`Proxy::cut`]; new ones are refused at once) and lets them back
/// ([`Proxy::restore`]), like a network partition between the members and the broker.
pub struct Proxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:<target>` on a free port.
    pub async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let accept = tokio::spawn({
            let (up, conns) = (up.clone(), conns.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection closed
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        Proxy {
            port,
            up,
            conns,
            accept,
        }
    }

    /// The URL members use to reach the broker through the proxy.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
