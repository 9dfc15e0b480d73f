//! Controller flows: the kube-free reconcile core against a real nats-server, with the
//! referenced objects held in memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::{Broker as Nats, ConnectOptions, ResourceRef, names};
use sluice_operator::controller::conditions::{
    self, ALERT, BROKER_UNAVAILABLE, INVALID_SPEC, READY,
};
use sluice_operator::controller::context::{BrokerPool, Lookup, MemoryObjects, ReconcileContext};
use sluice_operator::controller::{Requeue, dlq, group, queue, topic};
use sluice_operator::crd::{Broker, ConsumerGroup, DeadLetterQueue, Queue, Topic};

const NS: &str = "shop";
const RESYNC: Duration = Duration::from_secs(30);

fn obj<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    let mut v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    v["metadata"]["namespace"] = NS.into();
    v["metadata"]["generation"] = 1.into();
    v["metadata"]["uid"] = "uid-1".into();
    serde_yaml::from_value(v).unwrap()
}

struct Fixture {
    _server: NatsServer,
    nats: Nats,
    objects: Arc<MemoryObjects>,
    env: ReconcileContext,
}

async fn fixture() -> Fixture {
    let server = NatsServer::start(ServerOptions::default()).await.unwrap();
    let nats = Nats::connect(&ConnectOptions::from_url_list(&server.url()))
        .await
        .unwrap();
    let objects = Arc::new(MemoryObjects::default());
    objects.put::<Broker>(obj("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n"));
    let env = ReconcileContext {
        lookup: Lookup::Memory(objects.clone()),
        pool: Arc::new(BrokerPool::new(BTreeMap::from([(
            "main".to_string(),
            server.url(),
        )]))),
        relays: Arc::default(),
    };
    Fixture {
        _server: server,
        nats,
        objects,
        env,
    }
}

async fn stream_exists(nats: &Nats, name: &str) -> bool {
    nats.jetstream().get_stream(name).await.is_ok()
}

fn with_status(mut t: Topic, s: sluice_operator::crd::TopicStatus) -> Topic {
    t.status = Some(s);
    t
}

#[tokio::test]
async fn topic_is_provisioned_recreated_and_deleted_by_policy() {
    let f = fixture().await;
    let t: Topic = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {broker: main, partitions: 3, deletionPolicy: Delete}\n",
    );
    let out = topic::reconcile(&f.env, &t, RESYNC).await;
    assert!(
        conditions::is_true(&out.status.conditions, READY),
        "{:?}",
        out.status.conditions
    );
    assert_eq!(out.requeue, Requeue::After(RESYNC));
    assert_eq!(out.status.partitions.len(), 3);
    assert_eq!(out.status.observed_generation, Some(1));
    let orders = ResourceRef::new(NS, "orders").unwrap();
    for p in 0..3 {
        assert!(stream_exists(&f.nats, &names::topic_stream(&orders, p)).await);
    }

    // Deleted behind the operator's back: the next resync re-creates it and warns.
    f.nats
        .jetstream()
        .delete_stream(names::topic_stream(&orders, 1))
        .await
        .unwrap();
    let t = with_status(t, out.status);
    let out = topic::reconcile(&f.env, &t, RESYNC).await;
    assert!(conditions::is_true(&out.status.conditions, READY));
    assert!(stream_exists(&f.nats, &names::topic_stream(&orders, 1)).await);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].reason, "Recreated");

    // Messages are counted in status.
    f.nats
        .client()
        .publish(names::topic_subject(&orders, 0), "x".into())
        .await
        .unwrap();
    f.nats.client().flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = topic::reconcile(&f.env, &t, RESYNC).await;
        if out.status.messages == Some(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    topic::cleanup(&f.env, &t).await.unwrap();
    for p in 0..3 {
        assert!(!stream_exists(&f.nats, &names::topic_stream(&orders, p)).await);
    }
}

#[tokio::test]
async fn retain_policy_keeps_streams_and_missing_broker_lets_go() {
    let f = fixture().await;
    let t: Topic = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: audit}\nspec: {broker: main, partitions: 1}\n",
    );
    assert!(conditions::is_true(
        &topic::reconcile(&f.env, &t, RESYNC).await.status.conditions,
        READY
    ));
    topic::cleanup(&f.env, &t).await.unwrap();
    let audit = ResourceRef::new(NS, "audit").unwrap();
    assert!(stream_exists(&f.nats, &names::topic_stream(&audit, 0)).await);

    // With Delete but the Broker resource gone, cleanup lets go instead of hanging.
    let mut t = t;
    t.spec.deletion_policy = Some(sluice_operator::crd::DeletionPolicy::Delete);
    f.objects.remove::<Broker>(NS, "main");
    topic::cleanup(&f.env, &t).await.unwrap();
    assert!(stream_exists(&f.nats, &names::topic_stream(&audit, 0)).await);
}

#[tokio::test]
async fn invalid_specs_wait_for_a_change_and_missing_brokers_retry() {
    let f = fixture().await;
    let t: Topic = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: bad}\nspec: {broker: main, partitions: 2, replicas: 3}\n",
    );
    let out = topic::reconcile(&f.env, &t, RESYNC).await;
    assert_eq!(out.requeue, Requeue::AwaitChange);
    assert!(conditions::is_true(&out.status.conditions, INVALID_SPEC));
    let ready = conditions::get(&out.status.conditions, READY).unwrap();
    assert!(
        ready.message.contains("Broker main has 1"),
        "{}",
        ready.message
    );

    let t: Topic = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orphan}\nspec: {broker: nope, partitions: 1}\n",
    );
    let out = topic::reconcile(&f.env, &t, RESYNC).await;
    assert_eq!(
        conditions::get(&out.status.conditions, READY)
            .unwrap()
            .reason,
        "BrokerNotFound"
    );
    assert_eq!(out.requeue, Requeue::Missing);
}

#[tokio::test]
async fn unreachable_broker_is_reported_and_backs_off() {
    let f = fixture().await;
    let port = sluice_broker::embedded::free_port().unwrap();
    let env = ReconcileContext {
        lookup: f.env.lookup.clone(),
        pool: Arc::new(BrokerPool::new(BTreeMap::from([(
            "main".to_string(),
            format!("nats://127.0.0.1:{port}"),
        )]))),
        relays: Arc::default(),
    };
    let d: DeadLetterQueue = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: DeadLetterQueue\nmetadata: {name: dlq}\nspec: {broker: main}\n",
    );
    let out = dlq::reconcile(&env, &d, RESYNC).await;
    assert_eq!(out.requeue, Requeue::Backoff);
    assert!(
        conditions::is_true(&out.status.conditions, BROKER_UNAVAILABLE),
        "{:?}",
        out.status.conditions
    );
}

#[tokio::test]
async fn queue_group_and_dlq_pipeline() {
    let f = fixture().await;
    let t: Topic = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {broker: main, partitions: 2}\n",
    );
    f.objects.put(t.clone());
    assert!(conditions::is_true(
        &topic::reconcile(&f.env, &t, RESYNC).await.status.conditions,
        READY
    ));

    let q: Queue = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: Queue\nmetadata: {name: emails}\nspec: {broker: main, visibilityTimeout: 1m, sources: [{topic: orders}]}\n",
    );
    f.objects.put(q.clone());
    let out = queue::reconcile(&f.env, &q, RESYNC).await;
    assert!(
        conditions::is_true(&out.status.conditions, READY),
        "{:?}",
        out.status.conditions
    );
    // The REPLICAS column shows the copies in effect, also when spec.replicas is unset.
    assert_eq!(out.status.replicas, Some(1));
    let emails = ResourceRef::new(NS, "emails").unwrap();
    assert!(stream_exists(&f.nats, &names::queue_stream(&emails)).await);

    let d: DeadLetterQueue = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: DeadLetterQueue\nmetadata: {name: dead}\nspec: {broker: main, alertThreshold: {depth: 1}}\n",
    );
    f.objects.put(d.clone());
    let out = dlq::reconcile(&f.env, &d, RESYNC).await;
    assert!(conditions::is_true(&out.status.conditions, READY));
    assert!(!conditions::is_true(&out.status.conditions, ALERT));
    assert_eq!(out.status.depth, Some(0));

    // A dead letter over the threshold raises the condition and one Warning Event.
    let dead = ResourceRef::new(NS, "dead").unwrap();
    f.nats
        .jetstream()
        .publish(names::dlq_subject(&dead), "poison".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut d = d;
    let out = dlq::reconcile(&f.env, &d, RESYNC).await;
    assert_eq!(out.status.depth, Some(1));
    assert!(conditions::is_true(&out.status.conditions, ALERT));
    assert_eq!(out.events.len(), 1);
    d.status = Some(out.status);
    assert!(
        dlq::reconcile(&f.env, &d, RESYNC).await.events.is_empty(),
        "event only on transition"
    );

    // A group on the queue with a worker template: consumers, config, Deployment.
    let g: ConsumerGroup = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: mailer}\nspec:\n  source: {queue: emails}\n  deadLetter: {queue: dead}\n  autoscaling: {minReplicas: 2, maxReplicas: 4}\n  template:\n    spec:\n      containers: [{name: w, image: mailer:1}]\n",
    );
    let out = group::reconcile(&f.env, &g, RESYNC).await;
    assert!(
        conditions::is_true(&out.outcome.status.conditions, READY),
        "{:?}",
        out.outcome.status.conditions
    );
    assert_eq!(out.outcome.status.source.as_deref(), Some("queue/emails"));
    let dep = out.deployment.unwrap();
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.template.spec.unwrap().termination_grace_period_seconds,
        Some(70)
    );
    let store = f.nats.group_config_store().await.unwrap();
    let cfg = store
        .get(NS, "mailer")
        .await
        .unwrap()
        .expect("config published");
    assert_eq!(cfg.ack_wait_ms, 60_000);
    assert_eq!(cfg.dead_letter.as_deref(), Some("dead"));

    group::cleanup(&f.env, &g).await.unwrap();
    assert!(store.get(NS, "mailer").await.unwrap().is_none());

    // A group naming a missing dead-letter queue waits for it.
    let g: ConsumerGroup = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: billing}\nspec: {source: {topic: orders}, deadLetter: {queue: nope}}\n",
    );
    let out = group::reconcile(&f.env, &g, RESYNC).await;
    assert_eq!(
        conditions::get(&out.outcome.status.conditions, READY)
            .unwrap()
            .reason,
        "DeadLetterQueueNotFound"
    );
}

/// A namespace deletion removes the Topic and the Broker before the group's cleanup runs:
/// the group still finds its consumers through the Broker recorded in its status and the
/// connection the operator has open, and counts the partitions on the server.
#[tokio::test]
async fn group_cleanup_does_not_depend_on_deletion_order() {
    let f = fixture().await;
    let t: Topic = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {broker: main, partitions: 3}\n",
    );
    assert!(conditions::is_true(
        &topic::reconcile(&f.env, &t, RESYNC).await.status.conditions,
        READY
    ));
    f.objects.put(t);
    let mut g: ConsumerGroup = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: billing}\nspec: {source: {topic: orders}}\n",
    );
    let out = group::reconcile(&f.env, &g, RESYNC).await;
    assert!(conditions::is_true(&out.outcome.status.conditions, READY));
    assert_eq!(out.outcome.status.broker.as_deref(), Some("main"));
    g.status = Some(out.outcome.status);

    let orders = ResourceRef::new(NS, "orders").unwrap();
    let durable = names::group_consumer(&ResourceRef::new(NS, "billing").unwrap());
    let consumers_left = || async {
        let mut left = 0;
        for p in 0..3 {
            let stream = f
                .nats
                .jetstream()
                .get_stream(names::topic_stream(&orders, p))
                .await
                .unwrap();
            if stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&durable)
                .await
                .is_ok()
            {
                left += 1;
            }
        }
        left
    };
    assert_eq!(consumers_left().await, 3);

    // Topic (Retain: its streams stay) and Broker go first.
    f.objects.remove::<Topic>(NS, "orders");
    f.objects.remove::<Broker>(NS, "main");
    group::cleanup(&f.env, &g).await.unwrap();
    assert_eq!(
        consumers_left().await,
        0,
        "no consumer of the group is left"
    );
    let store = f.nats.group_config_store().await.unwrap();
    assert!(store.get(NS, "billing").await.unwrap().is_none());

    // A group that was never provisioned and whose source is gone lets go at once.
    let never: ConsumerGroup = obj(
        "apiVersion: sluice.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: never}\nspec: {source: {topic: orders}}\n",
    );
    group::cleanup(&f.env, &never).await.unwrap();
}

/// `total_connections` (every client connection the server has accepted) from `/varz`.
async fn total_connections(monitor_port: u16) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", monitor_port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /varz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &response[i + 4..])
        .unwrap();
    let varz: serde_json::Value = serde_json::from_slice(body).unwrap();
    varz["total_connections"].as_u64().unwrap()
}

#[tokio::test]
async fn reconciles_at_once_share_one_broker_connection() {
    // An operator restart reconciles every object at once: they must wait for one connect
    // instead of each opening (and then dropping) a connection of its own.
    let monitor_port = sluice_broker::embedded::free_port().unwrap();
    let server = NatsServer::start(ServerOptions {
        monitor_port: Some(monitor_port),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let objects = Arc::new(MemoryObjects::default());
    objects.put::<Broker>(obj("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n"));
    let env = ReconcileContext {
        lookup: Lookup::Memory(objects.clone()),
        pool: Arc::new(BrokerPool::new(BTreeMap::from([(
            "main".to_string(),
            server.url(),
        )]))),
        relays: Arc::default(),
    };
    let before = total_connections(monitor_port).await;
    let reconciles = (0..24).map(|i| {
        let t: Topic = obj(&format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {{name: t{i}}}\nspec: {{broker: main, partitions: 1}}\n"
        ));
        let env = env.clone();
        tokio::spawn(async move { topic::reconcile(&env, &t, RESYNC).await })
    });
    for out in futures::future::join_all(reconciles).await {
        let out = out.unwrap();
        assert!(
            conditions::is_true(&out.status.conditions, READY),
            "{:?}",
            out.status.conditions
        );
    }
    let after = total_connections(monitor_port).await;
    assert_eq!(
        after - before,
        1,
        "24 concurrent reconciles opened {} connections",
        after - before
    );
    assert_eq!(env.pool.open_connections().await, 1);
}
