//! kube-runtime wiring: one Controller per kind (and namespace, when restricted), watches
//! guarded by `DeserializeGuard`, `finalizer()` cleanup, server-side-applied status and
//! Deployments, Events, and requeue policy.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::env::{BrokerPool, Env, Lookup};
use super::{DEFAULT_RESYNC, FINALIZER, Failure, MANAGER, Note, Outcome, Requeue};
use crate::crd::{ConsumerGroup, DeadLetterQueue, Queue, Topic};

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces to watch; empty = all.
    pub namespaces: Vec<String>,
    /// Broker URL overrides by broker name.
    pub broker_urls: BTreeMap<String, String>,
    /// Resync period of healthy objects.
    pub resync: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            broker_urls: BTreeMap::new(),
            resync: DEFAULT_RESYNC,
        }
    }
}

/// Shared state of the controllers.
pub struct Context {
    client: Client,
    env: Env,
    recorder: Recorder,
    resync: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client` with `settings`.
    pub fn new(client: Client, settings: &Settings) -> Self {
        Self {
            env: Env {
                lookup: Lookup::Kube(client.clone()),
                pool: Arc::new(BrokerPool::new(settings.broker_urls.clone())),
            },
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: MANAGER.into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
            client,
            resync: settings.resync,
            failures: Mutex::default(),
        }
    }

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
        let secs = 5u64.saturating_mul(1 << n.min(6).saturating_sub(1));
        Duration::from_secs(secs.min(300))
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
    /// Writing status failed.
    #[error("{0}")]
    Status(Failure),
}

type Apply<K> = fn(Arc<Context>, Arc<K>) -> BoxFuture<'static, Result<Action, Failure>>;
type Cleanup<K> = fn(Arc<Context>, Arc<K>) -> BoxFuture<'static, Result<Action, Failure>>;

trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static
{
}

async fn reconcile_guarded<K: Kind>(
    guard: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
    apply: Apply<K>,
    cleanup: Cleanup<K>,
) -> Result<Action, ReconcileError> {
    let obj = match &guard.0 {
        Ok(obj) => obj.clone(),
        Err(invalid) => {
            warn!(error = %invalid, "object does not match the CRD schema; waiting for a fix");
            return Ok(Action::await_change());
        }
    };
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let c = ctx.clone();
    finalizer(&api, FINALIZER, Arc::new(obj), |event| async move {
        match event {
            Finalizer::Apply(o) => apply(c, o).await,
            Finalizer::Cleanup(o) => cleanup(c, o).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

fn error_policy<K: Kind>(
    guard: Arc<DeserializeGuard<K>>,
    err: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = guard
        .0
        .as_ref()
        .map(|o| {
            format!(
                "{}/{}/{}",
                K::kind(&()),
                o.namespace().unwrap_or_default(),
                o.name_any()
            )
        })
        .unwrap_or_default();
    let delay = ctx.backoff(&key);
    warn!(error = %err, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Writes status (server-side apply on the status subresource), publishes Events, and turns
/// the outcome's requeue into an Action.
async fn finish<K: Kind, S: Serialize>(
    ctx: &Context,
    obj: &K,
    outcome: Outcome<S>,
) -> Result<Action, Failure> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": outcome.status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| {
        Failure::kube(
            format!("failed to write status of {} {ns}/{name}", K::kind(&())),
            e,
        )
    })?;
    publish(ctx, obj, &outcome.notes).await;
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
        Requeue::Backoff => Action::requeue(ctx.backoff(&key)),
    })
}

async fn publish<K: Kind>(ctx: &Context, obj: &K, notes: &[Note]) {
    let reference = obj.object_ref(&());
    for note in notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = note.reason, "failed to publish event");
        }
    }
}

fn topic_apply(ctx: Arc<Context>, obj: Arc<Topic>) -> BoxFuture<'static, Result<Action, Failure>> {
    async move {
        let outcome = super::topic::reconcile(&ctx.env, &obj, ctx.resync).await;
        finish(&ctx, obj.as_ref(), outcome).await
    }
    .boxed()
}

fn topic_cleanup(
    ctx: Arc<Context>,
    obj: Arc<Topic>,
) -> BoxFuture<'static, Result<Action, Failure>> {
    async move {
        super::topic::cleanup(&ctx.env, &obj)
            .await
            .map(|()| Action::await_change())
    }
    .boxed()
}

fn queue_apply(ctx: Arc<Context>, obj: Arc<Queue>) -> BoxFuture<'static, Result<Action, Failure>> {
    async move {
        let outcome = super::queue::reconcile(&ctx.env, &obj, ctx.resync).await;
        finish(&ctx, obj.as_ref(), outcome).await
    }
    .boxed()
}

fn queue_cleanup(
    ctx: Arc<Context>,
    obj: Arc<Queue>,
) -> BoxFuture<'static, Result<Action, Failure>> {
    async move {
        super::queue::cleanup(&ctx.env, &obj)
            .await
            .map(|()| Action::await_change())
    }
    .boxed()
}

fn dlq_apply(
    ctx: Arc<Context>,
    obj: Arc<DeadLetterQueue>,
) -> BoxFuture<'static, Result<Action, Failure>> {
    async move {
        let outcome = super::dlq::reconcile(&ctx.env, &obj, ctx.resync).await;
        finish(&ctx, obj.as_ref(), outcome).await
    }
    .boxed()
}

fn dlq_cleanup(
    ctx: Arc<Context>,
    obj: Arc<DeadLetterQueue>,
) -> BoxFuture<'static, Result<Action, Failure>> {
    async move {
        super::dlq::cleanup(&ctx.env, &obj)
            .await
            .map(|()| Action::await_change())
    }
    .boxed()
}

fn group_apply(
    ctx: Arc<Context>,
    obj: Arc<ConsumerGroup>,
) -> BoxFuture<'static, Result<Action, Failure>> {
    async move {
        let mut result = super::group::reconcile(&ctx.env, &obj, ctx.resync).await;
        if let Some(deployment) = result.deployment.take() {
            let ns = obj.namespace().unwrap_or_default();
            let name = deployment.metadata.name.clone().unwrap_or_default();
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&deployment),
                )
                .await
                .map_err(|e| Failure::kube(format!("failed to apply Deployment {ns}/{name}"), e))?;
            result.outcome.status.replicas =
                applied.status.and_then(|s| s.ready_replicas).or(Some(0));
        }
        finish(&ctx, obj.as_ref(), result.outcome).await
    }
    .boxed()
}

fn group_cleanup(
    ctx: Arc<Context>,
    obj: Arc<ConsumerGroup>,
) -> BoxFuture<'static, Result<Action, Failure>> {
    async move {
        super::group::cleanup(&ctx.env, &obj)
            .await
            .map(|()| Action::await_change())
    }
    .boxed()
}

fn apis<K: Kind>(client: &Client, namespaces: &[String]) -> Vec<Api<DeserializeGuard<K>>>
where
    DeserializeGuard<K>: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

async fn drive<K: Kind>(
    api: Api<DeserializeGuard<K>>,
    ctx: Arc<Context>,
    apply: Apply<K>,
    cleanup: Cleanup<K>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    DeserializeGuard<K>:
        Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(
            move |g, c| reconcile_guarded(g, c, apply, cleanup),
            error_policy::<K>,
            ctx,
        )
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(object = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

/// Runs the Topic, Queue, DeadLetterQueue and ConsumerGroup controllers until `shutdown`
/// completes, then lets in-flight reconciles finish.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let ctx = Arc::new(Context::new(client.clone(), &settings));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signal = move || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut tasks = Vec::new();
    for api in apis::<Topic>(&client, &settings.namespaces) {
        tasks.push(tokio::spawn(drive(
            api,
            ctx.clone(),
            topic_apply,
            topic_cleanup,
            signal(),
        )));
    }
    for api in apis::<Queue>(&client, &settings.namespaces) {
        tasks.push(tokio::spawn(drive(
            api,
            ctx.clone(),
            queue_apply,
            queue_cleanup,
            signal(),
        )));
    }
    for api in apis::<DeadLetterQueue>(&client, &settings.namespaces) {
        tasks.push(tokio::spawn(drive(
            api,
            ctx.clone(),
            dlq_apply,
            dlq_cleanup,
            signal(),
        )));
    }
    let group_apis = apis::<ConsumerGroup>(&client, &settings.namespaces);
    for (i, api) in group_apis.into_iter().enumerate() {
        let deployments: Api<Deployment> = match settings.namespaces.get(i) {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let ctx = ctx.clone();
        let stop = signal();
        tasks.push(tokio::spawn(async move {
            Controller::new(api, watcher::Config::default())
                .owns(
                    deployments,
                    watcher::Config::default()
                        .labels("app.kubernetes.io/managed-by=sluice-operator"),
                )
                .graceful_shutdown_on(stop)
                .run(
                    move |g, c| reconcile_guarded(g, c, group_apply, group_cleanup),
                    error_policy::<ConsumerGroup>,
                    ctx,
                )
                .for_each(|_| async {})
                .await;
        }));
    }
    info!(namespaces = ?settings.namespaces, "controllers running");
    shutdown.await;
    info!("shutting down: finishing in-flight reconciles");
    let _ = tx.send(true);
    for t in tasks {
        if let Err(e) = t.await {
            warn!(error = %e, "controller task failed");
        }
    }
}
