//! Scoped broker identities against a real nats-server running the generated users file and
//! system account: a group's workers do their whole job (topic group with membership, leases,
//! outputs and a DLQ; exactly-once queue group with its idempotency store) with their own
//! credentials, and every forbidden action is refused by the server; a producer publishes to
//! its topics and nothing else; users are added and rotated by rewriting the users file and
//! asking the servers to reload (`$SYS.REQ.SERVER.<id>.RELOAD`), without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv};
use sluice_broker::config::{Delivery, DlqSettings, GroupOutputs, QueueSettings, TopicSettings};
use sluice_broker::embedded::{NatsServer, ServerOptions};
use sluice_broker::identity::{
    Permissions, group_permissions, producer_permissions, reload_servers,
};
use sluice_broker::{Broker, ConnectOptions, GroupConfig, ResourceRef, names};
use sluice_operator::broker_cluster::users::{
    ClientUser, SYSTEM_USERNAME, admin_user, hash_password_with_cost, system_account, users_conf,
};
use sluice_testkit::nats::{NS, queue_group, topic_group};
use sluice_testkit::wait::wait_until;
use sluice_worker::producer::{Producer, ProducerConfig, Record};
use sluice_worker::{HandlerError, Worker, WorkerOptions};

const ADMIN_PW: &str = "adPassword0123456789";
const SYSTEM_PW: &str = "syPassword0123456789";
const LONG: Duration = Duration::from_secs(90);

/// A server whose `authorization` block includes `users.conf` from its directory.
async fn start_server(dir: &Path) -> NatsServer {
    write_users(dir, &[]);
    NatsServer::start(ServerOptions {
        dir: Some(dir.to_path_buf()),
        credentials: Some(("admin".into(), ADMIN_PW.into())),
        authorization: Some("  include \"users.conf\"".into()),
        extra_config: Some(system_account(&format!("\"{SYSTEM_PW}\""))),
        ..ServerOptions::default()
    })
    .await
    .unwrap()
}

fn write_users(dir: &Path, clients: &[ClientUser]) {
    let text = users_conf(&[admin_user("admin", ADMIN_PW)], clients).unwrap();
    std::fs::write(dir.join("users.conf"), text).unwrap();
}

/// Rewrites the users file and has the server reload it through the system account.
async fn apply_users(server: &NatsServer, clients: &[ClientUser]) {
    write_users(server.dir(), clients);
    let system = async_nats::ConnectOptions::with_user_and_password(
        SYSTEM_USERNAME.into(),
        SYSTEM_PW.into(),
    )
    .connect(server.url())
    .await
    .unwrap();
    let reloaded = reload_servers(&system, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reloaded.len(), 1);
}

fn client_user(user: &str, password: &str, permissions: Permissions) -> ClientUser {
    ClientUser {
        user: user.into(),
        password_hash: hash_password_with_cost(password, 4).unwrap(),
        permissions,
    }
}

fn options(url: &str, user: &str, password: &str) -> ConnectOptions {
    let mut o = ConnectOptions::from_url_list(url);
    o.set_credentials(Some(user.into()), Some(password.into()), None);
    o.request_timeout = Duration::from_secs(2);
    o
}

/// A connection as `user` that records the server's errors (permission violations).
async fn login(
    url: &str,
    user: &str,
    password: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let client = options(url, user, password)
        .to_nats_options()
        .expect("nats options")
        .max_reconnects(Some(0))
        .event_callback(move |event| {
            let sink = sink.clone();
            async move { sink.lock().unwrap().push(event.to_string()) }
        })
        .connect(url)
        .await
        .unwrap();
    (client, events)
}

/// Waits until the server reported a permissions violation naming `subject`.
async fn violation(events: &Arc<Mutex<Vec<String>>>, subject: &str) {
    wait_until(
        LONG,
        &format!("a permissions violation for {subject}"),
        async || {
            events
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject))
        },
    )
    .await;
}

async fn stream_messages(admin: &Broker, stream: &str) -> u64 {
    match admin.jetstream().get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

fn r(name: &str) -> ResourceRef {
    ResourceRef::new(NS, name).unwrap()
}

struct Setup {
    billing: GroupConfig,
    other: GroupConfig,
    mailers: GroupConfig,
    topics: BTreeMap<String, u32>,
}

/// billing reads `orders` (2 partitions), dead-letters to `billing-dlq` and outputs to the
/// queue `emails`; mailers reads `emails` exactly once; other reads `other` (its DLQ
/// `other-dlq`).
async fn provision(admin: &Broker) -> Setup {
    for (topic, partitions) in [("orders", 2), ("other", 1)] {
        let settings = TopicSettings {
            partitions,
            ..Default::default()
        };
        admin.ensure_topic(&r(topic), &settings).await.unwrap();
    }
    admin
        .ensure_queue(&r("emails"), &QueueSettings::default())
        .await
        .unwrap();
    for dlq in ["billing-dlq", "other-dlq"] {
        admin
            .ensure_dlq(&r(dlq), &DlqSettings::default())
            .await
            .unwrap();
    }
    let mut billing = topic_group("orders", "billing", 2);
    billing.dead_letter = Some("billing-dlq".into());
    billing.retry.max_attempts = 1;
    billing.outputs = GroupOutputs {
        topics: vec![],
        queues: vec!["emails".into()],
        buckets: vec!["BILLING_RESULTS".into()],
    };
    let mut other = topic_group("other", "other", 1);
    other.dead_letter = Some("other-dlq".into());
    let mut mailers = queue_group("emails", "mailers");
    mailers.delivery = Delivery::ExactlyOnce;
    for cfg in [&billing, &other, &mailers] {
        admin.ensure_group(cfg).await.unwrap();
    }
    let topics = BTreeMap::from([("orders".to_string(), 2), ("other".to_string(), 1)]);
    Setup {
        billing,
        other,
        mailers,
        topics,
    }
}

fn group_identity(cfg: &GroupConfig, topics: &BTreeMap<String, u32>, password: &str) -> ClientUser {
    let user = names::group_user(&cfg.group_ref().unwrap());
    client_user(&user, password, group_permissions(cfg, topics).unwrap())
}

fn worker(url: &str, cfg: &GroupConfig, password: &str, member: &str) -> Worker {
    let mut o = WorkerOptions::new(url, NS, cfg.group.clone(), member);
    o.connect.set_credentials(
        Some(names::group_user(&cfg.group_ref().unwrap())),
        Some(password.into()),
        None,
    );
    o.config_timeout = LONG;
    o.drain_timeout = Duration::from_secs(5);
    Worker::new(o).handle_signals(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scoped_identities_do_their_work_and_nothing_else() {
    sluice_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let url = server.url();
    let admin = Broker::connect(&options(&url, "admin", ADMIN_PW))
        .await
        .unwrap();
    let setup = provision(&admin).await;

    let (billing_pw, other_pw, mailers_pw, producer_pw) = (
        "biPassword0123456789",
        "otPassword0123456789",
        "maPassword0123456789",
        "prPassword0123456789",
    );
    let producer_ref = r("order-api");
    let producer_topics = BTreeMap::from([("orders".to_string(), 2)]);
    let mut clients = vec![
        group_identity(&setup.billing, &setup.topics, billing_pw),
        group_identity(&setup.other, &setup.topics, other_pw),
        group_identity(&setup.mailers, &setup.topics, mailers_pw),
        client_user(
            &names::producer_user(&producer_ref),
            producer_pw,
            producer_permissions(&producer_ref, &producer_topics, &[]).unwrap(),
        ),
    ];
    apply_users(&server, &clients).await;

    // Own work succeeds: a real topic worker (membership, leases, config, outputs, DLQ) and a
    // real exactly-once queue worker (idempotency store), fed by the producer identity.
    let billing_worker = worker(&url, &setup.billing, billing_pw, "billing-0");
    let billing_stop = billing_worker.shutdown_handle();
    let billing_run = tokio::spawn(billing_worker.run(|msg, ctx| async move {
        if msg.payload.as_ref() == b"poison" {
            return Err(HandlerError::permanent("poison message"));
        }
        ctx.queue("emails")
            .send(msg.payload)
            .await
            .map_err(HandlerError::retryable)?;
        Ok(())
    }));
    let mailed = Arc::new(AtomicUsize::new(0));
    let mailers_worker = worker(&url, &setup.mailers, mailers_pw, "mailers-0");
    let mailers_stop = mailers_worker.shutdown_handle();
    let counter = mailed.clone();
    let mailers_run = tokio::spawn(mailers_worker.run(move |_msg, _ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, AtomicOrdering::SeqCst);
            Ok::<(), HandlerError>(())
        }
    }));

    let producer_broker = Broker::connect(&options(
        &url,
        &names::producer_user(&producer_ref),
        producer_pw,
    ))
    .await
    .unwrap();
    let producer = Producer::new(producer_broker.clone(), ProducerConfig::default()).unwrap();
    let orders = producer.topic(NS, "orders").await.unwrap();
    for i in 0..10 {
        orders
            .publish(Record::new(format!("order-{i}")).key(format!("customer-{i}")))
            .await
            .unwrap();
    }
    orders
        .publish(Record::new("poison").key("customer-x"))
        .await
        .unwrap();

    let emails_stream = names::queue_stream(&r("emails"));
    let billing_dlq = names::dlq_stream(&r("billing-dlq"));
    wait_until(LONG, "10 mails handled by mailers", async || {
        mailed.load(AtomicOrdering::SeqCst) >= 10
    })
    .await;
    wait_until(LONG, "the poison order in billing's DLQ", async || {
        stream_messages(&admin, &billing_dlq).await == 1
    })
    .await;
    assert_eq!(mailed.load(AtomicOrdering::SeqCst), 10);
    let members = admin
        .jetstream()
        .get_key_value(names::MEMBERS_BUCKET)
        .await
        .unwrap();
    assert!(
        members
            .get("default.billing.billing-0")
            .await
            .unwrap()
            .is_some(),
        "billing's heartbeat is in the members bucket"
    );

    // Its declared application bucket (outputs.buckets): created, written and read on its
    // own login, as the examples' workers record their effects.
    let (own_client, _) = login(&url, "g__default__billing", billing_pw).await;
    let own_js = jetstream::new(own_client);
    let results = own_js
        .create_key_value(kv::Config {
            bucket: "BILLING_RESULTS".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    results.create("order-1", "done".into()).await.unwrap();
    let stored = own_js
        .get_key_value("BILLING_RESULTS")
        .await
        .unwrap()
        .get("order-1")
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(b"done".as_ref()));

    // All of that without a single refused subject.
    let log = server.log();
    assert!(
        !log.contains("Permissions Violation"),
        "own work was refused somewhere:\n{log}"
    );

    // The producer publishes to its topic and nothing else.
    assert!(
        producer.topic(NS, "other").await.is_err(),
        "discovering another topic"
    );
    assert!(
        producer.queue(NS, "emails").await.is_err(),
        "looking up a queue"
    );
    let (spy, spy_events) = login(&url, &names::producer_user(&producer_ref), producer_pw).await;
    let spy_js = jetstream::new(spy.clone());
    assert!(
        spy_js
            .publish("sluice.t.default.other.0", "x".into())
            .await
            .unwrap()
            .await
            .is_err()
    );
    violation(&spy_events, "sluice.t.default.other.0").await;
    assert!(
        spy_js
            .publish("sluice.q.default.emails", "x".into())
            .await
            .unwrap()
            .await
            .is_err()
    );
    violation(&spy_events, "sluice.q.default.emails").await;
    let _sub = spy.subscribe("sluice.t.default.orders.>").await.unwrap();
    violation(&spy_events, "sluice.t.default.orders.>").await;

    // Forbidden actions of billing's workers, one by one.
    let (attacker, events) = login(&url, "g__default__billing", billing_pw).await;
    let js = jetstream::new(attacker.clone());
    let other_stream = names::topic_stream(&r("other"), 0);
    let own_stream = names::topic_stream(&r("orders"), 0);

    // Delete another group's consumer.
    assert!(
        js.delete_consumer_from_stream("G__other", &other_stream)
            .await
            .is_err()
    );
    violation(
        &events,
        &format!("$JS.API.CONSUMER.DELETE.{other_stream}.G__other"),
    )
    .await;
    assert!(
        admin
            .jetstream()
            .get_consumer_from_stream::<pull::Config, _, _>("G__other", &other_stream)
            .await
            .is_ok()
    );
    // Its own consumer too: consumers are the operator's.
    assert!(
        js.delete_consumer_from_stream("G__billing", &own_stream)
            .await
            .is_err()
    );

    // Update a stream (max_messages 1 would be a purge).
    let mut config = admin
        .jetstream()
        .get_stream(&own_stream)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.max_messages = 1;
    assert!(js.update_stream(&config).await.is_err());
    violation(&events, &format!("$JS.API.STREAM.UPDATE.{own_stream}")).await;

    // Delete a message of its own source.
    let before = stream_messages(&admin, &own_stream).await;
    assert!(before > 0);
    let own = js.get_stream(&own_stream).await.unwrap();
    assert!(own.delete_message(1).await.is_err());
    violation(&events, &format!("$JS.API.STREAM.MSG.DELETE.{own_stream}")).await;
    assert_eq!(stream_messages(&admin, &own_stream).await, before);

    // Write another group's config (and its own: the operator's job).
    for key in ["default.other", "default.billing"] {
        let subject = format!("$KV.{}.{key}", names::GROUP_CONFIG_BUCKET);
        assert!(
            js.publish(subject.clone(), "{}".into())
                .await
                .unwrap()
                .await
                .is_err()
        );
        violation(&events, &subject).await;
    }

    // Forge another group's lease and member key.
    for subject in [
        format!("$KV.{}.default.other.0", names::LEASES_BUCKET),
        format!("$KV.{}.default.other.intruder", names::MEMBERS_BUCKET),
    ] {
        assert!(
            js.publish(subject.clone(), "billing-0".into())
                .await
                .unwrap()
                .await
                .is_err()
        );
        violation(&events, &subject).await;
    }

    // Read another topic: no consumer, no direct get, no core subscription.
    let spy_consumer = pull::Config {
        durable_name: Some("spy".into()),
        ..Default::default()
    };
    assert!(
        js.create_consumer_on_stream(spy_consumer.clone(), &other_stream)
            .await
            .is_err()
    );
    violation(&events, &format!("$JS.API.CONSUMER.CREATE.{other_stream}")).await;
    let direct = format!("$JS.API.DIRECT.GET.{other_stream}");
    assert!(
        attacker
            .request(direct.clone(), r#"{"seq":1}"#.into())
            .await
            .is_err()
    );
    violation(&events, &direct).await;
    let _topic_sub = attacker
        .subscribe("sluice.t.default.other.>")
        .await
        .unwrap();
    violation(&events, "sluice.t.default.other.>").await;

    // Subscribe to (or consume) another group's DLQ.
    let _dlq_sub = attacker
        .subscribe("sluice.dlq.default.other-dlq")
        .await
        .unwrap();
    violation(&events, "sluice.dlq.default.other-dlq").await;
    let other_dlq = names::dlq_stream(&r("other-dlq"));
    assert!(
        js.create_consumer_on_stream(spy_consumer, &other_dlq)
            .await
            .is_err()
    );

    // Create (or write) an application bucket it did not declare.
    assert!(
        js.create_key_value(kv::Config {
            bucket: "OTHER_RESULTS".into(),
            ..Default::default()
        })
        .await
        .is_err()
    );
    violation(&events, "$JS.API.STREAM.CREATE.KV_OTHER_RESULTS").await;

    // Read other clients' replies and deliveries.
    let _inbox_sub = attacker.subscribe("_INBOX.>").await.unwrap();
    violation(&events, "_INBOX.>").await;

    billing_stop.shutdown();
    mailers_stop.shutdown();
    billing_run.await.unwrap().unwrap();
    mailers_run.await.unwrap().unwrap();
    assert_eq!(
        stream_messages(&admin, &emails_stream).await,
        0,
        "mailers consumed every mail"
    );

    // Rotation (the workers roll onto the new Secret): a new password replaces the old one
    // on reload, and connections still logged in with the old one are closed.
    let new_pw = "biNewPassword0123456789";
    clients[0] = group_identity(&setup.billing, &setup.topics, new_pw);
    apply_users(&server, &clients).await;
    assert!(
        Broker::connect(&options(&url, "g__default__billing", billing_pw))
            .await
            .is_err()
    );
    Broker::connect(&options(&url, "g__default__billing", new_pw))
        .await
        .unwrap();
    wait_until(LONG, "the old password's connection closed", async || {
        attacker.connection_state() != async_nats::connection::State::Connected
    })
    .await;
}
