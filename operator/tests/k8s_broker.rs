//! Against a real cluster (only when `KUBECONFIG` is set): a Broker produces its StatefulSet,
//! Services, ConfigMap, PodDisruptionBudget and credentials Secret, all owned by it, and
//! deleting the Broker garbage-collects them. The controllers run in-process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use sluice_operator::controller::metrics::Metrics;
use sluice_operator::controller::runtime::{self, Settings};
use sluice_operator::crd::Broker;
use sluice_operator::service::crds::apply_crds;
use sluice_testkit::{TempNamespace, client_or_skip, wait_until};

const WAIT: Duration = Duration::from_secs(90);

async fn exists<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.as_ref().is_some_and(|o| {
        o.iter()
            .any(|r| r.uid == uid && r.kind == "Broker" && r.controller == Some(true))
    })
}

#[tokio::test]
async fn k8s_broker_children_are_owned_and_collected_with_the_broker() {
    let Some(client) = client_or_skip("k8s_broker").await else {
        return;
    };
    apply_crds(&client).await.unwrap();
    let ns = TempNamespace::create(&client, "broker").await;
    let settings = Settings {
        namespaces: vec![ns.name.clone()],
        ..Settings::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(runtime::run(
        client.clone(),
        settings,
        Arc::new(Metrics::default()),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let brokers: Api<Broker> = Api::namespaced(client.clone(), &ns.name);
    let broker = brokers
        .create(
            &PostParams::default(),
            &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1, storage: {size: 1Gi}}\n").unwrap(),
        )
        .await
        .unwrap();
    let uid = broker.uid().unwrap();

    wait_until(WAIT, "the Broker's children", || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            exists::<StatefulSet>(&client, &ns, "main").await.is_some()
                && exists::<PodDisruptionBudget>(&client, &ns, "main")
                    .await
                    .is_some()
                && exists::<Secret>(&client, &ns, "main-credentials")
                    .await
                    .is_some()
        }
    })
    .await;
    let sts: StatefulSet = exists(&client, &ns.name, "main").await.unwrap();
    assert!(
        owned_by(&sts.metadata, &uid),
        "{:?}",
        sts.metadata.owner_references
    );
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(1));
    for svc in ["main-headless", "main-client"] {
        let s: Service = exists(&client, &ns.name, svc).await.unwrap();
        assert!(owned_by(&s.metadata, &uid), "{svc}");
    }
    let cm: ConfigMap = exists(&client, &ns.name, "main-config").await.unwrap();
    assert!(owned_by(&cm.metadata, &uid));
    assert!(cm.data.unwrap()["nats.conf"].contains("jetstream"));
    let pdb: PodDisruptionBudget = exists(&client, &ns.name, "main").await.unwrap();
    assert!(owned_by(&pdb.metadata, &uid));
    let secret: Secret = exists(&client, &ns.name, "main-credentials").await.unwrap();
    assert!(owned_by(&secret.metadata, &uid));
    let data = secret.data.clone().unwrap();
    for key in [
        "user",
        "password",
        "operator-user",
        "operator-password",
        "route-user",
        "route-password",
    ] {
        assert!(data.contains_key(key), "{key}");
    }

    // A later reconcile never rewrites the Secret.
    wait_until(WAIT, "Broker status written", || {
        let brokers = brokers.clone();
        async move {
            brokers
                .get("main")
                .await
                .ok()
                .and_then(|b| b.status)
                .is_some_and(|s| s.observed_generation == Some(1))
        }
    })
    .await;
    let again: Secret = exists(&client, &ns.name, "main-credentials").await.unwrap();
    assert_eq!(again.data, secret.data);

    brokers
        .delete("main", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_until(WAIT, "the Broker's children collected", || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            exists::<StatefulSet>(&client, &ns, "main").await.is_none()
                && exists::<Service>(&client, &ns, "main-client")
                    .await
                    .is_none()
                && exists::<Service>(&client, &ns, "main-headless")
                    .await
                    .is_none()
                && exists::<ConfigMap>(&client, &ns, "main-config")
                    .await
                    .is_none()
                && exists::<PodDisruptionBudget>(&client, &ns, "main")
                    .await
                    .is_none()
                && exists::<Secret>(&client, &ns, "main-credentials")
                    .await
                    .is_none()
        }
    })
    .await;

    let _ = stop_tx.send(());
    controllers.await.unwrap();
}
