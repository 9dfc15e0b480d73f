//! Against a real cluster (only when `KUBECONFIG` is set): the worker Deployment's replicas
//! follow the autoscaler's decision. The controllers run in-process and reach a local
//! nats-server through a broker URL override; the worker pods run the pause image (they do
//! not consume, so the lag stays and the decision is stable).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{Broker as Nats, ConnectOptions, ResourceRef, names};
use sluice_operator::controller::conditions::{self, READY};
use sluice_operator::controller::metrics::Metrics;
use sluice_operator::controller::runtime::{self, Settings};
use sluice_operator::crd::{Broker, ConsumerGroup, Topic};
use sluice_operator::service::crds::apply_crds;
use sluice_testkit::{TempNamespace, client_or_skip, wait_until};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn k8s_worker_replicas_follow_the_autoscaler() {
    let Some(client) = client_or_skip("k8s_autoscale").await else {
        return;
    };
    apply_crds(&client).await.unwrap();
    let ns = TempNamespace::create(&client, "autoscale").await;
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let nats = Nats::connect(&ConnectOptions::from_url_list(&server.url()))
        .await
        .unwrap();
    let settings = Settings {
        namespaces: vec![ns.name.clone()],
        broker_urls: BTreeMap::from([("main".to_string(), server.url())]),
        resync: Duration::from_secs(5),
        ..Settings::default()
    };
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(runtime::run(
        client.clone(),
        settings,
        metrics.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let create = |yaml: &str| serde_yaml::from_str::<serde_yaml::Value>(yaml).unwrap();
    Api::<Broker>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &serde_yaml::from_value(create("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n")).unwrap())
        .await
        .unwrap();
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns.name);
    topics
        .create(&PostParams::default(), &serde_yaml::from_value(create("apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {broker: main, partitions: 3, deletionPolicy: Delete}\n")).unwrap())
        .await
        .unwrap();
    wait_until(WAIT, "Topic Ready", || {
        let topics = topics.clone();
        async move {
            topics
                .get("orders")
                .await
                .ok()
                .and_then(|t| t.status)
                .is_some_and(|s| conditions::is_true(&s.conditions, READY))
        }
    })
    .await;

    // 20 messages per partition: lag 60, target 10 per replica -> 6, capped at 3 partitions.
    let orders = ResourceRef::new(&ns.name, "orders").unwrap();
    for p in 0..3 {
        for i in 0..20 {
            nats.jetstream()
                .publish(names::topic_subject(&orders, p), format!("m{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &ns.name);
    groups
        .create(
            &PostParams::default(),
            &serde_yaml::from_value(create(
                "apiVersion: sluice.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: billing}\nspec:\n  source: {topic: orders}\n  autoscaling: {minReplicas: 1, maxReplicas: 5, targetLagPerReplica: 10, pollInterval: 2s}\n  template:\n    spec:\n      containers: [{name: worker, image: 'registry.k8s.io/pause:3.9'}]\n",
            ))
            .unwrap(),
        )
        .await
        .unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    wait_until(WAIT, "worker Deployment scaled to 3", || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get_opt("billing-workers")
                .await
                .unwrap()
                .and_then(|d| d.spec)
                .and_then(|s| s.replicas)
                == Some(3)
        }
    })
    .await;
    // The status is written after the Deployment, in the same reconcile.
    wait_until(WAIT, "the decision in the group's status", || {
        let groups = groups.clone();
        async move {
            groups
                .get("billing")
                .await
                .ok()
                .and_then(|g| g.status)
                .is_some_and(|s| s.desired_replicas == Some(3))
        }
    })
    .await;
    let group = groups.get("billing").await.unwrap();
    let status = group.status.unwrap();
    assert_eq!(status.desired_replicas, Some(3));
    let record = status.autoscaling.unwrap();
    assert_eq!(record.desired, 3);
    assert_eq!(record.lag_total, 60);
    assert!(record.last_scale_time.is_some());

    // A manual change of spec.replicas is corrected back to the decision (one writer).
    deployments
        .patch(
            "billing-workers",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait_until(WAIT, "replicas restored to the decision", || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get("billing-workers")
                .await
                .ok()
                .and_then(|d| d.spec)
                .and_then(|s| s.replicas)
                == Some(3)
        }
    })
    .await;

    let _ = stop_tx.send(());
    controllers.await.unwrap();
}
