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
