//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::time::Duration;

use kavari_testcontainers::{BrokerBuilder, KafkaBroker};
use rskafka::client::Client;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::record::RecordAndOffset;

/// Logs to the test's output when `RUST_LOG` is set; silent otherwise.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Every record of `topic`/`partition` from offset 0 up to the high
/// watermark, read with a plain rskafka fetch loop.
pub async fn fetch_all(client: &Client, topic: &str, partition: i32) -> Vec<RecordAndOffset> {
    let pc = client
        .partition_client(topic, partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (records, high_watermark) = tokio::time::timeout(
            Duration::from_secs(30),
            pc.fetch_records(offset, 1..10_000_000, 100),
        )
        .await
        .expect("fetch timed out")
        .expect("fetch");
        for r in records {
            offset = r.offset + 1;
            out.push(r);
        }
        if offset >= high_watermark {
            return out;
        }
    }
}

/// Every record of every partition of `topic`, as (partition, record).
pub async fn fetch_topic(
    broker: &KafkaBroker,
    topic: &str,
    partitions: i32,
) -> Vec<(i32, RecordAndOffset)> {
    let client = broker.client().await.expect("client");
    let mut out = Vec::new();
    for p in 0..partitions {
        for r in fetch_all(&client, topic, p).await {
            out.push((p, r));
        }
    }
    out
}

/// A broker of its own, started from `builder` (file storage, a fault
/// proxy in front…), with `topic` created with `partitions`: how every test
/// that kills, restarts or cuts off its broker begins.
pub async fn own_broker(builder: BrokerBuilder, topic: &str, partitions: i32) -> KafkaBroker {
    let broker = builder.start().await.expect("broker of its own");
    broker
        .create_topic(topic, partitions)
        .await
        .expect("create topic");
    broker
}

/// A manager builder for a consumer in `group` with the timings the
/// consumer suites share: a 6 s session, 500 ms heartbeats, a 10 s
/// rebalance timeout and commits every 100 ms.
pub fn consumer(broker: &KafkaBroker, group: &str) -> kavari::KavariBuilder {
    kavari::Kavari::builder(broker.bootstrap_servers())
        .group_id(group)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(10))
        .commit_interval(Duration::from_millis(100))
}

/// A header's value as a string, for assertions.
pub fn header(headers: &BTreeMap<String, Vec<u8>>, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The message type of the crash test, shared with the consumer process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "kavari.crash")]
pub struct CrashJob {
    /// The partition key.
    #[kavari(key)]
    pub key: String,
    /// A sequence number unique in the test.
    pub seq: u64,
}

/// Waits until `done()` holds, polling; panics with `what` after `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A topic prefix of the test's own and `M`'s topic under it, created with
/// `partitions`: a manager built with `.topic_prefix(&prefix)` publishes
/// and subscribes there, so reruns on a kept cluster start clean.
pub async fn prefixed_topic<M: kavari::KafkaMessage>(
    broker: &KafkaBroker,
    partitions: i32,
) -> (String, String) {
    let prefix = format!("{}.", kavari_testcontainers::unique_name("t"));
    let topic = format!("{prefix}{}", M::TOPIC);
    broker
        .create_topic(&topic, partitions)
        .await
        .expect("create topic");
    (prefix, topic)
}

/// The log lines of a test: WARN and ERROR lines written while the guard
/// of [`CapturedLogs::warnings`] lives, on this thread (a `#[tokio::test]`
/// runtime is single-threaded, so every Kavari task logs here).
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures WARN and ERROR lines until the guard drops.
    pub fn warnings() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
            .lines()
            .map(str::to_string)
            .collect()
    }
}
