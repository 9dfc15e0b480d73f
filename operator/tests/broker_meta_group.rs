//! The Broker status's meta leader and peers, read from real nats-servers' `/jsz`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sluice_broker::embedded::{ClusterOptions, NatsServer, ServerOptions, free_port};
use sluice_operator::controller::monitor::meta_group;

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
