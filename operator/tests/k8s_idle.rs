//! Against a real API server (only when `KUBECONFIG` is set): the order-events example is
//! applied, the controllers run in-process against a local nats-server, and once everything
//! has settled an idle namespace causes no writes: over 60 s no Sluice object changes its
//! resourceVersion, and the reconciles stay at the resync rate (a status write that
//! triggered its own reconcile would show as both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, Resource, ResourceExt};
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_operator::controller::conditions::{self, READY};
use sluice_operator::controller::metrics::Metrics;
use sluice_operator::crd::{Broker, ConsumerGroup, DeadLetterQueue, Topic};

use sluice_testkit::{TempNamespace, client_or_skip, install_crds, wait_until};

/// How often healthy objects are looked at again in this test (the default is 30 s).
const RESYNC: Duration = Duration::from_secs(5);
/// How long the idle namespace is watched.
const IDLE: Duration = Duration::from_secs(60);
const SETTLE_DEADLINE: Duration = Duration::from_secs(240);

/// Creates every Sluice object of `examples/order-events` in `ns` (the Job is not a Sluice
/// object and needs a running pod).
async fn apply_example(client: &Client, ns: &str) -> usize {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/order-events/pipeline.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut created = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        let pp = PostParams::default();
        match value["kind"].as_str().unwrap() {
            "Broker" => drop(
                Api::<Broker>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(value).unwrap())
                    .await
                    .unwrap(),
            ),
            "Topic" => drop(
                Api::<Topic>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(value).unwrap())
                    .await
                    .unwrap(),
            ),
            "DeadLetterQueue" => drop(
                Api::<DeadLetterQueue>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(value).unwrap())
                    .await
                    .unwrap(),
            ),
            "ConsumerGroup" => drop(
                Api::<ConsumerGroup>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(value).unwrap())
                    .await
                    .unwrap(),
            ),
            _ => continue,
        }
        created += 1;
    }
    created
}

/// Watches every object of kind `K` in `ns` from now on, counting each change; returns the
/// counter and the names of the objects that changed.
async fn count_changes<K>(
    client: &Client,
    ns: &str,
    changed: Arc<std::sync::Mutex<Vec<String>>>,
    counter: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.unwrap();
    let version = list.metadata.resource_version.unwrap();
    let timeout = u32::try_from(IDLE.as_secs()).unwrap() + 30;
    tokio::spawn(async move {
        let mut events = api
            .watch(&WatchParams::default().timeout(timeout), &version)
            .await
            .unwrap()
            .boxed();
        while let Ok(Some(event)) = events.try_next().await {
            let obj = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Error(e) => panic!("watch failed: {e}"),
            };
            counter.fetch_add(1, Ordering::SeqCst);
            changed.lock().unwrap().push(format!(
                "{} {} rv={}",
                K::kind(&()),
                obj.name_any(),
                obj.resource_version().unwrap_or_default()
            ));
        }
    })
}

fn reconciles(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sluice_operator_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn k8s_idle_order_events_cause_no_writes() {
    let Some(client) = client_or_skip("k8s_idle_order_events_cause_no_writes").await else {
        return;
    };
    install_crds(&client, &sluice_operator::crdgen::all_crds()).await;
    let ns = TempNamespace::create(&client, "idle").await;
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let operator = sluice_operator::controller::in_process::InProcessOperator::start(
        &client,
        &ns.name,
        &server.url(),
        RESYNC,
        metrics.clone(),
    );
    let objects = apply_example(&client, &ns.name).await;
    assert_eq!(
        objects, 6,
        "Broker, Topic, DeadLetterQueue and three groups"
    );

    // Settle: the Topic, the DLQ and the groups Ready with a first autoscaling decision. (The
    // Broker stays not Ready on a cluster without nodes: its servers never start, and the
    // controllers reach the local nats-server through the URL override.)
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns.name);
    let dlqs: Api<DeadLetterQueue> = Api::namespaced(client.clone(), &ns.name);
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &ns.name);
    wait_until(SETTLE_DEADLINE, "Topic and DLQ Ready", || {
        let (topics, dlqs) = (topics.clone(), dlqs.clone());
        async move {
            let t = topics
                .get("order-created")
                .await
                .ok()
                .and_then(|t| t.status);
            let d = dlqs.get("orders-dlq").await.ok().and_then(|d| d.status);
            t.is_some_and(|s| conditions::is_true(&s.conditions, READY))
                && d.is_some_and(|s| conditions::is_true(&s.conditions, READY))
        }
    })
    .await;
    // Provisioned: Ready, or (on a cluster without nodes, where worker pods never start)
    // not Ready only because its workers are unavailable.
    wait_until(
        SETTLE_DEADLINE,
        "every group provisioned with a decision",
        || {
            let groups = groups.clone();
            async move {
                let list = groups.list(&ListParams::default()).await.unwrap();
                list.items.len() == 3
                    && list.iter().all(|g| {
                        g.status.as_ref().is_some_and(|s| {
                            conditions::get(&s.conditions, READY).is_some_and(|c| {
                                c.reason == "Provisioned" || c.reason == "WorkersUnavailable"
                            }) && s.autoscaling.is_some()
                        })
                    })
            }
        },
    )
    .await;
    // Retain objects carry no finalizer (deleting the namespace never waits for the
    // operator); groups carry one (their consumers are removed).
    assert!(
        topics
            .get("order-created")
            .await
            .unwrap()
            .finalizers()
            .is_empty()
    );
    assert!(
        dlqs.get("orders-dlq")
            .await
            .unwrap()
            .finalizers()
            .is_empty()
    );
    for g in groups.list(&ListParams::default()).await.unwrap() {
        assert_eq!(g.finalizers(), ["sluice.dev/cleanup"], "{}", g.name_any());
    }
    // A few resyncs for anything still moving (the first scale's Deployment status).
    tokio::time::sleep(RESYNC * 3).await;

    let changed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let counter = Arc::new(AtomicUsize::new(0));
    let watches = [
        count_changes::<Broker>(&client, &ns.name, changed.clone(), counter.clone()).await,
        count_changes::<Topic>(&client, &ns.name, changed.clone(), counter.clone()).await,
        count_changes::<DeadLetterQueue>(&client, &ns.name, changed.clone(), counter.clone()).await,
        count_changes::<ConsumerGroup>(&client, &ns.name, changed.clone(), counter.clone()).await,
    ];
    // Worker Deployments are written by the operator and by the deployment controller (when
    // the cluster runs one): their changes are reported, not asserted.
    let deployment_changes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let deployment_watch = count_changes::<k8s_openapi::api::apps::v1::Deployment>(
        &client,
        &ns.name,
        deployment_changes.clone(),
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let reconciles_before = reconciles(&metrics);
    tokio::time::sleep(IDLE).await;
    let reconciled = reconciles(&metrics) - reconciles_before;
    for w in &watches {
        w.abort();
    }
    deployment_watch.abort();
    eprintln!(
        "worker Deployment changes while idle: {:#?}",
        deployment_changes.lock().unwrap()
    );
    let changed = changed.lock().unwrap().clone();
    eprintln!(
        "idle for {IDLE:?}: {} changes of Sluice objects, {reconciled} reconciles of {objects} objects (resync {RESYNC:?})",
        changed.len()
    );
    assert!(
        changed.is_empty(),
        "an idle namespace must cause no writes, saw: {changed:#?}"
    );
    // Each object is reconciled about once per resync (groups once per poll interval, 5 s
    // by default). A reconcile triggered by its own write would multiply this; a loaded
    // machine only lowers it.
    let per_resync = objects as u64 * (IDLE.as_secs() / RESYNC.as_secs() + 1);
    assert!(
        reconciled <= 2 * per_resync,
        "{reconciled} reconciles in {IDLE:?}, expected about {per_resync}"
    );

    operator.stop().await.unwrap();
}
