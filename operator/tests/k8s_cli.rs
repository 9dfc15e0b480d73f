//! The cluster path of the operations commands: without a kubeconfig the command says how to
//! choose a broker; against a real cluster (only when `KUBECONFIG` is set) a Broker is found,
//! port-forwarded to and logged into with its Secret's credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use futures::TryStreamExt as _;
use kube::api::{Api, PostParams};
use sluice_operator::cli::Cli;
use sluice_operator::cli::target::BrokerArgs;
use sluice_operator::controller::metrics::Metrics;
use sluice_operator::controller::runtime::{self, Settings};
use sluice_operator::crd::Broker;
use sluice_operator::service::crds::apply_crds;
use sluice_testkit::{TempNamespace, client_or_skip, wait_until};

const WAIT: Duration = Duration::from_secs(240);

#[test]
fn without_a_broker_or_kubeconfig_the_command_says_how_to_choose_one() {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topics", "-n", "shop"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("SLUICE_BROKER_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "no broker given: use --broker-url, --dev DIR, or a kubeconfig with access to the cluster"
        ),
        "{stderr}"
    );
}

#[test]
fn broker_name_excludes_the_other_targets() {
    let parsed = Cli::try_parse_from(["sluice", "lag", "g", "--broker", "main", "-n", "shop"]);
    assert!(parsed.is_ok(), "{parsed:?}");
    for other in [["--broker-url", "nats://x:4222"], ["--dev", "/tmp/d"]] {
        let mut args = vec!["sluice", "topics", "--broker", "main"];
        args.extend(other);
        assert!(Cli::try_parse_from(&args).is_err(), "{args:?} parsed");
    }
}

#[tokio::test]
async fn k8s_cli_reaches_the_only_broker_through_a_port_forward() {
    let Some(client) = client_or_skip("k8s_cli").await else {
        return;
    };
    if let Err(reason) = sluice_testkit::cluster_runs_pods(&client).await {
        eprintln!(
            "skipping k8s_cli_reaches_the_only_broker_through_a_port_forward: {reason}; it port-forwards to a running broker pod"
        );
        return;
    }
    apply_crds(&client).await.unwrap();
    let ns = TempNamespace::create(&client, "cli").await;
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
    brokers
        .create(
            &PostParams::default(),
            &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1, storage: {size: 1Gi}}\n").unwrap(),
        )
        .await
        .unwrap();

    let args = BrokerArgs {
        broker_url: None,
        user: None,
        password: None,
        ca_file: None,
        dev: None,
        broker_name: None,
        namespace: ns.name.clone(),
    };
    // Until a pod is Ready the cluster path fails (no ready pod); then it connects.
    let connected = Arc::new(tokio::sync::Mutex::new(None));
    wait_until(WAIT, "a connection through the port-forward", || {
        let (args, connected) = (args.clone(), connected.clone());
        async move {
            match tokio::time::timeout(Duration::from_secs(20), args.connect()).await {
                Ok(Ok(c)) => {
                    *connected.lock().await = Some(c);
                    true
                }
                Ok(Err(e)) => {
                    eprintln!("not yet: {e:#}");
                    false
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let connected = connected.lock().await.take().unwrap();
    assert!(connected.forward.is_some());
    // A JetStream API round trip over the forward (the operator's credentials are accepted).
    let streams: Vec<_> = connected
        .broker
        .jetstream()
        .streams()
        .try_collect()
        .await
        .unwrap();
    assert!(streams.is_empty(), "fresh broker has streams: {streams:?}");
    connected.close().await;

    let named = BrokerArgs {
        broker_name: Some("other".into()),
        ..args
    };
    let err = named.connect().await.unwrap_err();
    assert!(
        format!("{err:#}").contains("Broker other not found"),
        "{err:#}"
    );

    let _ = stop_tx.send(());
    let _ = controllers.await;
}
