//! krafka 0.28: one `Kafka` handle per run, its producer and consumer as
//! its README builds them (the producer idempotent by default).

use std::sync::Arc;
use std::time::Duration;

use krafka::consumer::AutoOffsetReset;
use krafka::{Kafka, Record};

use crate::peer::{self, Workload};

fn record(topic: &str, key: String, value: Vec<u8>) -> Record {
    peer::HEADERS.iter().fold(
        Record::new(topic.to_string(), value).key(key),
        |r, (k, v)| r.header(*k, v.as_bytes().to_vec()),
    )
}

/// The values of a poll's records.
fn values(records: Vec<krafka::consumer::ConsumerRecord>) -> Vec<Option<Vec<u8>>> {
    records
        .into_iter()
        .map(|r| r.value.map(|v| v.to_vec()))
        .collect()
}

/// Runs `workload`; its result line.
pub(crate) async fn run(workload: Workload) -> krafka::Result<String> {
    match workload {
        Workload::Publish {
            bootstrap,
            topic,
            count,
            size,
            idempotence,
        } => {
            let kafka = Kafka::builder(bootstrap).connect().await?;
            let mut builder = kafka.producer();
            if let Some(on) = idempotence {
                builder = builder.idempotent(on);
            }
            let producer = builder.build().await?;
            let value = vec![0xabu8; size];
            let line = crate::publish_all(count, size, |i| {
                let r = record(&topic, peer::key(i), value.clone());
                let producer = &producer;
                async move {
                    let ack = producer.enqueue(r).await?;
                    Ok::<_, krafka::KrafkaError>(async move { ack.await.map(drop) })
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
            let kafka = Kafka::builder(bootstrap).connect().await?;
            let consumer = kafka
                .consumer(group)
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .fetch_max_wait(Duration::from_millis(20))
                .build()
                .await?;
            consumer.subscribe([topic]).await?;
            let line = crate::consume_all(count, async || {
                let records = consumer.poll(Duration::from_millis(100)).await?;
                Ok::<_, krafka::KrafkaError>(values(records))
            })
            .await?;
            consumer.close().await?;
            Ok(line)
        }
        Workload::Latency {
            bootstrap,
            topic,
            rate,
            seconds,
            group,
        } => {
            let kafka = Kafka::builder(bootstrap).connect().await?;
            let consumer = kafka
                .consumer(group)
                .auto_offset_reset(AutoOffsetReset::Latest)
                .fetch_max_wait(Duration::from_millis(20))
                .build()
                .await?;
            consumer.subscribe([topic.clone()]).await?;
            let producer = Arc::new(
                kafka
                    .producer()
                    .linger(Duration::from_millis(1))
                    .build()
                    .await?,
            );
            let total = (rate * seconds) as usize;
            let reader = crate::ages(total, async move || {
                let records = consumer.poll(Duration::from_millis(100)).await?;
                Ok::<_, krafka::KrafkaError>(values(records))
            });
            let send = |i: usize, stamp: [u8; 8]| {
                let producer = Arc::clone(&producer);
                let r = record(&topic, format!("k{}", i % 64), stamp.to_vec());
                tokio::spawn(async move {
                    let _ = producer.send(r).await;
                });
            };
            Ok(crate::latency(rate, seconds, send, reader).await)
        }
    }
}
