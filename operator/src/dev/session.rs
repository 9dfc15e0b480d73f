//! One `sluice dev` run: the embedded broker, the manifests applied through the operator's
//! reconcile core, worker pools scaled by the autoscaler, Jobs, the live view, `--until-idle`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use sluice_broker::config::SourceKind;
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{GroupConfig, ResourceRef};
use tokio::time::Instant;
use tracing::{info, warn};

use super::manifest::{self, LocalJob, Manifests};
use super::pool::{MemberTemplate, WorkerPool};
use super::process::{LocalProcess, ProcessSpec};
use super::view::{DlqRow, Frame, GroupRow, TopicRow};
use crate::autoscale::{GroupScaler, autoscale_policy};
use crate::controller::context::{BrokerPool, Lookup, MemoryObjects, ReconcileContext};
use crate::controller::{self, conditions, ns_name};
use crate::crd::{Broker, BrokerSpec, ConsumerGroup, DeadLetterQueue, Queue, Topic};
use crate::desired::group::group_config;

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

/// What a Job process did.
#[derive(Debug)]
enum JobState {
    Running(LocalProcess),
    Done(String),
}

/// A group's local runtime.
struct GroupRuntime {
    group: ConsumerGroup,
    config: GroupConfig,
    pool: Option<WorkerPool>,
    scaler: Option<GroupScaler>,
    template_key: String,
    next_poll: Instant,
    reason: String,
    problem: Option<String>,
    scaling: ScalingStats,
}

/// What the autoscaler did to one group during the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScalingStats {
    /// Scale-ups applied.
    pub scale_ups: u32,
    /// Scale-downs applied.
    pub scale_downs: u32,
    /// Most worker processes at once.
    pub max_replicas: u32,
    /// Worker processes at the end.
    pub replicas: u32,
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
pub async fn start_broker(data_dir: &Path, port: Option<u16>) -> anyhow::Result<NatsServer> {
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
    pub async fn start(options: SessionOptions) -> anyhow::Result<Self> {
        let manifests = manifest::load(&options.paths)?;
        std::fs::create_dir_all(&options.data_dir)?;
        let server = start_broker(&options.data_dir, options.port).await?;
        std::fs::write(url_file(&options.data_dir), server.url())?;
        let broker = sluice_broker::Broker::connect(&sluice_broker::ConnectOptions::from_url_list(
            &server.url(),
        ))
        .await?;
        let objects = Arc::new(MemoryObjects::default());
        let overrides = broker_names(&manifests)
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
        replace_all(&self.objects, &manifests);
        for name in broker_names(&manifests) {
            if !manifests.brokers.iter().any(|b| b.name_any() == name) {
                // Topics may name a Broker that is not in the manifests: the embedded one stands in.
                for ns in namespaces(&manifests) {
                    self.objects.put(dev_broker(&ns, &name));
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

    async fn apply_group(&mut self, group: &ConsumerGroup) {
        let key = ns_name(group);
        let out = controller::group::reconcile(&self.reconcile, group, RESYNC).await;
        let ready = conditions::is_true(&out.outcome.status.conditions, conditions::READY);
        self.note(label(&key), "ConsumerGroup", &out.outcome.status.conditions);
        if !ready {
            let problem = conditions::get(&out.outcome.status.conditions, conditions::READY)
                .map(|c| format!("{}: {}", c.reason, c.message));
            if let Some(runtime) = self.groups.get_mut(&key) {
                runtime.problem = problem;
            }
            return;
        }
        let config = match self.group_config(group).await {
            Ok(c) => c,
            Err(e) => {
                self.problems
                    .insert(format!("ConsumerGroup {}", label(&key)), e.to_string());
                return;
            }
        };
        let template = out
            .deployment
            .as_ref()
            .map(|d| self.member_template(&key, d, &config));
        let template = match template.transpose() {
            Ok(t) => t,
            Err(message) => {
                self.problems
                    .insert(format!("ConsumerGroup {}", label(&key)), message);
                None
            }
        };
        let template_key = format!("{template:?}");
        let policy = match &group.spec.autoscaling {
            Some(spec) => autoscale_policy(spec),
            // No autoscaling block: one worker, as the operator's Deployment would run.
            None => Ok(crate::autoscale::AutoscalePolicy {
                min: 1,
                max: 1,
                ..Default::default()
            }),
        };
        match self.groups.get_mut(&key) {
            Some(runtime) => {
                runtime.group = group.clone();
                runtime.problem = None;
                runtime.config = config;
                if let (Ok(policy), Some(scaler)) = (&policy, runtime.scaler.as_mut()) {
                    scaler.update_policy(policy);
                }
                if runtime.template_key != template_key
                    && let (Some(pool), Some(template)) = (&runtime.pool, template)
                {
                    info!(group = %label(&key), "worker template changed; restarting workers");
                    if let Err(e) = pool.roll(template).await {
                        runtime.problem = Some(e.to_string());
                    }
                    runtime.template_key = template_key;
                }
            }
            None => {
                let scaler = match policy {
                    Ok(p) => GroupScaler::new(p).ok(),
                    Err(e) => {
                        self.problems
                            .insert(format!("ConsumerGroup {}", label(&key)), e.to_string());
                        None
                    }
                };
                self.groups.insert(
                    key,
                    GroupRuntime {
                        group: group.clone(),
                        config,
                        pool: template.map(WorkerPool::new),
                        scaler,
                        template_key,
                        next_poll: Instant::now(),
                        reason: "starting".into(),
                        problem: None,
                        scaling: ScalingStats::default(),
                    },
                );
            }
        }
    }

    async fn group_config(&self, group: &ConsumerGroup) -> anyhow::Result<GroupConfig> {
        let (ns, name) = ns_name(group);
        let source = controller::group::resolve_source(&self.reconcile, &ns, group)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        group_config(&ns, &name, &group.spec, &source).map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn member_template(
        &self,
        key: &(String, String),
        deployment: &k8s_openapi::api::apps::v1::Deployment,
        config: &GroupConfig,
    ) -> Result<MemberTemplate, String> {
        let container = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .ok_or_else(|| format!("ConsumerGroup {} has no worker container", label(key)))?;
        let (argv, env) = manifest::container_argv(container)?;
        let grace = Duration::from_millis(config.ack_wait_ms)
            .max(self.options.grace)
            .min(Duration::from_secs(120));
        Ok(MemberTemplate {
            owner: label(key),
            group: key.1.clone(),
            argv,
            env,
            log_dir: self.options.data_dir.join("logs"),
            grace,
        })
    }

    /// Starts each group's workers at its minimum and runs the Jobs not yet completed in
    /// this data directory.
    pub async fn start_workloads(&mut self) -> anyhow::Result<()> {
        for runtime in self.groups.values_mut() {
            if let (Some(pool), Some(scaler)) = (&runtime.pool, &runtime.scaler) {
                pool.scale_to(scaler.policy().min as usize).await?;
            }
        }
        let jobs = self.manifests.jobs.clone();
        for job in jobs {
            self.start_job(&job)?;
        }
        Ok(())
    }

    fn job_record(&self, job: &LocalJob) -> PathBuf {
        self.options
            .data_dir
            .join("jobs")
            .join(format!("{}.{}.done", job.namespace, job.name))
    }

    fn start_job(&mut self, job: &LocalJob) -> anyhow::Result<()> {
        let key = (job.namespace.clone(), job.name.clone());
        if self.jobs.contains_key(&key) {
            return Ok(());
        }
        if self.job_record(job).exists() {
            self.jobs.insert(
                key,
                JobState::Done("succeeded earlier (not run again)".into()),
            );
            return Ok(());
        }
        let mut env = job.env.clone();
        env.insert("SLUICE_BROKER_URL".into(), self.server.url());
        env.insert("SLUICE_NAMESPACE".into(), job.namespace.clone());
        let spec = ProcessSpec {
            owner: format!("job {}", label(&key)),
            argv: job.argv.clone(),
            env,
            log: self
                .options
                .data_dir
                .join("logs")
                .join(format!("job-{}.log", job.name)),
        };
        let process = LocalProcess::spawn(job.name.clone(), &spec)?;
        self.jobs.insert(key, JobState::Running(process));
        Ok(())
    }

    /// One tick: reaps Jobs, restarts crashed workers, runs due autoscaler polls, and picks
    /// up edited manifests.
    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let records: Vec<(PathBuf, (String, String))> = self
            .manifests
            .jobs
            .iter()
            .map(|j| (self.job_record(j), (j.namespace.clone(), j.name.clone())))
            .collect();
        for (record, key) in records {
            if let Some(JobState::Running(p)) = self.jobs.get_mut(&key)
                && let Some(status) = p.try_exit()
            {
                let state = if status.success() {
                    if let Some(parent) = record.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&record, "succeeded\n")?;
                    "succeeded".to_string()
                } else {
                    format!(
                        "failed ({status}); see {}",
                        self.options.data_dir.join("logs").display()
                    )
                };
                info!(job = %label(&key), %state, "job finished");
                self.jobs.insert(key, JobState::Done(state));
            }
        }
        let now = Instant::now();
        let since_start = now.duration_since(self.started);
        for (key, runtime) in self.groups.iter_mut() {
            let Some(pool) = &runtime.pool else { continue };
            pool.restart_exited().await?;
            let running = pool.len().await as u32;
            runtime.scaling.replicas = running;
            runtime.scaling.max_replicas = runtime.scaling.max_replicas.max(running);
            if now < runtime.next_poll {
                continue;
            }
            if let Some(scaler) = runtime.scaler.as_mut() {
                runtime.next_poll = now + scaler.policy().poll_interval;
                let before = pool.len().await as u32;
                match scaler
                    .poll(&self.broker, &runtime.config, pool, since_start)
                    .await
                {
                    Ok(step) => {
                        runtime.reason = step.decision.to_string();
                        if step.scaled {
                            if step.decision.desired > before {
                                runtime.scaling.scale_ups += 1;
                            } else {
                                runtime.scaling.scale_downs += 1;
                            }
                        }
                    }
                    Err(e) => {
                        warn!(group = %label(key), error = %e, "autoscaler step failed");
                        runtime.reason = format!("autoscaler: {e}");
                    }
                }
            }
        }
        if self.manifests_changed() {
            match manifest::load(&self.options.paths) {
                Ok(m) => {
                    info!("manifests changed; applying");
                    self.apply(m).await;
                    let jobs = self.manifests.jobs.clone();
                    for job in jobs {
                        self.start_job(&job)?;
                    }
                    for runtime in self.groups.values() {
                        if let (Some(pool), Some(scaler)) = (&runtime.pool, &runtime.scaler)
                            && pool.is_empty().await
                        {
                            pool.scale_to(scaler.policy().min as usize).await?;
                        }
                    }
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

    /// Whether every Job finished, no group has lag or retries in flight, and every queue fed
    /// by topics has received all their messages.
    pub async fn is_idle(&self) -> anyhow::Result<bool> {
        Ok(self.waiting_for().await?.is_empty())
    }

    /// What keeps the session from being idle, one line each (empty when idle): running Jobs,
    /// groups with lag, and queue source partitions not received in full.
    pub async fn waiting_for(&self) -> anyhow::Result<Vec<String>> {
        let mut waiting = Vec::new();
        for (name, job) in &self.jobs {
            if matches!(job, JobState::Running(_)) {
                waiting.push(format!("job {} is still running", label(name)));
            }
        }
        for (name, runtime) in &self.groups {
            let lag = self.broker.group_lag(&runtime.config).await?;
            if lag.total() > 0 {
                waiting.push(format!(
                    "group {} has {} messages to handle ({} waiting, {} in flight)",
                    label(name),
                    lag.total(),
                    lag.partitions.iter().map(|p| p.pending).sum::<u64>(),
                    lag.partitions.iter().map(|p| p.ack_pending).sum::<u64>()
                ));
            }
        }
        for queue in &self.manifests.queues {
            let sources = self.queue_sources(queue);
            if sources.is_empty() {
                continue;
            }
            let (ns, name) = ns_name(queue);
            let r = ResourceRef::new(ns.clone(), name.clone())?;
            for s in self.broker.fanout_status(&r, &sources).await? {
                if !s.caught_up() {
                    waiting.push(format!(
                        "queue {ns}/{name} has not received {} messages of topic {} partition {} (received up to offset {} of {})",
                        s.pending, s.topic, s.partition, s.received_offset, s.origin_last_offset
                    ));
                }
            }
        }
        Ok(waiting)
    }

    /// The source topics of a queue with their partition counts from the manifests.
    fn queue_sources(&self, queue: &Queue) -> Vec<sluice_broker::config::QueueSource> {
        let (ns, _) = ns_name(queue);
        queue
            .spec
            .sources
            .iter()
            .filter_map(|source| {
                let topic = self
                    .manifests
                    .topics
                    .iter()
                    .find(|t| ns_name(*t) == (ns.clone(), source.topic.clone()))?;
                Some(sluice_broker::config::QueueSource {
                    topic: source.topic.clone(),
                    partitions: topic.spec.partitions,
                })
            })
            .collect()
    }

    /// Whether every group with workers runs no more than its autoscaling minimum.
    pub async fn at_minimum(&self) -> bool {
        for runtime in self.groups.values() {
            if let (Some(pool), Some(scaler)) = (&runtime.pool, &runtime.scaler)
                && pool.len().await > scaler.policy().min as usize
            {
                return false;
            }
        }
        true
    }

    /// What the autoscaler did, per group (`namespace/name`).
    pub fn scaling(&self) -> BTreeMap<String, ScalingStats> {
        self.groups
            .iter()
            .map(|(k, r)| (label(k), r.scaling))
            .collect()
    }

    /// The current view.
    pub async fn frame(&self) -> Frame {
        let mut frame = Frame {
            broker: self.server.url(),
            elapsed_secs: self.started.elapsed().as_secs(),
            ..Default::default()
        };
        for topic in &self.manifests.topics {
            let (ns, name) = ns_name(topic);
            let Ok(r) = ResourceRef::new(ns, name) else {
                continue;
            };
            if let Ok(parts) = self.broker.topic_status(&r, topic.spec.partitions).await {
                frame.topics.push(TopicRow {
                    name: r.to_string(),
                    partitions: parts.iter().map(|p| p.messages).collect(),
                });
            }
        }
        for (key, runtime) in &self.groups {
            let lag = self.broker.group_lag(&runtime.config).await.ok();
            let replicas = match &runtime.pool {
                Some(p) => p.len().await as u32,
                None => 0,
            };
            frame.groups.push(GroupRow {
                name: label(key),
                source: source_label(&runtime.config),
                lag: lag
                    .map(|l| l.partitions.iter().map(|p| p.lag()).collect())
                    .unwrap_or_default(),
                replicas,
                restarts: runtime.pool.as_ref().map_or(0, WorkerPool::restarts),
                reason: runtime.reason.clone(),
                problem: runtime.problem.clone(),
            });
        }
        for dlq in &self.manifests.dlqs {
            let (ns, name) = ns_name(dlq);
            let Ok(r) = ResourceRef::new(ns, name) else {
                continue;
            };
            if let Ok(status) = self.broker.dlq_status(&r).await {
                frame.dlqs.push(DlqRow {
                    name: r.to_string(),
                    depth: status.depth,
                });
            }
        }
        for (key, state) in &self.jobs {
            let text = match state {
                JobState::Running(_) => "running".to_string(),
                JobState::Done(s) => s.clone(),
            };
            frame.jobs.push((label(key), text));
        }
        frame.problems = self
            .problems
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        frame
    }

    /// Jobs that failed.
    pub fn failed_jobs(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter_map(|(k, s)| match s {
                JobState::Done(text) if text.starts_with("failed") => {
                    Some(format!("{}: {text}", label(k)))
                }
                _ => None,
            })
            .collect()
    }

    /// Per-group accounting and totals (see [`super::summary`]).
    pub async fn summary(&self) -> anyhow::Result<super::summary::Summary> {
        let configs: Vec<GroupConfig> = self.groups.values().map(|g| g.config.clone()).collect();
        let mut summary = super::summary::compute(&self.broker, &self.manifests, &configs).await?;
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

fn source_label(config: &GroupConfig) -> String {
    match config.source.kind {
        SourceKind::Topic => format!("topic/{}", config.source.name),
        SourceKind::Queue => format!("queue/{}", config.source.name),
    }
}

/// Every broker name the manifests mention.
fn broker_names(m: &Manifests) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = m.brokers.iter().map(|b| b.name_any()).collect();
    names.extend(m.topics.iter().map(|t| t.spec.broker.clone()));
    names.extend(m.queues.iter().map(|q| q.spec.broker.clone()));
    names.extend(m.dlqs.iter().map(|d| d.spec.broker.clone()));
    names.extend(m.groups.iter().filter_map(|g| g.spec.broker.clone()));
    names
}

fn namespaces(m: &Manifests) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.extend(m.topics.iter().map(|o| ns_name(o).0));
    out.extend(m.queues.iter().map(|o| ns_name(o).0));
    out.extend(m.dlqs.iter().map(|o| ns_name(o).0));
    out.extend(m.groups.iter().map(|o| ns_name(o).0));
    out
}

fn dev_broker(namespace: &str, name: &str) -> Broker {
    let mut b = Broker::new(
        name,
        BrokerSpec {
            replicas: 1,
            version: None,
            storage: None,
            resources: None,
            jetstream: None,
            durability: None,
            auth: None,
        },
    );
    b.metadata.namespace = Some(namespace.to_string());
    b
}

fn replace_all(objects: &MemoryObjects, m: &Manifests) {
    fn reset<K: crate::controller::context::Stored>(objects: &MemoryObjects, items: &[K]) {
        if let Ok(mut map) = K::map(objects).lock() {
            map.clear();
        }
        for item in items {
            objects.put(item.clone());
        }
    }
    reset::<Broker>(objects, &m.brokers);
    reset::<Topic>(objects, &m.topics);
    reset::<Queue>(objects, &m.queues);
    reset::<DeadLetterQueue>(objects, &m.dlqs);
}
