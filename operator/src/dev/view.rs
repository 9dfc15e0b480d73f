//! The live terminal view of `sluice dev` (pure: state in, text out) and the summary line.

use std::fmt::Write as _;

/// One topic's row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicRow {
    /// `namespace/name`.
    pub name: String,
    /// Messages per partition.
    pub partitions: Vec<u64>,
}

/// One group's row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupRow {
    /// `namespace/name`.
    pub name: String,
    /// `topic/x` or `queue/y`.
    pub source: String,
    /// Lag per partition.
    pub lag: Vec<u64>,
    /// Worker processes running.
    pub replicas: u32,
    /// Crashed workers restarted so far.
    pub restarts: u32,
    /// The autoscaler's last reason.
    pub reason: String,
    /// Ready condition message when not ready.
    pub problem: Option<String>,
}

/// One dead-letter queue's row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DlqRow {
    /// `namespace/name`.
    pub name: String,
    /// Messages in it.
    pub depth: u64,
}

/// Everything the view shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    /// Broker URL.
    pub broker: String,
    /// Seconds since start.
    pub elapsed_secs: u64,
    /// Topics.
    pub topics: Vec<TopicRow>,
    /// Groups.
    pub groups: Vec<GroupRow>,
    /// Dead-letter queues.
    pub dlqs: Vec<DlqRow>,
    /// Jobs: name and state (`running`, `succeeded`, `failed (exit 2)`).
    pub jobs: Vec<(String, String)>,
    /// Problems to show (invalid manifests, ...).
    pub problems: Vec<String>,
}

/// Renders a frame as plain text (one screen).
pub fn render(frame: &Frame) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice dev  broker {}  {}s   (Ctrl-C to stop)",
        frame.broker, frame.elapsed_secs
    );
    if !frame.topics.is_empty() {
        let _ = writeln!(
            out,
            "\nTOPIC                           PARTITIONS  MESSAGES (per partition)"
        );
        for t in &frame.topics {
            let total: u64 = t.partitions.iter().sum();
            let _ = writeln!(
                out,
                "{:<32}{:<12}{} {:?}",
                t.name,
                t.partitions.len(),
                total,
                t.partitions
            );
        }
    }
    if !frame.groups.is_empty() {
        let _ = writeln!(
            out,
            "\nGROUP                     SOURCE                    REPLICAS  LAG     REASON"
        );
        for g in &frame.groups {
            let lag: u64 = g.lag.iter().sum();
            let restarts = if g.restarts > 0 {
                format!(" ({} restarts)", g.restarts)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{:<26}{:<26}{:<10}{:<8}{}{}",
                g.name, g.source, g.replicas, lag, g.reason, restarts
            );
            if let Some(problem) = &g.problem {
                let _ = writeln!(out, "  ! {problem}");
            }
        }
    }
    if !frame.dlqs.is_empty() {
        let _ = writeln!(out, "\nDEAD-LETTER QUEUE               DEPTH");
        for d in &frame.dlqs {
            let _ = writeln!(out, "{:<32}{}", d.name, d.depth);
        }
    }
    if !frame.jobs.is_empty() {
        let _ = writeln!(out, "\nJOB                             STATE");
        for (name, state) in &frame.jobs {
            let _ = writeln!(out, "{name:<32}{state}");
        }
    }
    for p in &frame.problems {
        let _ = writeln!(out, "! {p}");
    }
    out
}

/// Totals printed when `sluice dev` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Totals {
    /// Messages published to topics and directly to queues.
    pub published: u64,
    /// Successful handlings, summed over groups (a message read by 3 groups counts 3 times).
    pub processed: u64,
    /// Messages dead-lettered, summed over groups.
    pub dead_lettered: u64,
    /// Messages a group should have seen but neither handled nor dead-lettered.
    pub lost: u64,
}

impl Totals {
    /// The summary line: `published=.. processed=.. dead-lettered=.. lost=..`.
    pub fn line(&self) -> String {
        format!(
            "published={} processed={} dead-lettered={} lost={}",
            self.published, self.processed, self.dead_lettered, self.lost
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_shows_every_section() {
        let frame = Frame {
            broker: "nats://127.0.0.1:4222".into(),
            elapsed_secs: 7,
            topics: vec![TopicRow {
                name: "default/orders".into(),
                partitions: vec![3, 4],
            }],
            groups: vec![GroupRow {
                name: "default/billing".into(),
                source: "topic/orders".into(),
                lag: vec![1, 2],
                replicas: 2,
                restarts: 1,
                reason: "lag 3 needs 1 replica".into(),
                problem: Some("InvalidSpec: spec.retry".into()),
            }],
            dlqs: vec![DlqRow {
                name: "default/dlq".into(),
                depth: 5,
            }],
            jobs: vec![("default/seed".into(), "succeeded".into())],
            problems: vec!["something".into()],
        };
        let text = render(&frame);
        for needle in [
            "default/orders",
            "[3, 4]",
            "topic/orders",
            "(1 restarts)",
            "! InvalidSpec: spec.retry",
            "default/dlq",
            "succeeded",
            "! something",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn summary_line_format() {
        let t = Totals {
            published: 25,
            processed: 124,
            dead_lettered: 1,
            lost: 0,
        };
        assert_eq!(
            t.line(),
            "published=25 processed=124 dead-lettered=1 lost=0"
        );
    }
}
