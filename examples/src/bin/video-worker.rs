//! A worker of the video pipeline. `--stage` picks what it does (encode, thumbnails,
//! subtitles, search-index, notify-followers); each stage records its effect per upload id in
//! the `VIDEO_RESULTS` bucket. The encoder cannot decode corrupt uploads (a permanent error,
//! so the message is dead-lettered) unless `VIDEO_ACCEPT_CORRUPT=1` (the fixed encoder).

use std::time::Duration;

use clap::Parser;
use sluice_examples::{Upload, init_logging, record_handler_effect};
use sluice_worker::{HandlerError, Worker};

#[derive(Debug, Parser)]
struct Args {
    /// Processing stage.
    #[arg(long)]
    stage: String,
    /// Simulated work per upload.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    work: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let ms = s
        .strip_suffix("ms")
        .ok_or_else(|| format!("{s:?}: use milliseconds like 20ms"))?;
    ms.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| e.to_string())
}

/// Bucket of effects.
const RESULTS: &str = "VIDEO_RESULTS";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let accept_corrupt = std::env::var("VIDEO_ACCEPT_CORRUPT").as_deref() == Ok("1");
    let worker = Worker::from_env()?;
    let stage = args.stage.clone();
    let work = args.work;
    worker
        .run(move |msg, ctx| {
            let stage = stage.clone();
            async move {
                let upload: Upload = serde_json::from_slice(&msg.payload)
                    .map_err(|e| HandlerError::permanent(format!("not an upload: {e}")))?;
                if stage == "encode" && upload.corrupt && !accept_corrupt {
                    return Err(HandlerError::permanent(format!(
                        "cannot decode {}: corrupt video stream",
                        upload.upload_id
                    )));
                }
                tokio::time::sleep(work).await;
                let key = format!("{stage}.{}", upload.upload_id);
                record_handler_effect(
                    ctx.jetstream(),
                    RESULTS,
                    &key,
                    ctx.idempotency_key(),
                    msg.attempt,
                )
                .await?;
                Ok(())
            }
        })
        .await?;
    Ok(())
}
