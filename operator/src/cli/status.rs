//! `sluice status`: the one-screen overview of a namespace (or all) on a broker — the
//! broker, topics with partitions and offsets, queues with depth, groups with lag, members
//! and partition owners, dead-letter queues with depth.

use clap::Args;
use serde::Serialize;

use super::output::Table;
use super::report::{self, DlqReport, GroupReport, ListArgs, QueueReport, TopicReport};

/// Arguments of `sluice status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Broker, namespaces, format.
    #[command(flatten)]
    pub list: ListArgs,
}

/// The overview.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The server answering.
    pub broker: BrokerReport,
    /// Topics by name.
    pub topics: Vec<TopicReport>,
    /// Queues by name.
    pub queues: Vec<QueueReport>,
    /// Groups by name.
    pub groups: Vec<GroupReport>,
    /// Dead-letter queues by name.
    pub dead_letter_queues: Vec<DlqReport>,
}

/// The server the command is connected to.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerReport {
    /// Server name.
    pub server: String,
    /// nats-server version.
    pub version: String,
    /// Cluster name, when clustered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// Reads the overview and prints it.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let connected = args.list.broker.connect().await?;
    let result = read(&connected.broker, args.list.namespace()).await;
    connected.close().await;
    args.list.output.print(&result?, table)
}

async fn read(
    broker: &sluice_broker::Broker,
    namespace: Option<&str>,
) -> anyhow::Result<StatusReport> {
    let info = broker.client().server_info();
    let mut groups = Vec::new();
    for cfg in report::group_configs(broker, namespace).await? {
        groups.push(report::group(broker, &cfg).await?);
    }
    Ok(StatusReport {
        broker: BrokerReport {
            server: info.server_name,
            version: info.version,
            cluster: info.cluster,
        },
        topics: report::topics(broker, namespace).await?,
        queues: report::queues(broker, namespace).await?,
        groups,
        dead_letter_queues: report::dlqs(broker, namespace).await?,
    })
}

/// The overview as sections of tables.
fn table(s: &StatusReport) -> String {
    let mut out = format!(
        "BROKER {} (nats-server {}{})\n\n",
        s.broker.server,
        s.broker.version,
        s.broker
            .cluster
            .as_ref()
            .map(|c| format!(", cluster {c}"))
            .unwrap_or_default()
    );
    out.push_str(&report::topics_table(&s.topics));
    out.push('\n');
    out.push_str(&report::queues_table(&s.queues));
    out.push('\n');
    let mut g = Table::new(&["GROUP", "SOURCE", "MEMBERS", "LAG", "EFFECTIVE", "OWNERS"]);
    for group in &s.groups {
        let owners: Vec<String> = group
            .partitions
            .iter()
            .filter_map(|p| p.owner.as_ref().map(|o| format!("{}:{o}", p.partition)))
            .collect();
        g.row(vec![
            group.name.clone(),
            group.source.clone(),
            group.members.to_string(),
            group.lag.to_string(),
            group.effective_lag.to_string(),
            if owners.is_empty() {
                "-".into()
            } else {
                owners.join(" ")
            },
        ]);
    }
    out.push_str(&g.render());
    out.push('\n');
    let mut d = Table::new(&["DEADLETTERQUEUE", "DEPTH", "OLDEST"]);
    for dlq in &s.dead_letter_queues {
        d.row(vec![
            dlq.name.clone(),
            dlq.depth.to_string(),
            dlq.oldest_age_seconds
                .map(|a| humantime::format_duration(std::time::Duration::from_secs(a)).to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&d.render());
    out
}
