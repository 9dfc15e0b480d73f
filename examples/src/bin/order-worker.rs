//! A worker of the order-events example. `--role analytics|notifications|audit`: each role
//! records one effect per order in `ORDERS_<ROLE>` and checks that every customer's orders
//! arrive in order (within this process), logging an error otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Parser;
use sluice_examples::{Effect, Order, effect_store, init_logging, record_effect};
use sluice_worker::{HandlerError, Worker};

#[derive(Debug, Parser)]
struct Args {
    /// analytics, notifications or audit.
    #[arg(long)]
    role: String,
    /// Simulated work per order, in milliseconds.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let bucket = format!("ORDERS_{}", args.role.to_uppercase());
    let last_seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let check_order = args.role != "notifications";
    let work = std::time::Duration::from_millis(args.work_ms);
    Worker::from_env()?
        .run(move |msg, ctx| {
            let bucket = bucket.clone();
            let last_seen = last_seen.clone();
            async move {
                let order: Order = serde_json::from_slice(&msg.payload)
                    .map_err(|e| HandlerError::permanent(format!("not an order: {e}")))?;
                if check_order
                    && let Ok(mut seen) = last_seen.lock()
                {
                    let last = seen.entry(order.customer.clone()).or_insert(0);
                    if order.customer_seq < *last {
                        tracing::error!(customer = %order.customer, seq = order.customer_seq, last = *last, "out of order");
                    }
                    *last = order.customer_seq;
                }
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                let store = effect_store(ctx.jetstream(), &bucket)
                    .await
                    .map_err(|e| HandlerError::retryable(e.to_string()))?;
                // A replayed group (offsets reset) sees its orders again: that shows up as
                // `duplicate.*` keys, expected after a replay and never otherwise.
                let key = order.order_id.clone();
                if record_effect(&store, &key, ctx.idempotency_key())
                    .await
                    .map_err(|e| HandlerError::retryable(e.to_string()))?
                    == Effect::Duplicate
                {
                    tracing::warn!(%key, "seen before (replay or redelivery)");
                }
                Ok(())
            }
        })
        .await?;
    Ok(())
}
