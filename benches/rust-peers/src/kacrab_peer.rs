//! kacrab 0.4: a producer and a consumer from Java-style settings, as its
//! README sets them (the producer idempotent by default, acks all,
//! linger.ms 5).

use std::sync::Arc;
use std::time::Duration;

use kacrab::consumer::Consumer;
use kacrab::producer::{Producer, ProducerRecord};

use crate::peer::{self, Workload};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn record(topic: &str, key: String, value: Vec<u8>) -> ProducerRecord {
    peer::HEADERS.iter().fold(
        ProducerRecord::unassigned(topic.to_string())
            .key(key)
            .value(value),
        |r, (k, v)| r.header(k.as_bytes().to_vec(), v.as_bytes().to_vec()),
    )
}

async fn producer(
    bootstrap: &str,
    linger_ms: &str,
    idempotence: Option<bool>,
) -> Result<Producer, Error> {
    let mut builder = Producer::builder()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms);
    if let Some(on) = idempotence {
        builder = builder.set("enable.idempotence", if on { "true" } else { "false" });
    }
    Ok(builder.build().await?)
}

async fn consumer(
    bootstrap: &str,
    group: &str,
    topic: &str,
    reset: &str,
) -> Result<Consumer, Error> {
    let mut consumer = Consumer::from_map([
        ("bootstrap.servers", bootstrap),
        ("group.id", group),
        ("auto.offset.reset", reset),
        ("fetch.max.wait.ms", "20"),
    ])
    .await?;
    consumer.subscribe([topic])?;
    Ok(consumer)
}

/// The values of a poll's records.
fn values(records: &kacrab::consumer::ConsumerRecords) -> Vec<Option<Vec<u8>>> {
    records
        .into_iter()
        .map(|r| r.value.as_ref().map(|v| v.to_vec()))
        .collect()
}

/// Runs `workload`; its result line.
pub(crate) async fn run(workload: Workload) -> Result<String, Error> {
    match workload {
        Workload::Publish {
            bootstrap,
            topic,
            count,
            size,
            idempotence,
        } => {
            let producer = producer(&bootstrap, "5", idempotence).await?;
            let value = vec![0xabu8; size];
            let line = crate::publish_all(count, size, |i| {
                let sent = producer.send(record(&topic, peer::key(i), value.clone()));
                async move {
                    let ack = sent.map_err(|e| e.to_string())?;
                    Ok::<_, String>(async move { ack.await.map(drop).map_err(|e| e.to_string()) })
                }
            })
            .await;
            producer.close().await?;
            Ok(line)
        }
        Workload::Consume {
            bootstrap,
            topic,
            count,
            group,
        } => {
            let mut consumer = consumer(&bootstrap, &group, &topic, "earliest").await?;
            let line = crate::consume_all(count, async || {
                let records = consumer.poll(Duration::from_millis(100)).await?;
                Ok::<_, Error>(values(&records))
            })
            .await?;
            consumer.close().await;
            Ok(line)
        }
        Workload::Latency {
            bootstrap,
            topic,
            rate,
            seconds,
            group,
        } => {
            let mut consumer = consumer(&bootstrap, &group, &topic, "latest").await?;
            let producer = Arc::new(producer(&bootstrap, "1", None).await?);
            let total = (rate * seconds) as usize;
            let reader = crate::ages(total, async move || {
                let records = consumer.poll(Duration::from_millis(100)).await?;
                Ok::<_, Error>(values(&records))
            });
            let send = |i: usize, stamp: [u8; 8]| {
                if let Ok(ack) =
                    producer.send(record(&topic, format!("k{}", i % 64), stamp.to_vec()))
                {
                    tokio::spawn(async move {
                        let _ = ack.await;
                    });
                }
            };
            Ok(crate::latency(rate, seconds, send, reader).await)
        }
    }
}
