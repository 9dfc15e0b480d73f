//! The job API of the render-jobs example: queues render jobs, premium customers' at
//! priority 1, and some scheduled for later (`send_after`).

use std::time::Duration;

use clap::Parser;
use sluice_examples::{RenderJob, init_logging, namespace};
use sluice_worker::producer::{Producer, ProducerConfig, Record};

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
    let producer = Producer::connect_from_env(ProducerConfig::default()).await?;
    let queue = producer.queue(&namespace(), &args.queue).await?;
    let mut receipts = Vec::with_capacity(args.count as usize);
    for i in 1..=args.count {
        let job = RenderJob {
            job_id: format!("render-{i}"),
            premium: i % 4 == 0,
            busy_first: i % 7 == 0,
        };
        let mut record = Record::new(serde_json::to_vec(&job)?)
            .id(job.job_id.clone())
            .priority(u32::from(job.premium));
        if i % 10 == 0 {
            record = record.deliver_after(Duration::from_secs(2));
        }
        receipts.push(queue.send(record).await?);
    }
    for receipt in receipts {
        receipt.await?;
    }
    producer.flush().await?;
    println!("queued {} render jobs on {}", args.count, args.queue);
    Ok(())
}
