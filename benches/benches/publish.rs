//! Publish throughput: Kavari's `publish` against raw rskafka produce with
//! equal batching, on the same broker, topic layout and payloads, in one run.
//!
//! Run: `cargo bench -p kavari-benches --bench publish`
//! (`KAVARI_BENCH_MESSAGES` sets the count per case; `KAVARI_BROKERS` uses
//! your own cluster instead of a local broker).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kavari::Kavari;
use kavari_benches::Payload;
use kavari_testcontainers::{KafkaBroker, unique_name};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const PARTITIONS: i32 = 3;

struct Run {
    msgs_per_s: f64,
    mb_per_s: f64,
    records_per_request: f64,
}

async fn kavari_run(broker: &KafkaBroker, size: usize, n: usize) -> Run {
    let topic = unique_name("bench-kavari");
    broker
        .create_topic(&topic, PARTITIONS)
        .await
        .expect("topic");
    let manager = Kavari::builder(broker.bootstrap_servers())
        .linger(Duration::from_millis(5))
        .build()
        .await
        .expect("build");
    let msgs: Vec<_> = (0..n as u64).map(|i| Payload::of_size(i, size)).collect();
    let bytes: usize = msgs
        .iter()
        .map(|m| kavari::codec::encode(m).expect("encode").size())
        .sum();
    let started = Instant::now();
    let manager_ref = &manager;
    let topic_ref = &topic;
    futures::stream::iter(msgs.iter())
        .map(|m| async move {
            let mut e = kavari::codec::encode(m).expect("encode");
            e.topic.clone_from(topic_ref);
            manager_ref.publish_encoded(e).await.expect("publish")
        })
        .buffer_unordered(20_000)
        .for_each(|_| async {})
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = manager.publish_stats();
    manager.shutdown().await.expect("shutdown");
    Run {
        msgs_per_s: n as f64 / elapsed,
        mb_per_s: bytes as f64 / elapsed / 1e6,
        records_per_request: stats.records_acknowledged as f64
            / stats.produce_requests.max(1) as f64,
    }
}

async fn raw_run(broker: &KafkaBroker, size: usize, n: usize, batch: usize) -> Run {
    let topic = unique_name("bench-raw");
    broker
        .create_topic(&topic, PARTITIONS)
        .await
        .expect("topic");
    let client = broker.client().await.expect("client");
    let mut pcs = Vec::new();
    for p in 0..PARTITIONS {
        pcs.push(Arc::new(
            client
                .partition_client(topic.as_str(), p, UnknownTopicHandling::Retry)
                .await
                .expect("partition client"),
        ));
    }
    // The same encoded values Kavari sends; records built per send, as
    // Kavari does.
    let values: Vec<_> = (0..n as u64)
        .map(|i| kavari::codec::encode(&Payload::of_size(i, size)).expect("encode"))
        .collect();
    let bytes: usize = values.iter().map(|e| e.size()).sum();
    let per_partition = n.div_ceil(PARTITIONS as usize);
    let started = Instant::now();
    let tasks = pcs.iter().enumerate().map(|(p, pc)| {
        let slice = &values[(p * per_partition).min(n)..((p + 1) * per_partition).min(n)];
        async move {
            for chunk in slice.chunks(batch.max(1)) {
                let records = chunk
                    .iter()
                    .map(|e| Record {
                        key: e.key.clone(),
                        value: Some(e.value.clone()),
                        headers: e.headers.clone().into_iter().collect::<BTreeMap<_, _>>(),
                        timestamp: chrono::Utc::now(),
                    })
                    .collect();
                pc.produce(records, Compression::NoCompression)
                    .await
                    .expect("produce");
            }
        }
    });
    futures::future::join_all(tasks).await;
    let elapsed = started.elapsed().as_secs_f64();
    Run {
        msgs_per_s: n as f64 / elapsed,
        mb_per_s: bytes as f64 / elapsed / 1e6,
        records_per_request: batch as f64,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends: nothing to list
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
        let broker = KafkaBroker::start().await.expect("broker");
        println!("| payload | client | msgs/s | MB/s | records/request | ratio |");
        println!("| --- | --- | ---: | ---: | ---: | ---: |");
        for size in [100usize, 1024] {
            let count = if size > 512 { n / 4 } else { n };
            // Warm-up: connections, metadata, allocator.
            let _ = kavari_run(&broker, size, count / 10).await;
            let k = kavari_run(&broker, size, count).await;
            let batch = k.records_per_request.round().max(1.0) as usize;
            let r = raw_run(&broker, size, count, batch).await;
            println!(
                "| {size} B | raw rskafka | {:.0} | {:.1} | {:.0} | 1.00 |",
                r.msgs_per_s, r.mb_per_s, r.records_per_request
            );
            println!(
                "| {size} B | kavari | {:.0} | {:.1} | {:.0} | {:.2} |",
                k.msgs_per_s,
                k.mb_per_s,
                k.records_per_request,
                k.msgs_per_s / r.msgs_per_s
            );
        }
    });
}
