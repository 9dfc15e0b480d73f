//! Against a real cluster (only when `KUBECONFIG` is set): after `sluice dlq replay` the CLI
//! marks the DeadLetterQueue, and the operator refreshes its depth at once instead of at the
//! next resync. The operator runs with a one-hour resync, so only the mark can refresh it
//! within the deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, PostParams};
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{Broker as Nats, ConnectOptions, ResourceRef, names};
use sluice_operator::cli::cluster::refresh_dlq_status;
use sluice_operator::controller::in_process::InProcessOperator;
use sluice_operator::controller::runtime::Settings;
use sluice_operator::crd::{Broker, DeadLetterQueue};
use sluice_testkit::{TempNamespace, client_or_skip, install_crds, wait_until};

const WAIT: Duration = Duration::from_secs(90);
const NEVER: Duration = Duration::from_secs(3600);

async fn depth(api: &Api<DeadLetterQueue>) -> Option<u64> {
    api.get_opt("failed")
        .await
        .ok()
        .flatten()
        .and_then(|d| d.status)
        .and_then(|s| s.depth)
}

#[tokio::test]
async fn k8s_dlq_depth_is_refreshed_when_the_cli_marks_a_replay() {
    let Some(client) = client_or_skip("k8s_dlq_refresh").await else {
        return;
    };
    install_crds(&client, &sluice_operator::crdgen::all_crds()).await;
    let ns = TempNamespace::create(&client, "dlq-refresh").await;
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let _operator = InProcessOperator::start_with(
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
    let brokers: Api<Broker> = Api::namespaced(client.clone(), &ns.name);
    brokers
        .create(
            &PostParams::default(),
            &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n").unwrap(),
        )
        .await
        .unwrap();
    let dlqs: Api<DeadLetterQueue> = Api::namespaced(client.clone(), &ns.name);
    dlqs.create(
        &PostParams::default(),
        &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: DeadLetterQueue\nmetadata: {name: failed}\nspec: {broker: main}\n").unwrap(),
    )
    .await
    .unwrap();
    wait_until(WAIT, "the DLQ reports depth 0", || async {
        depth(&dlqs).await == Some(0)
    })
    .await;

    // The DLQ's content changes behind the operator's back (as a replay does).
    let nats = Nats::connect(&ConnectOptions::from_url_list(&server.url()))
        .await
        .unwrap();
    let dlq = ResourceRef::new(&ns.name, "failed").unwrap();
    for i in 0..3 {
        nats.jetstream()
            .publish(names::dlq_subject(&dlq), format!("dead {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(
        depth(&dlqs).await,
        Some(0),
        "nothing but the mark refreshes it"
    );

    refresh_dlq_status(&ns.name, "failed").await;
    wait_until(WAIT, "the DLQ reports depth 3 after the mark", || async {
        depth(&dlqs).await == Some(3)
    })
    .await;
}
