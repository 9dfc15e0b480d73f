//! The upload API of the video pipeline: publishes uploads to the `video-uploads` topic,
//! keyed and identified by upload id. One of them can be marked corrupt.

use clap::Parser;
use sluice_examples::{Destination, Upload, init_logging, publish_all};
use sluice_worker::producer::Record;

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
    let uploads = (1..=args.count).map(|i| {
        let upload_id = format!("upload-{i}");
        let upload = Upload {
            corrupt: args.corrupt.as_deref() == Some(upload_id.as_str()),
            upload_id,
            user: format!("user-{}", i % 7),
            size: 1_000_000 + u64::from(i) * 4_096,
        };
        Ok(Record::new(serde_json::to_vec(&upload)?)
            .key(upload.upload_id.clone())
            .id(upload.upload_id))
    });
    let published = publish_all(&Destination::Topic(args.topic.clone()), uploads).await?;
    println!("published {published} uploads to {}", args.topic);
    Ok(())
}
