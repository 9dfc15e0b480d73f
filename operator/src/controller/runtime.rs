//! kube-runtime wiring: one Controller per kind (and namespace, when restricted), watches
//! guarded by `DeserializeGuard`, `finalizer()` cleanup, server-side-applied status and
//! children, Events, metrics, and requeue policy.
//!
//! Every reconcile is bounded by [`RECONCILE_TIMEOUT`] (covering the finalizer helper's own
//! writes) and each explicit API call by [`kube_api::API_TIMEOUT`].
//!
//! Status is written with one field manager ([`MANAGER`]) by server-side apply of the whole
//! status the reconcile computed; nothing in status is read back as an input (the
//! autoscaler's state lives in [`ControllerContext`], the worker count in the Deployment), so a stale
//! cached status can never be re-applied over a newer decision.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use sluice_broker::config::Backoff;
use tracing::{Instrument, info, info_span, warn};

use super::autoscaling::{GroupScalers, scale_and_apply};
use super::broker_resource::BrokerResource;
use super::context::{BrokerPool, Lookup, ReconcileContext};
use super::kube_api::{self, Object};
use super::metrics::{GroupLabels, Metrics, Observe};
use super::watch::fingerprint::as_dependency;
use super::watch::{ScopeStores, SharedWatch, Triggers, WatchedObjects};
use super::{
    DEFAULT_RESYNC, FINALIZER, Failure, MANAGER, MISSING_RETRY, ObjectEvent, Outcome, Requeue,
    conditions,
};
use crate::crd::{Broker, ConsumerGroup, DeadLetterQueue, Queue, Topic};
use crate::desired::worker::GROUP_LABEL;

/// Requeue delays of an object whose reconciles keep failing: 5 s after the first failure,
/// doubling up to 160 s. The same policy type as the workers' retries.
pub const REQUEUE_BACKOFF: Backoff = Backoff {
    initial_ms: 5_000,
    multiplier: 2.0,
    max_ms: 160_000,
    jitter: false,
};

/// Longest one reconcile may take, finalizer writes included.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces to watch; empty = all.
    pub namespaces: Vec<String>,
    /// Broker URL overrides by broker name.
    pub broker_urls: BTreeMap<String, String>,
    /// Resync period of healthy objects.
    pub resync: Duration,
    /// Requeue of an object whose reference is missing (the reference's watch reconciles it
    /// as soon as it appears; this is the safety net).
    pub missing_retry: Duration,
    /// DNS domain of the cluster's Services (route URLs and monitoring reads of the broker
    /// servers); `cluster.local` by default.
    pub cluster_domain: String,
    /// Where the operator runs, for the NetworkPolicy of each Broker; `None`: no
    /// NetworkPolicy is built (see [`crate::broker_cluster::network_policy`]).
    pub broker_network_policy: Option<crate::broker_cluster::OperatorPeer>,
    /// How long a shutdown waits for in-flight reconciles before it abandons them (they run
    /// again after the restart); keep it below the pod's termination grace period.
    pub shutdown_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            broker_urls: BTreeMap::new(),
            resync: DEFAULT_RESYNC,
            missing_retry: MISSING_RETRY,
            cluster_domain: crate::broker_cluster::DEFAULT_CLUSTER_DOMAIN.to_string(),
            broker_network_policy: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Shared state of the controllers.
pub struct ControllerContext {
    client: Client,
    reconcile: ReconcileContext,
    recorder: Recorder,
    resync: Duration,
    missing_retry: Duration,
    cluster_domain: String,
    broker_network_policy: Option<crate::broker_cluster::OperatorPeer>,
    failures: Mutex<HashMap<String, u32>>,
    metrics: Arc<Metrics>,
    scalers: GroupScalers,
}

impl Debug for ControllerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerContext")
            .field("reconcile", &self.reconcile)
            .finish_non_exhaustive()
    }
}

impl ControllerContext {
    /// A context for `client` with `settings`, recording into `metrics`.
    pub fn new(client: Client, settings: &Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            reconcile: ReconcileContext {
                lookup: Lookup::Kube(client.clone()),
                pool: Arc::new(BrokerPool::new(settings.broker_urls.clone())),
                // A Queue without finalizer (Retain) has no cleanup hook: its relays stop when
                // it was not reconciled for a few resync periods.
                relays: Arc::new(sluice_broker::FanoutRelays::with_lease(
                    (settings.resync * 4).max(Duration::from_secs(60)),
                )),
            },
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: MANAGER.into(),
                    instance: std::env::var("SLUICE_POD_NAME").ok(),
                },
            ),
            client,
            resync: settings.resync,
            missing_retry: settings.missing_retry,
            cluster_domain: settings.cluster_domain.clone(),
            broker_network_policy: settings.broker_network_policy.clone(),
            failures: Mutex::default(),
            metrics,
            scalers: GroupScalers::default(),
        }
    }

    /// A context whose broker connections go through `reconcile` (tests: a real nats-server
    /// with the Kubernetes API faked).
    pub fn with_reconcile_context(mut self, reconcile: ReconcileContext) -> Self {
        self.reconcile = reconcile;
        self
    }

    /// A context whose reconciles read referenced objects from the controllers' watch
    /// stores (the API server only for what they have not seen).
    pub fn reading_from(mut self, objects: Arc<WatchedObjects>) -> Self {
        self.reconcile.lookup = Lookup::Watched {
            objects,
            client: self.client.clone(),
        };
        self
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The requeue delay after one more consecutive failure of `key`, by [`REQUEUE_BACKOFF`].
    fn backoff(&self, key: &str) -> Duration {
        let n = self
            .failures
            .lock()
            .map(|mut m| {
                let n = m.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        REQUEUE_BACKOFF.delay_after(n)
    }

    fn reset(&self, key: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(key);
        }
    }
}

/// Errors surfaced to kube-runtime (they requeue with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The finalizer helper failed (apply, cleanup, or adding/removing the finalizer).
    #[error("{0}")]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<Failure>>),
    /// A reconcile without finalizer failed.
    #[error("{0}")]
    Failed(Failure),
    /// The reconcile did not finish within [`RECONCILE_TIMEOUT`].
    #[error("reconcile did not finish within {0:?}; it is retried")]
    Timeout(Duration),
}

impl ReconcileError {
    /// Static category for metrics.
    pub fn reason(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            ReconcileError::Finalizer(e) => match e.as_ref() {
                F::ApplyFailed(f) | F::CleanupFailed(f) => f.reason(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => "FinalizerUpdateFailed",
                F::UnnamedObject | F::InvalidFinalizer => "InvalidObject",
            },
            ReconcileError::Failed(f) => f.reason(),
            ReconcileError::Timeout(_) => "ReconcileTimeout",
        }
    }
}

/// A kind the operator reconciles: how to apply it and how to clean it up.
pub trait Reconciled: Object {
    /// Kind name for logs and metrics.
    const KIND: &'static str;
    /// Whether deleting this object needs cleanup on the broker, and so a finalizer. Objects
    /// that need none carry none: deleting them (or their namespace) never waits for the
    /// operator.
    fn needs_finalizer(&self) -> bool;
    /// Reconciles a live object.
    fn apply(
        ctx: Arc<ControllerContext>,
        obj: Arc<Self>,
    ) -> BoxFuture<'static, Result<Action, Failure>>;
    /// Cleans up a deleted object (only called when it carries the finalizer and still
    /// [`Reconciled::needs_finalizer`]).
    fn cleanup(
        ctx: Arc<ControllerContext>,
        obj: Arc<Self>,
    ) -> BoxFuture<'static, Result<Action, Failure>>;
}

/// Reconciles one object: finalizer handling, the kind's apply or cleanup, a bound of
/// [`RECONCILE_TIMEOUT`], and the reconcile metrics.
pub async fn reconcile<K: Reconciled>(
    obj: Arc<K>,
    ctx: Arc<ControllerContext>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let span = info_span!(
        "reconcile",
        kind = K::KIND,
        namespace = %obj.namespace().unwrap_or_default(),
        name = %obj.name_any()
    );
    let work = async {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
        if obj.needs_finalizer() {
            let c = ctx.clone();
            finalizer(&api, FINALIZER, obj, |event| async move {
                match event {
                    Finalizer::Apply(o) => K::apply(c, o).await,
                    Finalizer::Cleanup(o) => K::cleanup(c, o).await,
                }
            })
            .await
            .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
        } else {
            if has_finalizer {
                // Left from when the object needed cleanup (e.g. deletionPolicy was Delete,
                // or an older operator finalized every object): nothing to clean up now.
                remove_finalizer(&api, obj.as_ref())
                    .await
                    .map_err(ReconcileError::Failed)?;
            }
            if obj.meta().deletion_timestamp.is_some() {
                return Ok(Action::await_change());
            }
            K::apply(ctx.clone(), obj)
                .await
                .map_err(ReconcileError::Failed)
        }
    };
    let result = match tokio::time::timeout(RECONCILE_TIMEOUT, work.instrument(span)).await {
        Ok(r) => r,
        Err(_) => Err(ReconcileError::Timeout(RECONCILE_TIMEOUT)),
    };
    ctx.metrics
        .reconciled(K::KIND, started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        ctx.metrics.failed(K::KIND, e.reason());
    }
    result
}

/// Removes [`FINALIZER`] from `obj` with a merge patch of the remaining list, guarded by
/// the resourceVersion read: a concurrent change fails the patch (retried from a fresh read)
/// instead of dropping someone else's finalizer.
async fn remove_finalizer<K: Object>(api: &Api<K>, obj: &K) -> Result<(), Failure> {
    let name = obj.name_any();
    let remaining: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": obj.resource_version(),
            "finalizers": remaining,
        }
    });
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    kube_api::bounded(
        || {
            format!(
                "failed to remove finalizer {FINALIZER} from {} {}/{name}",
                K::kind(&()),
                obj.namespace().unwrap_or_default()
            )
        },
        api.patch(&name, &params, &Patch::Merge(&patch)),
    )
    .await?;
    info!(
        finalizer = FINALIZER,
        "finalizer removed: the object needs no cleanup"
    );
    Ok(())
}

async fn reconcile_guarded<K: Reconciled>(
    guard: Arc<DeserializeGuard<K>>,
    ctx: Arc<ControllerContext>,
) -> Result<Action, ReconcileError> {
    match &guard.0 {
        Ok(obj) => reconcile(Arc::new(obj.clone()), ctx).await,
        Err(invalid) => {
            warn!(kind = K::KIND, error = %invalid, "object does not match the CRD schema; waiting for a fix");
            ctx.metrics.failed(K::KIND, "InvalidObject");
            let event = ObjectEvent {
                warning: true,
                reason: "InvalidObject",
                message: format!(
                    "does not match the {} schema: {invalid}; fix the manifest",
                    K::KIND
                ),
                action: None,
            };
            publish(&ctx, guard.as_ref(), &[event]).await;
            Ok(Action::await_change())
        }
    }
}

fn error_policy<K: Reconciled>(
    guard: Arc<DeserializeGuard<K>>,
    err: &ReconcileError,
    ctx: Arc<ControllerContext>,
) -> Action {
    let key = guard
        .0
        .as_ref()
        .map(|o| {
            format!(
                "{}/{}/{}",
                K::KIND,
                o.namespace().unwrap_or_default(),
                o.name_any()
            )
        })
        .unwrap_or_default();
    let delay = ctx.backoff(&key);
    warn!(kind = K::KIND, error = %err, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Records the status in the metrics, writes it (server-side apply on the status
/// subresource), publishes Events, and turns the outcome's requeue into an Action.
async fn finish<K: Object + Observe<Status = S>, S: Serialize>(
    ctx: &ControllerContext,
    obj: &K,
    outcome: Outcome<S>,
) -> Result<Action, Failure> {
    obj.observe(&outcome.status, ctx.metrics.objects());
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let status = serde_json::to_value(&outcome.status)
        .map_err(|e| Failure::broker_refused(format!("failed to serialize the status: {e}"), e))?;
    // The status of the object as read (the reconcile computed `outcome.status` from it):
    // an unchanged status is not written, so an idle object causes no writes.
    let current = serde_json::to_value(obj)
        .ok()
        .and_then(|mut o| o.get_mut("status").map(serde_json::Value::take));
    let mut events = outcome.events;
    let conditions_of = |status: Option<&serde_json::Value>| -> Vec<crate::crd::Condition> {
        status
            .and_then(|s| s.get("conditions"))
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default()
    };
    if let Some(e) = conditions::failure_event(
        &conditions_of(current.as_ref()),
        &conditions_of(Some(&status)),
    ) {
        events.push(e);
    }
    if current.as_ref() != Some(&status) {
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        kube_api::bounded(
            || format!("failed to write status of {} {ns}/{name}", K::kind(&())),
            api.patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            ),
        )
        .await?;
    }
    publish(ctx, obj, &events).await;
    let key = format!("{}/{ns}/{name}", K::kind(&()));
    Ok(match outcome.requeue {
        Requeue::After(d) => {
            ctx.reset(&key);
            Action::requeue(d)
        }
        Requeue::AwaitChange => {
            ctx.reset(&key);
            Action::await_change()
        }
        Requeue::Missing => {
            ctx.reset(&key);
            Action::requeue(ctx.missing_retry)
        }
        Requeue::Backoff => Action::requeue(ctx.backoff(&key)),
    })
}

async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &ControllerContext,
    obj: &K,
    events: &[ObjectEvent],
) {
    let reference = obj.object_ref(&());
    for note in events {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.clone()),
            action: note.action.clone().unwrap_or_else(|| "Reconcile".into()),
            secondary: None,
        };
        let published = tokio::time::timeout(
            kube_api::API_TIMEOUT,
            ctx.recorder.publish(&event, &reference),
        )
        .await;
        match published {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, reason = note.reason, "failed to publish event"),
            Err(_) => warn!(reason = note.reason, "publishing an event timed out"),
        }
    }
}

/// Topic, Queue and DeadLetterQueue reconcile the same way: the kind's kube-free reconcile
/// and cleanup ([`BrokerResource`]), a finalizer only with `deletionPolicy: Delete`, status
/// and Events through [`finish`].
impl<K: BrokerResource> Reconciled for K {
    const KIND: &'static str = <K as BrokerResource>::KIND;
    /// Only `deletionPolicy: Delete` touches the broker on deletion.
    fn needs_finalizer(&self) -> bool {
        self.deletion_policy() == crate::crd::DeletionPolicy::Delete
    }
    fn apply(
        ctx: Arc<ControllerContext>,
        obj: Arc<Self>,
    ) -> BoxFuture<'static, Result<Action, Failure>> {
        async move {
            let outcome = obj.reconcile(&ctx.reconcile, ctx.resync).await;
            finish(&ctx, obj.as_ref(), outcome).await
        }
        .boxed()
    }
    fn cleanup(
        ctx: Arc<ControllerContext>,
        obj: Arc<Self>,
    ) -> BoxFuture<'static, Result<Action, Failure>> {
        async move {
            BrokerResource::cleanup(obj.as_ref(), &ctx.reconcile)
                .await
                .map(|()| Action::await_change())
        }
        .boxed()
    }
}

impl Reconciled for Broker {
    const KIND: &'static str = "Broker";
    // Deleting a Broker touches nothing on the broker: its children are garbage-collected
    // through their owner references and the volumes are retained.
    fn needs_finalizer(&self) -> bool {
        false
    }
    fn apply(
        ctx: Arc<ControllerContext>,
        obj: Arc<Self>,
    ) -> BoxFuture<'static, Result<Action, Failure>> {
        async move {
            let outcome = super::broker::reconcile(
                &ctx.client,
                &ctx.reconcile,
                &obj,
                ctx.resync,
                &ctx.cluster_domain,
                ctx.broker_network_policy.as_ref(),
            )
            .await;
            finish(&ctx, obj.as_ref(), outcome).await
        }
        .boxed()
    }
    fn cleanup(
        _ctx: Arc<ControllerContext>,
        _obj: Arc<Self>,
    ) -> BoxFuture<'static, Result<Action, Failure>> {
        async { Ok(Action::await_change()) }.boxed()
    }
}

impl Reconciled for ConsumerGroup {
    const KIND: &'static str = "ConsumerGroup";
    // The group's durable consumers and config entry outlive it on the broker otherwise.
    fn needs_finalizer(&self) -> bool {
        true
    }
    fn apply(
        ctx: Arc<ControllerContext>,
        obj: Arc<Self>,
    ) -> BoxFuture<'static, Result<Action, Failure>> {
        async move {
            let mut result = super::group::reconcile(&ctx.reconcile, &obj, ctx.resync).await;
            super::group_identity::ensure(&ctx.client, &obj, &mut result).await?;
            let reconciled = result.outcome.clone();
            let outcome =
                match scale_and_apply(&ctx.client, &ctx.scalers, &ctx.metrics, &obj, result).await
                {
                    Ok(outcome) => outcome,
                    // The workers could not be applied (e.g. a Deployment of that name
                    // belongs to someone else): say so in the status.
                    Err(failure) => {
                        let mut outcome = reconciled;
                        warn!(reason = failure.reason(), error = %failure, "worker Deployment not applied");
                        conditions::failed(
                            &mut outcome.status.conditions,
                            &failure,
                            obj.metadata.generation,
                        );
                        outcome.requeue = failure.requeue();
                        outcome
                    }
                };
            finish(&ctx, obj.as_ref(), outcome).await
        }
        .boxed()
    }
    fn cleanup(
        ctx: Arc<ControllerContext>,
        obj: Arc<Self>,
    ) -> BoxFuture<'static, Result<Action, Failure>> {
        async move {
            let key = (obj.namespace().unwrap_or_default(), obj.name_any());
            ctx.scalers.forget(&key);
            ctx.metrics.forget_group(&GroupLabels {
                namespace: key.0,
                group: key.1,
            });
            super::group::cleanup(&ctx.reconcile, &obj)
                .await
                .map(|()| Action::await_change())
        }
        .boxed()
    }
}

fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>;

/// The shared watches of one scope (all namespaces, or one), before they run.
struct ScopeWatches {
    namespace: Option<String>,
    brokers: SharedWatch<Broker>,
    topics: SharedWatch<Topic>,
    queues: SharedWatch<Queue>,
    dlqs: SharedWatch<DeadLetterQueue>,
    groups: SharedWatch<ConsumerGroup>,
}

impl ScopeWatches {
    fn new(namespace: Option<String>) -> Self {
        Self {
            namespace,
            brokers: SharedWatch::new(),
            topics: SharedWatch::new(),
            queues: SharedWatch::new(),
            dlqs: SharedWatch::new(),
            groups: SharedWatch::new(),
        }
    }

    fn stores(&self) -> ScopeStores {
        ScopeStores {
            namespace: self.namespace.clone(),
            brokers: self.brokers.reader(),
            topics: self.topics.reader(),
            queues: self.queues.reader(),
            dlqs: self.dlqs.reader(),
            groups: self.groups.reader(),
        }
    }
}

/// The controller of kind `K` on its shared watch: reconciles the objects whose own
/// fingerprint changed. `None` if the watch cannot be subscribed to.
fn controller<K>(watch: &SharedWatch<K>) -> Option<Controller<DeserializeGuard<K>>>
where
    DeserializeGuard<K>: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K: Reconciled + serde::de::DeserializeOwned + Sync,
{
    Some(Controller::for_shared_stream(
        watch.own_changes()?,
        watch.reader(),
    ))
}

async fn drive<K: Reconciled>(
    controller: Controller<DeserializeGuard<K>>,
    ctx: Arc<ControllerContext>,
    stop: Stop,
) where
    DeserializeGuard<K>: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    controller
        .graceful_shutdown_on(stop)
        .run(reconcile_guarded::<K>, error_policy::<K>, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(object = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

/// How long a deleted Broker's connection is kept: its groups' cleanup (a namespace deletes
/// everything at once) may still need it.
const DELETED_BROKER_GRACE: Duration = Duration::from_secs(120);

/// Every `period`, drops the connection of Brokers the watch has not seen for
/// [`DELETED_BROKER_GRACE`], until `stop`.
async fn prune_broker_connections(
    pool: Arc<BrokerPool>,
    objects: Arc<WatchedObjects>,
    period: Duration,
    stop: Stop,
) {
    let prune = async {
        let mut ticks = tokio::time::interval(period.max(Duration::from_secs(1)));
        loop {
            ticks.tick().await;
            let exists = |ns: &str, name: &str| objects.get::<Broker>(ns, name).is_some();
            for (namespace, broker) in pool.prune(exists, DELETED_BROKER_GRACE, Instant::now()) {
                info!(%namespace, %broker, "Broker deleted: closed the connection to it");
            }
        }
    };
    tokio::select! {
        () = prune => {}
        () = stop => {}
    }
}

/// Runs the Broker, Topic, Queue, DeadLetterQueue and ConsumerGroup controllers until
/// `shutdown` completes, then lets in-flight reconciles finish.
///
/// Each kind is watched once per scope (see [`super::watch`]); reconciles read referenced
/// objects from those watches, and a change of a Broker, Topic, Queue or DeadLetterQueue that
/// its dependents care about reconciles them.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let watches: Vec<ScopeWatches> = scopes.into_iter().map(ScopeWatches::new).collect();
    let objects = Arc::new(WatchedObjects::new(
        watches.iter().map(ScopeWatches::stores).collect(),
    ));
    let ctx = Arc::new(
        ControllerContext::new(client.clone(), &settings, metrics).reading_from(objects.clone()),
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signal = move || -> Stop {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=sluice-operator");
    let mut tasks = Vec::new();
    for w in watches {
        let ns = w.namespace.clone();
        let (triggers, streams) = Triggers::new(w.stores());
        let (Some(brokers), Some(topics), Some(queues), Some(dlqs), Some(groups)) = (
            controller(&w.brokers),
            controller(&w.topics),
            controller(&w.queues),
            controller(&w.dlqs),
            controller(&w.groups),
        ) else {
            warn!(namespace = ?ns, "cannot subscribe to the shared watches; controllers not started");
            continue;
        };
        let brokers = brokers
            .owns(scoped::<StatefulSet>(&client, &ns), owned.clone())
            .owns(scoped::<Service>(&client, &ns), owned.clone())
            .owns(scoped::<ConfigMap>(&client, &ns), owned.clone())
            .owns(scoped::<PodDisruptionBudget>(&client, &ns), owned.clone());
        let groups = groups
            .owns(
                scoped::<Deployment>(&client, &ns),
                watcher::Config::default().labels(GROUP_LABEL),
            )
            .reconcile_on(streams.groups);
        tasks.push(tokio::spawn(drive::<Broker>(
            brokers,
            ctx.clone(),
            signal(),
        )));
        tasks.push(tokio::spawn(drive::<Topic>(
            topics.reconcile_on(streams.topics),
            ctx.clone(),
            signal(),
        )));
        tasks.push(tokio::spawn(drive::<Queue>(
            queues.reconcile_on(streams.queues),
            ctx.clone(),
            signal(),
        )));
        tasks.push(tokio::spawn(drive::<DeadLetterQueue>(
            dlqs.reconcile_on(streams.dlqs),
            ctx.clone(),
            signal(),
        )));
        tasks.push(tokio::spawn(drive::<ConsumerGroup>(
            groups,
            ctx.clone(),
            signal(),
        )));

        let t = triggers.clone();
        tasks.push(tokio::spawn(w.brokers.run(
            "Broker",
            scoped(&client, &ns),
            Some(as_dependency::<Broker>),
            move |ns, name| t.broker_changed(ns, name),
            signal(),
        )));
        let t = triggers.clone();
        tasks.push(tokio::spawn(w.topics.run(
            "Topic",
            scoped(&client, &ns),
            Some(as_dependency::<Topic>),
            move |ns, name| t.topic_changed(ns, name),
            signal(),
        )));
        let t = triggers.clone();
        tasks.push(tokio::spawn(w.queues.run(
            "Queue",
            scoped(&client, &ns),
            Some(as_dependency::<Queue>),
            move |ns, name| t.queue_changed(ns, name),
            signal(),
        )));
        let t = triggers;
        tasks.push(tokio::spawn(w.dlqs.run(
            "DeadLetterQueue",
            scoped(&client, &ns),
            Some(as_dependency::<DeadLetterQueue>),
            move |ns, name| t.dlq_changed(ns, name),
            signal(),
        )));
        tasks.push(tokio::spawn(w.groups.run(
            "ConsumerGroup",
            scoped(&client, &ns),
            None,
            |_: &str, _: &str| {},
            signal(),
        )));
    }
    tasks.push(tokio::spawn(prune_broker_connections(
        ctx.reconcile.pool.clone(),
        objects.clone(),
        settings.resync,
        signal(),
    )));
    info!(namespaces = ?settings.namespaces, "controllers running");
    shutdown.await;
    info!(grace = ?settings.shutdown_grace, "stopping controllers: finishing in-flight reconciles");
    let _ = tx.send(true);
    if !join_within(tasks, settings.shutdown_grace).await {
        warn!(
            grace = ?settings.shutdown_grace,
            "in-flight reconciles did not finish within the shutdown grace; abandoned (they run again after the restart)"
        );
    }
}

/// The default of [`Settings::shutdown_grace`]: 20 s, inside Kubernetes' default 30 s
/// termination grace period (the chart sets it) with room for the process to exit.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Waits for `tasks` for at most `grace`, then aborts what still runs. `true` when all
/// finished in time.
async fn join_within(tasks: Vec<tokio::task::JoinHandle<()>>, grace: Duration) -> bool {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let joined = tokio::time::timeout(grace, async {
        for t in tasks {
            if let Err(e) = t.await {
                warn!(error = %e, "controller task failed");
            }
        }
    })
    .await;
    if joined.is_err() {
        for a in aborts {
            a.abort();
        }
    }
    joined.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_reconciles_that_outlast_the_grace() {
        let (finished_tx, finished_rx) = tokio::sync::oneshot::channel::<()>();
        let quick = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = finished_tx.send(());
        });
        let stuck = tokio::spawn(std::future::pending::<()>());
        let stuck_abort = stuck.abort_handle();
        let started = tokio::time::Instant::now();
        assert!(!join_within(vec![quick, stuck], Duration::from_secs(20)).await);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(20),
            "waits the grace, no longer"
        );
        assert!(finished_rx.await.is_ok(), "what finished in time finished");
        tokio::task::yield_now().await;
        assert!(stuck_abort.is_finished(), "what did not is aborted");

        let done = tokio::spawn(async {});
        assert!(join_within(vec![done], Duration::from_secs(20)).await);
    }

    #[test]
    fn failing_reconciles_back_off_from_5s_doubling_to_160s() {
        let secs: Vec<u64> = (1..=8)
            .map(|n| REQUEUE_BACKOFF.delay_after(n).as_secs())
            .collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 160, 160]);
    }
}
