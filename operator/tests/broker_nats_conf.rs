//! The generated nats.conf against the real nats-server (v2.15.x on PATH): it parses for
//! 1, 3 and 5 replicas, and a running server enforces what the module promises — no
//! anonymous access, and the workers' permissions are enough for JetStream streams, pull
//! consumers and KV buckets but not for deleting streams. A 3-server cluster started on
//! loopback from the generated configs and the StatefulSet's environment (expanded the way
//! the kubelet does) forms its routes with the route credentials, and a server soliciting a
//! route without them is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use futures::StreamExt;
use k8s_openapi::api::core::v1::EnvVar;
use sluice_operator::broker_cluster::users::{base_users_from_env, users_conf};
use sluice_operator::broker_cluster::{
    BrokerCluster, BrokerClusterParams, SyncPolicy, TlsMode, credentials_secret, nats_conf,
    stateful_set,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const OPERATOR_PW: &str = "opPassword0123456789";
const WORKER_PW: &str = "wkPassword0123456789";
const ROUTE_PW: &str = "rtPassword0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The users file the operator renders before any group or producer exists, written next to
/// a local nats.conf (which then includes it as `users.conf`).
fn write_base_users(dir: &Path) {
    std::fs::write(
        dir.join("users.conf"),
        users_conf(&base_users_from_env(), &[]).unwrap(),
    )
    .unwrap();
}

/// Moves the in-pod include of the users Secret next to the local config.
fn local_users(conf: &str) -> String {
    let moved = conf.replace("../../etc/nats-users/users.conf", "users.conf");
    assert!(moved.contains("include \"users.conf\""), "{moved}");
    moved
}

/// nats.conf for `replicas` servers with the in-pod paths and ports moved into `dir`.
fn local_conf(replicas: u8, dir: &Path, port: u16, http: u16) -> String {
    write_base_users(dir);
    let mut p = BrokerClusterParams::new("test", "main", replicas);
    p.tls = TlsMode::Disabled; // TLS is tested in broker_tls.rs
    p.sync_interval = SyncPolicy::Always;
    p.max_memory_store = Some(64 << 20);
    let conf = local_users(&nats_conf(&BrokerCluster::new(p).unwrap()));
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
        let out = server_command(&path)
            .envs(kubelet_env(&test_cluster(replicas), 0))
            .arg("-t")
            .output()
            .await
            .unwrap();
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

fn test_cluster(replicas: u8) -> BrokerCluster {
    let mut p = BrokerClusterParams::new("test", "main", replicas);
    p.max_memory_store = Some(64 << 20);
    p.tls = TlsMode::Disabled; // TLS is tested in broker_tls.rs
    BrokerCluster::new(p).unwrap()
}

/// The nats container's environment of pod `main-<ordinal>` as the kubelet resolves it:
/// the pod name from the field reference, credentials from the generated Secret, and
/// `$(VAR)` references in literal values expanded from the variables declared before.
fn kubelet_env(cluster: &BrokerCluster, ordinal: u8) -> Vec<(String, String)> {
    let secret = credentials_secret(cluster, WORKER_PW, OPERATOR_PW, ROUTE_PW).unwrap();
    let data = secret.data.unwrap();
    let sts = stateful_set(cluster);
    let env: Vec<EnvVar> = sts.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let mut resolved: Vec<(String, String)> = Vec::new();
    for var in env {
        let value = if let Some(literal) = var.value {
            let mut expanded = literal;
            for (name, value) in &resolved {
                expanded = expanded.replace(&format!("$({name})"), value);
            }
            assert!(
                !expanded.contains("$("),
                "unresolved reference in {expanded}"
            );
            expanded
        } else {
            let source = var.value_from.unwrap();
            if let Some(key) = source.secret_key_ref {
                assert_eq!(key.name, "main-credentials");
                String::from_utf8(data[&key.key].0.clone()).unwrap()
            } else {
                assert_eq!(source.field_ref.unwrap().field_path, "metadata.name");
                format!("main-{ordinal}")
            }
        };
        resolved.push((var.name, value));
    }
    resolved
}

/// GETs a monitoring endpoint and parses its JSON; `None` while the server is not up.
fn monitor_json(http: u16, path: &str) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", http)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let body = response.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Names of the servers `http`'s server has routes to (empty while it is not up).
fn routed_servers(http: u16) -> Vec<String> {
    let Some(routez) = monitor_json(http, "/routez") else {
        return Vec::new();
    };
    let mut names: Vec<String> = routez["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|r| r["remote_name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn three_servers_form_routes_with_credentials_and_refuse_others() {
    let cluster = test_cluster(3);
    let conf = nats_conf(&cluster);
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = Vec::new();
    for ordinal in 0..3u8 {
        let (client, cluster_port, http) = ports[usize::from(ordinal)];
        let dir = dirs[usize::from(ordinal)].path();
        let local = conf
            .replace("port: 4222", &format!("port: {client}"))
            .replace("http_port: 8222", &format!("http_port: {http}"))
            .replace("  port: 6222", &format!("  port: {cluster_port}"))
            .replace("\"/data\"", &format!("{:?}", dir.join("data")))
            .replace(
                "\"/var/run/nats/nats.pid\"",
                &format!("{:?}", dir.join("nats.pid")),
            );
        assert!(local.contains(&format!("port: {cluster_port}")), "{local}");
        let local = local_users(&local);
        write_base_users(dir);
        let path = dir.join("nats.conf");
        std::fs::write(&path, local).unwrap();
        let mut cmd = Command::new("nats-server");
        cmd.arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, mut value) in kubelet_env(&cluster, ordinal) {
            // The pods' DNS names stand for the loopback cluster ports.
            for (peer, (_, peer_cluster, _)) in ports.iter().enumerate() {
                value = value.replace(
                    &format!("main-{peer}.main-headless.test.svc.cluster.local:6222"),
                    &format!("127.0.0.1:{peer_cluster}"),
                );
            }
            cmd.env(name, value);
        }
        servers.push(cmd.spawn().unwrap());
    }
    // Authentication failures main-0 logs (its log is drained so the server never blocks).
    let (auth_errors_tx, mut auth_errors) = tokio::sync::mpsc::unbounded_channel();
    let mut main0_log = BufReader::new(servers[0].stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = main0_log.next_line().await {
            if line.contains("authentication error") {
                let _ = auth_errors_tx.send(line);
            }
        }
    });
    for server in &mut servers[1..] {
        let mut log = BufReader::new(server.stderr.take().unwrap()).lines();
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    }

    // Every server routes to both others.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (ordinal, (_, _, http)) in ports.iter().enumerate() {
        let expected: Vec<String> = (0..3)
            .filter(|peer| *peer != ordinal)
            .map(|peer| format!("main-{peer}"))
            .collect();
        loop {
            let routed = routed_servers(*http);
            if routed == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "main-{ordinal} routes to {routed:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Messages cross the routes: published on main-2, received on main-0.
    let url = |i: usize| format!("nats://127.0.0.1:{}", ports[i].0);
    let receiver = wait_for_server(&url(0), &mut servers[0]).await;
    let sender = wait_for_server(&url(2), &mut servers[2]).await;
    let mut sub = receiver.subscribe("sluice.route.probe").await.unwrap();
    receiver.flush().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            sender
                .publish("sluice.route.probe", "over the route".into())
                .await
                .unwrap();
            sender.flush().await.unwrap();
            if let Ok(Some(msg)) =
                tokio::time::timeout(Duration::from_millis(200), sub.next()).await
            {
                return msg;
            }
        }
    })
    .await
    .expect("no message crossed the routes within 20s");
    assert_eq!(&received.payload[..], b"over the route");
    assert!(
        auth_errors.try_recv().is_err(),
        "a cluster member failed route authentication"
    );

    // A server soliciting a route to main-0 without the credentials is refused.
    let intruder_dir = tempfile::tempdir().unwrap();
    let intruder_http = free_port();
    let intruder_conf = format!(
        "server_name: intruder\nport: {}\nhttp_port: {intruder_http}\ncluster {{\n  name: \"main\"\n  port: {}\n  routes: [ \"nats://127.0.0.1:{}\" ]\n}}\n",
        free_port(),
        free_port(),
        ports[0].1
    );
    let intruder_path = intruder_dir.path().join("nats.conf");
    std::fs::write(&intruder_path, intruder_conf).unwrap();
    let mut intruder = Command::new("nats-server")
        .arg("--config")
        .arg(&intruder_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(intruder.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = log.next_line().await.unwrap() {
            if line.contains("Authorization Violation") {
                return;
            }
        }
        panic!("the intruder exited without being refused");
    })
    .await
    .expect("the intruder's route was not refused within 20s");
    let refused = tokio::time::timeout(Duration::from_secs(20), auth_errors.recv())
        .await
        .expect("main-0 logged no refused route within 20s")
        .unwrap();
    assert!(refused.contains("authentication error"), "{refused}");
    assert_eq!(
        routed_servers(ports[0].2),
        ["main-1", "main-2"],
        "main-0 accepted the intruder"
    );

    let _ = intruder.start_kill();
    for server in &mut servers {
        let _ = server.start_kill();
        let _ = server.wait().await;
    }
}
