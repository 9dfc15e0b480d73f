//! A worker configured entirely from the `SLUICE_*` environment: logs each message and
//! succeeds. Run with `SLUICE_BROKER_URL=nats://127.0.0.1:4222 SLUICE_GROUP=billing
//! cargo run -p sluice-worker --example worker`.

use sluice_worker::{HandlerError, Worker};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    Worker::from_env()?
        .run(|msg, ctx| async move {
            tracing::info!(
                partition = msg.partition,
                offset = msg.offset,
                attempt = msg.attempt,
                id = %ctx.idempotency_key(),
                bytes = msg.payload.len(),
                "handled"
            );
            Ok::<(), HandlerError>(())
        })
        .await?;
    Ok(())
}
