//! Against a real cluster (only when `KUBECONFIG` is set): CRDs are applied, the controllers
//! run in-process with a broker URL override pointing at a local nats-server, and Topics
//! become Ready, get their streams, and are cleaned up according to their deletionPolicy.
//! Each test uses a fresh namespace and deletes it at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{Broker as Nats, ConnectOptions, ResourceRef, names};
use sluice_operator::controller::conditions::{self, READY};
use sluice_operator::crd::{Broker, Topic};

use sluice_testkit::{client_or_skip, install_crds, wait_until};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn k8s_topics_become_ready_and_follow_deletion_policy() {
    let Some(client) = client_or_skip("k8s_topics").await else {
        return;
    };
    install_crds(&client, &sluice_operator::crdgen::all_crds()).await;
    let ns = format!("sluice-test-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();

    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let nats = Nats::connect(&ConnectOptions::from_url_list(&server.url()))
        .await
        .unwrap();
    let operator = sluice_operator::controller::in_process::InProcessOperator::start(
        &client,
        &ns,
        &server.url(),
        Duration::from_secs(5),
        Default::default(),
    );

    let brokers: Api<Broker> = Api::namespaced(client.clone(), &ns);
    brokers
        .create(&PostParams::default(), &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n").unwrap())
        .await
        .unwrap();
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns);
    for (name, policy) in [("deleted", "Delete"), ("kept", "Retain")] {
        let t: Topic = serde_yaml::from_str(&format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {{name: {name}}}\nspec: {{broker: main, partitions: 2, deletionPolicy: {policy}}}\n"
        ))
        .unwrap();
        topics.create(&PostParams::default(), &t).await.unwrap();
    }
    for name in ["deleted", "kept"] {
        wait_until(WAIT, &format!("Topic {name} Ready"), || {
            let topics = topics.clone();
            async move {
                topics
                    .get(name)
                    .await
                    .ok()
                    .and_then(|t| t.status)
                    .is_some_and(|s| conditions::is_true(&s.conditions, READY))
            }
        })
        .await;
        let r = ResourceRef::new(&ns, name).unwrap();
        assert!(
            nats.jetstream()
                .get_stream(names::topic_stream(&r, 1))
                .await
                .is_ok()
        );
    }

    // Shrinking is rejected at admission by the CEL rule.
    let shrink = serde_json::json!({"spec": {"partitions": 1}});
    let err = topics
        .patch("kept", &PatchParams::default(), &Patch::Merge(&shrink))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("partitions can only grow"),
        "{err}"
    );

    for name in ["deleted", "kept"] {
        topics.delete(name, &DeleteParams::default()).await.unwrap();
        wait_until(WAIT, &format!("Topic {name} gone"), || {
            let topics = topics.clone();
            async move { topics.get_opt(name).await.unwrap().is_none() }
        })
        .await;
    }
    let deleted = ResourceRef::new(&ns, "deleted").unwrap();
    let kept = ResourceRef::new(&ns, "kept").unwrap();
    assert!(
        nats.jetstream()
            .get_stream(names::topic_stream(&deleted, 0))
            .await
            .is_err()
    );
    assert!(
        nats.jetstream()
            .get_stream(names::topic_stream(&kept, 0))
            .await
            .is_ok()
    );

    operator.stop().await.unwrap();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
