//! `sluice dlq list|show|replay <dlq>`: inspect dead-lettered messages and send them back.
//!
//! Replay publishes each selected message to where it came from (its `Sluice-Source-Subject`)
//! or to `--to topic/NAME` / `--to queue/NAME`, with the headers of
//! [`sluice_broker::dlq::replay_headers`] (stable replay id, original id kept), waits for the
//! broker's acknowledgement, and only then removes it from the DLQ (unless `--keep`). A replay
//! interrupted halfway can simply be run again: what was replayed is gone from the DLQ, and a
//! message replayed but not yet removed is de-duplicated by its replay id.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_broker::dlq::{DeadLetter, StoredDeadLetter};
use sluice_broker::partitioner::{KeylessSpreader, choose_partition};
use sluice_broker::{Broker, ResourceRef, names};
use time::OffsetDateTime;

use super::output::{OutputArgs, Table};
use super::target::BrokerArgs;

/// Arguments of `sluice dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// `sluice dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One line per dead-lettered message.
    List {
        /// DeadLetterQueue name.
        dlq: String,
        /// Only these messages.
        #[command(flatten)]
        filter: Filter,
        /// Which broker.
        #[command(flatten)]
        broker: BrokerArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Everything about one message: envelope, headers, payload.
    Show {
        /// DeadLetterQueue name.
        dlq: String,
        /// DLQ sequence (from `list`).
        seq: u64,
        /// Which broker.
        #[command(flatten)]
        broker: BrokerArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Publish messages back to their source (or elsewhere) and remove them from the DLQ.
    Replay {
        /// DeadLetterQueue name.
        dlq: String,
        /// Only these messages.
        #[command(flatten)]
        filter: Filter,
        /// Destination instead of the original source: `topic/NAME` or `queue/NAME`.
        #[arg(long)]
        to: Option<String>,
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Keep replayed messages in the DLQ.
        #[arg(long)]
        keep: bool,
        /// Which broker.
        #[command(flatten)]
        broker: BrokerArgs,
    },
}

/// Which messages a command applies to (all conditions must hold).
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Only messages dead-lettered by this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only messages from this source (`topic/NAME` or `queue/NAME`).
    #[arg(long)]
    pub source: Option<String>,
    /// Only messages whose last error contains this text.
    #[arg(long)]
    pub error: Option<String>,
    /// Only this DLQ sequence.
    #[arg(long)]
    pub seq: Option<u64>,
}

impl Filter {
    /// Whether a message matches.
    pub fn matches(&self, seq: u64, dl: &DeadLetter) -> bool {
        let source = format!(
            "{}/{}",
            match dl.source_kind {
                sluice_broker::config::SourceKind::Topic => "topic",
                sluice_broker::config::SourceKind::Queue => "queue",
            },
            dl.source_name
        );
        self.group.as_ref().is_none_or(|g| *g == dl.group)
            && self.source.as_ref().is_none_or(|s| *s == source)
            && self
                .error
                .as_ref()
                .is_none_or(|e| dl.last_error.contains(e.as_str()))
            && self.seq.is_none_or(|s| s == seq)
    }
}

/// Runs a `sluice dlq` subcommand.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let broker_args = match &args.command {
        DlqCommand::List { broker, .. }
        | DlqCommand::Show { broker, .. }
        | DlqCommand::Replay { broker, .. } => broker.clone(),
    };
    let connected = broker_args.connect().await?;
    let ns = broker_args.namespace.clone();
    let result = match args.command {
        DlqCommand::List {
            dlq,
            filter,
            output,
            ..
        } => list(&connected.broker, &ns, &dlq, &filter, output).await,
        DlqCommand::Show {
            dlq, seq, output, ..
        } => show(&connected.broker, &ns, &dlq, seq, output).await,
        DlqCommand::Replay {
            dlq,
            filter,
            to,
            rate,
            keep,
            ..
        } => {
            let replayed = replay(
                &connected.broker,
                &ns,
                &dlq,
                &filter,
                to.as_deref(),
                rate,
                keep,
            )
            .await;
            if connected.forward.is_some() && !keep && replayed.as_ref().is_ok_and(|n| *n > 0) {
                super::cluster::refresh_dlq_status(&ns, &dlq).await;
            }
            replayed.map(|n| println!("replayed {n} message(s)"))
        }
    };
    connected.close().await;
    result
}

/// The dead letters of `ns/dlq`, reporting messages Sluice did not write on stderr.
async fn entries(broker: &Broker, ns: &str, dlq: &str) -> anyhow::Result<Vec<StoredDeadLetter>> {
    let r = ResourceRef::new(ns, dlq)?;
    let read = broker
        .dead_letters(&r)
        .await
        .with_context(|| format!("DeadLetterQueue {r} does not exist on the broker"))?;
    for e in &read.skipped {
        eprintln!("skipping {e}");
    }
    Ok(read.letters)
}

/// One dead letter as `list` and `show` report it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LetterReport {
    sequence: u64,
    group: String,
    /// `topic/NAME` or `queue/NAME`.
    source: String,
    partition: u32,
    offset: u64,
    attempts: u64,
    last_error: String,
    #[serde(with = "time::serde::rfc3339")]
    first_failure: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_failure: OffsetDateTime,
    original_id: String,
    /// Every header as stored (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, Vec<String>>>,
    /// The payload as text, when it is UTF-8 (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// The payload's size (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_bytes: Option<usize>,
}

impl LetterReport {
    fn of(sequence: u64, dl: &DeadLetter) -> Self {
        Self {
            sequence,
            group: dl.group.clone(),
            source: format!("{:?}/{}", dl.source_kind, dl.source_name).to_lowercase(),
            partition: dl.partition,
            offset: dl.offset,
            attempts: dl.attempts,
            last_error: dl.last_error.clone(),
            first_failure: dl.first_failure,
            last_failure: dl.last_failure,
            original_id: dl.original_id.clone(),
            headers: None,
            payload: None,
            payload_bytes: None,
        }
    }
}

async fn list(
    broker: &Broker,
    ns: &str,
    dlq: &str,
    filter: &Filter,
    output: OutputArgs,
) -> anyhow::Result<()> {
    let letters: Vec<LetterReport> = entries(broker, ns, dlq)
        .await?
        .iter()
        .filter(|e| filter.matches(e.sequence, &e.envelope))
        .map(|e| LetterReport::of(e.sequence, &e.envelope))
        .collect();
    output.print(&letters, |letters| {
        let now = OffsetDateTime::now_utc();
        let mut t = Table::new(&[
            "SEQ",
            "GROUP",
            "SOURCE",
            "PARTITION/OFFSET",
            "ATTEMPTS",
            "AGE",
            "LAST ERROR",
        ]);
        for l in letters {
            let age = Duration::try_from(now - l.last_failure).unwrap_or_default();
            t.row(vec![
                l.sequence.to_string(),
                l.group.clone(),
                l.source.clone(),
                format!("{}/{}", l.partition, l.offset),
                l.attempts.to_string(),
                humantime::format_duration(Duration::from_secs(age.as_secs())).to_string(),
                l.last_error.clone(),
            ]);
        }
        t.render()
    })
}

async fn show(
    broker: &Broker,
    ns: &str,
    dlq: &str,
    seq: u64,
    output: OutputArgs,
) -> anyhow::Result<()> {
    let entry = broker
        .dead_letter(&ResourceRef::new(ns, dlq)?, seq)
        .await
        .with_context(|| format!("DLQ {ns}/{dlq} has no message with sequence {seq}"))?;
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, values) in entry.headers.iter() {
        headers
            .entry(name.to_string())
            .or_default()
            .extend(values.iter().map(|v| v.to_string()));
    }
    let mut report = LetterReport::of(seq, &entry.envelope);
    report.payload = std::str::from_utf8(&entry.payload).ok().map(str::to_string);
    report.payload_bytes = Some(entry.payload.len());
    report.headers = Some(headers);
    output.print(&report, |r| {
        let mut out = format!("sequence: {}\n", r.sequence);
        for (name, values) in r.headers.iter().flatten() {
            for value in values {
                out.push_str(&format!("{name}: {value}\n"));
            }
        }
        match &r.payload {
            Some(text) => out.push_str(&format!("\n{text}\n")),
            None => out.push_str(&format!(
                "\n<{} bytes of binary payload>\n",
                r.payload_bytes.unwrap_or(0)
            )),
        }
        out
    })
}

/// Where a replayed message goes.
fn destination(
    to: Option<&str>,
    ns: &str,
    dl: &DeadLetter,
    key: Option<&[u8]>,
    partitions: Option<u32>,
    spreader: &KeylessSpreader,
) -> anyhow::Result<String> {
    let Some(to) = to else {
        return Ok(dl.source_subject.clone());
    };
    match to.split_once('/') {
        Some(("queue", name)) => Ok(names::queue_subject(&ResourceRef::new(ns, name)?)),
        Some(("topic", name)) => {
            let partitions = partitions.context("topic partitions unknown")?;
            let p = choose_partition(key, partitions, spreader);
            Ok(names::topic_subject(&ResourceRef::new(ns, name)?, p))
        }
        _ => bail!("--to {to:?}: use topic/NAME or queue/NAME"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn replay(
    broker: &Broker,
    ns: &str,
    dlq: &str,
    filter: &Filter,
    to: Option<&str>,
    rate: Option<f64>,
    keep: bool,
) -> anyhow::Result<usize> {
    let selected: Vec<StoredDeadLetter> = entries(broker, ns, dlq)
        .await?
        .into_iter()
        .filter(|e| filter.matches(e.sequence, &e.envelope))
        .collect();
    let partitions = match to.and_then(|t| t.strip_prefix("topic/")) {
        Some(name) => {
            let n = broker
                .topic_partition_count(&ResourceRef::new(ns, name)?)
                .await?;
            if n == 0 {
                bail!("topic {ns}/{name} does not exist on the broker");
            }
            Some(n)
        }
        None => None,
    };
    let spreader = KeylessSpreader::default();
    let pause = rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let dlq_ref = ResourceRef::new(ns, dlq)?;
    let total = selected.len();
    for (done, e) in selected.into_iter().enumerate() {
        let key = e.key().map(str::as_bytes);
        let subject = destination(to, ns, &e.envelope, key, partitions, &spreader)?;
        let ack = broker
            .jetstream()
            .publish_with_headers(subject.clone(), e.replay_headers(), e.payload.clone())
            .await
            .with_context(|| format!("failed to replay DLQ message {} to {subject}", e.sequence))?;
        ack.await.with_context(|| {
            format!(
                "the broker did not acknowledge the replay of DLQ message {} to {subject}",
                e.sequence
            )
        })?;
        if !keep {
            broker
                .remove_dead_letter(&dlq_ref, e.sequence)
                .await
                .with_context(|| format!("replayed DLQ message {} but could not remove it; a repeated replay is de-duplicated", e.sequence))?;
        }
        progress(done + 1, total);
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    if total > 0 {
        eprintln!();
    }
    Ok(total)
}

fn progress(done: usize, total: usize) {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    eprint!(
        "\r[{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_broker::config::SourceKind;
    use time::macros::datetime;

    fn dl() -> DeadLetter {
        DeadLetter {
            source_kind: SourceKind::Queue,
            source_name: "encode".into(),
            source_subject: "sluice.q.default.encode".into(),
            partition: 0,
            offset: 20,
            group: "encoders".into(),
            attempts: 3,
            last_error: "cannot decode upload-13".into(),
            first_failure: datetime!(2026-11-26 10:00 UTC),
            last_failure: datetime!(2026-11-26 10:01 UTC),
            original_id: "upload-13".into(),
        }
    }

    #[test]
    fn filters_combine() {
        let d = dl();
        assert!(Filter::default().matches(1, &d));
        let f = Filter {
            group: Some("encoders".into()),
            source: Some("queue/encode".into()),
            error: Some("decode".into()),
            seq: Some(1),
        };
        assert!(f.matches(1, &d));
        assert!(!f.matches(2, &d));
        assert!(
            !Filter {
                group: Some("other".into()),
                ..Default::default()
            }
            .matches(1, &d)
        );
        assert!(
            !Filter {
                source: Some("topic/encode".into()),
                ..Default::default()
            }
            .matches(1, &d)
        );
    }

    #[test]
    fn destination_defaults_to_the_source_and_partitions_by_key() {
        let spreader = KeylessSpreader::default();
        let d = dl();
        assert_eq!(
            destination(None, "default", &d, None, None, &spreader).unwrap(),
            "sluice.q.default.encode"
        );
        assert_eq!(
            destination(Some("queue/retry"), "default", &d, None, None, &spreader).unwrap(),
            "sluice.q.default.retry"
        );
        let p = sluice_broker::partitioner::partition_for_key(b"k", 4);
        assert_eq!(
            destination(
                Some("topic/t"),
                "default",
                &d,
                Some(b"k"),
                Some(4),
                &spreader
            )
            .unwrap(),
            format!("sluice.t.default.t.{p}")
        );
        assert!(destination(Some("nope"), "default", &d, None, None, &spreader).is_err());
    }
}
