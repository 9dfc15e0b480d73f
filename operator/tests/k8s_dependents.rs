//! Against a real cluster (only when `KUBECONFIG` is set): objects that point to a Broker,
//! Topic or DeadLetterQueue are reconciled when what they point to appears, becomes ready or
//! goes away, through the watches, not by polling. The operator runs with its resync and its
//! missing-reference retry at one hour, so within the test's deadline nothing but a watch
//! trigger can reconcile them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_operator::controller::conditions::{self, READY};
use sluice_operator::controller::in_process::InProcessOperator;
use sluice_operator::controller::runtime::Settings;
use sluice_operator::crd::{Broker, Condition, ConsumerGroup, DeadLetterQueue, Queue, Topic};
use sluice_testkit::{TempNamespace, client_or_skip, install_crds, wait_until};

const WAIT: Duration = Duration::from_secs(90);
const NEVER: Duration = Duration::from_secs(3600);

fn ready_condition(obj: &DynamicObject) -> Option<Condition> {
    let conditions: Vec<Condition> =
        serde_json::from_value(obj.data.pointer("/status/conditions")?.clone()).ok()?;
    conditions::get(&conditions, READY).cloned()
}

/// Waits until every object listed has a Ready condition for which `holds` is true.
async fn wait_for_all(
    client: &kube::Client,
    ns: &str,
    objects: &[(ApiResource, &str)],
    what: &str,
    holds: impl Fn(&Condition) -> bool + Copy,
) {
    for (resource, name) in objects {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
        wait_until(WAIT, &format!("{} {name}: {what}", resource.kind), || {
            let api = api.clone();
            async move {
                api.get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|o| ready_condition(&o))
                    .is_some_and(|c| holds(&c))
            }
        })
        .await;
    }
}

#[tokio::test]
async fn k8s_dependents_follow_their_broker_through_the_watches() {
    let Some(client) = client_or_skip("k8s_dependents").await else {
        return;
    };
    install_crds(&client, &sluice_operator::crdgen::all_crds()).await;
    let ns = TempNamespace::create(&client, "dependents").await;
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let operator = InProcessOperator::start_with(
        &client,
        Settings {
            namespaces: vec![ns.name.clone()],
            broker_urls: BTreeMap::from([("main".to_string(), server.url())]),
            resync: NEVER,
            missing_retry: NEVER,
            ..Settings::default()
        },
        Default::default(),
    );

    let create = |yaml: &'static str| {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            let obj: DynamicObject = serde_yaml::from_str(yaml).unwrap();
            let gvk = kube::core::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
            let api: Api<DynamicObject> =
                Api::namespaced_with(client, &ns, &ApiResource::from_gvk(&gvk));
            api.create(&PostParams::default(), &obj).await.unwrap();
        }
    };
    // Everything before its Broker.
    create("apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {broker: main, partitions: 2}\n").await;
    create("apiVersion: sluice.dev/v1alpha1\nkind: DeadLetterQueue\nmetadata: {name: failed}\nspec: {broker: main}\n").await;
    create("apiVersion: sluice.dev/v1alpha1\nkind: Queue\nmetadata: {name: emails}\nspec: {broker: main, sources: [{topic: orders}]}\n").await;
    create("apiVersion: sluice.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: billing}\nspec: {source: {topic: orders}, deadLetter: {queue: failed}}\n").await;

    let objects = [
        (ApiResource::erase::<Topic>(&()), "orders"),
        (ApiResource::erase::<DeadLetterQueue>(&()), "failed"),
        (ApiResource::erase::<Queue>(&()), "emails"),
        (ApiResource::erase::<ConsumerGroup>(&()), "billing"),
    ];
    wait_for_all(
        &client,
        &ns.name,
        &objects,
        "waiting for Broker main",
        |c| c.reason == "BrokerNotFound",
    )
    .await;

    // The Broker appears: its dependents are reconciled at once (their next retry is an
    // hour away).
    let brokers: Api<Broker> = Api::namespaced(client.clone(), &ns.name);
    brokers
        .create(&PostParams::default(), &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n").unwrap())
        .await
        .unwrap();
    wait_for_all(&client, &ns.name, &objects, "Ready", |c| {
        c.status == sluice_operator::crd::ConditionStatus::True
    })
    .await;

    // The Broker goes: they say so, without waiting for a resync.
    brokers
        .delete("main", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_all(&client, &ns.name, &objects, "Broker main gone", |c| {
        c.reason == "BrokerNotFound"
    })
    .await;

    operator.stop().await.unwrap();
}
