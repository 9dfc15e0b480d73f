//! A worker of the render-jobs example. A job marked `busy_first` finds its render slot busy
//! on the first try and is re-queued with a delay (`send_after` through the context's queue
//! output) instead of failing; every job records its effect once in the `RENDER_RESULTS`
//! bucket (`render.<job>`), premium ones also under `premium.<job>`.

use std::time::Duration;

use sluice_examples::{RenderJob, init_logging, record_handler_effect};
use sluice_worker::producer::Record;
use sluice_worker::{HandlerError, Worker};

/// Bucket of effects.
const RESULTS: &str = "RENDER_RESULTS";
/// How long a busy job waits before it is tried again.
const RETRY_LATER: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    Worker::from_env()?
        .run(move |msg, ctx| async move {
            let mut job: RenderJob = serde_json::from_slice(&msg.payload)
                .map_err(|e| HandlerError::permanent(format!("not a render job: {e}")))?;
            if job.busy_first {
                // The slot is busy: try again later, without the flag.
                job.busy_first = false;
                let body =
                    serde_json::to_vec(&job).map_err(|e| HandlerError::permanent(e.to_string()))?;
                ctx.queue("render")
                    .send_record(
                        Record::new(body)
                            .priority(u32::from(job.premium))
                            .deliver_after(RETRY_LATER),
                    )
                    .await
                    .map_err(HandlerError::retryable)?;
                tracing::info!(job = %job.job_id, "render slot busy: retrying later");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut keys = vec![format!("render.{}", job.job_id)];
            if job.premium {
                keys.push(format!("premium.{}", job.job_id));
            }
            for key in keys {
                record_handler_effect(ctx.jetstream(), RESULTS, &key, &job.job_id, msg.attempt)
                    .await?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}
