//! Worker-group members inside the test process, each on its own single-threaded runtime
//! and thread, so that [`Member::kill`] drops every task and the connection at once (a
//! crash without cleanup), and a shared handler that records every call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_worker::{
    Context, HandlerError, Message, Observer, ShutdownHandle, Worker, WorkerOptions,
};
use tokio::sync::oneshot;

use crate::nats::{Harness, NS};

/// One handler call as seen by the test.
#[derive(Debug, Clone)]
pub struct Record {
    /// The member that handled it.
    pub member: String,
    /// The message's partition.
    pub partition: u32,
    /// The message's offset.
    pub offset: u64,
    /// The message's key.
    pub key: Option<String>,
    /// The payload as text.
    pub payload: String,
    /// The delivery attempt.
    pub attempt: u32,
    /// When the handler started.
    pub start: Instant,
    /// When it returned.
    pub end: Instant,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The records of every member of a test, shared.
pub type Records = Arc<Mutex<Vec<Record>>>;

/// What the shared test handler does with a message.
pub type Behaviour = Arc<dyn Fn(&Message) -> Result<(), HandlerError> + Send + Sync>;

/// A behaviour that succeeds on every message.
pub fn ok_behaviour() -> Behaviour {
    Arc::new(|_| Ok(()))
}

/// Worker options of a test member (no signal handling, a 10 s drain).
pub fn member_options(env: &Harness, group: &str, id: &str) -> WorkerOptions {
    let mut options = WorkerOptions::new(&env.url(), NS, group, id);
    options.handle_signals = false;
    options.drain_timeout = Duration::from_secs(10);
    options
}

/// How to start one member.
#[allow(missing_debug_implementations)] // the behaviour and observer are closures
pub struct MemberSpec {
    /// The broker URL.
    pub url: String,
    /// The group's name.
    pub group: String,
    /// The member id.
    pub id: String,
    /// Where handler calls are recorded.
    pub records: Records,
    /// What the handler does.
    pub behaviour: Behaviour,
    /// How long each handling takes (slept before the behaviour runs).
    pub work: Duration,
    /// An observer for the worker's events.
    pub observer: Option<Arc<dyn Observer>>,
    /// A subject every successful handling publishes its payload to, through the context.
    pub output_subject: Option<String>,
}

impl MemberSpec {
    /// A member of `group` on the harness's server that succeeds at once on every message.
    pub fn new(env: &Harness, group: &str, id: &str, records: &Records) -> Self {
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

    fn worker(&self) -> Worker {
        let mut options = WorkerOptions::new(&self.url, NS, self.group.clone(), self.id.clone());
        options.handle_signals = false;
        options.drain_timeout = Duration::from_secs(10);
        let mut worker = Worker::new(options);
        if let Some(o) = self.observer.clone() {
            worker = worker.observer(o);
        }
        worker
    }
}

/// A running member; killed (crash) when dropped.
#[derive(Debug)]
pub struct Member {
    /// The member id.
    pub id: String,
    /// Asks the worker to shut down cleanly.
    pub shutdown: ShutdownHandle,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<sluice_worker::Result<()>>>>,
}

impl Member {
    /// Starts a member built from the spec.
    pub fn spawn(spec: MemberSpec) -> Member {
        let worker = spec.worker();
        Self::spawn_with(worker, spec)
    }

    /// Starts a member with a fully built worker (for options the spec does not cover); the
    /// spec's url and observer are not used.
    pub fn spawn_with(worker: Worker, spec: MemberSpec) -> Member {
        let shutdown = worker.shutdown_handle();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let id = spec.id.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let handler = recording_handler(spec);
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

/// The handler every in-process member runs: sleeps the spec's work, applies its behaviour,
/// publishes to its output on success and records the call.
fn recording_handler(
    spec: MemberSpec,
) -> impl Fn(
    Message,
    Context,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
+ Send
+ Sync
+ 'static {
    let MemberSpec {
        id: member,
        records,
        behaviour,
        work,
        output_subject: output,
        ..
    } = spec;
    move |msg: Message, ctx: Context| {
        let records = records.clone();
        let behaviour = behaviour.clone();
        let member = member.clone();
        let output = output.clone();
        Box::pin(async move {
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
        })
    }
}
