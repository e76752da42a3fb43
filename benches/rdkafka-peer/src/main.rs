//! The librdkafka peer of `kavari-load`: the same workloads through
//! rust-rdkafka, one per process so its peak RSS is its own.
//!
//! Usage (`benches/src/peer.rs` has the contract):
//!   kavari-rdkafka-peer publish BOOTSTRAP TOPIC COUNT SIZE [idempotent|plain]
//!   kavari-rdkafka-peer consume BOOTSTRAP TOPIC COUNT GROUP
//!   kavari-rdkafka-peer latency BOOTSTRAP TOPIC RATE SECONDS GROUP
//! Prints one line: `RESULT key=value ...`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[path = "../../src/measure.rs"]
mod measure;
#[path = "../../src/peer.rs"]
mod peer;
use peer::Workload;

/// A producer as a service would configure one: librdkafka's default is
/// idempotence off (Kavari's and the Java client's is on).
fn producer(bootstrap: &str, linger_ms: &str, idempotent: bool) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", linger_ms)
        .set("acks", "all")
        .set(
            "enable.idempotence",
            if idempotent { "true" } else { "false" },
        )
        .set("socket.nagle.disable", "true")
        .create()
        .expect("producer")
}

fn consumer(bootstrap: &str, group: &str, topic: &str, reset: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", reset)
        .set("enable.auto.commit", "true")
        .set("partition.assignment.strategy", "range")
        .set("fetch.wait.max.ms", "20")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

fn headers() -> OwnedHeaders {
    peer::HEADERS
        .iter()
        .fold(OwnedHeaders::new(), |h, &(key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let line = match Workload::from_args(&args) {
        Ok(Workload::Publish {
            bootstrap,
            topic,
            count,
            size,
            idempotence,
        }) => {
            let p = producer(&bootstrap, "5", idempotence.unwrap_or(false));
            let value = vec![0xabu8; size];
            let started = Instant::now();
            let sends = futures::stream::iter(0..count)
                .map(|i| {
                    let key = peer::key(i);
                    let (p, value, topic) = (&p, &value, &topic);
                    async move {
                        let record = FutureRecord::to(topic)
                            .key(&key)
                            .payload(value)
                            .headers(headers());
                        p.send(record, Duration::from_secs(30))
                            .await
                            .map(drop)
                            .map_err(|(e, _)| e)
                    }
                })
                .buffer_unordered(20_000);
            let errors = sends
                .filter(|r| futures::future::ready(r.is_err()))
                .count()
                .await;
            peer::publish_line(count, size, started.elapsed().as_secs_f64(), errors)
        }
        Ok(Workload::Consume {
            bootstrap,
            topic,
            count,
            group,
        }) => {
            let c = consumer(&bootstrap, &group, &topic, "earliest");
            let mut stream = c.stream();
            let first = stream.next().await.expect("a message").expect("consume");
            assert!(peer::decodes(first.payload()), "a value did not decode");
            let started = Instant::now();
            for _ in 1..count {
                let m = stream.next().await.expect("a message").expect("consume");
                assert!(peer::decodes(m.payload()), "a value did not decode");
            }
            peer::consume_line(count - 1, started.elapsed().as_secs_f64())
        }
        Ok(Workload::Latency {
            bootstrap,
            topic,
            rate,
            seconds,
            group,
        }) => {
            // Only what this run writes: earlier runs' records are older.
            let c = consumer(&bootstrap, &group, &topic, "latest");
            let p = producer(&bootstrap, "1", false);
            let total = (rate * seconds) as usize;
            let reader = tokio::spawn(async move {
                let mut stream = c.stream();
                let mut samples = Vec::with_capacity(total);
                while samples.len() < total {
                    let Ok(Some(Ok(m))) =
                        tokio::time::timeout(Duration::from_secs(30), stream.next()).await
                    else {
                        break;
                    };
                    samples.extend(peer::age(m.payload()));
                }
                samples
            });
            tokio::time::sleep(Duration::from_secs(3)).await; // join the group first
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            for i in 0..total {
                tick.tick().await;
                let value = peer::stamp();
                let key = format!("k{}", i % 64);
                let record = FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&value)
                    .headers(headers());
                let _ = p.send_result(record);
            }
            peer::latency_line(reader.await.expect("reader"))
        }
        Err(e) => {
            eprintln!("kavari-rdkafka-peer: {e}");
            std::process::exit(2);
        }
    };
    println!("{line}");
}
