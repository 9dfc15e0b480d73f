//! The job API of the render-jobs example: queues render jobs, premium customers' at
//! priority 1, and some scheduled for later (`send_after`).

use std::time::Duration;

use clap::Parser;
use sluice_examples::{Destination, RenderJob, init_logging, publish_all};
use sluice_worker::producer::Record;

#[derive(Debug, Parser)]
struct Args {
    /// Queue to publish to.
    #[arg(long, default_value = "render")]
    queue: String,
    /// How many jobs.
    #[arg(long, default_value_t = 40)]
    count: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let jobs = (1..=args.count).map(|i| {
        let job = RenderJob {
            job_id: format!("render-{i}"),
            premium: i % 4 == 0,
            busy_first: i % 7 == 0,
        };
        let record = Record::new(serde_json::to_vec(&job)?)
            .id(job.job_id.clone())
            .priority(u32::from(job.premium));
        Ok(if i % 10 == 0 {
            record.deliver_after(Duration::from_secs(2))
        } else {
            record
        })
    });
    let published = publish_all(&Destination::Queue(args.queue.clone()), jobs).await?;
    println!("queued {published} render jobs on {}", args.queue);
    Ok(())
}
