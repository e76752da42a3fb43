//! Consume throughput and end-to-end latency: Kavari's runtime (no-op
//! handler) against a raw rskafka fetch loop over the same data, in one run;
//! then publish-to-handler latency at a steady rate.
//!
//! Run: `cargo bench -p kavari-benches --bench consume`
//! (`KAVARI_BENCH_MESSAGES` sets the count; `KAVARI_BROKERS` your cluster).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler};
use kavari_benches::{
    Payload, Stamped, fetch_to_end, kavari_latency, partition_clients, percentile_ms,
};
use kavari_testcontainers::{KafkaBroker, unique_name};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const PARTITIONS: i32 = 3;

struct Count(Arc<AtomicU64>);

impl MessageHandler<Payload> for Count {
    async fn handle(&self, _: Payload, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Writes `n` Kavari envelopes of `size` bytes to `topic`, in large batches.
async fn preload(broker: &KafkaBroker, topic: &str, size: usize, n: usize) {
    let client = broker.client().await.expect("client");
    let per = n.div_ceil(PARTITIONS as usize);
    for p in 0..PARTITIONS {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let start = p as usize * per;
        let end = ((p as usize + 1) * per).min(n);
        let records: Vec<Record> = (start..end)
            .map(|i| {
                let e = kavari::codec::encode(&Payload::of_size(i as u64, size)).expect("encode");
                Record {
                    key: e.key,
                    value: Some(e.value),
                    headers: e.headers,
                    timestamp: chrono::Utc::now(),
                }
            })
            .collect();
        let per_request = (256 * 1024 / (size + 64)).max(1);
        for chunk in records.chunks(per_request) {
            pc.produce(chunk.to_vec(), Compression::NoCompression)
                .await
                .expect("produce");
        }
    }
}

async fn raw_fetch(broker: &KafkaBroker, topic: &str, n: usize) -> f64 {
    let client = broker.client().await.expect("client");
    let pcs = partition_clients(&client, topic).await;
    let started = Instant::now();
    let count = fetch_to_end(&pcs, |_| {}).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(count, n);
    n as f64 / elapsed
}

async fn kavari_consume(broker: &KafkaBroker, topic: &str, n: usize) -> f64 {
    // The derive fixes Payload's topic; route this run's topic to it by
    // consuming through a type alias of the same name on that topic.
    let count = Arc::new(AtomicU64::new(0));
    let manager = Kavari::builder(broker.bootstrap_servers())
        .group_id(unique_name("bench"))
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .await
        .expect("build");
    manager
        .subscribe::<Payload, _>(Count(Arc::clone(&count)))
        .expect("subscribe");
    assert_eq!(topic, Payload::TOPIC);
    manager.start().await.expect("start");
    while !(manager.health().ready && manager.health().partitions.len() == PARTITIONS as usize) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let at_start = count.load(Ordering::Relaxed);
    while count.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    manager.shutdown().await.expect("shutdown");
    (n as u64 - at_start) as f64 / elapsed
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("KAVARI_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("| payload | client | msgs/s | ratio |");
        println!("| --- | --- | ---: | ---: |");
        for size in [100usize, 1024] {
            // A broker per size: Payload's topic is fixed by its type.
            let broker = KafkaBroker::start().await.expect("broker");
            broker.create_topic(Payload::TOPIC, PARTITIONS).await.expect("topic");
            let count = if size > 512 { n / 4 } else { n };
            preload(&broker, Payload::TOPIC, size, count).await;
            let raw = raw_fetch(&broker, Payload::TOPIC, count).await;
            let kavari = kavari_consume(&broker, Payload::TOPIC, count).await;
            println!("| {size} B | raw rskafka fetch loop | {raw:.0} | 1.00 |");
            println!("| {size} B | kavari (no-op handler) | {kavari:.0} | {:.2} |", kavari / raw);
        }
        let broker = KafkaBroker::start().await.expect("broker");
        broker.create_topic(Stamped::TOPIC, PARTITIONS).await.expect("topic");
        println!();
        // nisshi does not answer a waiting fetch when records arrive; it waits
        // out fetch.max.wait, so latency follows that setting (Kafka answers
        // at once). Both the default and a short wait are shown.
        for wait_ms in [500u64, 20] {
            let v = kavari_latency(&broker.bootstrap_servers(), 1_000, 5, Duration::from_millis(wait_ms)).await;
            println!(
                "end-to-end latency, 1,000 msg/s for 5 s, fetch_max_wait {wait_ms} ms ({} samples): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
                v.len(),
                percentile_ms(&v, 0.5),
                percentile_ms(&v, 0.99),
                percentile_ms(&v, 0.999)
            );
        }
    });
}
