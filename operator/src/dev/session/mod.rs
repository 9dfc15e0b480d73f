//! One `sluice dev` run: the embedded broker, the manifests applied through the operator's
//! reconcile core, worker pools scaled by the autoscaler, Jobs, the live view, `--until-idle`.
//!
//! - this module: the session, the embedded broker, applying manifests, the tick loop;
//! - [`store`]: the manifests as the in-memory objects the reconcile core reads;
//! - [`groups`]: each ConsumerGroup's worker pool and autoscaler;
//! - [`jobs`]: `batch/v1` Jobs run once per data directory;
//! - [`idle`]: what keeps the run from being idle (`--until-idle`);
//! - [`frame`]: the view model of the live view.

mod frame;
mod groups;
mod idle;
mod jobs;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use sluice_broker::embedded::{NatsServer, ServerOptions};
use tokio::time::Instant;
use tracing::{info, warn};

pub use groups::ScalingStats;

use self::groups::GroupRuntime;
use self::jobs::JobState;
use super::error::DevError;
use super::manifest::{self, Manifests};
use crate::controller::context::{BrokerPool, Lookup, MemoryObjects, ReconcileContext};
use crate::controller::{self, conditions, ns_name};

/// How long a healthy object waits between resyncs in the dev runtime.
const RESYNC: Duration = Duration::from_secs(5);

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Manifest files or directories.
    pub paths: Vec<PathBuf>,
    /// Broker store, logs and job records; kept between runs.
    pub data_dir: PathBuf,
    /// Client port of the embedded broker (`None`: a free one).
    pub port: Option<u16>,
    /// Grace period of worker processes on stop.
    pub grace: Duration,
}

/// A running dev session.
pub struct DevSession {
    options: SessionOptions,
    server: NatsServer,
    broker: sluice_broker::Broker,
    reconcile: ReconcileContext,
    objects: Arc<MemoryObjects>,
    manifests: Manifests,
    groups: BTreeMap<(String, String), GroupRuntime>,
    jobs: BTreeMap<(String, String), JobState>,
    problems: BTreeMap<String, String>,
    started: Instant,
}

impl std::fmt::Debug for DevSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSession")
            .field("broker", &self.server.url())
            .field("groups", &self.groups.len())
            .finish()
    }
}

fn label(key: &(String, String)) -> String {
    format!("{}/{}", key.0, key.1)
}

/// File holding the URL of the broker of a running session in `data_dir`.
pub fn url_file(data_dir: &Path) -> PathBuf {
    data_dir.join("broker-url")
}

/// Starts the embedded broker on `data_dir/broker` (shared by `sluice dev` and the
/// operations commands' `--dev DIR`).
///
/// # Errors
///
/// When nats-server cannot be started (not on `PATH`, port taken, data directory unusable).
pub async fn start_broker(data_dir: &Path, port: Option<u16>) -> Result<NatsServer, DevError> {
    let server = NatsServer::start(ServerOptions {
        name: "sluice-dev".into(),
        port,
        dir: Some(data_dir.join("broker")),
        ..Default::default()
    })
    .await?;
    Ok(server)
}

impl DevSession {
    /// Starts the broker and applies the manifests; workers and Jobs start with [`DevSession::start_workloads`].
    pub async fn start(options: SessionOptions) -> Result<Self, DevError> {
        let manifests = manifest::load(&options.paths)?;
        std::fs::create_dir_all(&options.data_dir)
            .map_err(|e| DevError::io("create directory", &options.data_dir, e))?;
        let server = start_broker(&options.data_dir, options.port).await?;
        let url_path = url_file(&options.data_dir);
        std::fs::write(&url_path, server.url()).map_err(|e| DevError::io("write", &url_path, e))?;
        let broker = sluice_broker::Broker::connect(&sluice_broker::ConnectOptions::from_url_list(
            &server.url(),
        ))
        .await?;
        let objects = Arc::new(MemoryObjects::default());
        let overrides = store::broker_names(&manifests)
            .into_iter()
            .map(|name| (name, server.url()))
            .collect();
        let reconcile = ReconcileContext {
            lookup: Lookup::Memory(objects.clone()),
            pool: Arc::new(BrokerPool::new(overrides)),
            relays: Arc::default(),
        };
        let mut session = Self {
            options,
            server,
            broker,
            reconcile,
            objects,
            manifests: Manifests::default(),
            groups: BTreeMap::new(),
            jobs: BTreeMap::new(),
            problems: BTreeMap::new(),
            started: Instant::now(),
        };
        session.apply(manifests).await;
        Ok(session)
    }

    /// URL of the embedded broker.
    pub fn broker_url(&self) -> String {
        self.server.url()
    }

    /// Problems found in the manifests (object -> message).
    pub fn problems(&self) -> &BTreeMap<String, String> {
        &self.problems
    }

    /// Puts the manifests into the in-memory store and reconciles every object once, in
    /// dependency order; groups get (or update) their worker runtime.
    async fn apply(&mut self, manifests: Manifests) {
        self.problems.clear();
        for ignored in &manifests.ignored {
            info!(object = %ignored, "not run by sluice dev");
        }
        // Objects removed from the manifests are forgotten (their broker data stays).
        store::replace_all(&self.objects, &manifests);
        for name in store::broker_names(&manifests) {
            if !manifests.brokers.iter().any(|b| b.name_any() == name) {
                // Topics may name a Broker that is not in the manifests: the embedded one stands in.
                for ns in store::namespaces(&manifests) {
                    self.objects.put(store::dev_broker(&ns, &name));
                }
            }
        }
        for dlq in &manifests.dlqs {
            let out = controller::dlq::reconcile(&self.reconcile, dlq, RESYNC).await;
            self.note(
                label(&ns_name(dlq)),
                "DeadLetterQueue",
                &out.status.conditions,
            );
            let mut dlq = dlq.clone();
            dlq.status = Some(out.status);
            self.objects.put(dlq);
        }
        for topic in &manifests.topics {
            let out = controller::topic::reconcile(&self.reconcile, topic, RESYNC).await;
            self.note(label(&ns_name(topic)), "Topic", &out.status.conditions);
            let mut topic = topic.clone();
            topic.status = Some(out.status);
            self.objects.put(topic);
        }
        for queue in &manifests.queues {
            let out = controller::queue::reconcile(&self.reconcile, queue, RESYNC).await;
            self.note(label(&ns_name(queue)), "Queue", &out.status.conditions);
            let mut queue = queue.clone();
            queue.status = Some(out.status);
            self.objects.put(queue);
        }
        let mut seen = BTreeSet::new();
        for group in &manifests.groups {
            let key = ns_name(group);
            seen.insert(key.clone());
            self.apply_group(group).await;
        }
        // Groups removed from the manifests: stop their workers.
        let removed: Vec<_> = self
            .groups
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in removed {
            if let Some(runtime) = self.groups.remove(&key)
                && let Some(pool) = runtime.pool
            {
                info!(group = %label(&key), "group removed from the manifests; stopping its workers");
                pool.shutdown().await;
            }
        }
        self.manifests = manifests;
    }

    fn note(&mut self, object: String, kind: &str, conds: &[crate::crd::Condition]) {
        if conditions::is_true(conds, conditions::READY) {
            return;
        }
        let message = conditions::get(conds, conditions::READY)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "not ready".into());
        warn!(%object, kind, %message, "not ready");
        self.problems.insert(format!("{kind} {object}"), message);
    }

    /// Starts each group's workers at its minimum and runs the Jobs not yet completed in
    /// this data directory.
    ///
    /// # Errors
    ///
    /// When a worker or Job process cannot be started.
    pub async fn start_workloads(&mut self) -> Result<(), DevError> {
        self.start_pools().await?;
        let jobs = self.manifests.jobs.clone();
        for job in jobs {
            self.start_job(&job)?;
        }
        Ok(())
    }

    /// One tick: reaps Jobs, restarts crashed workers, runs due autoscaler polls, and picks
    /// up edited manifests.
    pub async fn tick(&mut self) -> Result<(), DevError> {
        self.reap_jobs()?;
        self.tick_groups().await?;
        if self.manifests_changed() {
            match manifest::load(&self.options.paths) {
                Ok(m) => {
                    info!("manifests changed; applying");
                    self.apply(m).await;
                    let jobs = self.manifests.jobs.clone();
                    for job in jobs {
                        self.start_job(&job)?;
                    }
                    self.start_empty_pools().await?;
                }
                Err(e) => {
                    // Keep running the last good manifests.
                    self.problems.insert("manifests".into(), e.to_string());
                    self.manifests.files = manifest::modification_times(
                        &manifest::yaml_files(&self.options.paths).unwrap_or_default(),
                    );
                }
            }
        }
        Ok(())
    }

    fn manifests_changed(&self) -> bool {
        match manifest::yaml_files(&self.options.paths) {
            Ok(files) => manifest::modification_times(&files) != self.manifests.files,
            Err(_) => false,
        }
    }

    /// Re-runs every reconcile (statuses, re-creating deleted broker objects).
    pub async fn resync(&mut self) {
        let manifests = self.manifests.clone();
        self.apply(manifests).await;
    }

    /// Per-group accounting and totals (see [`super::summary`]).
    pub async fn summary(&self) -> Result<crate::dev::summary::Summary, DevError> {
        let configs: Vec<sluice_broker::GroupConfig> =
            self.groups.values().map(|g| g.config.clone()).collect();
        let mut summary = crate::dev::summary::compute(&self.broker, &self.manifests, &configs)
            .await
            .map_err(|e| DevError::Summary(e.into()))?;
        let scaling = self.scaling();
        for g in &mut summary.groups {
            g.scaling = scaling.get(&g.group).copied().unwrap_or_default();
        }
        Ok(summary)
    }

    /// Stops every worker gracefully, then the broker.
    pub async fn shutdown(mut self) {
        for runtime in self.groups.values() {
            if let Some(pool) = &runtime.pool {
                pool.shutdown().await;
            }
        }
        for (_, state) in std::mem::take(&mut self.jobs) {
            if let JobState::Running(p) = state {
                p.stop(self.options.grace).await;
            }
        }
        let _ = std::fs::remove_file(url_file(&self.options.data_dir));
        let _ = self.server.stop().await;
    }
}
