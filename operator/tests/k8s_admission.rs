//! Against a real API server (only when `KUBECONFIG` is set): what the operator would reject
//! later is rejected at admission, by the schema's patterns and CEL rules, with a message
//! naming the field. No controller runs: nothing here reaches the operator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use sluice_testkit::{TempNamespace, client_or_skip, install_crds};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "sluice.dev".into(),
        version: "v1alpha1".into(),
        api_version: "sluice.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

async fn create(
    client: &Client,
    ns: &str,
    kind: &str,
    plural: &str,
    name: &str,
    spec: Value,
) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(kind, plural));
    api.create(&PostParams::default(), &object(kind, name, spec))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Asserts the creation is refused and the message names `field` and says `why`.
async fn refused(
    client: &Client,
    ns: &str,
    kind: &str,
    plural: &str,
    spec: Value,
    field: &str,
    why: &str,
) {
    let err = create(client, ns, kind, plural, "bad", spec.clone())
        .await
        .expect_err(&format!("{kind} {spec} was admitted"));
    assert!(
        err.contains(field),
        "{kind} {spec}: the message does not name {field}: {err}"
    );
    assert!(
        err.contains(why),
        "{kind} {spec}: the message does not say {why:?}: {err}"
    );
}

#[tokio::test]
async fn k8s_admission_rejects_what_the_operator_would_reject() {
    let Some(client) = client_or_skip("k8s_admission_rejects_what_the_operator_would_reject").await
    else {
        return;
    };
    install_crds(&client, &sluice_operator::crdgen::all_crds()).await;
    let ns = TempNamespace::create(&client, "admission").await;
    let ns = ns.name.as_str();
    let c = &client;

    // 0s durations.
    refused(
        c,
        ns,
        "Topic",
        "topics",
        json!({"broker": "main", "partitions": 1, "retention": {"maxAge": "0s"}}),
        "spec.retention.maxAge",
        "must be longer than 0s",
    )
    .await;
    refused(
        c,
        ns,
        "Topic",
        "topics",
        json!({"broker": "main", "partitions": 1, "duplicateWindow": "0m"}),
        "spec.duplicateWindow",
        "must be longer than 0s",
    )
    .await;
    refused(
        c,
        ns,
        "Queue",
        "queues",
        json!({"broker": "main", "visibilityTimeout": "0s"}),
        "spec.visibilityTimeout",
        "must be longer than 0s",
    )
    .await;
    refused(
        c,
        ns,
        "Queue",
        "queues",
        json!({"broker": "main", "retention": {"maxAge": "0h0m"}}),
        "spec.retention.maxAge",
        "must be longer than 0s",
    )
    .await;
    refused(
        c,
        ns,
        "DeadLetterQueue",
        "deadletterqueues",
        json!({"broker": "main", "retention": {"maxAge": "0d"}}),
        "spec.retention.maxAge",
        "must be longer than 0s",
    )
    .await;
    refused(
        c,
        ns,
        "ConsumerGroup",
        "consumergroups",
        json!({"source": {"topic": "t"}, "ackWait": "0s"}),
        "spec.ackWait",
        "must be longer than 0s",
    )
    .await;
    refused(
        c,
        ns,
        "ConsumerGroup",
        "consumergroups",
        json!({"source": {"topic": "t"}, "autoscaling": {"maxReplicas": 2, "pollInterval": "0s"}}),
        "spec.autoscaling.pollInterval",
        "must be longer than 0s",
    )
    .await;
    // backoffDelay > backoffMax.
    refused(
        c,
        ns,
        "ConsumerGroup",
        "consumergroups",
        json!({"source": {"topic": "t"}, "retry": {"backoffDelay": "2m", "backoffMax": "30s"}}),
        "spec.retry.backoffMax",
        "retry.backoffDelay must not be longer than retry.backoffMax",
    )
    .await;
    // A fixed worker count and autoscaling at once.
    refused(
        c,
        ns,
        "ConsumerGroup",
        "consumergroups",
        json!({"source": {"topic": "t"}, "replicas": 2, "autoscaling": {"maxReplicas": 4}}),
        "spec",
        "set either replicas",
    )
    .await;
    // Negative or malformed quantities.
    for (spec, field) in [
        (
            json!({"replicas": 1, "storage": {"size": "-10Gi"}}),
            "spec.storage.size",
        ),
        (
            json!({"replicas": 1, "storage": {"size": "ten gigs"}}),
            "spec.storage.size",
        ),
        (
            json!({"replicas": 1, "jetstream": {"maxMemory": "-1Gi"}}),
            "spec.jetstream.maxMemory",
        ),
        (
            json!({"replicas": 1, "resources": {"limits": {"cpu": "lots"}}}),
            "spec.resources.limits.cpu",
        ),
    ] {
        refused(c, ns, "Broker", "brokers", spec, field, "should match").await;
    }

    // What is fine is admitted.
    create(c, ns, "Topic", "topics", "ok", json!({"broker": "main", "partitions": 1, "retention": {"maxAge": "0h30m"}, "duplicateWindow": "2m"})).await.unwrap();
    create(c, ns, "ConsumerGroup", "consumergroups", "ok", json!({"source": {"topic": "ok"}, "ackWait": "30s", "retry": {"backoffDelay": "1s", "backoffMax": "1d"}})).await.unwrap();
    // `kubectl scale consumergroup` goes through the scale subresource to spec.replicas.
    let groups: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), ns, &resource("ConsumerGroup", "consumergroups"));
    groups
        .patch_scale(
            "ok",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(groups.get("ok").await.unwrap().data["spec"]["replicas"], 3);
    create(c, ns, "Broker", "brokers", "ok", json!({"replicas": 1, "storage": {"size": "10Gi"}, "jetstream": {"maxMemory": "1Gi"}, "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}})).await.unwrap();
    create(
        c,
        ns,
        "Queue",
        "queues",
        "ok",
        json!({"broker": "main", "storage": "file"}),
    )
    .await
    .unwrap();

    // Changes that cannot be made in place.
    let patch = |kind: &str, plural: &str, name: &str, spec: Value| {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &resource(kind, plural));
        let name = name.to_string();
        async move {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string())
        }
    };
    for (kind, plural) in [("Topic", "topics"), ("Queue", "queues")] {
        let err = patch(kind, plural, "ok", json!({"storage": "memory"}))
            .await
            .unwrap_err();
        assert!(
            err.contains("spec.storage") && err.contains("storage cannot be changed"),
            "{kind}: {err}"
        );
    }
    // Unset means file: spelling the default out is no change.
    patch("Topic", "topics", "ok", json!({"storage": "file"}))
        .await
        .unwrap();
    let err = patch(
        "Broker",
        "brokers",
        "ok",
        json!({"storage": {"size": "20Gi"}}),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("spec.storage") && err.contains("storage cannot be changed"),
        "{err}"
    );
    let err = patch("Broker", "brokers", "ok", json!({"replicas": 3}))
        .await
        .unwrap_err();
    assert!(
        err.contains("spec.replicas") && err.contains("standalone"),
        "{err}"
    );
    // A cluster may grow, never shrink.
    create(
        c,
        ns,
        "Broker",
        "brokers",
        "cluster",
        json!({"replicas": 3}),
    )
    .await
    .unwrap();
    patch("Broker", "brokers", "cluster", json!({"replicas": 5}))
        .await
        .unwrap();
    let err = patch("Broker", "brokers", "cluster", json!({"replicas": 3}))
        .await
        .unwrap_err();
    assert!(
        err.contains("spec.replicas") && err.contains("cannot decrease"),
        "{err}"
    );
}
