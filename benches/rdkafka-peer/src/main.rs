//! The librdkafka peer of `kavari-load`: the same workloads through
//! rust-rdkafka, one per process so its peak RSS is its own.
//!
//! Usage:
//!   kavari-rdkafka-peer publish BOOTSTRAP TOPIC COUNT SIZE [idempotent]
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
use measure::{micros, peak_rss_kb};

/// A producer as a service would configure one; idempotent (as Kavari and
/// the Java client are by default) or not (librdkafka's default).
fn producer(bootstrap: &str, linger_ms: &str, idempotent: bool) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", linger_ms)
        .set("acks", "all")
        .set("enable.idempotence", if idempotent { "true" } else { "false" })
        .set("socket.nagle.disable", "true")
        .create()
        .expect("producer")
}

/// The consume workload's message, decoded as Kavari decodes it (the body
/// is skipped, as Kavari's bench type skips it).
#[derive(serde::Deserialize)]
struct Load {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    body: serde::de::IgnoredAny,
}

fn decode(payload: Option<&[u8]>) {
    let load: Result<Load, _> = rmp_serde::from_slice(payload.unwrap_or_default());
    assert!(load.is_ok(), "a consumed value did not decode");
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
    OwnedHeaders::new()
        .insert(Header {
            key: "msg_type",
            value: Some("Payload"),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/msgpack"),
        })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("publish") => {
            let (bootstrap, topic) = (&args[2], &args[3]);
            let count: usize = args[4].parse().expect("count");
            let size: usize = args[5].parse().expect("size");
            let idempotent = args.get(6).is_some_and(|a| a == "idempotent");
            let p = producer(bootstrap, "5", idempotent);
            let value = vec![0xabu8; size];
            let started = Instant::now();
            let sends = futures::stream::iter(0..count)
                .map(|i| {
                    let key = format!("key-{}", i % 1024);
                    let p = &p;
                    let value = &value;
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
            let secs = started.elapsed().as_secs_f64();
            println!(
                "RESULT msgs_per_s={:.0} mb_per_s={:.1} errors={errors} rss_kb={}",
                count as f64 / secs,
                (count * (size + 40)) as f64 / secs / 1e6,
                peak_rss_kb()
            );
        }
        Some("consume") => {
            let (bootstrap, topic) = (&args[2], &args[3]);
            let count: usize = args[4].parse().expect("count");
            let c = consumer(bootstrap, &args[5], topic, "earliest");
            let mut stream = c.stream();
            let first = stream.next().await.expect("a message").expect("consume");
            decode(first.payload());
            let started = Instant::now();
            let mut seen = 1;
            while seen < count {
                let m = stream.next().await.expect("a message").expect("consume");
                decode(m.payload());
                seen += 1;
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "RESULT msgs_per_s={:.0} rss_kb={}",
                (count - 1) as f64 / secs,
                peak_rss_kb()
            );
        }
        Some("latency") => {
            let (bootstrap, topic) = (&args[2], &args[3]);
            let rate: u64 = args[4].parse().expect("rate");
            let seconds: u64 = args[5].parse().expect("seconds");
            // Only what this run writes: earlier runs' records are older.
            let c = consumer(bootstrap, &args[6], topic, "latest");
            let p = producer(bootstrap, "1", false);
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
                    if let Some(v) = m.payload().filter(|v| v.len() == 8) {
                        let sent = u64::from_le_bytes(v.try_into().unwrap_or([0; 8]));
                        samples.push(micros().saturating_sub(sent));
                    }
                }
                samples
            });
            tokio::time::sleep(Duration::from_secs(3)).await; // join the group first
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            for i in 0..total {
                tick.tick().await;
                let value = micros().to_le_bytes().to_vec();
                let key = format!("k{}", i % 64);
                let record = FutureRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .headers(headers());
                let _ = p.send_result(record);
            }
            let mut samples = reader.await.expect("reader");
            samples.sort_unstable();
            let pct = |q: f64| {
                samples
                    .get(((samples.len() as f64 - 1.0) * q) as usize)
                    .copied()
                    .unwrap_or(0) as f64
                    / 1000.0
            };
            println!(
                "RESULT samples={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} rss_kb={}",
                samples.len(),
                pct(0.5),
                pct(0.99),
                pct(0.999),
                peak_rss_kb()
            );
        }
        _ => eprintln!("usage: kavari-rdkafka-peer publish|consume|latency ..."),
    }
}
