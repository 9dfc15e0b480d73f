//! The generated nats.conf against the real nats-server (v2.15.x on PATH): it parses for
//! 1, 3 and 5 replicas, and a running server enforces what the module promises — no
//! anonymous access, and the workers' permissions are enough for JetStream streams, pull
//! consumers and KV buckets but not for deleting streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use futures::StreamExt;
use sluice_operator::broker_cluster::{BrokerCluster, BrokerClusterParams, SyncPolicy, nats_conf};
use tokio::process::{Child, Command};

const OPERATOR_PW: &str = "opPassword0123456789";
const WORKER_PW: &str = "wkPassword0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nats.conf for `replicas` servers with the in-pod paths and ports moved into `dir`.
fn local_conf(replicas: u8, dir: &Path, port: u16, http: u16) -> String {
    let mut p = BrokerClusterParams::new("test", "main", replicas);
    p.sync_interval = SyncPolicy::Always;
    p.max_memory_store = Some(64 << 20);
    let conf = nats_conf(&BrokerCluster::new(p).unwrap());
    let conf = conf
        .replace("port: 4222", &format!("port: {port}"))
        .replace("http_port: 8222", &format!("http_port: {http}"))
        .replace("\"/data\"", &format!("{:?}", dir.join("data")))
        .replace(
            "\"/var/run/nats/nats.pid\"",
            &format!("{:?}", dir.join("nats.pid")),
        );
    assert!(conf.contains(&format!("port: {port}")), "{conf}");
    conf
}

fn server_command(conf: &Path) -> Command {
    let mut cmd = Command::new("nats-server");
    cmd.arg("--config")
        .arg(conf)
        .env("POD_NAME", "main-0")
        .env("SLUICE_OPERATOR_USER", "sluice-operator")
        .env("SLUICE_OPERATOR_PASSWORD", OPERATOR_PW)
        .env("SLUICE_WORKER_USER", "sluice-worker")
        .env("SLUICE_WORKER_PASSWORD", WORKER_PW)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn generated_config_parses_for_every_size() {
    for replicas in [1, 3, 5] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, local_conf(replicas, dir.path(), 4222, 8222)).unwrap();
        let out = server_command(&path).arg("-t").output().await.unwrap();
        assert!(
            out.status.success(),
            "nats-server rejected the {replicas}-replica config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn connect(url: &str, user: &str, password: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connection_timeout(Duration::from_secs(2))
        // A denied request gets no answer at all: fail it fast instead of after 10s.
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// Polls until the operator user can connect (the server is up), or fails after 20s.
async fn wait_for_server(url: &str, server: &mut Child) -> async_nats::Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match connect(url, "sluice-operator", OPERATOR_PW).await {
            Ok(client) => return client,
            Err(e) if Instant::now() > deadline => {
                let _ = server.start_kill();
                panic!("nats-server did not accept the operator at {url}: {e}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn running_server_enforces_auth_and_worker_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, local_conf(1, dir.path(), port, http)).unwrap();
    let mut server = server_command(&path).spawn().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let operator = wait_for_server(&url, &mut server).await;

    // No anonymous access, no wrong password.
    assert!(
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(&url)
            .await
            .is_err(),
        "anonymous client was accepted"
    );
    assert!(
        connect(&url, "sluice-worker", "wrongPassword0123456")
            .await
            .is_err()
    );

    // The operator provisions a queue stream, its group consumer and a KV bucket.
    let ojs = jetstream::new(operator);
    ojs.create_stream(stream::Config {
        name: "SLUICE_Q__test__orders".into(),
        subjects: vec!["sluice.q.test.orders".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .unwrap();
    ojs.get_stream("SLUICE_Q__test__orders")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("G__workers".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    ojs.create_key_value(kv::Config {
        bucket: "SLUICE_MEMBERS".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // A worker publishes, pulls, acks and uses KV (put, get, watch).
    let worker = connect(&url, "sluice-worker", WORKER_PW).await.unwrap();
    let wjs = jetstream::new(worker);
    wjs.publish("sluice.q.test.orders", "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let consumer: jetstream::consumer::PullConsumer = wjs
        .get_stream("SLUICE_Q__test__orders")
        .await
        .unwrap()
        .get_consumer("G__workers")
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.unwrap().unwrap();
    assert_eq!(&msg.payload[..], b"hello");
    msg.double_ack().await.unwrap();

    let bucket = wjs.get_key_value("SLUICE_MEMBERS").await.unwrap();
    let mut watch = bucket.watch("test.g.>").await.unwrap();
    bucket.put("test.g.m1", "alive".into()).await.unwrap();
    assert_eq!(
        bucket.get("test.g.m1").await.unwrap().unwrap(),
        "alive".as_bytes()
    );
    let entry = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("KV watch delivered nothing within 10s")
        .unwrap()
        .unwrap();
    assert_eq!(entry.key, "test.g.m1");

    // Workers cannot destroy data: stream deletion and purge are the operator's job.
    assert!(
        wjs.delete_stream("SLUICE_Q__test__orders").await.is_err(),
        "worker deleted a stream"
    );
    assert!(
        ojs.get_stream("SLUICE_Q__test__orders").await.is_ok(),
        "stream vanished"
    );
    // Nor publish outside the allowed subjects, even where a stream would take it.
    ojs.create_stream(stream::Config {
        name: "OTHER".into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    ojs.publish("other.subject", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let foreign = wjs.publish("other.subject", "x".into()).await;
    let acked = match foreign {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(3), ack)
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    };
    assert!(!acked, "worker published outside its subjects");

    server.start_kill().unwrap();
    let _ = server.wait().await;
}
