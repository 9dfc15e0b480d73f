//! Controller flows through the Kubernetes layer (kube-runtime's finalizer helper, status and
//! child writes, Events, the autoscaler's Deployment writes) against an in-memory fake API
//! server (tower-test), with a real nats-server as the broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_broker::embedded::{Cluster, NatsServer, ServerOptions};
use sluice_broker::{Broker as Nats, ConnectOptions, ResourceRef, names};
use sluice_operator::controller::metrics::Metrics;
use sluice_operator::controller::runtime::{self, ControllerContext, Settings};
use sluice_operator::crd::{Broker, ConsumerGroup, DeadLetterQueue, Topic};
use sluice_testkit::{FakeApi, wait_until};

const NS: &str = "shop";
const MANAGER: &str = "sluice-operator";

fn sluice_path(plural: &str, name: &str) -> String {
    format!("/apis/sluice.dev/v1alpha1/namespaces/{NS}/{plural}/{name}")
}

fn core_path(plural: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/{plural}/{name}")
}

fn apps_path(plural: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/{plural}/{name}")
}

fn object(kind: &str, name: &str, uid: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": uid, "generation": 1},
        "spec": spec,
    })
}

fn read<K: serde::de::DeserializeOwned>(fake: &FakeApi, path: &str) -> K {
    serde_json::from_value(
        fake.get(path)
            .unwrap_or_else(|| panic!("{path} not stored")),
    )
    .unwrap()
}

fn condition(obj: &Value, type_: &str) -> (String, String) {
    let c = obj["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {obj}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
    )
}

fn context(client: kube::Client, broker_url: &str) -> Arc<ControllerContext> {
    context_with(client, broker_url, Settings::default().resync)
}

fn context_with(
    client: kube::Client,
    broker_url: &str,
    resync: Duration,
) -> Arc<ControllerContext> {
    let settings = Settings {
        broker_urls: BTreeMap::from([("main".to_string(), broker_url.to_string())]),
        resync,
        ..Settings::default()
    };
    Arc::new(ControllerContext::new(
        client,
        &settings,
        Arc::new(Metrics::default()),
    ))
}

async fn nats(server_urls: &str) -> Nats {
    Nats::connect(&ConnectOptions::from_url_list(server_urls))
        .await
        .unwrap()
}

/// Seeds a Broker and a Topic and runs the Topic through its first two reconciles (finalizer,
/// then apply), returning the stored Topic.
async fn provisioned_topic(fake: &FakeApi, ctx: &Arc<ControllerContext>, spec: Value) -> Topic {
    fake.put(
        &sluice_path("brokers", "main"),
        object("Broker", "main", "uid-broker", json!({"replicas": 1})),
    );
    let path = sluice_path("topics", "orders");
    fake.put(&path, object("Topic", "orders", "uid-topic", spec));
    runtime::reconcile(Arc::new(read::<Topic>(fake, &path)), ctx.clone())
        .await
        .unwrap();
    runtime::reconcile(Arc::new(read::<Topic>(fake, &path)), ctx.clone())
        .await
        .unwrap();
    read(fake, &path)
}

#[tokio::test]
async fn topic_reconcile_adds_the_finalizer_then_patches_status_ready() {
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let (client, fake) = FakeApi::start();
    let ctx = context(client, &server.url());
    fake.put(
        &sluice_path("brokers", "main"),
        object("Broker", "main", "uid-broker", json!({"replicas": 1})),
    );
    let path = sluice_path("topics", "orders");
    fake.put(
        &path,
        object(
            "Topic",
            "orders",
            "uid-topic",
            json!({"broker": "main", "partitions": 2, "deletionPolicy": "Delete"}),
        ),
    );

    // First pass (deletionPolicy Delete needs cleanup): only the finalizer is added (JSON patch on the object), nothing else.
    runtime::reconcile(Arc::new(read::<Topic>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let writes = fake.writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].path, path);
    assert!(writes[0].content_type.starts_with("application/json-patch"));
    assert_eq!(
        fake.get(&path).unwrap()["metadata"]["finalizers"],
        json!(["sluice.dev/cleanup"])
    );
    let orders = ResourceRef::new(NS, "orders").unwrap();
    let nats = nats(&server.url()).await;
    assert!(
        nats.jetstream()
            .get_stream(names::topic_stream(&orders, 0))
            .await
            .is_err()
    );

    // Second pass: streams are provisioned and status is server-side applied.
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<Topic>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let status_write = fake
        .writes()
        .into_iter()
        .find(|r| r.path == format!("{path}/status"))
        .expect("status written");
    assert!(status_write.is_forced_apply_by(MANAGER), "{status_write:?}");
    let stored = fake.get(&path).unwrap();
    assert_eq!(
        condition(&stored, "Ready"),
        ("True".into(), "Provisioned".into())
    );
    assert_eq!(stored["status"]["observedGeneration"], 1);
    assert_eq!(
        stored["status"]["replicas"], 1,
        "a 1-server Broker: one copy (the Replicas column shows it)"
    );
    for p in 0..2 {
        assert!(
            nats.jetstream()
                .get_stream(names::topic_stream(&orders, p))
                .await
                .is_ok()
        );
    }
    let metrics = ctx.metrics().encode();
    assert!(
        metrics.contains("sluice_operator_reconciles_total{kind=\"Topic\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn topic_deletion_retain_keeps_streams_delete_removes_them() {
    for (policy, streams_survive) in [("Retain", true), ("Delete", false)] {
        let server = NatsServer::start(ServerOptions::default()).await.unwrap();
        let (client, fake) = FakeApi::start();
        let ctx = context(client, &server.url());
        let mut topic = provisioned_topic(
            &fake,
            &ctx,
            json!({"broker": "main", "partitions": 2, "deletionPolicy": policy}),
        )
        .await;
        let orders = ResourceRef::new(NS, "orders").unwrap();
        let nats = nats(&server.url()).await;
        assert!(
            nats.jetstream()
                .get_stream(names::topic_stream(&orders, 1))
                .await
                .is_ok()
        );

        let finalizers = topic.metadata.finalizers.clone().unwrap_or_default();
        if policy == "Retain" {
            assert!(finalizers.is_empty(), "Retain needs no finalizer");
            // As an older operator left it: a finalizer on every Topic.
            topic.metadata.finalizers = Some(vec!["sluice.dev/cleanup".into()]);
        } else {
            assert_eq!(finalizers, ["sluice.dev/cleanup"]);
        }
        // `kubectl delete`: the API server sets deletionTimestamp; the finalizer holds it.
        topic.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let path = sluice_path("topics", "orders");
        let mut stored = serde_json::to_value(&topic).unwrap();
        stored["metadata"]["resourceVersion"] =
            fake.get(&path).unwrap()["metadata"]["resourceVersion"].clone();
        fake.put(&path, stored);
        runtime::reconcile(Arc::new(read::<Topic>(&fake, &path)), ctx.clone())
            .await
            .unwrap();

        assert_eq!(
            fake.get(&path).unwrap()["metadata"]["finalizers"],
            json!([]),
            "{policy}: finalizer removed so the object can go"
        );
        for p in 0..2 {
            let exists = nats
                .jetstream()
                .get_stream(names::topic_stream(&orders, p))
                .await
                .is_ok();
            assert_eq!(exists, streams_survive, "{policy}: partition {p}");
        }
    }
}

fn owned_by_broker(obj: &Value) {
    let owner = &obj["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Broker", "{obj}");
    assert_eq!(owner["name"], "main");
    assert_eq!(owner["uid"], "uid-broker");
    assert_eq!(owner["controller"], true);
}

#[tokio::test]
async fn broker_reconcile_applies_children_and_creates_the_secret_only_once() {
    let (client, fake) = FakeApi::start();
    // No broker connection is needed for a first start (no scale-down).
    let ctx = context(client, "nats://127.0.0.1:1");
    let path = sluice_path("brokers", "main");
    fake.put(
        &path,
        object(
            "Broker",
            "main",
            "uid-broker",
            json!({"replicas": 3, "storage": {"size": "5Gi", "storageClassName": "fast"}}),
        ),
    );

    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let applied: Vec<String> = fake
        .writes()
        .into_iter()
        .filter(|r| r.is_forced_apply_by(MANAGER))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        applied,
        [
            // TLS (generated CA and server certificate), the users file, then the servers.
            core_path("secrets", "main-ca"),
            core_path("secrets", "main-tls"),
            core_path("secrets", "main-users"),
            core_path("configmaps", "main-config"),
            core_path("services", "main-headless"),
            core_path("services", "main-client"),
            apps_path("statefulsets", "main"),
            format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/main"),
            format!("{path}/status"),
        ]
    );
    for child in [
        core_path("configmaps", "main-config"),
        core_path("services", "main-headless"),
        core_path("services", "main-client"),
        apps_path("statefulsets", "main"),
        format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/main"),
        core_path("secrets", "main-credentials"),
        core_path("secrets", "main-ca"),
        core_path("secrets", "main-tls"),
        core_path("secrets", "main-users"),
    ] {
        owned_by_broker(
            &fake
                .get(&child)
                .unwrap_or_else(|| panic!("{child} missing")),
        );
    }
    let sts = fake.get(&apps_path("statefulsets", "main")).unwrap();
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
        "fast"
    );
    let secret_path = core_path("secrets", "main-credentials");
    let secret = fake.get(&secret_path).unwrap();
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "operator-password",
            "operator-user",
            "password",
            "route-password",
            "route-user",
            "user"
        ]
    );
    let creates: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/secrets"))
        .collect();
    assert_eq!(creates.len(), 1);
    let stored = fake.get(&path).unwrap();
    assert_eq!(stored["status"]["readyReplicas"], 0);
    assert_eq!(
        condition(&stored, "Ready"),
        ("False".into(), "ServersStarting".into())
    );

    // Again, with the Secret present: it is neither re-created nor rewritten.
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    assert!(
        fake.writes().iter().all(|r| !r.path.contains("/secrets")),
        "{:#?}",
        fake.writes()
    );
    assert_eq!(fake.get(&secret_path).unwrap()["data"], secret["data"]);
    let events: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .collect();
    assert!(
        events.is_empty(),
        "CredentialsCreated is reported once: {events:#?}"
    );
}

#[tokio::test]
async fn broker_secret_without_route_keys_gets_only_those_added() {
    let (client, fake) = FakeApi::start();
    let ctx = context(client, "nats://127.0.0.1:1");
    let path = sluice_path("brokers", "main");
    fake.put(
        &path,
        object("Broker", "main", "uid-broker", json!({"replicas": 3})),
    );
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    // Make the Secret look like one written before route authentication.
    let secret_path = core_path("secrets", "main-credentials");
    let mut old = fake.get(&secret_path).unwrap();
    let data = old["data"].as_object_mut().unwrap();
    data.remove("route-user");
    data.remove("route-password");
    fake.put(&secret_path, old.clone());
    let old = fake.get(&secret_path).unwrap();

    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let secret_writes: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|r| r.path.contains("/secrets"))
        .collect();
    assert_eq!(secret_writes.len(), 1, "{secret_writes:#?}");
    let patch = &secret_writes[0];
    assert_eq!(patch.method, "PATCH");
    assert!(
        patch.content_type.starts_with("application/merge-patch"),
        "{patch:?}"
    );
    assert_eq!(
        patch.body["metadata"]["resourceVersion"], old["metadata"]["resourceVersion"],
        "the patch is guarded by the version read"
    );
    let patched_keys: Vec<&String> = patch.body["data"].as_object().unwrap().keys().collect();
    assert_eq!(patched_keys, ["route-password", "route-user"]);

    let now = fake.get(&secret_path).unwrap();
    for key in ["user", "password", "operator-user", "operator-password"] {
        assert_eq!(now["data"][key], old["data"][key], "{key} changed");
    }
    let route_user: k8s_openapi::ByteString =
        serde_json::from_value(now["data"]["route-user"].clone()).unwrap();
    assert_eq!(route_user.0, b"sluice-route");
    let route_password: k8s_openapi::ByteString =
        serde_json::from_value(now["data"]["route-password"].clone()).unwrap();
    assert_eq!(route_password.0.len(), 32);

    // Complete now: the next reconcile leaves it alone.
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    assert!(fake.writes().iter().all(|r| !r.path.contains("/secrets")));
}

#[tokio::test]
async fn broker_scale_down_below_stream_replicas_is_refused() {
    let cluster = Cluster::start(3).await.unwrap();
    let urls = cluster.urls();
    let js = nats(&urls).await;
    js.jetstream()
        .create_stream(async_nats::jetstream::stream::Config {
            name: "replicated".into(),
            subjects: vec!["replicated.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let (client, fake) = FakeApi::start();
    let ctx = context(client, &urls);
    let path = sluice_path("brokers", "main");
    fake.put(
        &path,
        object("Broker", "main", "uid-broker", json!({"replicas": 3})),
    );
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let sts_path = apps_path("statefulsets", "main");
    assert_eq!(fake.get(&sts_path).unwrap()["spec"]["replicas"], 3);

    // Shrink to 1 while a stream keeps 3 replicas. (The loopback cluster has no auth, so the
    // generated operator credentials the pool presents are accepted.)
    let mut smaller = fake.get(&path).unwrap();
    smaller["spec"]["replicas"] = json!(1);
    smaller["metadata"]["generation"] = json!(2);
    fake.put(&path, smaller);
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    assert!(
        fake.writes()
            .iter()
            .all(|r| !r.path.contains("/statefulsets/")),
        "the StatefulSet must not be touched: {:#?}",
        fake.writes()
    );
    assert_eq!(fake.get(&sts_path).unwrap()["spec"]["replicas"], 3);
    let stored = fake.get(&path).unwrap();
    assert_eq!(
        condition(&stored, "Ready"),
        ("False".into(), "NotSupported".into())
    );
    assert_eq!(condition(&stored, "NotSupported").0, "True");
    assert_eq!(stored["status"]["maxStreamReplicas"], 3);
    drop(cluster);
}

#[tokio::test]
async fn group_scale_decision_applies_deployment_replicas_once() {
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let (client, fake) = FakeApi::start();
    let ctx = context(client, &server.url());
    provisioned_topic(&fake, &ctx, json!({"broker": "main", "partitions": 4})).await;

    // 25 messages on every partition: lag 100.
    let nats = nats(&server.url()).await;
    let orders = ResourceRef::new(NS, "orders").unwrap();
    for p in 0..4 {
        for i in 0..25 {
            nats.jetstream()
                .publish(names::topic_subject(&orders, p), format!("m{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }

    let path = sluice_path("consumergroups", "billing");
    fake.put(
        &path,
        object(
            "ConsumerGroup",
            "billing",
            "uid-group",
            json!({
                "source": {"topic": "orders"},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 10, "targetLagPerReplica": 10, "pollInterval": "2s"},
                "template": {"spec": {"containers": [{"name": "worker", "image": "example/worker:1"}]}},
            }),
        ),
    );
    runtime::reconcile(Arc::new(read::<ConsumerGroup>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<ConsumerGroup>(&fake, &path)), ctx.clone())
        .await
        .unwrap();

    let deployment_path = apps_path("deployments", "billing-workers");
    let deployment_writes: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|r| r.path == deployment_path)
        .collect();
    assert_eq!(
        deployment_writes.len(),
        1,
        "one writer, one write: {deployment_writes:#?}"
    );
    assert!(deployment_writes[0].is_forced_apply_by(MANAGER));
    // ceil(100 / 10) = 10, capped at the 4 partitions (ordering: partition).
    assert_eq!(deployment_writes[0].body["spec"]["replicas"], 4);
    let d = fake.get(&deployment_path).unwrap();
    assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "uid-group");

    let stored = fake.get(&path).unwrap();
    assert_eq!(stored["status"]["desiredReplicas"], 4);
    assert_eq!(stored["status"]["lag"], 100);
    let record = &stored["status"]["autoscaling"];
    assert_eq!(record["desired"], 4);
    assert_eq!(record["current"], 0);
    assert_eq!(record["lagTotal"], 100);
    assert!(record["lastScaleTime"].is_string(), "{record}");
    let events: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .collect();
    assert!(
        events.iter().any(|e| e.body["reason"] == "ScaledUp"),
        "{events:#?}"
    );
    let metrics = ctx.metrics().encode();
    for line in [
        "sluice_group_desired_replicas{namespace=\"shop\",name=\"billing\"} 4",
        "sluice_group_effective_lag_messages{namespace=\"shop\",name=\"billing\"} 100",
        "sluice_group_lag_messages{namespace=\"shop\",name=\"billing\",partition=\"3\"} 25",
        "sluice_group_scaling_reason{namespace=\"shop\",name=\"billing\",reason=\"Activate\"} 1",
        "sluice_group_scale_events_total{namespace=\"shop\",name=\"billing\",direction=\"up\"} 1",
        "sluice_group_replicas{namespace=\"shop\",name=\"billing\"} 4",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }

    // Next poll, same lag: steady; the stored Deployment already holds what would be applied
    // (the stored count), so it is not written again.
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<ConsumerGroup>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let again: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|r| r.path == deployment_path)
        .collect();
    assert!(again.is_empty(), "{again:#?}");
    assert_eq!(fake.get(&deployment_path).unwrap()["spec"]["replicas"], 4);

    // Someone edits a field the operator owns: the next reconcile puts it back.
    let mut edited = fake.get(&deployment_path).unwrap();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example/worker:hacked");
    fake.put(&deployment_path, edited);
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<ConsumerGroup>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let fixed = fake.get(&deployment_path).unwrap();
    assert_eq!(
        fixed["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/worker:1"
    );
    assert_eq!(fixed["spec"]["replicas"], 4);
    let steady = fake.get(&path).unwrap();
    assert_eq!(steady["status"]["autoscaling"]["reasonCode"], "Steady");
    // The counts agree with the reason: the Deployment runs 4 workers (none ready in the
    // fake), and the reason speaks of those 4.
    assert_eq!(steady["status"]["replicas"], 4);
    assert_eq!(steady["status"]["readyReplicas"], 0);
    let reason = steady["status"]["scalingReason"].as_str().unwrap();
    assert!(reason.contains("the current 4 replicas"), "{reason}");
}

#[tokio::test]
async fn retain_objects_carry_no_finalizer_and_lose_a_stale_one() {
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let (client, fake) = FakeApi::start();
    let ctx = context(client, &server.url());
    fake.put(
        &sluice_path("brokers", "main"),
        object("Broker", "main", "uid-broker", json!({"replicas": 1})),
    );
    // A Retain Topic as an older operator left it: with the finalizer.
    let path = sluice_path("topics", "orders");
    let mut stale = object(
        "Topic",
        "orders",
        "uid-topic",
        json!({"broker": "main", "partitions": 1}),
    );
    stale["metadata"]["finalizers"] = json!(["example.com/other", "sluice.dev/cleanup"]);
    fake.put(&path, stale);

    runtime::reconcile(Arc::new(read::<Topic>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let stored = fake.get(&path).unwrap();
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!(["example.com/other"]),
        "only our finalizer goes"
    );
    let removal = fake
        .writes()
        .into_iter()
        .find(|r| r.path == path)
        .expect("finalizer patch");
    assert!(removal.body["metadata"]["resourceVersion"].is_string());
    assert_eq!(
        condition(&stored, "Ready"),
        ("True".into(), "Provisioned".into()),
        "and the Topic is provisioned in the same reconcile"
    );

    // A fresh Retain Topic never gets one.
    let fresh = sluice_path("topics", "audit");
    fake.put(
        &fresh,
        object(
            "Topic",
            "audit",
            "uid-audit",
            json!({"broker": "main", "partitions": 1, "deletionPolicy": "Retain"}),
        ),
    );
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<Topic>(&fake, &fresh)), ctx.clone())
        .await
        .unwrap();
    assert!(fake.get(&fresh).unwrap()["metadata"]["finalizers"].is_null());
    assert!(
        fake.writes().iter().all(|r| r.path != fresh),
        "{:#?}",
        fake.writes()
    );
}

/// Reconciles every object once, each read fresh from the fake (as the controller's store
/// would hand it over).
async fn reconcile_all(fake: &FakeApi, ctx: &Arc<ControllerContext>) {
    runtime::reconcile(
        Arc::new(read::<Broker>(fake, &sluice_path("brokers", "main"))),
        ctx.clone(),
    )
    .await
    .unwrap();
    runtime::reconcile(
        Arc::new(read::<Topic>(fake, &sluice_path("topics", "orders"))),
        ctx.clone(),
    )
    .await
    .unwrap();
    runtime::reconcile(
        Arc::new(read::<DeadLetterQueue>(
            fake,
            &sluice_path("deadletterqueues", "orders-dlq"),
        )),
        ctx.clone(),
    )
    .await
    .unwrap();
    runtime::reconcile(
        Arc::new(read::<ConsumerGroup>(
            fake,
            &sluice_path("consumergroups", "billing"),
        )),
        ctx.clone(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn idle_objects_cause_no_writes() {
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let (client, fake) = FakeApi::start();
    // A short resync, so the Broker's stream listing is renewed within the test.
    let ctx = context_with(client, &server.url(), Duration::from_secs(4));
    fake.put(
        &sluice_path("brokers", "main"),
        object("Broker", "main", "uid-broker", json!({"replicas": 1})),
    );
    fake.put(
        &sluice_path("topics", "orders"),
        object(
            "Topic",
            "orders",
            "uid-topic",
            json!({"broker": "main", "partitions": 3, "deletionPolicy": "Delete"}),
        ),
    );
    fake.put(
        &sluice_path("deadletterqueues", "orders-dlq"),
        object(
            "DeadLetterQueue",
            "orders-dlq",
            "uid-dlq",
            json!({"broker": "main", "alertThreshold": {"depth": 10}}),
        ),
    );
    fake.put(
        &sluice_path("consumergroups", "billing"),
        object(
            "ConsumerGroup",
            "billing",
            "uid-group",
            json!({
                "source": {"topic": "orders"},
                "deadLetter": {"queue": "orders-dlq"},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "pollInterval": "2s"},
                "template": {"spec": {"containers": [{"name": "worker", "image": "example/worker:1",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}},
            }),
        ),
    );
    // Settle: finalizers, provisioning, the first scale to minReplicas, status.
    for _ in 0..3 {
        reconcile_all(&fake, &ctx).await;
    }
    // Until its workers are available the group is not Ready.
    let group = fake.get(&sluice_path("consumergroups", "billing")).unwrap();
    assert_eq!(condition(&group, "Ready").0, "False", "{group}");
    assert_eq!(
        condition(&group, "Ready").1,
        "WorkersUnavailable",
        "{group}"
    );
    // The Deployment controller reports them available (the fake has none).
    let deployment = apps_path("deployments", "billing-workers");
    let mut d = fake.get(&deployment).expect("worker Deployment");
    d["status"] = json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True",
            "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."}]});
    fake.put(&deployment, d);
    reconcile_all(&fake, &ctx).await;
    let group = fake.get(&sluice_path("consumergroups", "billing")).unwrap();
    assert_eq!(condition(&group, "Ready").0, "True", "{group}");
    assert_eq!(condition(&group, "WorkersAvailable").0, "True", "{group}");
    assert!(
        group["status"]["autoscaling"]["lastScaleTime"].is_string(),
        "{group}"
    );
    let before: Vec<Value> = [
        sluice_path("brokers", "main"),
        sluice_path("topics", "orders"),
        sluice_path("deadletterqueues", "orders-dlq"),
        sluice_path("consumergroups", "billing"),
    ]
    .iter()
    .map(|p| fake.get(p).unwrap())
    .collect();

    // Idle: resyncs over a while (the wall clock moves on between them) write nothing.
    fake.clear_requests();
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        reconcile_all(&fake, &ctx).await;
    }
    let writes = fake.writes();
    assert!(
        writes.is_empty(),
        "an idle object causes no writes: {writes:#?}"
    );
    let after: Vec<Value> = [
        sluice_path("brokers", "main"),
        sluice_path("topics", "orders"),
        sluice_path("deadletterqueues", "orders-dlq"),
        sluice_path("consumergroups", "billing"),
    ]
    .iter()
    .map(|p| fake.get(p).unwrap())
    .collect();
    assert_eq!(before, after);

    // A real change is still written: a message makes the lag (and the Topic's counts) move.
    // The group reads its lag at once; the Topic's counts come from the Broker's stream
    // listing, which is renewed every half resync period.
    let nats = nats(&server.url()).await;
    let orders = ResourceRef::new(NS, "orders").unwrap();
    nats.jetstream()
        .publish(names::topic_subject(&orders, 0), "m".into())
        .await
        .unwrap()
        .await
        .unwrap();
    reconcile_all(&fake, &ctx).await;
    let status_writes = |fake: &FakeApi| -> Vec<String> {
        fake.writes()
            .into_iter()
            .filter(|r| r.path.ends_with("/status"))
            .map(|r| r.path)
            .collect()
    };
    assert!(
        status_writes(&fake).contains(&format!(
            "{}/status",
            sluice_path("consumergroups", "billing")
        )),
        "{:?}",
        status_writes(&fake)
    );
    let topic_status = format!("{}/status", sluice_path("topics", "orders"));
    wait_until(
        Duration::from_secs(60),
        "the Topic's new count written once the listing is renewed",
        async || {
            reconcile_all(&fake, &ctx).await;
            status_writes(&fake).contains(&topic_status)
        },
    )
    .await;
}

#[tokio::test]
async fn broker_routes_use_the_configured_cluster_domain() {
    let (client, fake) = FakeApi::start();
    let settings = Settings {
        cluster_domain: "corp.example".into(),
        ..Settings::default()
    };
    let ctx = Arc::new(ControllerContext::new(
        client,
        &settings,
        Arc::new(Metrics::default()),
    ));
    let path = sluice_path("brokers", "main");
    fake.put(
        &path,
        object("Broker", "main", "uid-broker", json!({"replicas": 3})),
    );
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx)
        .await
        .unwrap();
    let sts = fake
        .get(&apps_path("statefulsets", "main"))
        .unwrap()
        .to_string();
    assert!(
        sts.contains("main-2.main-headless.shop.svc.corp.example:6222"),
        "{sts}"
    );
    assert!(!sts.contains("cluster.local"), "{sts}");
}

#[tokio::test]
async fn streams_default_to_three_copies_on_a_three_server_broker() {
    let cluster = Cluster::start(3).await.unwrap();
    let urls = cluster.urls();
    let (client, fake) = FakeApi::start();
    let ctx = context(client, &urls);
    fake.put(
        &sluice_path("brokers", "main"),
        object("Broker", "main", "uid-broker", json!({"replicas": 3})),
    );
    let topic = sluice_path("topics", "orders");
    fake.put(
        &topic,
        object(
            "Topic",
            "orders",
            "uid-topic",
            json!({"broker": "main", "partitions": 2}),
        ),
    );
    let dlq = sluice_path("deadletterqueues", "orders-dlq");
    fake.put(
        &dlq,
        object(
            "DeadLetterQueue",
            "orders-dlq",
            "uid-dlq",
            json!({"broker": "main"}),
        ),
    );
    runtime::reconcile(Arc::new(read::<Topic>(&fake, &topic)), ctx.clone())
        .await
        .unwrap();
    runtime::reconcile(Arc::new(read::<DeadLetterQueue>(&fake, &dlq)), ctx.clone())
        .await
        .unwrap();
    let stored = fake.get(&topic).unwrap();
    assert_eq!(condition(&stored, "Ready").0, "True", "{stored}");
    assert_eq!(stored["status"]["replicas"], 3);
    assert_eq!(condition(&fake.get(&dlq).unwrap(), "Ready").0, "True");

    let nats = nats(&urls).await;
    let orders = ResourceRef::new(NS, "orders").unwrap();
    for p in 0..2 {
        let mut stream = nats
            .jetstream()
            .get_stream(names::topic_stream(&orders, p))
            .await
            .unwrap();
        assert_eq!(
            stream.info().await.unwrap().config.num_replicas,
            3,
            "partition {p}"
        );
    }
    let mut dead = nats
        .jetstream()
        .get_stream(names::dlq_stream(
            &ResourceRef::new(NS, "orders-dlq").unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(dead.info().await.unwrap().config.num_replicas, 3);
    drop(cluster);
}

#[tokio::test]
async fn changed_credentials_roll_the_broker_servers() {
    let (client, fake) = FakeApi::start();
    let ctx = context(client, "nats://127.0.0.1:1");
    let path = sluice_path("brokers", "main");
    fake.put(
        &path,
        object("Broker", "main", "uid-broker", json!({"replicas": 3})),
    );
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    let sts_path = apps_path("statefulsets", "main");
    let hash = |fake: &FakeApi| {
        fake.get(&sts_path).unwrap()["spec"]["template"]["metadata"]["annotations"]
            ["sluice.dev/credentials-hash"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = hash(&fake);

    // Unchanged: nothing is applied again.
    fake.clear_requests();
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    assert!(fake.writes().iter().all(|r| r.path != sts_path));
    assert_eq!(hash(&fake), first);

    // The Secret is re-created with other passwords: the pod template changes, so the
    // StatefulSet rolls its servers onto the new values.
    let secret_path = core_path("secrets", "main-credentials");
    let mut secret = fake.get(&secret_path).unwrap();
    secret["data"]["password"] = json!("b3RoZXJwYXNzd29yZG90aGVycGFzcw==");
    fake.put(&secret_path, secret);
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &path)), ctx.clone())
        .await
        .unwrap();
    assert_ne!(hash(&fake), first);
}

/// The Events the operator posted since the last `clear_requests`, as (type, reason).
fn posted_events(fake: &FakeApi) -> Vec<(String, String)> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .map(|e| {
            (
                e.body["type"].as_str().unwrap_or_default().to_string(),
                e.body["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_worker_deployment_follows_spec_edits_and_never_takes_over_a_users_object() {
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let (client, fake) = FakeApi::start();
    let ctx = context(client, &server.url());
    provisioned_topic(&fake, &ctx, json!({"broker": "main", "partitions": 4})).await;
    let path = sluice_path("consumergroups", "billing");
    let deployment_path = apps_path("deployments", "billing-workers");
    let template =
        json!({"spec": {"containers": [{"name": "worker", "image": "example/worker:1"}]}});
    let reconcile = || async {
        runtime::reconcile(Arc::new(read::<ConsumerGroup>(&fake, &path)), ctx.clone())
            .await
            .unwrap();
    };
    // A spec edit keeps the status the operator wrote.
    let edit_spec = |spec: Value| {
        let mut stored = fake.get(&path).unwrap();
        stored["spec"] = spec;
        stored["metadata"]["generation"] =
            json!(stored["metadata"]["generation"].as_i64().unwrap() + 1);
        fake.put(&path, stored);
    };

    // A user's Deployment already has the name: the operator refuses to take it over.
    fake.put(
        &deployment_path,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "billing-workers", "namespace": NS, "uid": "uid-users"},
               "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "theirs"}},
                        "template": {"metadata": {"labels": {"app": "theirs"}},
                                     "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}}}),
    );
    fake.put(
        &path,
        object(
            "ConsumerGroup",
            "billing",
            "uid-group",
            json!({"source": {"topic": "orders"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}, "template": template}),
        ),
    );
    reconcile().await; // finalizer
    fake.clear_requests();
    reconcile().await;
    assert!(
        fake.writes().iter().all(|r| r.path != deployment_path),
        "{:#?}",
        fake.writes()
    );
    assert_eq!(
        fake.get(&deployment_path).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"],
        "theirs:1"
    );
    let group = fake.get(&path).unwrap();
    assert_eq!(
        condition(&group, "Ready"),
        ("False".into(), "NameConflict".into())
    );
    let message = group["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("not created by the operator"), "{message}");

    // The user's object is removed: the operator creates its own (autoscaling: 2 workers).
    fake.remove(&deployment_path).unwrap();
    reconcile().await;
    let d = fake.get(&deployment_path).unwrap();
    assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "uid-group");
    assert_eq!(d["spec"]["replicas"], 2);
    let group = fake.get(&path).unwrap();
    assert_eq!(group["status"]["replicas"], 2);
    assert!(
        group["status"]["selector"]
            .as_str()
            .unwrap()
            .contains("sluice.dev/group=billing"),
        "{group}"
    );

    // Someone scales the Deployment by hand: a Warning says autoscaling owns the count.
    let mut scaled = fake.get(&deployment_path).unwrap();
    scaled["spec"]["replicas"] = json!(3);
    fake.put(&deployment_path, scaled);
    fake.clear_requests();
    reconcile().await;
    assert!(
        posted_events(&fake).contains(&("Warning".into(), "ScaledOutsideOperator".into())),
        "{:?}",
        posted_events(&fake)
    );

    // Autoscaling removed: the workers keep their count (no reset to 1).
    let running = fake.get(&deployment_path).unwrap()["spec"]["replicas"].clone();
    edit_spec(json!({"source": {"topic": "orders"}, "template": template}));
    reconcile().await;
    assert_eq!(
        fake.get(&deployment_path).unwrap()["spec"]["replicas"],
        running
    );

    // A fixed count (what `kubectl scale consumergroup` sets through the scale subresource).
    edit_spec(json!({"source": {"topic": "orders"}, "replicas": 6, "template": template}));
    reconcile().await;
    assert_eq!(fake.get(&deployment_path).unwrap()["spec"]["replicas"], 6);
    assert_eq!(fake.get(&path).unwrap()["status"]["replicas"], 6);

    // The template removed: the workers run elsewhere now, the Deployment goes.
    edit_spec(json!({"source": {"topic": "orders"}}));
    fake.clear_requests();
    reconcile().await;
    assert!(
        fake.get(&deployment_path).is_none(),
        "the Deployment is still there"
    );
    assert!(
        posted_events(&fake).contains(&("Normal".into(), "WorkersRemoved".into())),
        "{:?}",
        posted_events(&fake)
    );
    assert!(fake.get(&path).unwrap()["status"]["replicas"].is_null());
}

fn secret_value(secret: &Value, key: &str) -> String {
    let encoded: k8s_openapi::ByteString =
        serde_json::from_value(secret["data"][key].clone()).unwrap();
    String::from_utf8(encoded.0).unwrap()
}

#[tokio::test]
async fn group_and_producer_identities_are_made_listed_and_rotated() {
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let (client, fake) = FakeApi::start();
    let ctx = context(client, &server.url());
    provisioned_topic(
        &fake,
        &ctx,
        json!({"broker": "main", "partitions": 2, "producers": ["order-api"]}),
    )
    .await;
    let group_path = sluice_path("consumergroups", "billing");
    fake.put(
        &group_path,
        object(
            "ConsumerGroup",
            "billing",
            "uid-group",
            json!({
                "source": {"topic": "orders"},
                "outputs": {"topics": ["orders"]},
                "template": {"spec": {"containers": [{"name": "worker", "image": "example/worker:1"}]}},
            }),
        ),
    );
    runtime::reconcile(
        Arc::new(read::<ConsumerGroup>(&fake, &group_path)),
        ctx.clone(),
    )
    .await
    .unwrap();
    runtime::reconcile(
        Arc::new(read::<ConsumerGroup>(&fake, &group_path)),
        ctx.clone(),
    )
    .await
    .unwrap();

    // The group's Secret: owned by the group, its login injected into the workers.
    let identity_path = core_path("secrets", "billing-broker-identity");
    let identity = fake
        .get(&identity_path)
        .expect("the group's identity Secret");
    assert_eq!(
        identity["metadata"]["ownerReferences"][0]["uid"],
        "uid-group"
    );
    assert_eq!(
        secret_value(&identity, "SLUICE_BROKER_USER"),
        "g__shop__billing"
    );
    let first_password = secret_value(&identity, "SLUICE_BROKER_PASSWORD");
    let permissions = identity["metadata"]["annotations"]["sluice.dev/permissions"]
        .as_str()
        .unwrap();
    assert!(
        permissions.contains("sluice.t.shop.orders.*"),
        "{permissions}"
    );
    let deployment_path = apps_path("deployments", "billing-workers");
    let deployment = fake.get(&deployment_path).unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let password_env = env
        .iter()
        .find(|e| e["name"] == "SLUICE_BROKER_PASSWORD")
        .unwrap();
    assert_eq!(
        password_env["valueFrom"]["secretKeyRef"]["name"],
        "billing-broker-identity"
    );
    let first_hash =
        deployment["spec"]["template"]["metadata"]["annotations"]["sluice.dev/identity-hash"]
            .clone();
    assert!(first_hash.is_string());

    // The Broker lists the group (read by name) and the producer its Topic names.
    let broker_path = sluice_path("brokers", "main");
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &broker_path)), ctx.clone())
        .await
        .unwrap();
    let producer = fake
        .get(&core_path("secrets", "order-api-producer-identity"))
        .expect("the producer's identity Secret");
    assert_eq!(
        producer["metadata"]["ownerReferences"][0]["uid"],
        "uid-broker"
    );
    assert_eq!(
        secret_value(&producer, "SLUICE_BROKER_USER"),
        "p__shop__order-api"
    );
    assert_eq!(secret_value(&producer, "SLUICE_NAMESPACE"), NS);
    assert!(secret_value(&producer, "SLUICE_BROKER_URL").starts_with("nats://main-client.shop"));
    let users = secret_value(
        &fake.get(&core_path("secrets", "main-users")).unwrap(),
        "users.conf",
    );
    let group_hash = secret_value(&identity, "SLUICE_BROKER_PASSWORD_HASH");
    assert!(
        users.contains("g__shop__billing") && users.contains(&group_hash),
        "{users}"
    );
    assert!(users.contains("p__shop__order-api"), "{users}");
    assert!(
        !users.contains(&first_password),
        "no plain password in the users file"
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/secrets")),
        "Secrets are read by name, never listed"
    );

    // Rotation: the Secret is deleted; a new password, the workers roll, the users file follows.
    fake.remove(&identity_path);
    runtime::reconcile(
        Arc::new(read::<ConsumerGroup>(&fake, &group_path)),
        ctx.clone(),
    )
    .await
    .unwrap();
    let rotated = fake.get(&identity_path).expect("a new identity Secret");
    assert_ne!(
        secret_value(&rotated, "SLUICE_BROKER_PASSWORD"),
        first_password
    );
    let rolled = fake.get(&deployment_path).unwrap();
    assert_ne!(
        rolled["spec"]["template"]["metadata"]["annotations"]["sluice.dev/identity-hash"],
        first_hash,
        "the workers roll onto the new password"
    );
    runtime::reconcile(Arc::new(read::<Broker>(&fake, &broker_path)), ctx.clone())
        .await
        .unwrap();
    let users = secret_value(
        &fake.get(&core_path("secrets", "main-users")).unwrap(),
        "users.conf",
    );
    assert!(users.contains(&secret_value(&rotated, "SLUICE_BROKER_PASSWORD_HASH")));
    assert!(!users.contains(&group_hash), "the old password is gone");
}
