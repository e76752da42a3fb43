//! Publishing against a real broker, one module per concern: the wire
//! format other clients read, batching, failures (retries through an
//! outage, dead letters, records handed back), shutdown, logs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kavari::codec::EncodedMessage;
use kavari::{
    FibonacciRetryPolicy, KafkaMessage, Kavari, KavariBuilder, NoRetry, Offset, Partitioner,
    PublishError,
};
use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{CapturedLogs, fetch_topic, header, init_tracing, logged_records, own_broker};
use serde::{Deserialize, Serialize};

// Topics are fixed per type by the derive, so tests that need their own
// topic use `publish_encoded` with the topic rewritten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "orders")]
struct OrderPlaced {
    #[kavari(key)]
    order_id: String,
    amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "orders", name = "order.cancelled")]
struct OrderCancelled {
    #[kavari(key)]
    order_id: String,
    reason: String,
}

fn to_topic<M: KafkaMessage>(msg: &M, topic: &str) -> EncodedMessage {
    let mut e = kavari::codec::encode(msg).expect("encode");
    e.topic = topic.to_string().into();
    e
}

fn order(i: usize) -> OrderPlaced {
    OrderPlaced {
        order_id: format!("o-{i}"),
        amount_cents: i as u64 * 100,
    }
}

/// The shared broker with each of `topics` (name, partitions) created — or
/// kept, when a rerun on your own cluster finds them (a topic that could not
/// be created shows in the test's first publish) — and a manager built by
/// `configure`.
async fn setup(
    topics: &[(&str, i32)],
    configure: impl FnOnce(KavariBuilder) -> KavariBuilder,
) -> (&'static KafkaBroker, Kavari) {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    for (topic, partitions) in topics {
        broker.create_topic(topic, *partitions).await.ok();
    }
    let manager = configure(Kavari::builder(broker.bootstrap_servers()))
        .build()
        .await
        .expect("build");
    (broker, manager)
}

/// A broker of its own behind a fault proxy, with `topic` of `partitions`
/// created, and a manager on it built by `configure`. One node leads every
/// partition (Kafka runs a single node here): the tests that use it count
/// what one broker's partitions share.
async fn proxied(
    topic: &str,
    partitions: i32,
    configure: impl FnOnce(KavariBuilder) -> KavariBuilder,
) -> (KafkaBroker, Kavari) {
    init_tracing();
    let one_broker = KafkaBroker::builder().behind_proxy().nodes(1);
    let broker = own_broker(one_broker, topic, partitions).await;
    let manager = configure(Kavari::builder(broker.bootstrap_servers()))
        .build()
        .await
        .expect("build");
    (broker, manager)
}

/// A manager for `topic` on a broker behind a fault proxy (1 s request
/// timeout, as `configure` makes it), its route known (order 0 published).
async fn behind_proxy(
    topic: &str,
    configure: impl FnOnce(KavariBuilder) -> KavariBuilder,
) -> (KafkaBroker, Kavari) {
    init_tracing();
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), topic, 1).await;
    let manager = configure(
        Kavari::builder(broker.bootstrap_servers()).request_timeout(Duration::from_secs(1)),
    )
    .build()
    .await
    .expect("build");
    manager
        .publish_encoded(to_topic(&order(0), topic))
        .await
        .expect("the first publish");
    (broker, manager)
}

/// Publishes `msgs` with `publish_batch` (one partition) and checks that
/// every one landed, at consecutive offsets in the call's order.
async fn batch_in_order<M: KafkaMessage>(manager: &Kavari, msgs: &[M]) -> Vec<i64> {
    let offsets: Vec<i64> = manager
        .publish_batch(msgs)
        .await
        .into_iter()
        .map(|r| r.expect("publish_batch").offset.get().expect("an offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    offsets
}

/// The record a delivery points at, from a `fetch_topic` of its topic.
fn delivered(
    records: &[(i32, rskafka::record::RecordAndOffset)],
    partition: i32,
    offset: Offset,
) -> &rskafka::record::Record {
    records
        .iter()
        .find(|(p, r)| *p == partition && Offset::At(r.offset) == offset)
        .map(|(_, r)| &r.record)
        .expect("the delivered record is in its topic")
}

/// A record's value, decoded as `M`.
fn value_of<M: KafkaMessage>(record: &rskafka::record::Record) -> M {
    kavari::codec::decode_value(record.value.as_deref().expect("value")).expect("decode")
}

/// The Produce API key, for requests kept at the proxy.
const PRODUCE: i16 = 0;

/// The partitions a kept Produce request names, each once.
fn produced_partitions(frame: &[u8]) -> Vec<(String, i32)> {
    let req: kafka_protocol::messages::ProduceRequest = kavari_tests::kept_request(frame);
    let named: Vec<(String, i32)> = req
        .topic_data
        .iter()
        .flat_map(|t| {
            t.partition_data
                .iter()
                .map(|p| (t.name.0.to_string(), p.index))
        })
        .collect();
    let unique: HashSet<&(String, i32)> = named.iter().collect();
    assert_eq!(
        unique.len(),
        named.len(),
        "a partition twice in one request"
    );
    named
}

/// Each batch of a kept Produce request: its partition and its base
/// sequence (the record batch header's bytes 53..57).
fn produced_sequences(frame: &[u8]) -> Vec<((String, i32), i32)> {
    let req: kafka_protocol::messages::ProduceRequest = kavari_tests::kept_request(frame);
    req.topic_data
        .iter()
        .flat_map(|t| {
            t.partition_data.iter().map(|p| {
                let records = p.records.as_ref().expect("records");
                let sequence =
                    i32::from_be_bytes(records[53..57].try_into().expect("a batch header"));
                ((t.name.0.to_string(), p.index), sequence)
            })
        })
        .collect()
}

mod batching;
mod failures;
mod format;
mod idempotence;
mod logs;
mod shutdown;
