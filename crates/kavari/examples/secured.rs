//! Publish and consume over TLS with SCRAM-SHA-512 (`SASL_SSL`).
//!
//! `cargo run -p kavari --features tls-graviola --example secured`
//!
//! With `KAVARI_BROKERS` set, connects as the `KAVARI_*` variables say
//! (`KAVARI_SECURITY_PROTOCOL=SASL_SSL`, `KAVARI_SASL_MECHANISM`,
//! `KAVARI_SASL_USERNAME`, `KAVARI_SASL_PASSWORD`, `KAVARI_SSL_CA_LOCATION`;
//! see the README's "Connecting to a secured cluster"). Otherwise starts a
//! local broker that serves TLS only, with a certificate from a CA of its
//! own, and requires SCRAM, and connects to it with builder calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kavari::{
    HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, OffsetReset, Sasl, Tls,
};
use kavari_testcontainers::KafkaBroker;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "secured.payments")]
struct PaymentTaken {
    #[kavari(key)]
    payment_id: String,
    amount_cents: u64,
}

struct Ledger(Arc<AtomicUsize>);

impl MessageHandler<PaymentTaken> for Ledger {
    async fn handle(&self, msg: PaymentTaken, ctx: &MessageContext) -> Result<(), HandlerError> {
        println!("handled {msg:?} from {}/{}", ctx.topic, ctx.partition);
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let external = std::env::var("KAVARI_BROKERS").is_ok_and(|b| !b.trim().is_empty());
    let (builder, _local) = if external {
        (Kavari::from_env()?, None)
    } else {
        let password = "example-password";
        let broker = KafkaBroker::builder()
            .tls(&["127.0.0.1"])
            .sasl_user("payments", password)
            .start()
            .await?;
        broker.create_topic(PaymentTaken::TOPIC, 3).await?;
        let ca = broker.tls_ca_file().ok_or("the local broker serves TLS")?;
        let builder = Kavari::builder(broker.bootstrap_servers())
            .tls(Tls::builder().ca_file(ca).build()?)
            .sasl(Sasl::scram_sha512("payments", password));
        (builder, Some(broker))
    };
    let manager = builder
        .group_id("secured-example")
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    let handled = Arc::new(AtomicUsize::new(0));
    manager.subscribe::<PaymentTaken, _>(Ledger(Arc::clone(&handled)))?;
    manager.start().await?;

    let payment = PaymentTaken {
        payment_id: "p-1".into(),
        amount_cents: 4200,
    };
    let d = manager.publish(&payment).await?;
    println!(
        "published over TLS and SCRAM to {}/{} at offset {}",
        d.topic, d.partition, d.offset
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handled.load(Ordering::SeqCst) < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("health: {:?}", manager.health().state);
    manager.shutdown().await?;
    if handled.load(Ordering::SeqCst) < 1 {
        return Err("the payment was not handled within 30 s".into());
    }
    Ok(())
}
