//! Shared pieces of Kavari's benchmarks: payload types of fixed sizes, and
//! the measurements more than one benchmark takes.

use kavari::KafkaMessage;
use serde::{Deserialize, Serialize};

/// A message whose encoded value is about `size` bytes.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "bench")]
pub struct Payload {
    /// The partition key.
    #[kavari(key)]
    pub id: String,
    /// A sequence number.
    pub seq: u64,
    /// Filler to reach the wanted size.
    #[serde(with = "serde_bytes_like")]
    pub body: Vec<u8>,
}

impl Payload {
    /// A payload whose MessagePack value is close to `size` bytes.
    pub fn of_size(seq: u64, size: usize) -> Self {
        Self {
            id: format!("key-{}", seq % 1024),
            seq,
            body: vec![0xab; size.saturating_sub(32)],
        }
    }
}

/// Serializes bytes as a MessagePack bin, not an array of integers.
mod serde_bytes_like {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Counts handled records, stamping the first and the last: a rate from
/// the first record handled to the last.
#[derive(Default)]
pub struct Count {
    /// Records handled so far.
    pub handled: std::sync::atomic::AtomicU64,
    /// When the first was handled.
    pub first: std::sync::Mutex<Option<std::time::Instant>>,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Count {
    /// Counts `n` records handled now.
    pub fn add(&self, n: u64) {
        let now = std::time::Instant::now();
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        self.handled
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records per second from the first handled to the last.
    pub fn rate(&self) -> f64 {
        let first = *self.first.lock().unwrap_or_else(|p| p.into_inner());
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        match (first, last) {
            (Some(a), Some(b)) if b > a => {
                self.handled.load(std::sync::atomic::Ordering::Relaxed) as f64
                    / (b - a).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

mod measure;
pub use measure::{micros, peak_rss_kb, percentile_ms};
pub mod peer;

/// The latency workload's message: its send time travels in the value.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-bench.latency")]
pub struct Stamped {
    /// The partition key.
    #[kavari(key)]
    pub id: u64,
    /// When it was published, from [`micros`].
    pub sent_micros: u64,
}

struct Latency(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl kavari::MessageHandler<Stamped> for Latency {
    async fn handle(
        &self,
        m: Stamped,
        _: &kavari::MessageContext,
    ) -> Result<(), kavari::HandlerError> {
        if let Ok(mut v) = self.0.lock() {
            v.push(micros().saturating_sub(m.sent_micros));
        }
        Ok(())
    }
}

/// Publishes `rate` [`Stamped`] messages a second for `seconds` through one
/// Kavari manager that also consumes them (only this run's: it starts at the
/// latest offset), and returns the publish-to-handler latencies in µs,
/// sorted. `Stamped::TOPIC` must exist.
pub async fn kavari_latency(
    bootstrap: &str,
    rate: u64,
    seconds: u64,
    fetch_wait: std::time::Duration,
) -> Vec<u64> {
    use std::time::{Duration, Instant};
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let manager = kavari::Kavari::builder(bootstrap)
        .group_id(kavari_testcontainers::unique_name("latency"))
        .auto_offset_reset(kavari::OffsetReset::Latest)
        .linger(Duration::from_millis(1))
        .fetch_max_wait(fetch_wait)
        .build()
        .await
        .expect("build");
    manager
        .subscribe::<Stamped, _>(Latency(std::sync::Arc::clone(&samples)))
        .expect("subscribe");
    manager.start().await.expect("start");
    // Ready and every partition positioned: Latest is fixed before we publish.
    while !(manager.health().ready
        && !manager.health().partitions.is_empty()
        && manager
            .health()
            .partitions
            .iter()
            .all(|p| p.position.is_some()))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One record through before the clock, as the peers wait 3 s before
    // theirs: the producer id, the connections to the leader and the first
    // fetch are a start-up cost (on a fresh Kafka cluster the first
    // producer id takes hundreds of milliseconds), not a record's latency.
    manager
        .publish(&Stamped {
            id: u64::MAX,
            sent_micros: micros(),
        })
        .await
        .expect("the warm-up record");
    let warm = Instant::now() + Duration::from_secs(30);
    while samples.lock().map(|v| v.is_empty()).unwrap_or(true) && Instant::now() < warm {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Ok(mut v) = samples.lock() {
        v.clear();
    }
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for id in 0..total {
        tick.tick().await;
        let m = manager.clone();
        tokio::spawn(async move {
            let _ = m
                .publish(&Stamped {
                    id,
                    sent_micros: micros(),
                })
                .await;
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples.lock().map(|v| v.len() as u64).unwrap_or(0) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    manager.shutdown().await.expect("shutdown");
    let mut v = samples.lock().map(|v| v.clone()).unwrap_or_default();
    v.sort_unstable();
    v
}

/// A partition client for every partition of `topic`.
pub async fn partition_clients(
    client: &rskafka::client::Client,
    topic: &str,
) -> Vec<rskafka::client::partition::PartitionClient> {
    let partitions = client
        .list_topics()
        .await
        .expect("topics")
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.len())
        .expect("topic exists");
    let mut pcs = Vec::with_capacity(partitions);
    for p in 0..partitions {
        pcs.push(
            client
                .partition_client(
                    topic,
                    i32::try_from(p).expect("partition"),
                    rskafka::client::partition::UnknownTopicHandling::Retry,
                )
                .await
                .expect("partition client"),
        );
    }
    pcs
}

/// A raw rskafka fetch loop: reads every partition from offset 0 to its high
/// watermark, all partitions at once, handing each value to `on_value`;
/// returns how many records it read.
pub async fn fetch_to_end(
    pcs: &[rskafka::client::partition::PartitionClient],
    on_value: impl Fn(&[u8]) + Sync,
) -> usize {
    let on_value = &on_value;
    let counts = futures::future::join_all(pcs.iter().map(|pc| async move {
        let (mut offset, mut count) = (0, 0usize);
        loop {
            let (records, hw) = pc
                .fetch_records(offset, 1..1024 * 1024, 500)
                .await
                .expect("fetch");
            for r in records {
                on_value(r.record.value.as_deref().unwrap_or_default());
                offset = r.offset + 1;
                count += 1;
            }
            if offset >= hw {
                return count;
            }
        }
    }))
    .await;
    counts.iter().sum()
}

/// The record a raw rskafka user builds for `msg`: MessagePack value, the
/// Kavari headers, the key.
pub fn raw_record<M: Serialize>(key: &str, msg_type: &str, msg: &M) -> rskafka::record::Record {
    rskafka::record::Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(rmp_serde::to_vec_named(msg).expect("encode")),
        headers: std::collections::BTreeMap::from([
            ("msg_type".to_string(), msg_type.as_bytes().to_vec()),
            ("content-type".to_string(), b"application/msgpack".to_vec()),
        ]),
        timestamp: chrono::Utc::now(),
    }
}

/// `n` payloads of `size` bytes, and their total encoded size.
pub fn payloads(n: usize, size: usize) -> (Vec<Payload>, usize) {
    let msgs: Vec<_> = (0..n as u64).map(|i| Payload::of_size(i, size)).collect();
    let bytes = msgs
        .iter()
        .map(|m| kavari::codec::encode(m).expect("encode").size())
        .sum();
    (msgs, bytes)
}

/// How long a new connection takes to be ready for requests (TCP connect,
/// API versions and whatever `security` adds: TLS, SASL), in milliseconds:
/// the median of `n` connections, one after another.
pub async fn median_connect_ms(bootstrap: &str, security: kavari::Security, n: usize) -> f64 {
    use std::time::{Duration, Instant};
    let cluster = kavari_wire::cluster::Cluster::new(
        vec![bootstrap.to_string()],
        "kavari-bench".into(),
        Duration::from_secs(30),
    )
    .with_security(security);
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let conn = cluster.connect(bootstrap).await.expect("connect");
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(conn);
    }
    took.sort_by(f64::total_cmp);
    took[took.len() / 2]
}

/// Messages a second a consumer handles: waits for `count` to move, then
/// times it from there to `n` (what came before the first one, the group
/// join and the first fetch, is left out).
pub async fn consume_rate(count: &std::sync::atomic::AtomicU64, n: u64) -> f64 {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    while count.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let (started, at_start) = (Instant::now(), count.load(Ordering::Relaxed));
    while count.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    n.saturating_sub(at_start) as f64 / started.elapsed().as_secs_f64()
}

/// The value after `name` on the command line (`--records 3000`), parsed;
/// `None` when absent or not a `T`.
pub fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}
