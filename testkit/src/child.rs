//! Worker members as child processes of the test binary, for real `kill -9` and SIGTERM.
//!
//! A test binary re-executes itself as a worker process: [`ChildSpec::spawn`] runs the test
//! named [`CHILD_TEST`] (ignored, so it never runs on its own) with `SLUICE_TEST_CHILD=1`, and
//! that test calls [`child_main`]. The worker reads the real `SLUICE_*` environment; the
//! handler appends one line per event to `SLUICE_TEST_LOG` and reacts to payload prefixes:
//! - `abort:` aborts the process (every attempt), after logging `start`;
//! - `abort-once:` publishes its output, then aborts the first time a handler sees it;
//! - `crash-before-ack:` completes (logs `done`) the first time and the process aborts in
//!   the worker's Processed hook, i.e. after the idempotency key was recorded, before the ack;
//! - `fail:` returns a retryable error.
//!
//! `SLUICE_TEST_WORK_MS` makes each handling sleep; `SLUICE_TEST_OUTPUT` makes it publish its
//! payload there through `Context::publish`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_worker::{Context, HandlerError, Message, Worker};

use crate::nats::{Harness, NS};

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
#[derive(Debug)]
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
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub url: String,
    pub group: String,
    pub log: std::path::PathBuf,
    pub env: Vec<(String, String)>,
}

impl ChildSpec {
    pub fn new(env: &Harness, group: &str, dir: &std::path::Path) -> Self {
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
#[derive(Debug)]
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
