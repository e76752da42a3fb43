//! Publishing against a real broker: the wire format other clients read,
//! batching, retries through an outage, dead letters and shutdown.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kavari::codec::EncodedMessage;
use kavari::{
    FibonacciRetryPolicy, KafkaMessage, Kavari, KavariBuilder, NoRetry, PublishError, murmur2,
};
use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{CapturedLogs, fetch_topic, header, init_tracing, own_broker};
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

/// Publishes `msgs` with `publish_batch` (one partition) and checks that
/// every one landed, at consecutive offsets in the call's order.
async fn batch_in_order<M: KafkaMessage>(manager: &Kavari, msgs: &[M]) -> Vec<i64> {
    let offsets: Vec<i64> = manager
        .publish_batch(msgs)
        .await
        .into_iter()
        .map(|r| r.expect("publish_batch").offset)
        .collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    offsets
}

/// The record a delivery points at, from a `fetch_topic` of its topic.
fn delivered(
    records: &[(i32, rskafka::record::RecordAndOffset)],
    partition: i32,
    offset: i64,
) -> &rskafka::record::Record {
    records
        .iter()
        .find(|(p, r)| *p == partition && r.offset == offset)
        .map(|(_, r)| &r.record)
        .expect("the delivered record is in its topic")
}

/// A record's value, decoded as `M`.
fn value_of<M: KafkaMessage>(record: &rskafka::record::Record) -> M {
    kavari::codec::decode_value(record.value.as_deref().expect("value")).expect("decode")
}

#[tokio::test]
async fn typed_messages_land_where_java_would_put_them() {
    let topic = unique_name("orders");
    let (broker, manager) = setup(&[(&topic, 3)], |b| b).await;

    let mut sent = Vec::new();
    for i in 0..20 {
        let placed = order(i);
        let d = manager
            .publish_encoded(to_topic(&placed, &topic))
            .await
            .expect("publish placed");
        sent.push((d, placed.order_id.clone(), "OrderPlaced"));
        let cancelled = OrderCancelled {
            order_id: format!("o-{i}"),
            reason: "changed mind".into(),
        };
        let d = manager
            .publish_encoded(to_topic(&cancelled, &topic))
            .await
            .expect("publish cancelled");
        sent.push((d, cancelled.order_id.clone(), "order.cancelled"));
    }

    let records = fetch_topic(broker, &topic, 3).await;
    assert_eq!(records.len(), 40);
    for (delivery, key, msg_type) in &sent {
        let java_partition = (murmur2(key.as_bytes()) & 0x7fff_ffff) % 3;
        assert_eq!(delivery.partition, java_partition, "key {key}");
        let r = delivered(&records, delivery.partition, delivery.offset);
        assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(header(&r.headers, "msg_type").as_deref(), Some(*msg_type));
        assert_eq!(
            header(&r.headers, "content-type").as_deref(),
            Some("application/msgpack")
        );
        match *msg_type {
            "OrderPlaced" => assert_eq!(&value_of::<OrderPlaced>(r).order_id, key),
            _ => assert_eq!(value_of::<OrderCancelled>(r).reason, "changed mind"),
        }
    }
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn concurrent_publishes_share_produce_requests() {
    let topic = unique_name("batched");
    let (broker, manager) = setup(&[(&topic, 3)], |b| b.linger(Duration::from_millis(20))).await;

    let publishes = (0..1000).map(|i| manager.publish_encoded(to_topic(&order(i), &topic)));
    let results = futures::future::join_all(publishes).await;
    let mut seen = HashSet::new();
    for r in results {
        let d = r.expect("publish");
        assert!(
            seen.insert((d.partition, d.offset)),
            "duplicate offset {d:?}"
        );
    }
    assert_eq!(seen.len(), 1000);
    let stats = manager.publish_stats();
    assert_eq!(stats.records_acknowledged, 1000);
    assert!(
        stats.produce_requests <= 100,
        "1,000 publishes took {} produce requests",
        stats.produce_requests
    );
    assert_eq!(fetch_topic(broker, &topic, 3).await.len(), 1000);

    // publish_batch: one result per message, in order.
    let batch: Vec<OrderPlaced> = (0..10).map(order).collect();
    let manager2 = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    broker.create_topic("orders", 3).await.ok();
    let results = manager2.publish_batch(&batch).await;
    assert_eq!(results.len(), 10);
    for (i, r) in results.into_iter().enumerate() {
        let d = r.expect("publish_batch");
        assert_eq!(d.topic, "orders");
        let key = format!("o-{i}");
        assert_eq!(d.partition, (murmur2(key.as_bytes()) & 0x7fff_ffff) % 3);
    }
}

/// Many small batches of one partition travel at once on one connection:
/// each publish's offset is the offset of its own record.
#[tokio::test]
async fn pipelined_batches_give_every_publish_its_own_offset() {
    let topic = unique_name("pipelined");
    let (broker, manager) = setup(&[(&topic, 1)], |b| {
        b.linger(Duration::from_millis(1)).max_batch_bytes(2 * 1024)
    })
    .await;
    let n = 3_000;
    let publishes = (0..n).map(|i| manager.publish_encoded(to_topic(&order(i), &topic)));
    let results = futures::future::join_all(publishes).await;
    let stats = manager.publish_stats();
    assert!(
        stats.produce_requests >= 100,
        "only {} requests: batches too large to pipeline",
        stats.produce_requests
    );
    let records: HashMap<i64, OrderPlaced> = fetch_topic(broker, &topic, 1)
        .await
        .into_iter()
        .map(|(_, r)| {
            let value = r.record.value.expect("value");
            (
                r.offset,
                kavari::codec::decode_value(&value).expect("decode"),
            )
        })
        .collect();
    assert_eq!(records.len(), n);
    for (i, r) in results.into_iter().enumerate() {
        let d = r.expect("publish");
        assert_eq!(
            records[&d.offset],
            order(i),
            "offset {} of publish {i}",
            d.offset
        );
    }
}

#[tokio::test]
async fn outage_retries_by_policy_then_returns_the_record_and_recovers() {
    init_tracing();
    let topic = unique_name("outage");
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), &topic, 1).await;
    let proxy = broker.proxy().expect("proxy");
    let manager = Kavari::builder(broker.bootstrap_servers())
        .request_timeout(Duration::from_secs(2))
        .publishing_retry_policy(FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(100)))
        .build()
        .await
        .expect("build");
    manager
        .publish_encoded(to_topic(&order(0), &topic))
        .await
        .expect("publish before the outage");

    broker
        .create_topic("orders", 1)
        .await
        .expect("orders topic");
    proxy.refuse();
    let before = manager.publish_stats();
    let msg = to_topic(&order(1), &topic);
    let started = std::time::Instant::now();
    let err = manager
        .publish_encoded(msg.clone())
        .await
        .expect_err("publish during an outage");
    let elapsed = started.elapsed();
    match err {
        PublishError::Failed {
            attempts,
            message,
            dlq_error,
            ..
        } => {
            assert_eq!(attempts, 3, "the policy allows three attempts");
            assert_eq!(*message, msg, "the record comes back unchanged");
            assert!(dlq_error.is_some(), "the dead-letter write was tried");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(manager.publish_stats().retries, before.retries + 1);
    // Three attempts and a dead-letter attempt, each bounded by the 2 s
    // request timeout, plus 300 ms of waits: never a hang.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");

    // The bulk path in the same outage: the failed messages are retried by
    // the policy together, not one after another, and each comes back with
    // its own record.
    let batch: Vec<OrderPlaced> = (10..15).map(order).collect();
    let started = std::time::Instant::now();
    let results = manager.publish_batch(&batch).await;
    let batch_elapsed = started.elapsed();
    assert_eq!(results.len(), batch.len());
    for (m, r) in batch.iter().zip(results) {
        match r {
            Err(PublishError::Failed {
                attempts, message, ..
            }) => {
                assert_eq!(attempts, 3);
                assert_eq!(message.key.as_deref(), Some(m.order_id.as_bytes()));
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
    assert!(
        batch_elapsed < elapsed * 2 + Duration::from_millis(500),
        "5 failed publishes took {batch_elapsed:?}, one took {elapsed:?}: retried one by one?"
    );

    proxy.heal();
    let d = manager
        .publish_encoded(msg)
        .await
        .expect("publish after healing");
    assert_eq!(d.offset, 1);
    // After healing the bulk path lands them all, in order.
    batch_in_order(&manager, &batch).await;
}

/// A batch larger than the broker takes (each record fits) is refused as a
/// whole; the partition halves its batches and the publishes, retried, all
/// land, none dead-lettered.
#[tokio::test]
async fn a_batch_the_broker_refuses_as_too_large_is_split_and_retried() {
    let topic = unique_name("big-batch");
    let (broker, manager) = setup(&[(&topic, 1)], |b| {
        b.linger(Duration::from_millis(50))
            .max_batch_bytes(8 * 1024 * 1024)
            .publishing_retry_policy(
                FibonacciRetryPolicy::new(8).with_unit(Duration::from_millis(50)),
            )
    })
    .await;
    // 12 × 300 KB: one 3.6 MB batch, past the broker's 1 MiB limit.
    let publishes = (0..12).map(|i| {
        let m = OrderCancelled {
            order_id: format!("o-{i}"),
            reason: "x".repeat(300_000),
        };
        manager.publish_encoded(to_topic(&m, &topic))
    });
    let results = futures::future::join_all(publishes).await;
    for r in results {
        r.expect("every publish lands after the split");
    }
    let stats = manager.publish_stats();
    assert!(stats.failed_requests >= 1, "the first batch was refused");
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(fetch_topic(broker, &topic, 1).await.len(), 12);
}

#[tokio::test]
async fn too_large_message_goes_to_the_dead_letter_topic_at_once() {
    let topic = unique_name("large");
    let dlq_topic = format!("{topic}.dlq");
    let (broker, manager) = setup(&[(&topic, 1), (&dlq_topic, 1)], |b| {
        b.max_message_bytes(1_000)
            .publishing_retry_policy(FibonacciRetryPolicy::new(5))
    })
    .await;
    let big = OrderCancelled {
        order_id: "o-big".into(),
        reason: "x".repeat(2_000),
    };
    let started = std::time::Instant::now();
    let err = manager
        .publish_encoded(to_topic(&big, &topic))
        .await
        .expect_err("too large");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a too-large message is not retried"
    );
    let PublishError::DeadLettered { dlq, cause } = err else {
        panic!("expected DeadLettered, got {err:?}");
    };
    assert_eq!(dlq.topic, format!("{topic}.dlq"));
    assert_eq!(
        cause.kind(),
        kavari::publish::ProduceErrorKind::MessageTooLarge
    );

    let letters = fetch_topic(broker, &dlq.topic, 1).await;
    assert_eq!(letters.len(), 1);
    let r = &letters[0].1.record;
    assert_eq!(r.key.as_deref(), Some(&b"o-big"[..]));
    assert_eq!(
        header(&r.headers, "msg_type").as_deref(),
        Some("order.cancelled")
    );
    let original_error = header(&r.headers, "original_error").expect("original_error");
    assert!(
        original_error.contains("max_message_bytes"),
        "{original_error}"
    );
    let back: OrderCancelled =
        kavari::codec::decode_value(r.value.as_deref().expect("value")).expect("decode");
    assert_eq!(back, big);
    assert!(fetch_topic(broker, &topic, 1).await.is_empty());
}

#[tokio::test]
async fn unknown_topic_without_dead_letters_hands_the_record_back() {
    let (_, manager) = setup(&[], |b| {
        b.publishing_retry_policy(NoRetry).dead_letter_suffix(None)
    })
    .await;
    let msg = to_topic(&order(1), &unique_name("missing"));
    match manager.publish_encoded(msg.clone()).await {
        Err(PublishError::Failed {
            message, dlq_error, ..
        }) => {
            assert_eq!(*message, msg);
            assert!(dlq_error.is_none());
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_waits_for_publishes_in_flight_and_drops_none() {
    let topic = unique_name("shutdown");
    let (broker, manager) = setup(&[(&topic, 3)], |b| b.linger(Duration::from_millis(200))).await;

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let m = manager.clone();
            let msg = to_topic(&order(i), &topic);
            tokio::spawn(async move { m.publish_encoded(msg).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    manager.shutdown().await.expect("shutdown");

    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(PublishError::Failed { message, .. }) => {
                assert_eq!(
                    message.topic, topic,
                    "refused publishes hand their record back"
                );
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(fetch_topic(broker, &topic, 3).await.len(), ok);
    assert!(ok > 0, "publishes queued before shutdown were flushed");

    // After shutdown, publishes are refused with the record handed back.
    match manager.publish_encoded(to_topic(&order(999), &topic)).await {
        Err(PublishError::Failed { cause, .. }) => {
            assert_eq!(
                cause.kind(),
                kavari::publish::ProduceErrorKind::ShuttingDown
            );
        }
        other => panic!("expected Failed after shutdown, got {other:?}"),
    }
    manager.shutdown().await.expect("shutdown is idempotent");
}

#[tokio::test]
async fn compressed_batches_read_back_unchanged() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    for compression in [kavari::Compression::Gzip, kavari::Compression::Snappy] {
        let topic = unique_name("compressed");
        broker.create_topic(&topic, 1).await.expect("topic");
        let manager = Kavari::builder(broker.bootstrap_servers())
            .compression(compression)
            .build()
            .await
            .expect("build");
        let sent: Vec<_> = (0..50).map(|i| to_topic(&order(i), &topic)).collect();
        for r in manager.publish_batch_encoded_for_test(&sent).await {
            r.expect("publish");
        }
        let records = fetch_topic(broker, &topic, 1).await;
        assert_eq!(records.len(), 50, "{compression:?}");
        for (i, (_, r)) in records.iter().enumerate() {
            let m: OrderPlaced =
                kavari::codec::decode_value(r.record.value.as_deref().expect("value"))
                    .expect("decode");
            assert_eq!(m, order(i), "{compression:?}");
        }
        manager.shutdown().await.expect("shutdown");
    }
}

trait PublishAll {
    async fn publish_batch_encoded_for_test(
        &self,
        msgs: &[EncodedMessage],
    ) -> Vec<Result<kavari::Delivery, PublishError>>;
}

impl PublishAll for Kavari {
    async fn publish_batch_encoded_for_test(
        &self,
        msgs: &[EncodedMessage],
    ) -> Vec<Result<kavari::Delivery, PublishError>> {
        futures::future::join_all(msgs.iter().cloned().map(|m| self.publish_encoded(m))).await
    }
}

// `manager.publish(&msg)` has a path of its own: the value is encoded into a
// per-thread buffer and copied straight into its batch, and an
// `EncodedMessage` is built only when the publish must wait or its first
// attempt failed. The tests below drive that path (types with topics of
// their own) and hold it to what the encoded path writes.

/// Publishes `msg` typed (to its own topic) and encoded (to `topic`).
async fn both_ways<M: KafkaMessage>(
    manager: &Kavari,
    msg: &M,
    topic: &str,
) -> (kavari::Delivery, kavari::Delivery) {
    let typed = manager.publish(msg).await.expect("typed publish");
    let encoded = manager
        .publish_encoded(to_topic(msg, topic))
        .await
        .expect("encoded publish");
    (typed, encoded)
}

#[tokio::test]
async fn typed_publish_writes_what_the_encoded_path_writes() {
    let encoded_topic = unique_name("orders-encoded");
    let (broker, manager) = setup(&[(OrderPlaced::TOPIC, 3), (&encoded_topic, 3)], |b| b).await;

    let mut pairs = Vec::new();
    for i in 0..20 {
        let placed = order(i);
        let cancelled = OrderCancelled {
            order_id: format!("o-{i}"),
            reason: "changed mind".into(),
        };
        pairs.push(both_ways(&manager, &placed, &encoded_topic).await);
        pairs.push(both_ways(&manager, &cancelled, &encoded_topic).await);
    }

    let typed_records = fetch_topic(broker, OrderPlaced::TOPIC, 3).await;
    let encoded_records = fetch_topic(broker, &encoded_topic, 3).await;
    for (typed, encoded) in &pairs {
        assert_eq!(typed.topic, OrderPlaced::TOPIC);
        assert_eq!(
            typed.partition, encoded.partition,
            "same key, same partition"
        );
        let t = delivered(&typed_records, typed.partition, typed.offset);
        let e = delivered(&encoded_records, encoded.partition, encoded.offset);
        assert_eq!(t.key, e.key);
        assert_eq!(t.value, e.value);
        assert_eq!(t.headers, e.headers);
    }
    manager.shutdown().await.expect("shutdown");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.backpressure")]
struct Tick {
    #[kavari(key)]
    id: u32,
    seq: u32,
}

/// A partition holding `max_queued_per_partition` unsent records makes
/// typed publishes wait (on the general path) instead of failing or growing
/// without bound. Every publish lands once, as its own record.
#[tokio::test]
async fn typed_publishes_wait_for_room_when_a_partition_is_full() {
    let (broker, manager) = setup(&[(Tick::TOPIC, 1)], |b| {
        b.max_queued_per_partition(8)
            .linger(Duration::from_millis(20))
    })
    .await;
    let ticks: Vec<Tick> = (0..400).map(|seq| Tick { id: 7, seq }).collect();
    // The first publish looks the topic up; the rest find it known and
    // fill the partition on the typed path until it is full.
    let mut results = vec![manager.publish(&ticks[0]).await];
    results.extend(futures::future::join_all(ticks[1..].iter().map(|t| manager.publish(t))).await);
    let records = fetch_topic(broker, Tick::TOPIC, 1).await;
    let mut offsets = HashSet::new();
    for (tick, r) in ticks.iter().zip(results) {
        let d = r.expect("publish");
        assert!(offsets.insert(d.offset), "offset {} twice", d.offset);
        let back: Tick = value_of(delivered(&records, 0, d.offset));
        assert_eq!(&back, tick, "offset {} holds its own publish", d.offset);
    }
    let stats = manager.publish_stats();
    assert_eq!(stats.records_acknowledged, 400);
    assert!(
        stats.produce_requests >= 400 / 8,
        "at most 8 queued records per request: {} requests",
        stats.produce_requests
    );

    // The bulk path waits alike, and keeps the call's order.
    let more: Vec<Tick> = (400..800).map(|seq| Tick { id: 7, seq }).collect();
    let offsets = batch_in_order(&manager, &more).await;
    let records = fetch_topic(broker, Tick::TOPIC, 1).await;
    for (tick, offset) in more.iter().zip(&offsets) {
        assert_eq!(&value_of::<Tick>(delivered(&records, 0, *offset)), tick);
    }
    manager.shutdown().await.expect("shutdown");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.byte-bound")]
struct Blob {
    #[kavari(key)]
    id: u32,
    seq: u32,
    body: String,
}

/// `max_queued_bytes_per_partition` bounds the unsent bytes of a partition
/// (as Java's `buffer.memory`): with room for about four 1 KiB records,
/// 200 concurrent publishes wait their turn, travel at most four to a
/// request, and all land; a record larger than the bound still goes, alone.
#[tokio::test]
async fn queued_bytes_are_bounded_per_partition() {
    let (broker, manager) = setup(&[(Blob::TOPIC, 1)], |b| {
        b.max_queued_bytes_per_partition(4 * 1024 + 512)
            .linger(Duration::from_millis(20))
    })
    .await;
    let blob = |seq| Blob {
        id: 1,
        seq,
        body: "x".repeat(1_000),
    };
    manager.publish(&blob(0)).await.expect("first publish");
    let before = manager.publish_stats();
    let blobs: Vec<Blob> = (1..=200).map(blob).collect();
    let results = futures::future::join_all(blobs.iter().map(|b| manager.publish(b))).await;
    let records = fetch_topic(broker, Blob::TOPIC, 1).await;
    for (b, r) in blobs.iter().zip(results) {
        let d = r.expect("publish");
        assert_eq!(&value_of::<Blob>(delivered(&records, 0, d.offset)), b);
    }
    let requests = manager.publish_stats().produce_requests - before.produce_requests;
    assert!(
        requests >= 200 / 4,
        "200 records of 1 KiB with 4.5 KiB queued at most: {requests} requests"
    );
    let big = Blob {
        id: 1,
        seq: 999,
        body: "x".repeat(10_000),
    };
    let d = manager
        .publish(&big)
        .await
        .expect("a record over the bound");
    let records = fetch_topic(broker, Blob::TOPIC, 1).await;
    assert_eq!(value_of::<Blob>(delivered(&records, 0, d.offset)), big);
    manager.shutdown().await.expect("shutdown");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.oversized", name = "oversized")]
struct Oversized {
    #[kavari(key)]
    id: String,
    body: String,
}

/// A typed publish whose first attempt fails goes on as an encoded one:
/// too large goes to the dead-letter topic at once with the same bytes, and
/// once shut down the record is handed back, equal to `codec::encode`.
#[tokio::test]
async fn typed_publish_failures_dead_letter_or_hand_the_record_back() {
    let dlq = format!("{}.dlq", Oversized::TOPIC);
    let (broker, manager) = setup(&[(Oversized::TOPIC, 1), (&dlq, 1)], |b| {
        b.max_message_bytes(1_000)
            .publishing_retry_policy(FibonacciRetryPolicy::new(5))
    })
    .await;
    let small = Oversized {
        id: "small".into(),
        body: "x".into(),
    };
    // Routed now: the big one below fails on the typed path itself.
    manager.publish(&small).await.expect("small publish");
    let big = Oversized {
        id: "big".into(),
        body: "x".repeat(2_000),
    };
    let started = std::time::Instant::now();
    let err = manager.publish(&big).await.expect_err("too large");
    assert!(started.elapsed() < Duration::from_secs(1), "not retried");
    let PublishError::DeadLettered { dlq, cause } = err else {
        panic!("expected DeadLettered, got {err:?}");
    };
    assert_eq!(
        cause.kind(),
        kavari::publish::ProduceErrorKind::MessageTooLarge
    );
    let letters = fetch_topic(broker, &dlq.topic, 1).await;
    let letter = delivered(&letters, 0, dlq.offset);
    let encoded = kavari::codec::encode(&big).expect("encode");
    assert_eq!(letter.key, encoded.key);
    assert_eq!(letter.value, Some(encoded.value));
    assert_eq!(
        header(&letter.headers, "msg_type").as_deref(),
        Some("oversized")
    );

    manager.shutdown().await.expect("shutdown");
    match manager.publish(&small).await {
        Err(PublishError::Failed { cause, message, .. }) => {
            assert_eq!(
                cause.kind(),
                kavari::publish::ProduceErrorKind::ShuttingDown
            );
            assert_eq!(*message, kavari::codec::encode(&small).expect("encode"));
        }
        other => panic!("expected Failed after shutdown, got {other:?}"),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.never-created")]
struct Nowhere {
    #[kavari(key)]
    id: u64,
}

/// A typed publish to a topic that does not exist fails with its record,
/// as built by `codec::encode`, handed back.
#[tokio::test]
async fn typed_publish_to_a_missing_topic_hands_the_record_back() {
    let (_, manager) = setup(&[], |b| {
        b.publishing_retry_policy(NoRetry).dead_letter_suffix(None)
    })
    .await;
    let msg = Nowhere { id: 5 };
    for _ in 0..2 {
        match manager.publish(&msg).await {
            Err(PublishError::Failed {
                message, dlq_error, ..
            }) => {
                assert_eq!(*message, kavari::codec::encode(&msg).expect("encode"));
                assert!(dlq_error.is_none());
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}

/// 200 publishes to a missing topic (and a missing dead-letter topic) log
/// a few lines that count the records, not a line per record and attempt;
/// each publish's error names the cause.
#[tokio::test]
async fn a_publish_storm_to_a_missing_topic_logs_a_bounded_number_of_lines() {
    let (captured, _guard) = CapturedLogs::warnings();
    let (_, manager) = setup(&[], |b| {
        b.publishing_retry_policy(FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(20)))
    })
    .await;
    let topic = unique_name("missing");
    let publishes = (0..200).map(|i| manager.publish_encoded(to_topic(&order(i), &topic)));
    let results = futures::future::join_all(publishes).await;
    for r in &results {
        let e = r.as_ref().expect_err("the topic does not exist");
        let shown = e.to_string();
        assert!(
            shown.contains(&format!("topic {topic} does not exist")),
            "{shown}"
        );
        assert_eq!(
            e.kind(),
            Some(kavari::publish::ProduceErrorKind::UnknownTopic)
        );
    }
    manager.shutdown().await.expect("shutdown");
    let lines = captured.lines();
    let about_the_topic: Vec<&String> = lines.iter().filter(|l| l.contains(&topic)).collect();
    assert!(
        !about_the_topic.is_empty() && about_the_topic.len() <= 6,
        "{} lines about {topic}:\n{}",
        about_the_topic.len(),
        lines.join("\n")
    );
    assert!(
        about_the_topic.iter().any(|l| l.contains("records=")),
        "a line counts the records it stands for:\n{}",
        lines.join("\n")
    );
}

/// The default retry policy keeps trying through an outage shorter than
/// `delivery_timeout` (120 s, Java's default): a publish begun while every
/// connection is refused lands once the broker is back, nothing
/// dead-lettered. With a short `delivery_timeout` the same outage ends the
/// publish in about that time, however many attempts the policy allows.
#[tokio::test]
async fn publishes_keep_trying_for_the_delivery_timeout() {
    init_tracing();
    let topic = unique_name("delivery");
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), &topic, 1).await;
    let proxy = broker.proxy().expect("proxy");
    let patient = Kavari::builder(broker.bootstrap_servers())
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("build");
    patient
        .publish_encoded(to_topic(&order(0), &topic))
        .await
        .expect("publish before the outage");
    proxy.refuse();
    let healer = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.heal();
    };
    let (landed, ()) = tokio::join!(patient.publish_encoded(to_topic(&order(1), &topic)), healer);
    let d = landed.expect("landed after the outage, within the delivery timeout");
    assert_eq!(d.offset, 1);
    assert_eq!(patient.publish_stats().dead_lettered, 0);

    let hasty = Kavari::builder(broker.bootstrap_servers())
        .request_timeout(Duration::from_secs(2))
        .delivery_timeout(Duration::from_secs(2))
        .publishing_retry_policy(
            kavari::ExponentialRetryPolicy::new(1000).cap(Duration::from_millis(200)),
        )
        .build()
        .await
        .expect("build");
    hasty
        .publish_encoded(to_topic(&order(2), &topic))
        .await
        .expect("publish before the outage");
    proxy.refuse();
    let started = std::time::Instant::now();
    match hasty.publish_encoded(to_topic(&order(3), &topic)).await {
        Err(PublishError::Failed { attempts, .. }) => assert!(attempts > 1, "{attempts}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "gave up after {took:?}"
    );
    proxy.heal();
}
