//! The TLS crypto providers Kavari can use, measured against each other in
//! one run: graviola (pure Rust, Kavari's `tls-graviola`), ring and aws-lc-rs
//! (both compile C: `tls-ring`, `tls-aws-lc`). Each gets the same broker
//! (TLS only, in-memory storage, no SASL), the same rustls settings through
//! `Tls::from_config`, and takes turns with the others:
//!
//! - a new connection: TCP, TLS 1.3 handshake, API versions (median of 50);
//! - publishing 200,000 messages of 1 KiB, then consuming them.
//!
//! ```sh
//! cargo run --release -p kavari-benches --features providers --bin kavari-tls-providers
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, Security, Tls};
use kavari_testcontainers::{KafkaBroker, unique_name};
use rustls::crypto::CryptoProvider;
use serde::{Deserialize, Serialize};

const MESSAGES: usize = 200_000;
const SIZE: usize = 1024;
const HANDSHAKES: usize = 50;
const REPEATS: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-tls.providers")]
struct Sealed {
    #[kavari(key)]
    id: String,
    body: String,
}

struct Count(Arc<AtomicU64>);
impl MessageHandler<Sealed> for Count {
    async fn handle(&self, _: Sealed, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn providers() -> Vec<(&'static str, Arc<CryptoProvider>)> {
    vec![
        ("graviola", Arc::new(rustls_graviola::default_provider())),
        ("ring", Arc::new(rustls::crypto::ring::default_provider())),
        (
            "aws-lc-rs",
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        ),
    ]
}

fn security(provider: &Arc<CryptoProvider>, ca: &std::path::Path) -> Security {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("CA file");
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Security::plaintext().with_tls(Tls::from_config(Arc::new(config)))
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("a PEM certificate"))
        .collect()
}

/// Publishes `MESSAGES`, then consumes them in a group of its own: msgs/s each.
async fn throughput(bootstrap: &str, security: Security) -> (f64, f64) {
    let manager = Kavari::builder(bootstrap)
        .security(security.clone())
        .build()
        .await
        .expect("build");
    let msgs: Vec<Sealed> = (0..MESSAGES)
        .map(|i| Sealed {
            id: format!("k{}", i % 64),
            body: "x".repeat(SIZE),
        })
        .collect();
    let started = Instant::now();
    for chunk in msgs.chunks(5_000) {
        for r in manager.publish_batch(chunk).await {
            r.expect("publish");
        }
    }
    let publish = MESSAGES as f64 / started.elapsed().as_secs_f64();
    manager.shutdown().await.expect("shutdown");

    let count = Arc::new(AtomicU64::new(0));
    let consumer = Kavari::builder(bootstrap)
        .security(security)
        .group_id(unique_name("providers"))
        .build()
        .await
        .expect("build");
    consumer
        .subscribe::<Sealed, _>(Count(Arc::clone(&count)))
        .expect("subscribe");
    consumer.start().await.expect("start");
    // Every repeat adds MESSAGES to the topic: read the first MESSAGES.
    let consume = kavari_benches::consume_rate(&count, MESSAGES as u64).await;
    consumer.shutdown().await.expect("shutdown");
    (publish, consume)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let broker = KafkaBroker::builder()
        .tls(&["127.0.0.1"])
        .start()
        .await
        .expect("a TLS broker");
    broker.create_topic(Sealed::TOPIC, 3).await.expect("topic");
    let ca = broker.tls_ca_file().expect("the broker's CA").to_path_buf();
    let bootstrap = broker.bootstrap_servers();
    let providers = providers();
    let mut results: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        vec![(Vec::new(), Vec::new(), Vec::new()); providers.len()];
    for repeat in 0..REPEATS {
        for i in 0..providers.len() {
            let k = (repeat + i) % providers.len();
            let (name, provider) = &providers[k];
            let security = security(provider, &ca);
            let hs =
                kavari_benches::median_connect_ms(&bootstrap, security.clone(), HANDSHAKES).await;
            let (publish, consume) = throughput(&bootstrap, security).await;
            eprintln!(
                "kavari-tls-providers: {name}: handshake {hs:.2} ms, publish {publish:.0}, consume {consume:.0} msgs/s"
            );
            results[k].0.push(hs);
            results[k].1.push(publish);
            results[k].2.push(consume);
        }
    }
    let base = (
        median(results[0].0.clone()),
        median(results[0].1.clone()),
        median(results[0].2.clone()),
    );
    println!(
        "{MESSAGES} messages of {SIZE} B over TLS 1.3, 3 partitions; new connection = TCP + TLS + API versions, median of {HANDSHAKES}; median of {REPEATS} runs\n"
    );
    println!(
        "| provider | new connection ms | publish msgs/s | consume msgs/s | vs graviola (connection / publish / consume) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for ((name, _), (hs, publish, consume)) in providers.iter().zip(results) {
        let (hs, publish, consume) = (median(hs), median(publish), median(consume));
        println!(
            "| {name} | {hs:.2} | {publish:.0} | {consume:.0} | {:.2} / {:.2} / {:.2} |",
            hs / base.0,
            publish / base.1,
            consume / base.2
        );
    }
}
