//! `sluice dlq list|show|replay <dlq>`: inspect dead-lettered messages and send them back.
//!
//! Replay publishes each selected message to where it came from (its `Sluice-Source-Subject`)
//! or to `--to topic/NAME` / `--to queue/NAME`, with the headers of
//! [`sluice_broker::dlq::replay_headers`] (stable replay id, original id kept), waits for the
//! broker's acknowledgement, and only then removes it from the DLQ (unless `--keep`). A replay
//! interrupted halfway can simply be run again: what was replayed is gone from the DLQ, and a
//! message replayed but not yet removed is de-duplicated by its replay id.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use sluice_broker::dlq::{DeadLetter, StoredDeadLetter};
use sluice_broker::partitioner::{KeylessSpreader, choose_partition};
use sluice_broker::{Broker, ResourceRef, names};
use time::OffsetDateTime;

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
        DlqCommand::List { dlq, filter, .. } => list(&connected.broker, &ns, &dlq, &filter).await,
        DlqCommand::Show { dlq, seq, .. } => show(&connected.broker, &ns, &dlq, seq).await,
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

async fn list(broker: &Broker, ns: &str, dlq: &str, filter: &Filter) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    println!(
        "SEQ    GROUP                SOURCE                    PARTITION/OFFSET  ATTEMPTS  AGE     LAST ERROR"
    );
    for e in entries(broker, ns, dlq).await? {
        if !filter.matches(e.sequence, &e.envelope) {
            continue;
        }
        let dl = &e.envelope;
        let age = Duration::try_from(now - dl.last_failure).unwrap_or_default();
        println!(
            "{:<7}{:<21}{:<26}{:<18}{:<10}{:<8}{}",
            e.sequence,
            dl.group,
            format!("{:?}/{}", dl.source_kind, dl.source_name).to_lowercase(),
            format!("{}/{}", dl.partition, dl.offset),
            dl.attempts,
            humantime::format_duration(Duration::from_secs(age.as_secs())).to_string(),
            dl.last_error
        );
    }
    Ok(())
}

async fn show(broker: &Broker, ns: &str, dlq: &str, seq: u64) -> anyhow::Result<()> {
    let entry = broker
        .dead_letter(&ResourceRef::new(ns, dlq)?, seq)
        .await
        .with_context(|| format!("DLQ {ns}/{dlq} has no message with sequence {seq}"))?;
    println!("sequence: {seq}");
    for (name, values) in entry.headers.iter() {
        for value in values {
            println!("{name}: {value}");
        }
    }
    match std::str::from_utf8(&entry.payload) {
        Ok(text) => println!("\n{text}"),
        Err(_) => println!("\n<{} bytes of binary payload>", entry.payload.len()),
    }
    Ok(())
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
