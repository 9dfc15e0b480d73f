//! TLS with the certificates the operator generates, against real nats-servers:
//! - the generated nats.conf (TLS on, files from the generated `<name>-tls` Secret) serves
//!   only TLS: the broker client with the generated CA connects, a plain client, a TLS client
//!   trusting only the system roots and one trusting another Broker's CA are refused;
//! - a 3-server cluster (testkit's loopback cluster, routes with mutually verified TLS and the
//!   generated server certificate) forms its routes, keeps an R3 stream, and the worker SDK
//!   (a producer and a group member) works through it with the generated CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_broker::config::TopicSettings;
use sluice_broker::embedded::{Cluster, ServerTls};
use sluice_broker::tls::TrustedCa;
use sluice_broker::{Broker, ConnectOptions, ResourceRef};
use sluice_operator::broker_cluster::users::{base_users_from_env, users_conf};
use sluice_operator::broker_cluster::{
    BrokerCluster, BrokerClusterParams, CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY, TlsMode, nats_conf,
    plan_tls,
};
use sluice_testkit::{Member, MemberSpec, NS, Records, ok_behaviour, topic_group, wait_until};
use sluice_worker::WorkerOptions;
use sluice_worker::producer::{Producer, ProducerConfig, Record};
use time::OffsetDateTime;
use tokio::process::Command;

const OPERATOR_PW: &str = "opPassword0123456789";
const WORKER_PW: &str = "wkPassword0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cluster(name: &str, replicas: u8) -> BrokerCluster {
    let mut p = BrokerClusterParams::new("test", name, replicas);
    p.max_memory_store = Some(64 << 20);
    assert_eq!(p.tls, TlsMode::Generated, "TLS is on by default");
    BrokerCluster::new(p).unwrap()
}

/// Writes the generated `<name>-tls` Secret's keys into `dir` (as the pod's mount would);
/// returns the CA bundle.
fn write_generated_tls(cluster: &BrokerCluster, dir: &Path) -> Vec<u8> {
    let writes = plan_tls(cluster, OffsetDateTime::now_utc(), None, None).unwrap();
    let data = writes.tls_secret.unwrap().data.unwrap();
    for key in [CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY] {
        std::fs::write(dir.join(key), &data[key].0).unwrap();
    }
    data[CA_CERT_KEY].0.clone()
}

fn server_tls(dir: &Path) -> ServerTls {
    ServerTls {
        cert_file: dir.join(TLS_CERT_KEY),
        key_file: dir.join(TLS_KEY_KEY),
        ca_file: dir.join(CA_CERT_KEY),
    }
}

fn options(url: &str, ca: Option<TrustedCa>) -> ConnectOptions {
    ConnectOptions {
        urls: vec![url.to_string()],
        user: Some("sluice-operator".into()),
        password: Some(OPERATOR_PW.into()),
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(3),
        ca,
        ..ConnectOptions::default()
    }
}

#[tokio::test]
async fn generated_config_serves_only_tls_verified_with_the_generated_ca() {
    let broker = cluster("main", 1);
    let dir = tempfile::tempdir().unwrap();
    let ca = write_generated_tls(&broker, dir.path());
    let (port, http) = (free_port(), free_port());
    let conf = nats_conf(&broker)
        .replace("port: 4222", &format!("port: {port}"))
        .replace("http_port: 8222", &format!("http_port: {http}"))
        .replace("\"/data\"", &format!("{:?}", dir.path().join("data")))
        .replace(
            "\"/var/run/nats/nats.pid\"",
            &format!("{:?}", dir.path().join("nats.pid")),
        )
        .replace("/etc/nats-tls", &dir.path().display().to_string())
        // The users Secret's in-pod include, moved next to the local config.
        .replace("../../etc/nats-users/users.conf", "users.conf");
    assert!(conf.contains("include \"users.conf\""), "{conf}");
    std::fs::write(
        dir.path().join("users.conf"),
        users_conf(&base_users_from_env(), &[]).unwrap(),
    )
    .unwrap();
    assert!(conf.contains("tls {"), "{conf}");
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, &conf).unwrap();
    let mut server = Command::new("nats-server")
        .arg("--config")
        .arg(&path)
        .env("POD_NAME", "main-0")
        .env("SLUICE_OPERATOR_USER", "sluice-operator")
        .env("SLUICE_OPERATOR_PASSWORD", OPERATOR_PW)
        .env("SLUICE_WORKER_USER", "sluice-worker")
        .env("SLUICE_WORKER_PASSWORD", WORKER_PW)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // With the generated CA: connects (by IP and by name, both in the certificate) and
    // JetStream answers.
    let trusted = TrustedCa::from_pem(&ca).unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let connected = Arc::new(Mutex::new(None));
    wait_until(
        Duration::from_secs(30),
        "the TLS server accepts the operator",
        || {
            let (opts, connected) = (options(&url, Some(trusted.clone())), connected.clone());
            async move {
                match Broker::connect(&opts).await {
                    Ok(b) => {
                        *connected.lock().unwrap() = Some(b);
                        true
                    }
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    let client = connected.lock().unwrap().take().unwrap();
    client.jetstream().query_account().await.unwrap();
    Broker::connect(&options(
        &format!("nats://localhost:{port}"),
        Some(trusted.clone()),
    ))
    .await
    .expect("localhost is in the certificate");

    // A plain client is refused (the server requires TLS).
    let plain = async_nats::ConnectOptions::with_user_and_password(
        "sluice-operator".into(),
        OPERATOR_PW.into(),
    )
    .connection_timeout(Duration::from_secs(3))
    .connect(url.as_str())
    .await;
    assert!(plain.is_err(), "a plain client was accepted");

    // TLS trusting only the system roots: the certificate is refused.
    let system_roots = async_nats::ConnectOptions::with_user_and_password(
        "sluice-operator".into(),
        OPERATOR_PW.into(),
    )
    .require_tls(true)
    .connection_timeout(Duration::from_secs(3))
    .connect(format!("tls://127.0.0.1:{port}"))
    .await;
    assert!(
        system_roots.is_err(),
        "a client without the CA was accepted"
    );

    // Another Broker's CA: refused.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = write_generated_tls(&cluster("other", 1), other_dir.path());
    let wrong = Broker::connect(&options(
        &url,
        Some(TrustedCa::from_pem(&other_ca).unwrap()),
    ))
    .await;
    assert!(wrong.is_err(), "a client trusting another CA was accepted");

    let _ = server.start_kill();
    let _ = server.wait().await;
}

#[tokio::test]
async fn three_servers_route_over_verified_tls_and_the_sdk_works_with_the_ca() {
    sluice_testkit::init_tracing();
    let broker = cluster("main", 3);
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = write_generated_tls(&broker, dir.path());
    let nodes = Cluster::start_with_tls(3, Some(server_tls(dir.path())))
        .await
        .expect("a 3-server cluster with TLS routes forms (JetStream needs its routes)");
    let ca = TrustedCa::from_pem(&ca_pem).unwrap();
    let mut nodes = nodes;
    let node_conf =
        std::fs::read_to_string(nodes.node(0).unwrap().dir().join("nats.conf")).unwrap();
    let cluster_block = &node_conf[node_conf.find("cluster {").unwrap()..];
    assert!(
        cluster_block.contains("tls {") && cluster_block.contains("verify: true"),
        "routes must use verified TLS: {node_conf}"
    );

    // An R3 stream: every server holds a current replica, so all routes carry traffic.
    let mut admin = ConnectOptions::from_url_list(&nodes.urls());
    admin.ca = Some(ca.clone());
    let admin = Broker::connect(&admin).await.unwrap();
    let topic = ResourceRef::new(NS, "orders").unwrap();
    admin
        .ensure_topic(
            &topic,
            &TopicSettings {
                partitions: 1,
                replicas: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let stream_name = sluice_broker::names::topic_stream(&topic, 0);
    wait_until(
        Duration::from_secs(60),
        "the R3 stream has two current followers",
        || {
            let (js, name) = (admin.jetstream().clone(), stream_name.clone());
            async move {
                let Ok(mut stream) = js.get_stream(&name).await else {
                    return false;
                };
                let Ok(info) = stream.info().await else {
                    return false;
                };
                info.cluster
                    .as_ref()
                    .is_some_and(|c| c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current))
            }
        },
    )
    .await;

    // The worker SDK: a producer and a group member, both with the generated CA.
    let cfg = topic_group("orders", "billing", 1);
    admin.ensure_group(&cfg).await.unwrap();
    let mut producer_options = ConnectOptions::from_url_list(&nodes.urls());
    producer_options.ca = Some(ca.clone());
    let producer = Producer::new(
        Broker::connect(&producer_options).await.unwrap(),
        ProducerConfig::default(),
    )
    .unwrap();
    let orders = producer.topic(NS, "orders").await.unwrap();
    for i in 0..5 {
        orders
            .send(Record::new(format!("order-{i}")).key(format!("k{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let records = Records::default();
    let mut worker_options = WorkerOptions::new(&nodes.urls(), NS, "billing", "m0");
    worker_options.connect.ca = Some(ca.clone());
    worker_options.handle_signals = false;
    worker_options.drain_timeout = Duration::from_secs(10);
    let spec = MemberSpec {
        url: nodes.urls(),
        group: "billing".into(),
        id: "m0".into(),
        records: records.clone(),
        behaviour: ok_behaviour(),
        work: Duration::ZERO,
        observer: None,
        output_subject: None,
    };
    let mut member = Member::spawn_with(sluice_worker::Worker::new(worker_options), spec);
    wait_until(
        Duration::from_secs(60),
        "the member handles the 5 orders over TLS",
        || {
            let records = records.clone();
            async move { records.lock().unwrap().len() >= 5 }
        },
    )
    .await;
    member.stop().unwrap();

    // The same member without the CA cannot even connect.
    let mut no_ca = ConnectOptions::from_url_list(&nodes.urls().replace("nats://", "tls://"));
    no_ca.connect_timeout = Duration::from_secs(3);
    no_ca.request_timeout = Duration::from_secs(3);
    assert!(Broker::connect(&no_ca).await.is_err());
}
