//! The upload API of the video pipeline: publishes uploads to the `video-uploads` topic,
//! keyed and identified by upload id. One of them can be marked corrupt.

use clap::Parser;
use sluice_examples::{Upload, init_logging, namespace};
use sluice_worker::producer::{Producer, ProducerConfig, Record};

#[derive(Debug, Parser)]
struct Args {
    /// Topic to publish to.
    #[arg(long, default_value = "video-uploads")]
    topic: String,
    /// How many uploads.
    #[arg(long, default_value_t = 25)]
    count: u32,
    /// Upload id to mark corrupt (e.g. upload-13).
    #[arg(long)]
    corrupt: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let producer = Producer::connect_from_env(ProducerConfig::default()).await?;
    let topic = producer.topic(&namespace(), &args.topic).await?;
    let mut receipts = Vec::with_capacity(args.count as usize);
    for i in 1..=args.count {
        let upload = Upload {
            upload_id: format!("upload-{i}"),
            user: format!("user-{}", i % 7),
            size: 1_000_000 + u64::from(i) * 4_096,
            corrupt: args.corrupt.as_deref() == Some(format!("upload-{i}").as_str()),
        };
        let record = Record::new(serde_json::to_vec(&upload)?)
            .key(upload.upload_id.clone())
            .id(upload.upload_id.clone());
        receipts.push(topic.send(record).await?);
    }
    for receipt in receipts {
        receipt.await?;
    }
    producer.flush().await?;
    println!("published {} uploads to {}", args.count, args.topic);
    Ok(())
}
