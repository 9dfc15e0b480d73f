//! The order API of the order-events example: publishes orders keyed by customer id.

use clap::Parser;
use sluice_examples::{Destination, Order, init_logging, publish_all};
use sluice_worker::producer::Record;

#[derive(Debug, Parser)]
struct Args {
    /// Topic to publish to.
    #[arg(long, default_value = "order-created")]
    topic: String,
    /// How many orders.
    #[arg(long, default_value_t = 600)]
    count: u64,
    /// How many distinct customers.
    #[arg(long, default_value_t = 40)]
    customers: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let customers = args.customers.max(1);
    let orders = (0..args.count).map(|i| {
        let order = Order {
            order_id: format!("order-{i}"),
            customer: format!("customer-{}", i % customers),
            customer_seq: i / customers + 1,
            amount_cents: 500 + (i * 37) % 10_000,
        };
        Ok(Record::new(serde_json::to_vec(&order)?)
            .key(order.customer)
            .id(order.order_id))
    });
    let published = publish_all(&Destination::Topic(args.topic.clone()), orders).await?;
    println!("published {published} orders to {}", args.topic);
    Ok(())
}
