//! Against a real cluster (only when `KUBECONFIG` is set): a Queue fed by a Topic, reconciled by
//! the controllers in-process against a local nats-server, receives every message of every
//! partition through the fan-out relay, shows per-partition progress in its status, and with
//! `deletionPolicy: Delete` takes its relay consumers with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{Broker as Nats, ConnectOptions, ResourceRef, names};
use sluice_operator::controller::conditions::{self, READY};
use sluice_operator::crd::{Broker, Queue, Topic};

use sluice_operator::controller::in_process::InProcessOperator;
use sluice_testkit::{TempNamespace, client_or_skip, install_crds, wait_until};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn k8s_queue_receives_every_partition_of_its_source_topic_and_shows_progress() {
    let Some(client) = client_or_skip("k8s_queue_receives_every_partition").await else {
        return;
    };
    install_crds(&client, &sluice_operator::crdgen::all_crds()).await;
    let ns = TempNamespace::create(&client, "queues").await;
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let nats = Nats::connect(&ConnectOptions::from_url_list(&server.url()))
        .await
        .unwrap();
    let operator = InProcessOperator::start(
        &client,
        &ns.name,
        &server.url(),
        Duration::from_secs(5),
        Default::default(),
    );

    let brokers: Api<Broker> = Api::namespaced(client.clone(), &ns.name);
    brokers
        .create(&PostParams::default(), &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n").unwrap())
        .await
        .unwrap();
    // The Queue first: its relay must wait for the topic's partitions and copy them from the
    // first message.
    let queues: Api<Queue> = Api::namespaced(client.clone(), &ns.name);
    queues
        .create(&PostParams::default(), &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Queue\nmetadata: {name: encode}\nspec: {broker: main, deletionPolicy: Delete, sources: [{topic: uploads}]}\n").unwrap())
        .await
        .unwrap();
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns.name);
    topics
        .create(&PostParams::default(), &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: uploads}\nspec: {broker: main, partitions: 3, deletionPolicy: Delete}\n").unwrap())
        .await
        .unwrap();
    let topic = ResourceRef::new(&ns.name, "uploads").unwrap();
    let queue = ResourceRef::new(&ns.name, "encode").unwrap();
    wait_until(WAIT, "the topic's partitions", || {
        let nats = nats.clone();
        let topic = topic.clone();
        async move {
            nats.jetstream()
                .get_stream(names::topic_stream(&topic, 2))
                .await
                .is_ok()
        }
    })
    .await;
    for i in 0..9u32 {
        nats.jetstream()
            .publish(
                names::topic_subject(&topic, i % 3),
                format!("upload-{i}").into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    wait_until(
        WAIT,
        "Queue Ready with every source partition received",
        || {
            let queues = queues.clone();
            async move {
                let Some(status) = queues.get("encode").await.ok().and_then(|q| q.status) else {
                    return false;
                };
                conditions::is_true(&status.conditions, READY)
                    && status.sources.len() == 3
                    && status
                        .sources
                        .iter()
                        .all(|s| s.pending == 0 && s.received_offset == 3 && s.last_offset == 3)
            }
        },
    )
    .await;
    let status = queues.get("encode").await.unwrap().status.unwrap();
    assert!(
        !conditions::is_true(&status.conditions, conditions::SOURCING_STALLED),
        "{status:?}"
    );
    let mut stream = nats
        .jetstream()
        .get_stream(names::queue_stream(&queue))
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 9);

    // deletionPolicy Delete: the stream and the relay consumers on the topic go.
    queues
        .delete("encode", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(WAIT, "queue stream and relay consumers deleted", || {
        let nats = nats.clone();
        let topic = topic.clone();
        let queue = queue.clone();
        async move {
            let stream_gone = nats
                .jetstream()
                .get_stream(names::queue_stream(&queue))
                .await
                .is_err();
            let Ok(partition) = nats
                .jetstream()
                .get_stream(names::topic_stream(&topic, 0))
                .await
            else {
                return false;
            };
            stream_gone
                && partition
                    .consumer_info(names::fanout_consumer(&queue))
                    .await
                    .is_err()
        }
    })
    .await;

    operator.stop().await.unwrap();
}
