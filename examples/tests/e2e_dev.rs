//! End to end through `sluice dev`: both example pipelines run on the embedded broker with
//! their real worker binaries, then the DLQ replay and the offset reset of the operations
//! commands. Effects are checked in the workers' own effect buckets, independently of the
//! summary `sluice dev` prints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use futures::StreamExt;
use sluice_broker::embedded::{NatsServer, ServerOptions};

/// The `sluice` binary, built beside the example binaries by `cargo build --workspace`
/// (`cargo nextest run --workspace` builds it too).
fn sluice() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_video-worker"))
        .parent()
        .unwrap();
    let bin = dir.join("sluice");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace` (or the whole workspace's tests) first",
        bin.display()
    );
    bin
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(sluice())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("sluice runs");
    println!(
        "$ sluice {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "sluice {} failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sluice dev <manifests> --until-idle` on `data`, with a summary file when given; returns stdout.
fn dev_until_idle(manifests: &Path, data: &Path, summary: Option<&Path>, extra: &[&str]) -> String {
    let mut args = vec![
        "dev",
        manifests.to_str().unwrap(),
        "--until-idle",
        "--idle-timeout",
        "4m",
        "--no-ui",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    if let Some(path) = summary {
        args.extend(["--summary-json", path.to_str().unwrap()]);
    }
    args.extend(extra);
    run_ok(&args)
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn group<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == format!("default/{name}"))
        .unwrap_or_else(|| panic!("no group {name} in {summary}"))
}

/// Keys of a KV bucket in the data dir's broker (started on its store).
async fn bucket_keys(data: &Path, bucket: &str) -> Vec<String> {
    let server = NatsServer::start(ServerOptions {
        dir: Some(data.join("broker")),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value(bucket).await.unwrap();
    let mut keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    keys.sort();
    keys
}

/// How many uploads a video stage recorded in its effect bucket (keys `<stage>.<upload>`).
fn handled_by(keys: &[String], stage: &str) -> usize {
    keys.iter()
        .filter(|k| k.starts_with(&format!("{stage}.")))
        .count()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn video_pipeline_dead_letters_the_poison_upload_and_replays_it_once_after_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let s1 = tmp.path().join("s1.json");
    let stdout = dev_until_idle(&example("video-pipeline"), &data, Some(&s1), &[]);
    assert!(
        stdout.contains("published=25 processed=124 dead-lettered=1 lost=0"),
        "{stdout}"
    );
    let s = summary(&s1);
    assert_eq!(group(&s, "encoders")["processed"], 24);
    assert_eq!(group(&s, "encoders")["dead_lettered"], 1);
    for g in ["thumbnailers", "subtitlers", "indexers", "notifiers"] {
        assert_eq!(group(&s, g)["processed"], 25, "{g}");
        assert_eq!(group(&s, g)["lost"], 0, "{g}");
    }

    // The poison upload sits in the DLQ with the envelope.
    let listed = run_ok(&["dlq", "list", "video-dlq", "--dev", data_s]);
    assert!(
        listed.contains("encoders") && listed.contains("cannot decode upload-13"),
        "{listed}"
    );
    let shown = run_ok(&["dlq", "show", "video-dlq", "1", "--dev", data_s]);
    for header in [
        "Sluice-Group: encoders",
        "Sluice-Source: queue/encode",
        "Sluice-Original-Id: upload-13",
        "Sluice-Attempts: 1",
        "Sluice-Last-Error: permanent: cannot decode upload-13",
    ] {
        assert!(shown.contains(header), "missing {header:?} in\n{shown}");
    }

    // The same as data, and the one-screen status.
    let letters: serde_json::Value = serde_json::from_str(&run_ok(&[
        "dlq",
        "list",
        "video-dlq",
        "-o",
        "json",
        "--dev",
        data_s,
    ]))
    .unwrap();
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert_eq!(letters[0]["group"], "encoders", "{letters}");
    assert_eq!(letters[0]["originalId"], "upload-13", "{letters}");
    let status: serde_json::Value =
        serde_yaml::from_str(&run_ok(&["status", "-o", "yaml", "--dev", data_s])).unwrap();
    let dlqs = status["deadLetterQueues"].as_array().unwrap();
    assert!(
        dlqs.iter().any(|d| d["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("/video-dlq"))
            && d["depth"] == 1),
        "{status}"
    );
    let groups = status["groups"].as_array().unwrap();
    let encoders = groups
        .iter()
        .find(|g| g["name"].as_str().is_some_and(|n| n.ends_with("/encoders")))
        .unwrap_or_else(|| panic!("no encoders group in {status}"));
    assert_eq!(encoders["lag"], 0, "{status}");
    assert!(!status["queues"].as_array().unwrap().is_empty(), "{status}");
    let table = run_ok(&["status", "--dev", data_s]);
    assert!(
        table.contains("GROUP") && table.contains("encoders") && table.contains("video-dlq"),
        "{table}"
    );

    // Ship the fixed encoder (a manifest edit), replay the DLQ, run again.
    let fixed = tmp.path().join("fixed");
    copy_dir(&example("video-pipeline"), &fixed);
    let workers = fixed.join("workers.yaml");
    let text = std::fs::read_to_string(&workers).unwrap();
    let patched = text.replacen(
        "args: [\"--stage\", \"encode\"]",
        "args: [\"--stage\", \"encode\"]\n          env: [{name: VIDEO_ACCEPT_CORRUPT, value: \"1\"}]",
        1,
    );
    assert_ne!(patched, text, "the encoder template was found");
    std::fs::write(&workers, patched).unwrap();
    let replayed = run_ok(&["dlq", "replay", "video-dlq", "--dev", data_s]);
    assert!(replayed.contains("replayed 1 message(s)"), "{replayed}");
    let s2 = tmp.path().join("s2.json");
    let stdout = dev_until_idle(&fixed, &data, Some(&s2), &[]);
    assert!(stdout.contains("lost=0"), "{stdout}");
    let s = summary(&s2);
    assert_eq!(
        group(&s, "encoders")["dead_lettered"],
        0,
        "the DLQ was drained"
    );
    assert_eq!(group(&s, "encoders")["lost"], 0);
    let listed = run_ok(&["dlq", "list", "video-dlq", "--dev", data_s]);
    assert!(!listed.contains("upload-13"), "{listed}");

    // Every stage did every upload exactly once: upload-13 was encoded once, after the replay.
    let keys = bucket_keys(&data, "VIDEO_RESULTS").await;
    let duplicates: Vec<_> = keys
        .iter()
        .filter(|k| k.starts_with("duplicate."))
        .collect();
    assert!(duplicates.is_empty(), "handled twice: {duplicates:?}");
    for stage in [
        "encode",
        "thumbnails",
        "subtitles",
        "search-index",
        "notify-followers",
    ] {
        assert_eq!(handled_by(&keys, stage), 25, "stage {stage}: {keys:?}");
    }
    assert!(keys.contains(&"encode.upload-13".to_string()));
}

#[tokio::test]
async fn order_events_reach_every_group_and_audit_replays_after_an_offset_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let s1 = tmp.path().join("s1.json");
    let stdout = dev_until_idle(&example("order-events"), &data, Some(&s1), &[]);
    assert!(
        stdout.contains("published=600 processed=1800 dead-lettered=0 lost=0"),
        "{stdout}"
    );
    for role in ["ANALYTICS", "NOTIFICATIONS", "AUDIT"] {
        let keys = bucket_keys(&data, &format!("ORDERS_{role}")).await;
        assert_eq!(keys.len(), 600, "{role}: every order once");
        assert!(keys.iter().all(|k| !k.starts_with("duplicate.")), "{role}");
    }

    let reset = run_ok(&[
        "offsets", "reset", "audit", "--to", "earliest", "--dev", data_s,
    ]);
    assert!(
        reset.contains("restarts from earliest on 6 partition(s)"),
        "{reset}"
    );
    let stdout = dev_until_idle(&example("order-events"), &data, None, &[]);
    assert!(stdout.contains("lost=0"), "{stdout}");
    // Audit saw every order again; the other groups did not.
    let audit = bucket_keys(&data, "ORDERS_AUDIT").await;
    assert_eq!(
        audit.iter().filter(|k| k.starts_with("duplicate.")).count(),
        600
    );
    for role in ["ANALYTICS", "NOTIFICATIONS"] {
        let keys = bucket_keys(&data, &format!("ORDERS_{role}")).await;
        assert!(
            keys.iter().all(|k| !k.starts_with("duplicate.")),
            "{role} replayed: {keys:?}"
        );
    }
    // Per-customer order held in every process of the ordered groups.
    for entry in std::fs::read_dir(data.join("logs")).unwrap() {
        let path = entry.unwrap().path();
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(!log.contains("out of order"), "{}:\n{log}", path.display());
    }
}

#[tokio::test]
async fn a_burst_scales_workers_up_and_back_down_without_losing_or_repeating_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s1 = tmp.path().join("s1.json");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/burst.yaml");
    let stdout = dev_until_idle(&manifest, &data, Some(&s1), &["--wait-scale-down"]);
    assert!(
        stdout.contains("published=3000 processed=3000 dead-lettered=0 lost=0"),
        "{stdout}"
    );
    let s = summary(&s1);
    let scaling = &group(&s, "burst")["scaling"];
    assert!(
        scaling["max_replicas"].as_u64().unwrap() > 1,
        "never scaled up: {scaling}"
    );
    assert!(
        scaling["max_replicas"].as_u64().unwrap() <= 6,
        "beyond the partition cap: {scaling}"
    );
    assert!(
        scaling["scale_downs"].as_u64().unwrap() >= 1,
        "never scaled down: {scaling}"
    );
    assert_eq!(scaling["replicas"], 1, "back at the minimum: {scaling}");
    // Every message handled once, across the rebalances that scaling caused.
    let keys = bucket_keys(&data, "ORDERS_BURST").await;
    assert_eq!(
        keys.iter().filter(|k| !k.starts_with("duplicate.")).count(),
        3000
    );
    let duplicates: Vec<_> = keys
        .iter()
        .filter(|k| k.starts_with("duplicate."))
        .collect();
    assert!(duplicates.is_empty(), "handled twice: {duplicates:?}");
}

/// Issue 18: the fan-out stages (queues fed by the uploads topic, provisioned while the
/// upload Job races them) must each receive every upload, run after run, on a loaded machine.
/// `SLUICE_E2E_REPEAT` sets the runs (default 3; the acceptance run used 20).
#[tokio::test]
async fn video_pipeline_fans_out_every_upload_to_every_stage_run_after_run_under_cpu_stress() {
    let runs: usize = std::env::var("SLUICE_E2E_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let _stress = sluice_testkit::CpuStress::start();
    for run in 0..runs {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let s1 = tmp.path().join("s1.json");
        let stdout = dev_until_idle(&example("video-pipeline"), &data, Some(&s1), &[]);
        assert!(
            stdout.contains("published=25 processed=124 dead-lettered=1 lost=0"),
            "run {run}: {stdout}"
        );
        let s = summary(&s1);
        for g in ["thumbnailers", "subtitlers", "indexers", "notifiers"] {
            assert_eq!(group(&s, g)["expected"], 25, "run {run}: {g}");
            assert_eq!(group(&s, g)["processed"], 25, "run {run}: {g}");
        }
        let keys = bucket_keys(&data, "VIDEO_RESULTS").await;
        for stage in [
            "thumbnails",
            "subtitles",
            "search-index",
            "notify-followers",
        ] {
            let done = handled_by(&keys, stage);
            assert_eq!(
                done, 25,
                "run {run}: stage {stage} handled {done} of 25 uploads"
            );
        }
        eprintln!("run {run}: every stage handled every upload");
    }
}

#[tokio::test]
async fn render_jobs_use_priorities_and_delays_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s1 = tmp.path().join("s1.json");
    let stdout = dev_until_idle(&example("render-jobs"), &data, Some(&s1), &[]);
    // 40 jobs, 5 of them re-queued with a delay by the worker (their slot was busy): 45
    // deliveries, none lost, none dead-lettered.
    assert!(
        stdout.contains("published=45 processed=45 dead-lettered=0 lost=0"),
        "{stdout}"
    );
    let s = summary(&s1);
    assert_eq!(group(&s, "renderers")["lost"], 0);
    let keys = bucket_keys(&data, "RENDER_RESULTS").await;
    let duplicates: Vec<_> = keys
        .iter()
        .filter(|k| k.starts_with("duplicate."))
        .collect();
    assert!(duplicates.is_empty(), "handled twice: {duplicates:?}");
    assert_eq!(handled_by(&keys, "render"), 40, "{keys:?}");
    assert_eq!(handled_by(&keys, "premium"), 10, "{keys:?}");
    let queues = run_ok(&["queues", "--dev", data.to_str().unwrap()]);
    assert!(
        queues.contains("priority 1") && queues.contains("scheduled=0"),
        "{queues}"
    );
}
