//! The README's quickstart: publish two message types.
//!
//! `cargo run -p kavari --example quickstart`
//!
//! Uses `KAVARI_BROKERS` when set; otherwise starts a local test broker
//! through kavari-testcontainers (building it first if it is missing).

use kavari::{FibonacciRetryPolicy, KafkaMessage, Kavari};
use kavari_testcontainers::KafkaBroker;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "quickstart.orders")]
struct OrderPlaced {
    #[kavari(key)]
    order_id: String,
    amount_cents: u64,
}

#[derive(Debug, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "quickstart.orders", name = "OrderCancelled")]
struct OrderCancelled {
    #[kavari(key)]
    order_id: String,
    reason: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rskafka=warn".into()),
        )
        .init();

    // A broker: yours (KAVARI_BROKERS) or a local one for this run.
    let broker = KafkaBroker::start().await?;
    // On your own cluster the topic may exist already: that is fine.
    if let Err(e) = broker.create_topic(OrderPlaced::TOPIC, 3).await {
        tracing::info!(error = %e, "topic not created");
    }
    println!("broker: {}", broker.bootstrap_servers());

    let manager = Kavari::builder(broker.bootstrap_servers())
        .publishing_retry_policy(FibonacciRetryPolicy::new(5))
        .build()
        .await?;

    for i in 0..3 {
        let placed = OrderPlaced {
            order_id: format!("o-{i}"),
            amount_cents: 1250 + i,
        };
        let d = manager.publish(&placed).await?;
        println!(
            "published {placed:?} to {}/{} at offset {}",
            d.topic, d.partition, d.offset
        );
    }
    let cancelled = OrderCancelled {
        order_id: "o-1".into(),
        reason: "changed mind".into(),
    };
    let d = manager.publish(&cancelled).await?;
    println!(
        "published {cancelled:?} to {}/{} at offset {}",
        d.topic, d.partition, d.offset
    );

    manager.shutdown().await?;
    println!("done: {:?}", manager.publish_stats());
    Ok(())
}
