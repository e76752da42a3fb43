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

/// A manager of `builder` with `handler` subscribed for `M`, started.
pub async fn started<M, H>(builder: kavari::KavariBuilder, handler: H) -> kavari::Kavari
where
    M: kavari::KafkaMessage,
    H: kavari::MessageHandler<M>,
{
    let manager = builder.build().await.expect("build");
    manager.subscribe::<M, H>(handler).expect("subscribe");
    manager.start().await.expect("start");
    manager
}

/// Writes `records` to `topic`/`partition` with rskafka, the independent
/// client (acks all).
pub async fn write_records(
    broker: &KafkaBroker,
    topic: &str,
    partition: i32,
    records: Vec<rskafka::record::Record>,
) {
    let client = broker.client().await.expect("rskafka");
    let pc = client
        .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    pc.produce(
        records,
        rskafka::client::partition::Compression::NoCompression,
    )
    .await
    .expect("produce");
}

/// A record of `value` alone (no key, no headers), stamped now.
pub fn value_record(value: Vec<u8>) -> rskafka::record::Record {
    rskafka::record::Record {
        key: None,
        value: Some(value),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
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

/// A numbered event; tests give it a topic of their own with a prefix.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "numbered.events")]
pub struct Numbered {
    /// The number.
    pub n: u32,
}

/// Records the numbers it handles, in order.
pub struct Numbers(pub std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

impl kavari::MessageHandler<Numbered> for Numbers {
    async fn handle(
        &self,
        e: Numbered,
        _: &kavari::MessageContext,
    ) -> Result<(), kavari::HandlerError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(e.n);
        Ok(())
    }
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

/// What the crash test's consumer publishes per job under exactly-once
/// handling.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "kavari.crash.done")]
pub struct CrashJobDone {
    /// The job's key.
    #[kavari(key)]
    pub key: String,
    /// The job's sequence number.
    pub seq: u64,
}

impl CrashJob {
    /// Jobs `0..n`, job `seq` keyed `k{seq % keys}`.
    pub fn numbered(n: u64, keys: u64) -> Vec<CrashJob> {
        (0..n)
            .map(|seq| CrashJob {
                key: format!("k{}", seq % keys),
                seq,
            })
            .collect()
    }

    /// How long the crash test's consumer takes per job, at least.
    pub const TIME: Duration = Duration::from_millis(20);

    /// How long the crash test's consumer takes for this job: every
    /// seventh takes five times as long, so jobs handled side by side
    /// finish out of offset order.
    pub fn time(&self) -> Duration {
        self.time_at(Self::TIME)
    }

    /// [`time`](Self::time) with `unit` instead of [`TIME`](Self::TIME)
    /// (the consumer's `JOB_MS=n` setting).
    pub fn time_at(&self, unit: Duration) -> Duration {
        if self.seq.is_multiple_of(7) {
            unit * 5
        } else {
            unit
        }
    }
    /// The crash test's consumer's commit interval.
    pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
}

/// Prints `line` on stdout at once: the test processes' protocol with the
/// tests that run them.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What the transaction test's writer processes publish.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "kavari.written")]
pub struct Written {
    /// The partition key: writer, transaction and record.
    #[kavari(key)]
    pub key: String,
    /// The writer process's name.
    pub writer: String,
    /// The writer's transaction, counted from 0.
    pub seq: u64,
}

/// What the consumer processes printed: jobs begun and done (by process,
/// with the record's offset and when the line arrived) and how many
/// partitions each owns now.
#[derive(Default)]
pub struct Printed {
    /// (process, seq) of each job begun.
    pub begun: Vec<(usize, u64)>,
    /// (process, seq, offset, when the line arrived) of each job done.
    pub done: Vec<(usize, u64, i64, std::time::Instant)>,
    /// How many partitions each process owns now.
    pub owns: [usize; 3],
}

impl Printed {
    /// The jobs done by any process, each once.
    pub fn jobs_done(&self) -> std::collections::BTreeSet<u64> {
        self.done.iter().map(|d| d.1).collect()
    }

    /// How many jobs process `i` began and how many it finished.
    pub fn begun_and_done(&self, i: usize) -> (usize, usize) {
        let begun = self.begun.iter().filter(|b| b.0 == i).count();
        let done = self.done.iter().filter(|d| d.0 == i).count();
        (begun, done)
    }
}

/// Starts consumer process `i` of `group` (the test consumer binary at
/// `bin`: `env!("CARGO_BIN_EXE_kavari-test-consumer")`) with `settings`
/// (`KAVARI_…=…`); its lines go to `printed`.
pub fn spawn_consumer(
    bin: &str,
    bootstrap: &str,
    group: &str,
    i: usize,
    settings: &[String],
    printed: &std::sync::Arc<std::sync::Mutex<Printed>>,
) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(bin)
        .args([bootstrap, group])
        .args(settings)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn consumer");
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let printed = std::sync::Arc::clone(printed);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut words = line.split(' ');
            let what = words.next().unwrap_or_default();
            let mut number = || words.next().and_then(|w| w.parse::<i64>().ok());
            let mut printed = printed.lock().unwrap();
            match (what, number(), number()) {
                ("DONE", Some(seq), Some(offset)) => {
                    printed
                        .done
                        .push((i, seq as u64, offset, std::time::Instant::now()))
                }
                ("BEGIN", Some(seq), Some(_)) => printed.begun.push((i, seq as u64)),
                ("OWNS", Some(n), None) => printed.owns[i] = n as usize,
                _ => {}
            }
        }
    });
    child
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

/// A connection to the leader of `topic`/`partition` (on a cluster of
/// several nodes only the leader answers Produce and Fetch).
pub async fn leader(
    cluster: &kavari_wire::cluster::Cluster,
    topic: &str,
    partition: i32,
) -> std::sync::Arc<kavari_wire::connection::Connection> {
    let meta = cluster
        .topic(topic)
        .await
        .expect("metadata")
        .unwrap_or_else(|| panic!("topic {topic} unknown"));
    let leader = meta
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .and_then(|p| p.leader)
        .unwrap_or_else(|| panic!("{topic}/{partition} has no leader"));
    cluster.broker(leader).await.expect("connect to the leader")
}

/// The brokers that lead at least one partition of `topic` (one on a
/// single broker; up to three on the test cluster).
pub async fn leaders_of(broker: &KafkaBroker, topic: &str) -> std::collections::BTreeSet<i32> {
    let cluster = kavari_wire::cluster::Cluster::new(
        broker.bootstrap_list(),
        "kavari-tests".into(),
        Duration::from_secs(10),
    );
    let meta = cluster
        .topic(topic)
        .await
        .expect("metadata")
        .unwrap_or_else(|| panic!("topic {topic} unknown"));
    meta.partitions.iter().filter_map(|p| p.leader).collect()
}

/// A record as the log holds it, with the producer fields of its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRecord {
    /// Its offset.
    pub offset: i64,
    /// The producer id of its batch (-1: not idempotent).
    pub producer_id: i64,
    /// The producer epoch of its batch.
    pub producer_epoch: i16,
    /// Its sequence number (-1: not idempotent).
    pub sequence: i32,
    /// Its value.
    pub value: Vec<u8>,
}

/// Every record of `topic`/`partition` with its producer id, epoch and
/// sequence, read by Kavari's fetch and an independent batch decoder
/// (kafka-protocol's).
pub async fn logged_records(
    broker: &KafkaBroker,
    topic: &str,
    partition: i32,
) -> Vec<LoggedRecord> {
    use kavari_wire::fetch::{FetchLimits, FetchPosition, Isolation, fetch};
    let cluster = kavari_wire::cluster::Cluster::new(
        broker.bootstrap_list(),
        "kavari-tests".into(),
        Duration::from_secs(10),
    );
    let conn = leader(&cluster, topic, partition).await;
    let limits = FetchLimits {
        max_wait: Duration::from_millis(100),
        min_bytes: 1,
        max_bytes: 16 << 20,
        partition_max_bytes: 16 << 20,
        isolation: Isolation::ReadUncommitted,
    };
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let position = FetchPosition {
            partition: kavari_wire::TopicPartition::new(topic, partition),
            offset,
            leader_epoch: -1,
        };
        let answer = fetch(&conn, &[position], &limits).await.expect("fetch");
        let part = answer.into_iter().next().expect("the partition");
        assert_eq!(part.error, None, "fetching {topic}/{partition}");
        let mut records = part.records.clone();
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records)
            .expect("batches decode")
        {
            for r in set.records {
                if r.offset >= offset {
                    offset = r.offset + 1;
                    out.push(LoggedRecord {
                        offset: r.offset,
                        producer_id: r.producer_id,
                        producer_epoch: r.producer_epoch,
                        sequence: r.sequence,
                        value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                    });
                }
            }
        }
        if offset >= part.high_watermark {
            return out;
        }
    }
}

/// A librdkafka group member (`peers/rdkafka_member.py`, confluent-kafka)
/// subscribed to one topic, with the partitions it owns now.
pub struct RdkafkaMember {
    child: tokio::process::Child,
    assignment: tokio::sync::watch::Receiver<Vec<i32>>,
}

impl RdkafkaMember {
    /// Starts a member of `group` on `topic`, with librdkafka settings from
    /// `env` (`PEER_SECURITY_PROTOCOL` and the like; see the script). It
    /// stays for at most two minutes.
    pub fn spawn(bootstrap: &str, group: &str, topic: &str, env: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};

        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/rdkafka_member.py");
        let mut child = tokio::process::Command::new("python3")
            .args([script, "member", bootstrap, group, topic, "120"])
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the librdkafka peer (bash testcontainers/setup.sh installs it)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (tx, assignment) = tokio::sync::watch::channel(Vec::new());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("ASSIGNMENT ") {
                    let _ = tx.send(rest.split(',').filter_map(|p| p.parse().ok()).collect());
                }
            }
        });
        Self { child, assignment }
    }

    /// The partitions it owns now.
    pub fn assignment(&self) -> Vec<i32> {
        self.assignment.borrow().clone()
    }

    /// Leaves the group (closing its input) and waits for it to end.
    pub async fn leave(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// A request as a fault proxy kept it (header, then body), decoded at the
/// version its header names.
pub fn kept_request<R>(frame: &[u8]) -> R
where
    R: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
{
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::Decodable;
    let mut bytes = bytes::Bytes::copy_from_slice(frame);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    RequestHeader::decode(&mut bytes, R::header_version(version)).expect("request header");
    R::decode(&mut bytes, version).expect("request body")
}
