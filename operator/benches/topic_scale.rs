//! Scale benchmark (issue 14): many Topics × 3 partitions on one Broker, the controllers
//! in-process against the real API server in `KUBECONFIG` and a real nats-server.
//!
//! Reports the time from the first `create` until every Topic is Ready, the process's peak
//! RSS (operator and this driver together), and in steady state the Topic reconciles per
//! minute and the JetStream API requests per second (per Topic per resync period too).
//!
//! ```text
//! KUBECONFIG=/tmp/k8s-local/kubeconfig cargo bench -p sluice-operator --bench topic_scale -- \
//!     --topics 2000 --resync 30
//! ```
//! Without `KUBECONFIG` it prints why and exits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use sluice_broker::embedded::{NatsServer, ServerOptions, free_port};
use sluice_operator::controller::conditions::{self, READY};
use sluice_operator::controller::in_process::InProcessOperator;
use sluice_operator::controller::metrics::Metrics;
use sluice_operator::controller::runtime::Settings;
use sluice_operator::crd::{Broker, Topic};
use sluice_testkit::{TempNamespace, client_or_skip, install_crds};

/// What the run measures.
struct Args {
    topics: usize,
    resync: Duration,
    /// Steady-state window, in resync periods.
    periods: u32,
}

fn args() -> Args {
    let mut a = Args {
        topics: 2000,
        resync: Duration::from_secs(30),
        periods: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--topics" => a.topics = value().expect("--topics N") as usize,
            "--resync" => a.resync = Duration::from_secs(value().expect("--resync SECONDS")),
            "--periods" => a.periods = value().expect("--periods N") as u32,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// Peak and current resident set of this process, in MiB (Linux `/proc`).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// JetStream API requests served so far and how many of them failed (`/jsz`).
async fn jetstream_api_calls(monitor: u16) -> (u64, u64) {
    let body = reqwest_like_get(&format!("http://127.0.0.1:{monitor}/jsz")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    (
        v["api"]["total"].as_u64().unwrap_or(0),
        v["api"]["errors"].as_u64().unwrap_or(0),
    )
}

/// A plain HTTP/1.0 GET on loopback (no HTTP client dependency for one monitoring read).
async fn reqwest_like_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Topic reconciles counted by the operator's metrics.
fn topic_reconciles(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("sluice_operator_reconciles_total{kind=\"Topic\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn ready_count(api: &Api<Topic>) -> usize {
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| conditions::is_true(&s.conditions, READY))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args = args();
    let Some(client) = client_or_skip("topic_scale").await else {
        return;
    };
    install_crds(&client, &sluice_operator::crdgen::all_crds()).await;
    let ns = TempNamespace::create(&client, "scale").await;
    let monitor = free_port().unwrap();
    let server = NatsServer::start(ServerOptions {
        monitor_port: Some(monitor),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let operator = InProcessOperator::start_with(
        &client,
        Settings {
            namespaces: vec![ns.name.clone()],
            broker_urls: BTreeMap::from([("main".to_string(), server.url())]),
            resync: args.resync,
            ..Settings::default()
        },
        metrics.clone(),
    );
    let brokers: Api<Broker> = Api::namespaced(client.clone(), &ns.name);
    brokers
        .create(
            &PostParams::default(),
            &serde_yaml::from_str("apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main}\nspec: {replicas: 1}\n").unwrap(),
        )
        .await
        .unwrap();

    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns.name);
    println!(
        "creating {} Topics × 3 partitions (resync {:?})",
        args.topics, args.resync
    );
    let started = Instant::now();
    futures::stream::iter(0..args.topics)
        .for_each_concurrent(16, |i| {
            let topics = topics.clone();
            async move {
                let t: Topic = serde_yaml::from_str(&format!(
                    "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {{name: t{i:05}}}\nspec: {{broker: main, partitions: 3}}\n"
                ))
                .unwrap();
                topics.create(&PostParams::default(), &t).await.unwrap();
            }
        })
        .await;
    let created = started.elapsed();
    let deadline = Duration::from_secs(1800);
    loop {
        let ready = ready_count(&topics).await;
        if ready == args.topics {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "only {ready} of {} Topics Ready after {deadline:?}",
            args.topics
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let to_ready = started.elapsed();
    let (peak_at_ready, _) = rss_mib();
    println!(
        "created in {:.1} s; all {} Ready after {:.1} s; peak RSS {peak_at_ready:.0} MiB",
        created.as_secs_f64(),
        args.topics,
        to_ready.as_secs_f64()
    );

    // Let the start-up reconciles settle for one period, then measure whole periods.
    tokio::time::sleep(args.resync).await;
    let window = args.resync * args.periods;
    let (calls0, errors0) = jetstream_api_calls(monitor).await;
    let reconciles0 = topic_reconciles(&metrics);
    tokio::time::sleep(window).await;
    let (calls1, errors1) = jetstream_api_calls(monitor).await;
    let reconciles1 = topic_reconciles(&metrics);
    let (peak, current) = rss_mib();
    let minutes = window.as_secs_f64() / 60.0;
    let calls = (calls1 - calls0) as f64;
    println!(
        "steady state over {:.0} s: {:.0} Topic reconciles/min, {:.1} JetStream API requests/s ({} failed), {:.2} requests per Topic per resync period",
        window.as_secs_f64(),
        (reconciles1 - reconciles0) as f64 / minutes,
        calls / window.as_secs_f64(),
        errors1 - errors0,
        calls / args.topics as f64 / f64::from(args.periods),
    );
    println!("RSS: peak {peak:.0} MiB, now {current:.0} MiB");

    // Delete while the operator runs, so the finalizers are removed.
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = api.delete(&ns.name, &DeleteParams::background()).await;
    let gone_by = Instant::now() + Duration::from_secs(600);
    while api.get_opt(&ns.name).await.ok().flatten().is_some() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let _ = operator.stop().await;
    drop(ns);
}
