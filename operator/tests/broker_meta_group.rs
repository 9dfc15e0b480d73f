//! The Broker status's meta leader and peers, read from real nats-servers' `/jsz`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sluice_broker::embedded::{ClusterOptions, NatsServer, ServerOptions, free_port};
use sluice_operator::controller::monitor::meta_group;
use sluice_testkit::wait_until;

const TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn three_servers_agree_on_the_meta_leader_and_list_every_peer() {
    let route_ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
    let monitor_ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
    let cluster_name = format!("meta-{}", route_ports[0]);
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(
            NatsServer::start(ServerOptions {
                name: format!("main-{i}"),
                monitor_port: Some(monitor_ports[i]),
                cluster: Some(ClusterOptions {
                    name: cluster_name.clone(),
                    port: route_ports[i],
                    route_ports: route_ports.clone(),
                }),
                max_file_store: 1 << 30,
                ..Default::default()
            })
            .await
            .unwrap(),
        );
    }
    for s in servers.iter_mut() {
        s.wait_ready().await.unwrap();
    }

    // Poll until every server reports the same elected leader (no fixed sleeps).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let views = loop {
        let mut views = Vec::new();
        for (i, port) in monitor_ports.iter().enumerate() {
            views.push(
                meta_group("127.0.0.1", *port, &format!("main-{i}"), TIMEOUT)
                    .await
                    .unwrap(),
            );
        }
        let leaders: Vec<_> = views.iter().map(|v| v.leader.clone()).collect();
        if leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
            break views;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leader = views[0].leader.clone().unwrap();
    assert!(
        ["main-0", "main-1", "main-2"].contains(&leader.as_str()),
        "{leader}"
    );
    for v in &views {
        assert_eq!(v.peers, ["main-0", "main-1", "main-2"], "{v:?}");
    }
}

#[tokio::test]
async fn single_server_has_no_meta_leader_and_errors_are_reported() {
    let port = free_port().unwrap();
    let _server = NatsServer::start(ServerOptions {
        monitor_port: Some(port),
        ..Default::default()
    })
    .await
    .unwrap();
    let m = meta_group("127.0.0.1", port, "main-0", TIMEOUT)
        .await
        .unwrap();
    assert_eq!(m.leader, None);
    assert_eq!(m.peers, ["main-0"]);

    let closed = free_port().unwrap();
    let err = meta_group("127.0.0.1", closed, "main-1", TIMEOUT)
        .await
        .unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
}

/// A Broker grown from 3 to 5 servers (the one replicas change admission allows besides
/// none): the two new servers start with the 5-server route list and the three old ones roll
/// onto it one at a time, as the StatefulSet does. The meta group ends with 5 peers and an R3
/// stream keeps every message throughout.
#[tokio::test]
async fn a_cluster_grows_from_three_to_five_servers_keeping_its_streams() {
    let route_ports: Vec<u16> = (0..5).map(|_| free_port().unwrap()).collect();
    let client_ports: Vec<u16> = (0..5).map(|_| free_port().unwrap()).collect();
    let monitor_ports: Vec<u16> = (0..5).map(|_| free_port().unwrap()).collect();
    let cluster_name = format!("grow-{}", route_ports[0]);
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let options = |i: usize, size: usize| ServerOptions {
        name: format!("main-{i}"),
        port: Some(client_ports[i]),
        monitor_port: Some(monitor_ports[i]),
        dir: Some(dirs[i].path().to_path_buf()),
        cluster: Some(ClusterOptions {
            name: cluster_name.clone(),
            port: route_ports[i],
            route_ports: route_ports[..size].to_vec(),
        }),
        max_file_store: 1 << 30,
        ..Default::default()
    };
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(NatsServer::start(options(i, 3)).await.unwrap());
    }
    for s in servers.iter_mut() {
        s.wait_ready().await.unwrap();
    }
    let urls = |n: usize| {
        client_ports[..n]
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let broker =
        sluice_broker::Broker::connect(&sluice_broker::ConnectOptions::from_url_list(&urls(5)))
            .await
            .unwrap();
    let js = broker.jetstream();
    let stream_config = |name: &str, replicas: usize| async_nats::jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{name}.>")],
        num_replicas: replicas,
        ..Default::default()
    };
    wait_until(
        Duration::from_secs(60),
        "an R3 stream on 3 servers",
        || async { js.create_stream(stream_config("orders", 3)).await.is_ok() },
    )
    .await;
    for i in 0..100 {
        js.publish(format!("orders.{i}"), "o".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    for i in 3..5 {
        servers.push(NatsServer::start(options(i, 5)).await.unwrap());
        servers[i].wait_ready().await.unwrap();
    }
    for (i, server) in servers.iter_mut().enumerate().take(3) {
        server.stop().await.unwrap();
        *server = NatsServer::start(options(i, 5)).await.unwrap();
        server.wait_ready().await.unwrap();
        wait_until(
            Duration::from_secs(60),
            &format!("the stream answers with 100 messages after main-{i} rolled"),
            || async {
                match js.get_stream("orders").await {
                    Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages == 100),
                    Err(_) => false,
                }
            },
        )
        .await;
    }

    wait_until(
        Duration::from_secs(60),
        "5 peers in the meta group",
        || async {
            meta_group("127.0.0.1", monitor_ports[0], "main-0", TIMEOUT)
                .await
                .is_ok_and(|v| v.peers.len() == 5)
        },
    )
    .await;
    wait_until(Duration::from_secs(60), "an R5 stream placed", || async {
        js.create_stream(stream_config("payments", 5)).await.is_ok()
    })
    .await;
    let mut orders = js.get_stream("orders").await.unwrap();
    assert_eq!(orders.info().await.unwrap().state.messages, 100);
}
