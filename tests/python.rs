//! Rust and Python services on the same topics: Kavari against the Python
//! library it ports (kavari 0.2.2.1 from PyPI, driven by
//! `peers/python_kavari.py`), on a real broker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, Partitioner};
use kavari_testcontainers::{shared_broker, unique_name};
use kavari_tests::{consumer, eventually, init_tracing, prefixed_topic};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(60);

/// Runs the Python kavari peer with `args`; its stdout lines, each a JSON
/// object.
async fn python_kavari(args: &[&str]) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/python_kavari.py");
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("python3")
            .arg(script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python peer finished in time")
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "Python kavari peer {args:?} failed (missing? run `bash testcontainers/setup.sh`): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A manager on the test's own topics (under `prefix`) that places keys
/// as Python kavari (librdkafka's default partitioner) does.
fn like_python(builder: kavari::KavariBuilder, prefix: &str) -> kavari::KavariBuilder {
    builder.topic_prefix(prefix).partitioner(Partitioner::Crc32)
}

/// Python kavari's `OrderPlaced` (payload dataclass `Order`), as a Kavari
/// JSON type: `name` is the Python class name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "interop.orders", name = "OrderPlaced", codec = "json")]
struct Order {
    #[kavari(key)]
    order_id: String,
    amount_cents: u64,
    note: Option<String>,
    tags: Vec<String>,
}

/// The same type as an older Rust service publishes it: MessagePack.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "interop.orders", name = "OrderPlaced")]
struct PackedOrder {
    #[kavari(key)]
    order_id: String,
    amount_cents: u64,
    note: Option<String>,
    tags: Vec<String>,
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Order>>>);
impl MessageHandler<Order> for Collect {
    async fn handle(&self, order: Order, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(order);
        Ok(())
    }
}

fn python_order(i: u64) -> Order {
    Order {
        order_id: format!("o-{i}"),
        amount_cents: i,
        note: i.is_multiple_of(2).then(|| format!("ü-{i}")),
        tags: vec![format!("t{i}")],
    }
}

/// Python kavari publishes 100 orders with its own `publish_message` (JSON,
/// no content-type), a MessagePack Rust publisher 50 more to the same
/// topic: one Kavari subscriber of the JSON type handles all 150 with the
/// right values. Kavari's CRC32 partitioner puts every one of Python's
/// keys on the partition Python kavari chose for it.
#[tokio::test]
async fn python_kavari_messages_are_handled_and_keys_land_where_python_puts_them() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Order>(broker, 4).await;

    let python = python_kavari(&["publish", &broker.bootstrap_servers(), &topic, "100"]).await;
    let python_partitions: BTreeMap<String, i64> =
        serde_json::from_value(python[0]["partitions"].clone()).expect("partitions");
    assert_eq!(python_partitions.len(), 100, "{python:?}");

    let m = like_python(consumer(broker, &unique_name("py")), &prefix)
        .build()
        .await
        .expect("build");
    for i in 100..150 {
        let o = python_order(i);
        m.publish(&PackedOrder {
            order_id: o.order_id,
            amount_cents: o.amount_cents,
            note: o.note,
            tags: o.tags,
        })
        .await
        .expect("publish");
    }
    let seen = Collect::default();
    m.subscribe::<Order, _>(seen.clone()).expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "all 150 orders handled", || {
        seen.0.lock().unwrap().len() >= 150
    })
    .await;
    let mut got = seen.0.lock().unwrap().clone();
    got.sort_by_key(|o| o.amount_cents);
    let expected: Vec<Order> = (0..150).map(python_order).collect();
    assert_eq!(got, expected);

    // The same keys through Kavari, to a topic of the same partition count.
    for (key, python_partition) in &python_partitions {
        let i: u64 = key.trim_start_matches("o-").parse().expect("o-<i>");
        let d = m.publish(&python_order(i)).await.expect("publish");
        assert_eq!(
            i64::from(d.partition),
            *python_partition,
            "key {key}: Kavari and Python kavari disagree"
        );
    }
    m.shutdown().await.expect("shutdown");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Address {
    city: String,
    zip: Option<String>,
}

/// A carrier: an enum, which Python reads as the variant's name (`str`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Carrier {
    Dhl,
    Post,
}

/// Python's `ShipmentSent` (payload `Shipment`, with a nested `Address`,
/// an enum and a timestamp, both `str` on the Python side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "interop.shipments", name = "ShipmentSent", codec = "json")]
struct Shipment {
    #[kavari(key)]
    shipment_id: String,
    weight_grams: u32,
    express: bool,
    address: Address,
    notes: Vec<String>,
    volume_litres: f64,
    labels: BTreeMap<String, i64>,
    carrier: Carrier,
    shipped_at: chrono::DateTime<chrono::Utc>,
    tracking: Option<String>,
}

fn shipment(i: u32) -> Shipment {
    Shipment {
        shipment_id: format!("s-{i}"),
        weight_grams: i * 10,
        express: i.is_multiple_of(3),
        address: Address {
            city: format!("Kraków {i}"),
            zip: (i % 2 == 1).then(|| format!("{i:05}")),
        },
        notes: (0..i % 3).map(|n| format!("n{n}")).collect(),
        volume_litres: f64::from(i) * 0.5,
        labels: (0..i % 2)
            .map(|n| (format!("l{n}"), -i64::from(i)))
            .collect(),
        carrier: if i.is_multiple_of(2) {
            Carrier::Dhl
        } else {
            Carrier::Post
        },
        shipped_at: chrono::DateTime::from_timestamp_millis(1_796_000_000_000 + i64::from(i))
            .unwrap_or_default(),
        tracking: i.is_multiple_of(4).then(|| format!("TR{i}")),
    }
}

/// Kavari publishes 100 JSON messages with the CRC32 partitioner; Python
/// kavari's own deserializer reads every value into its dataclasses, and
/// every record carries `msg_type` and `content-type: application/json`.
#[tokio::test]
async fn kavari_json_messages_decode_in_python_kavari() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Shipment>(broker, 3).await;
    let m = like_python(Kavari::builder(broker.bootstrap_servers()), &prefix)
        .build()
        .await
        .expect("build");
    let sent: Vec<Shipment> = (0..100).map(shipment).collect();
    let mut partitions = BTreeMap::new();
    for (d, s) in m.publish_batch(&sent).await.into_iter().zip(&sent) {
        partitions.insert(s.shipment_id.clone(), d.expect("publish").partition);
    }
    m.shutdown().await.expect("shutdown");

    let decoded = python_kavari(&["decode", &broker.bootstrap_servers(), &topic, "3", "100"]).await;
    assert_eq!(decoded.len(), 100);
    let mut back = BTreeMap::new();
    for r in &decoded {
        assert_eq!(r["headers"]["msg_type"], "ShipmentSent", "{r}");
        assert_eq!(r["headers"]["content-type"], "application/json", "{r}");
        let key = r["key"].as_str().expect("key").to_string();
        assert_eq!(
            r["partition"].as_i64(),
            partitions.get(&key).map(|p| i64::from(*p)),
            "{key}"
        );
        let payload: Shipment = serde_json::from_value(r["payload"].clone()).expect("payload");
        back.insert(key, payload);
    }
    let expected: BTreeMap<String, Shipment> = sent
        .into_iter()
        .map(|s| (s.shipment_id.clone(), s))
        .collect();
    assert_eq!(back, expected, "Python read what Kavari wrote");
}

/// Python's services key by a string that may be empty: with the CRC32
/// partitioner such records spread over the partitions as librdkafka
/// spreads them, instead of piling onto partition 0.
#[tokio::test]
async fn empty_keys_spread_over_partitions() {
    #[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
    #[kavari(topic = "interop.pings", codec = "json")]
    struct Ping {
        #[kavari(key)]
        source: String,
        n: u32,
    }
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, _) = prefixed_topic::<Ping>(broker, 4).await;
    let m = like_python(Kavari::builder(broker.bootstrap_servers()), &prefix)
        .build()
        .await
        .expect("build");
    let mut used = BTreeSet::new();
    for n in 0..60 {
        let d = m
            .publish(&Ping {
                source: String::new(),
                n,
            })
            .await
            .expect("publish");
        used.insert(d.partition);
    }
    m.shutdown().await.expect("shutdown");
    assert!(used.len() >= 3, "60 empty keys used partitions {used:?}");
}

/// Python's `payload: str` type, as a Kavari text type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "interop.greetings", name = "Greeting", codec = "text")]
struct Greeting(String);

/// Python's `payload: int` type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "interop.counts", name = "Counted", codec = "text")]
struct Counted(i64);

/// (text, key) of each greeting handled.
type Texts = Vec<(String, Option<String>)>;

#[derive(Clone, Default)]
struct Greetings(Arc<Mutex<Texts>>);
impl MessageHandler<Greeting> for Greetings {
    async fn handle(&self, g: Greeting, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((g.0, ctx.key.clone()));
        Ok(())
    }
}

/// Primitive payloads both ways: Python's `str` payloads (bare text, no
/// content-type) are handled by a `codec = "text"` type, and a text type's
/// integers decode in Python's deserializer as `int`.
#[tokio::test]
async fn primitive_payloads_are_text_both_ways() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, greetings) = prefixed_topic::<Greeting>(broker, 1).await;
    python_kavari(&[
        "publish-text",
        &broker.bootstrap_servers(),
        &greetings,
        "20",
    ])
    .await;
    let counts = format!("{prefix}{}", Counted::TOPIC);
    broker.create_topic(&counts, 1).await.expect("topic");
    let m = consumer(broker, &unique_name("py"))
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("build");
    let seen = Greetings::default();
    m.subscribe::<Greeting, _>(seen.clone()).expect("subscribe");
    m.start().await.expect("start");
    for n in [-3, 0, 42] {
        m.publish(&Counted(n)).await.expect("publish");
    }
    eventually(WAIT, "20 greetings handled", || {
        seen.0.lock().unwrap().len() == 20
    })
    .await;
    m.shutdown().await.expect("shutdown");
    let expected: Texts = (0..20)
        .map(|i| (format!("hello {i} ü"), Some(format!("g-{i}"))))
        .collect();
    assert_eq!(*seen.0.lock().unwrap(), expected);

    let decoded = python_kavari(&["decode-int", &broker.bootstrap_servers(), &counts, "3"]).await;
    let ints: Vec<i64> = decoded
        .iter()
        .map(|r| r["payload"].as_i64().expect("an int"))
        .collect();
    assert_eq!(ints, [-3, 0, 42]);
}

/// Refuses every shipment: its dead letters are what Python must read.
struct RefuseShipments;
impl MessageHandler<Shipment> for RefuseShipments {
    async fn handle(&self, s: Shipment, _: &MessageContext) -> Result<(), HandlerError> {
        Err(HandlerError::permanent(format!(
            "{} cannot ship",
            s.shipment_id
        )))
    }
}

/// A Kavari consumer's dead letters of a JSON type stay readable by Python
/// kavari: the value goes unchanged with its `msg_type` and `content-type`,
/// and Python's deserializer reads it into its dataclass.
#[tokio::test]
async fn kavari_dead_letters_decode_in_python_kavari() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Shipment>(broker, 1).await;
    let m = consumer(broker, &unique_name("py-dlq"))
        .topic_prefix(&prefix)
        .delivery_retry_policy(kavari::NoRetry)
        .build()
        .await
        .expect("build");
    let sent: Vec<Shipment> = (0..3).map(shipment).collect();
    for r in m.publish_batch(&sent).await {
        r.expect("publish");
    }
    m.subscribe::<Shipment, _>(RefuseShipments)
        .expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "all three dead-lettered and committed", || {
        m.health().partitions.first().and_then(|p| p.committed) == Some(3)
    })
    .await;
    m.shutdown().await.expect("shutdown");

    let dlq = format!("{topic}.dlq");
    let decoded = python_kavari(&["decode", &broker.bootstrap_servers(), &dlq, "1", "3"]).await;
    assert_eq!(decoded.len(), 3);
    for (r, s) in decoded.iter().zip(&sent) {
        assert_eq!(r["headers"]["msg_type"], "ShipmentSent", "{r}");
        assert_eq!(r["headers"]["content-type"], "application/json", "{r}");
        let original = r["headers"]["original_error"].as_str().unwrap_or_default();
        assert!(original.contains("cannot ship"), "{r}");
        let payload: Shipment = serde_json::from_value(r["payload"].clone()).expect("payload");
        assert_eq!(&payload, s);
    }
}
