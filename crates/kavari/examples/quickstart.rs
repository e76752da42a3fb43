//! The README's quickstart: publish and consume two message types.
//!
//! `cargo run -p kavari --example quickstart`
//!
//! Uses `KAVARI_BROKERS` (and the other `KAVARI_*` settings of
//! `Kavari::from_env`) when set; otherwise starts a local Apache Kafka
//! broker (one KRaft node) through kavari-testcontainers, installing it
//! from Maven Central first if it is missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kavari::{
    FibonacciRetryPolicy, HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler,
    OffsetReset,
};
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

/// A handler with its own dependencies (here, a counter).
struct Billing {
    handled: Arc<AtomicUsize>,
}

impl MessageHandler<OrderPlaced> for Billing {
    async fn handle(&self, msg: OrderPlaced, ctx: &MessageContext) -> Result<(), HandlerError> {
        println!(
            "billing: {} for {} cents ({}/{} offset {})",
            msg.order_id, msg.amount_cents, ctx.topic, ctx.partition, ctx.offset
        );
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl MessageHandler<OrderCancelled> for Billing {
    async fn handle(&self, msg: OrderCancelled, _: &MessageContext) -> Result<(), HandlerError> {
        println!("billing: {} cancelled ({})", msg.order_id, msg.reason);
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The service's subscriptions: `Billing` for both message types (one
/// handler per delivery for `OrderPlaced`, one shared for the other).
fn subscribe_billing(
    manager: &Kavari,
    handled: &Arc<AtomicUsize>,
) -> Result<(), kavari::SubscribeError> {
    let counter = Arc::clone(handled);
    manager.subscribe_with::<OrderPlaced, _>(move || Billing {
        handled: Arc::clone(&counter),
    })?;
    manager.subscribe::<OrderCancelled, _>(Billing {
        handled: Arc::clone(handled),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // A broker: yours (KAVARI_BROKERS) or a local one for this run (one
    // node starts in about half the time of the tests' three).
    let broker = KafkaBroker::builder().nodes(1).start().await?;
    // On your own cluster the topics may exist already: that is fine.
    for topic in [
        OrderPlaced::TOPIC.to_string(),
        format!("{}.dlq", OrderPlaced::TOPIC),
    ] {
        if let Err(e) = broker.create_topic(&topic, 3).await {
            tracing::info!(error = %e, topic, "topic not created");
        }
    }
    println!("broker: {}", broker.bootstrap_servers());

    // With KAVARI_BROKERS set, every KAVARI_* setting applies
    // (Kavari::from_env); the calls below override what they name.
    let builder = if broker.is_external() {
        Kavari::from_env()?
    } else {
        Kavari::builder(broker.bootstrap_servers())
    };
    let manager = builder
        .group_id("quickstart-billing")
        .publishing_retry_policy(FibonacciRetryPolicy::new(5))
        .delivery_retry_policy(FibonacciRetryPolicy::new(3))
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    let handled = Arc::new(AtomicUsize::new(0));
    subscribe_billing(&manager, &handled)?;
    manager.start().await?;

    // Ready: joined the group and fetching.
    while !manager.health().ready {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
    manager.publish(&cancelled).await?;
    println!("published {cancelled:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handled.load(Ordering::SeqCst) < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("handled {} of 4 messages", handled.load(Ordering::SeqCst));
    println!("health: {:?}", manager.health().state);
    manager.shutdown().await?;
    if handled.load(Ordering::SeqCst) < 4 {
        return Err("not every message was handled within 30 s".into());
    }
    Ok(())
}

/// The quickstart's subscriptions, tested without a broker
/// (`cargo test -p kavari --example quickstart`).
#[cfg(test)]
mod tests {
    use kavari::testing::InMemoryBroker;

    use super::*;

    #[tokio::test]
    async fn billing_handles_both_message_types() -> Result<(), Box<dyn std::error::Error>> {
        let broker = InMemoryBroker::new();
        let manager =
            broker.manager(Kavari::builder("kafka:9092").group_id("quickstart-billing"))?;
        let handled = Arc::new(AtomicUsize::new(0));
        subscribe_billing(&manager, &handled)?;
        manager.start().await?;
        manager
            .publish(&OrderPlaced {
                order_id: "o-1".into(),
                amount_cents: 1250,
            })
            .await?;
        manager
            .publish(&OrderCancelled {
                order_id: "o-1".into(),
                reason: "changed mind".into(),
            })
            .await?;
        // Both handled before their publishes returned, nothing dead-lettered.
        assert_eq!(handled.load(Ordering::SeqCst), 2);
        assert!(broker.dead_letters::<OrderPlaced>()?.is_empty());
        assert_eq!(broker.records("quickstart.orders").len(), 2);
        manager.shutdown().await?;
        Ok(())
    }
}
