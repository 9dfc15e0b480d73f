//! The order API of the order-events example: publishes orders keyed by customer id.

use clap::Parser;
use sluice_examples::{Order, init_logging, namespace};
use sluice_worker::producer::{Producer, ProducerConfig, Record};

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
    let producer = Producer::connect_from_env(ProducerConfig::default()).await?;
    let topic = producer.topic(&namespace(), &args.topic).await?;
    let customers = args.customers.max(1);
    let mut receipts = Vec::new();
    for i in 0..args.count {
        let order = Order {
            order_id: format!("order-{i}"),
            customer: format!("customer-{}", i % customers),
            customer_seq: i / customers + 1,
            amount_cents: 500 + (i * 37) % 10_000,
        };
        let record = Record::new(serde_json::to_vec(&order)?)
            .key(order.customer.clone())
            .id(order.order_id.clone());
        receipts.push(topic.send(record).await?);
    }
    for receipt in receipts {
        receipt.await?;
    }
    producer.flush().await?;
    println!("published {} orders to {}", args.count, args.topic);
    Ok(())
}
