//! Against a real cluster (only when `KUBECONFIG` is set, and the Helm SDK `helm_python` is
//! importable by `python3`): the RBAC the chart renders suffices for the operator's calls.
//! The chart is rendered with the test namespace as release namespace and watched namespace,
//! its ServiceAccount and (Cluster)Roles are applied, and the operator's work is done through
//! a client impersonating that ServiceAccount: applying the CRDs, the leader Lease, and
//! reconciling a Broker (its TLS Secrets included), a Topic and an autoscaled ConsumerGroup,
//! then the controllers themselves (every watch) reconciling the order-events example.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Client, Config};
use serde_json::Value;
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_operator::broker_cluster::OperatorPeer;
use sluice_operator::controller::conditions::{self, READY};
use sluice_operator::controller::metrics::Metrics;
use sluice_operator::controller::runtime::{self, ControllerContext, Settings};
use sluice_operator::crd::{Broker, ConsumerGroup, Topic};
use sluice_operator::service::crds::apply_crds;
use sluice_operator::service::leader::{Elector, LeaderConfig};
use sluice_testkit::{TempNamespace, client_or_skip, wait_until};

const RENDER: &str = r#"
import json, sys, yaml
import helm_python as helm
chart, release, namespace = sys.argv[1], sys.argv[2], sys.argv[3]
values = {"watchNamespaces": [namespace]}
with helm.Chart.load(chart) as c:
    manifests = c.render(values, name=release, namespace=namespace, is_install=True)
out = []
for path, text in manifests.items():
    if path.endswith("NOTES.txt"):
        continue
    out.extend(d for d in yaml.safe_load_all(text) if d)
print(json.dumps(out))
"#;

/// The chart's objects, or `None` when the Helm SDK is not installed.
fn render_chart(release: &str, namespace: &str) -> Option<Vec<Value>> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sluice");
    let out = std::process::Command::new("python3")
        .args(["-c", RENDER, chart.to_str().unwrap(), release, namespace])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "skipping k8s_rbac: cannot render the chart (pip install helm-python-sdk pyyaml): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn resource_of(obj: &Value) -> ApiResource {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        &group,
        &version,
        obj["kind"].as_str().unwrap(),
    ))
}

#[tokio::test]
async fn k8s_chart_rbac_suffices_for_the_operator() {
    let Some(admin) = client_or_skip("k8s_rbac").await else {
        return;
    };
    let mut ns = TempNamespace::create(&admin, "rbac").await;
    let release = ns.name.clone();
    let Some(objects) = render_chart(&release, &ns.name) else {
        return;
    };
    // Install what the operator needs from the chart: its identity and its permissions.
    let mut service_account = None;
    for obj in &objects {
        let kind = obj["kind"].as_str().unwrap();
        if !matches!(
            kind,
            "ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
        ) {
            continue;
        }
        let resource = resource_of(obj);
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(n) => Api::namespaced_with(admin.clone(), n, &resource),
            None => {
                ns.also_delete(resource.clone(), name.clone());
                Api::all_with(admin.clone(), &resource)
            }
        };
        api.patch(
            &name,
            &PatchParams::apply("sluice-test").force(),
            &Patch::Apply(obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
        if kind == "ServiceAccount" {
            service_account = Some(name);
        }
    }
    let service_account = service_account.expect("the chart renders a ServiceAccount");

    let mut config = Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(format!(
        "system:serviceaccount:{}:{service_account}",
        ns.name
    ));
    let operator = Client::try_from(config).unwrap();

    // CRDs (cluster-scoped, limited to Sluice's names).
    apply_crds(&operator)
        .await
        .expect("the chart's RBAC lets the operator apply its CRDs");

    // The leader Lease in the release namespace.
    let mut elector = Elector::new(
        operator.clone(),
        LeaderConfig::new(&ns.name, "sluice-operator-leader", "rbac-test"),
    );
    assert!(elector.try_acquire_or_renew().await.expect("lease create"));
    assert!(elector.try_acquire_or_renew().await.expect("lease renew"));
    elector.release().await;

    // Reconciles, with a local nats-server standing in for the broker pods.
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let settings = Settings {
        namespaces: vec![ns.name.clone()],
        broker_urls: BTreeMap::from([("main".to_string(), server.url())]),
        broker_network_policy: Some(OperatorPeer {
            namespace: ns.name.clone(),
            pod_labels: BTreeMap::from([(
                "app.kubernetes.io/component".to_string(),
                "operator".to_string(),
            )]),
        }),
        ..Settings::default()
    };
    let ctx = Arc::new(ControllerContext::new(
        operator.clone(),
        &settings,
        Arc::new(Metrics::default()),
    ));
    let yaml = |s: &str| serde_yaml::from_str::<serde_yaml::Value>(s).unwrap();
    let brokers: Api<Broker> = Api::namespaced(admin.clone(), &ns.name);
    let broker = brokers
        .create(&Default::default(), &serde_yaml::from_value(yaml("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n")).unwrap())
        .await
        .unwrap();
    runtime::reconcile(Arc::new(broker), ctx.clone())
        .await
        .expect("Broker reconcile (StatefulSet, Services, ConfigMap, PDB, Secret, status, events)");
    // A failed write becomes the status, not an error: every step must have succeeded.
    let b = brokers.get("main").await.unwrap();
    let ready = conditions::get(&b.status.unwrap().conditions, READY)
        .cloned()
        .unwrap();
    assert_eq!(ready.reason, "ServersStarting", "{ready:?}");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns.name);
    for name in ["main-credentials", "main-ca", "main-tls"] {
        assert!(
            secrets.get_opt(name).await.unwrap().is_some(),
            "no Secret {name}"
        );
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &ns.name);
    let policy = policies
        .get_opt("main")
        .await
        .unwrap()
        .expect("NetworkPolicy main");
    assert_eq!(
        policy.spec.unwrap().ingress.unwrap().len(),
        3,
        "clients, routes, monitoring"
    );

    let topics: Api<Topic> = Api::namespaced(admin.clone(), &ns.name);
    topics
        .create(&Default::default(), &serde_yaml::from_value(yaml("apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {broker: main, partitions: 2, deletionPolicy: Delete}\n")).unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        let t = topics.get("orders").await.unwrap();
        runtime::reconcile(Arc::new(t), ctx.clone())
            .await
            .expect("Topic reconcile (finalizer, status)");
    }
    let t = topics.get("orders").await.unwrap();
    assert!(conditions::is_true(&t.status.unwrap().conditions, READY));

    let groups: Api<ConsumerGroup> = Api::namespaced(admin.clone(), &ns.name);
    groups
        .create(&Default::default(), &serde_yaml::from_value(yaml("apiVersion: sluice.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: billing}\nspec:\n  source: {topic: orders}\n  autoscaling: {maxReplicas: 2}\n  template:\n    spec:\n      containers: [{name: worker, image: 'registry.k8s.io/pause:3.9'}]\n")).unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        let g = groups.get("billing").await.unwrap();
        runtime::reconcile(Arc::new(g), ctx.clone())
            .await
            .expect("ConsumerGroup reconcile (finalizer, Deployment, pods, status, events)");
    }
    let g = groups.get("billing").await.unwrap();
    // Consumers provisioned; without nodes its worker pods never start (WorkersUnavailable).
    let ready = conditions::get(&g.status.unwrap().conditions, READY)
        .cloned()
        .unwrap();
    assert!(
        ready.reason == "Provisioned" || ready.reason == "WorkersUnavailable",
        "{ready:?}"
    );

    // Deletion: the finalizer's cleanup and removal work under the same identity.
    topics.delete("orders", &Default::default()).await.unwrap();
    let t = topics.get("orders").await.unwrap();
    runtime::reconcile(Arc::new(t), ctx.clone())
        .await
        .expect("Topic cleanup");

    // The controllers themselves (watches of the five kinds and of the owned objects) under
    // the same identity reconcile an example pipeline applied as a user would.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(runtime::run(
        operator.clone(),
        settings.clone(),
        Arc::new(Metrics::default()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/order-events/pipeline.yaml");
    let mut expected = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&std::fs::read_to_string(example).unwrap()) {
        let obj: Value = serde_json::to_value(
            <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap(),
        )
        .unwrap();
        if obj["apiVersion"] != "sluice.dev/v1alpha1" {
            continue; // the producer Job is not the operator's
        }
        let resource = resource_of(&obj);
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns.name, &resource);
        api.patch(
            &name,
            &PatchParams::apply("sluice-test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"));
        expected.push((resource, name));
    }
    assert!(expected.len() >= 5, "{expected:?}");
    for (resource, name) in &expected {
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns.name, resource);
        let what = format!("{} {name} reconciled by the controllers", resource.kind);
        wait_until(Duration::from_secs(120), &what, || {
            let (api, name, kind) = (api.clone(), name.clone(), resource.kind.clone());
            async move {
                let Ok(obj) = api.get(&name).await else {
                    return false;
                };
                let reason = obj.data["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .and_then(|c| c["reason"].as_str().map(str::to_string))
                    .unwrap_or_default();
                match kind.as_str() {
                    // Without nodes the servers and workers never start.
                    "Broker" => reason == "ServersStarting",
                    "ConsumerGroup" => reason == "Provisioned" || reason == "WorkersUnavailable",
                    _ => {
                        reason == "Provisioned"
                            || reason == "Ready"
                            || obj.data["status"]["conditions"]
                                .as_array()
                                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                                .is_some_and(|c| c["status"] == "True")
                    }
                }
            }
        })
        .await;
    }
    // Identities under the chart's RBAC (Secrets read by name only): every group's Secret,
    // the producer Secret of the example's Job, and all of them in the Broker's users file.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns.name);
    let users_listed =
        "the users file of main lists the producer order-api and the group analytics";
    let producer_user = format!("p__{}__order-api", ns.name);
    let group_user = format!("g__{}__analytics", ns.name);
    wait_until(Duration::from_secs(120), users_listed, || {
        let (secrets, producer_user, group_user) =
            (secrets.clone(), producer_user.clone(), group_user.clone());
        async move {
            for name in [
                "order-api-producer-identity",
                "analytics-broker-identity",
                "notifications-broker-identity",
                "audit-broker-identity",
            ] {
                if secrets.get_opt(name).await.ok().flatten().is_none() {
                    return false;
                }
            }
            let Ok(Some(users)) = secrets.get_opt("main-users").await else {
                return false;
            };
            let text = users
                .data
                .and_then(|d| {
                    d.get("users.conf")
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                })
                .unwrap_or_default();
            text.contains(&producer_user) && text.contains(&group_user)
        }
    })
    .await;
    let _ = stop_tx.send(());
    let _ = controllers.await;
}
