//! Kavari's fetch engine against a real broker: batches librdkafka wrote
//! with every codec, Kavari's lz4 and zstd batches read by librdkafka, 64
//! partitions started together and fetched with one Fetch per round (in
//! incremental fetch sessions, whose recovery is shown too), a
//! backlog in large answers beside a caught-up partition, leader epochs in
//! commits, starting offsets and offsets out of range with each reset
//! policy, and no fetch work left behind. (The test
//! broker refuses a batch with a bad CRC or codec on produce, as Kafka
//! does, so a batch that cannot be read is shown with a scripted peer in
//! kavari-wire's fetcher tests.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{
    Compression, HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, OffsetReset,
};
use kavari_group::TopicPartition;
use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{
    consumer, eventually, init_tracing, kept_request, own_broker, started, value_record,
    write_records,
};
use kavari_wire::cluster::Cluster;
use kavari_wire::fetch::{FetchLimits, FetchPosition, FetchSession, Isolation, fetch};
use kavari_wire::fetcher::{FetchEvent, Fetcher, FetcherConfig, ResetCause};
use kavari_wire::list_offsets::OffsetSpec;
use kavari_wire::record_batch::read::batches;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(60);

/// Kafka API keys counted at the proxy.
const FETCH: i16 = 1;
const LIST_OFFSETS: i16 = 2;
const OFFSET_FETCH: i16 = 9;

const OFFSET_COMMIT: i16 = 8;

/// The partitions a kept Fetch request names.
fn fetched_partitions(frame: &[u8]) -> BTreeSet<(String, i32)> {
    kept_request::<kafka_protocol::messages::FetchRequest>(frame)
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition))
        })
        .collect()
}

/// The shared broker with `topic` made, and a manager publishing to it.
async fn shared_publisher(topic: &str, partitions: i32) -> (&'static KafkaBroker, Kavari) {
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(topic, partitions).await.expect("topic");
    let publisher = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    (broker, publisher)
}

/// The consumer suites' builder with short fetch waits.
fn builder(broker: &KafkaBroker, group: &str) -> kavari::KavariBuilder {
    consumer(broker, group).fetch_max_wait(Duration::from_millis(100))
}

/// Fetch limits for the tests that drive kavari-wire directly.
fn limits(max_wait_ms: u64, partition_max_bytes: i32) -> FetchLimits {
    FetchLimits {
        max_wait: Duration::from_millis(max_wait_ms),
        min_bytes: 1,
        max_bytes: 1 << 20,
        partition_max_bytes,
        isolation: Isolation::ReadCommitted,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the librdkafka peer script with `args`, feeding it `input`.
async fn peer(args: &[&str], input: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/rdkafka_codecs.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the librdkafka peer (run `bash testcontainers/setup.sh`)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("peer input");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the peer finished in time")
        .expect("peer output");
    assert!(
        out.status.success(),
        "peer {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// Every codec librdkafka writes.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "fetch.codecs")]
struct Coded {
    #[kavari(key)]
    key: String,
    seq: u64,
    codec: String,
}

type Handled = Arc<Mutex<Vec<(i32, i64, Coded)>>>;

struct Collect(Handled);
impl MessageHandler<Coded> for Collect {
    async fn handle(&self, m: Coded, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((ctx.partition, ctx.offset, m));
        Ok(())
    }
}

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// One topic, written by librdkafka with each codec in turn: every record
/// is handled once, in offset order per partition and in order per key.
#[tokio::test]
async fn records_librdkafka_wrote_with_every_codec_are_handled_in_order() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(Coded::TOPIC, 2).await.expect("topic");
    let per_codec = 40u64;
    for (c, codec) in CODECS.iter().enumerate() {
        let mut lines = String::new();
        for i in 0..per_codec {
            // A key's records go to one partition.
            let msg = Coded {
                key: format!("k{}", i % 6),
                seq: c as u64 * 100 + i,
                codec: (*codec).to_string(),
            };
            let value = kavari::codec::encode(&msg).expect("encode").value;
            let partition = (i % 6) % 2;
            lines.push_str(&format!("{partition} {} {} Coded\n", msg.key, hex(&value)));
        }
        let out = peer(
            &["produce", &broker.bootstrap_servers(), Coded::TOPIC, codec],
            &lines,
        )
        .await;
        assert!(out.contains(&format!("PRODUCED {per_codec}")), "{out}");
    }

    let handled: Handled = Arc::default();
    let m = started::<Coded, _>(
        builder(broker, &unique_name("codecs")),
        Collect(Arc::clone(&handled)),
    )
    .await;
    let total = per_codec as usize * CODECS.len();
    eventually(WAIT, "every record handled", || {
        handled.lock().unwrap().len() >= total
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), total, "each record once");
    for codec in CODECS {
        assert_eq!(
            handled.iter().filter(|(_, _, m)| m.codec == codec).count(),
            per_codec as usize,
            "{codec}"
        );
    }
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    for (partition, offset, msg) in &handled {
        if let Some(prev) = last_offset.insert(*partition, *offset) {
            assert!(
                *offset > prev,
                "partition {partition}: {offset} after {prev}"
            );
        }
        if let Some(prev) = last_seq.insert(msg.key.clone(), msg.seq) {
            assert!(msg.seq > prev, "key {}: {} after {prev}", msg.key, msg.seq);
        }
    }
    let health = m.health();
    assert!(health.ready, "{health:?}");
    m.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------
// Kavari's lz4 and zstd, read by librdkafka.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "fetch.published.lz4")]
struct Lz4Msg {
    #[kavari(key)]
    key: String,
    seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "fetch.published.zstd")]
struct ZstdMsg {
    #[kavari(key)]
    key: String,
    seq: u64,
}

/// Publishes 30 messages with `compression`, checks the broker holds them
/// in batches of that codec, and that librdkafka reads them all back.
async fn published_and_read_back<M: KafkaMessage + Sync>(
    broker: &KafkaBroker,
    compression: Compression,
    make: impl Fn(u64) -> M,
) {
    broker.create_topic(M::TOPIC, 1).await.expect("topic");
    let m = Kavari::builder(broker.bootstrap_servers())
        .compression(compression)
        .build()
        .await
        .expect("build");
    let msgs: Vec<M> = (0..30).map(&make).collect();
    for r in m.publish_batch(&msgs).await {
        r.expect("publish");
    }
    m.shutdown().await.expect("shutdown");

    // The broker holds them as batches of that codec.
    let cluster = Cluster::new(broker.bootstrap_list(), "t".into(), WAIT);
    let leader = cluster
        .topic(M::TOPIC)
        .await
        .expect("metadata")
        .expect("topic")
        .partitions[0]
        .leader
        .expect("leader");
    let conn = cluster.broker(leader).await.expect("connection");
    let limits = limits(10, 1 << 20);
    let position = FetchPosition {
        partition: TopicPartition::new(M::TOPIC, 0),
        offset: 0,
        leader_epoch: -1,
    };
    let parts = fetch(&conn, &[position], &limits).await.expect("fetch");
    let codecs: Vec<_> = batches(parts[0].records.clone())
        .map(|b| b.expect("batch").compression)
        .collect();
    assert!(
        !codecs.is_empty() && codecs.iter().all(|c| *c == compression),
        "{codecs:?}"
    );

    let out = peer(
        &["read", &broker.bootstrap_servers(), M::TOPIC, "1", "30"],
        "",
    )
    .await;
    let read: Vec<&str> = out.lines().filter(|l| l.starts_with("RECORD ")).collect();
    assert_eq!(read.len(), 30, "{out}");
    for (i, line) in read.iter().enumerate() {
        let value = kavari::codec::encode(&make(i as u64))
            .expect("encode")
            .value;
        assert!(line.ends_with(&hex(&value)), "record {i}: {line}");
        assert!(line.starts_with(&format!("RECORD 0 {i} ")), "{line}");
    }
}

#[tokio::test]
async fn kavari_lz4_and_zstd_batches_are_read_by_librdkafka() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    published_and_read_back(broker, Compression::Lz4, |seq| Lz4Msg {
        key: format!("k{seq}"),
        seq,
    })
    .await;
    published_and_read_back(broker, Compression::Zstd, |seq| ZstdMsg {
        key: format!("k{seq}"),
        seq,
    })
    .await;
}

// ---------------------------------------------------------------------------
// One Fetch per broker.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "fetch.wide")]
struct Wide {
    #[kavari(key)]
    key: String,
}

struct Count(Arc<Mutex<BTreeSet<i32>>>);
impl MessageHandler<Wide> for Count {
    async fn handle(&self, _: Wide, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().insert(ctx.partition);
        Ok(())
    }
}

/// A member with 64 partitions on one broker starts them together (one
/// OffsetFetch, one ListOffsets, and a first Fetch that names all 64) and
/// then sends one Fetch per round for all of them, not one per partition
/// (requests counted and kept at a proxy in front of the broker).
#[tokio::test]
async fn a_member_with_64_partitions_starts_them_together_and_sends_one_fetch_per_round() {
    init_tracing();
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), Wide::TOPIC, 64).await;
    let proxy = broker.proxy().expect("proxy");
    let seen: Arc<Mutex<BTreeSet<i32>>> = Arc::default();
    let m = builder(&broker, &unique_name("wide"))
        .build()
        .await
        .expect("build");
    m.subscribe::<Wide, _>(Count(Arc::clone(&seen)))
        .expect("subscribe");
    proxy.keep_requests(FETCH);
    let (offset_fetches, list_offsets) =
        (proxy.requests(OFFSET_FETCH), proxy.requests(LIST_OFFSETS));
    m.start().await.expect("start");
    eventually(WAIT, "all 64 partitions started", || {
        let health = m.health();
        health.partitions.len() == 64 && health.partitions.iter().all(|p| p.position.is_some())
    })
    .await;
    assert_eq!(
        proxy.requests(OFFSET_FETCH) - offset_fetches,
        1,
        "OffsetFetch requests at start"
    );
    // One per leader: the partitions a broker leads are looked up together.
    let leaders = kavari_tests::leaders_of(&broker, Wide::TOPIC).await.len();
    assert_eq!(
        proxy.requests(LIST_OFFSETS) - list_offsets,
        u64::try_from(leaders).unwrap(),
        "ListOffsets requests at start, one per leader"
    );
    eventually(WAIT, "a first Fetch", || {
        !proxy.kept_requests(FETCH).is_empty()
    })
    .await;
    // The first round: one Fetch per leader, together naming every
    // partition.
    eventually(WAIT, "a first Fetch to every leader", || {
        proxy.kept_requests(FETCH).len() >= leaders
    })
    .await;
    let first: BTreeSet<(String, i32)> = proxy.kept_requests(FETCH)[..leaders]
        .iter()
        .flat_map(|f| fetched_partitions(f))
        .collect();
    assert_eq!(first.len(), 64, "the first Fetches name {first:?}");
    let msgs: Vec<Wide> = (0..1000)
        .map(|i| Wide {
            key: format!("k{i}"),
        })
        .collect();
    for r in m.publish_batch(&msgs).await {
        r.expect("publish");
    }
    eventually(WAIT, "records of all 64 partitions handled", || {
        seen.lock().unwrap().len() == 64
    })
    .await;
    assert_eq!(m.health().partitions.len(), 64);

    let before = proxy.requests(FETCH);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fetches = proxy.requests(FETCH) - before;
    // 2 s of rounds that each wait up to 100 ms: about 20 requests per
    // leader. One per partition would be 64 per round, 1,280 in 2 s.
    assert!(fetches > 0, "no fetch at all");
    let bound = 30 * u64::try_from(leaders).unwrap();
    assert!(
        fetches < bound,
        "{fetches} fetches in 2 s for 64 partitions on {leaders} leader(s)"
    );
    // Request bytes per round (frames as sent, headers included): the
    // first round names every partition; an idle round in a fetch session
    // (KIP-227) names none.
    let kept = proxy.kept_requests(FETCH);
    let round_bytes = |frames: &[Vec<u8>]| frames.iter().map(Vec::len).sum::<usize>();
    let full = round_bytes(&kept[..leaders]);
    let idle = round_bytes(&kept[kept.len() - leaders..]);
    eprintln!(
        "Fetch request bytes per round, 64 partitions on {leaders} leader(s): first {full}, idle {idle}"
    );
    if kavari_testcontainers::TestBroker::is_kafka() {
        assert!(
            idle * 5 < full,
            "first round {full} bytes, idle round {idle} bytes"
        );
    }
    m.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------
// A backlog in large answers.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "fetch.backlog")]
struct Backlog {
    #[kavari(key)]
    key: String,
    seq: u64,
    pad: String,
}

struct Order(Arc<Mutex<BTreeMap<i32, Vec<u64>>>>);
impl MessageHandler<Backlog> for Order {
    async fn handle(&self, m: Backlog, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .entry(ctx.partition)
            .or_default()
            .push(m.seq);
        Ok(())
    }
}

/// A backlog of several megabytes on one partition (answers of many
/// batches, decoded batch by batch as the worker reaches them, the buffer
/// filling and draining) beside a partition at its end, long-polled with
/// the default 500 ms wait: every record handled once, in order.
#[tokio::test]
async fn a_backlog_in_large_answers_beside_a_caught_up_partition_is_handled_in_order() {
    init_tracing();
    let (broker, publisher) = shared_publisher(Backlog::TOPIC, 2).await;
    const N: u64 = 20_000;
    let pad = "x".repeat(300);
    let msgs: Vec<Backlog> = (0..N)
        .map(|seq| Backlog {
            key: "hot".into(),
            seq,
            pad: pad.clone(),
        })
        .collect();
    for r in publisher.publish_batch(&msgs).await {
        r.expect("publish");
    }
    let seen: Arc<Mutex<BTreeMap<i32, Vec<u64>>>> = Arc::default();
    let m = started::<Backlog, _>(
        consumer(broker, &unique_name("backlog")).max_partition_fetch_bytes(1024 * 1024),
        Order(Arc::clone(&seen)),
    )
    .await;
    eventually(WAIT, "the backlog handled", || {
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>() >= N as usize
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "one partition has the backlog: {:?}",
        seen.keys()
    );
    let order: Vec<u64> = seen.into_values().flatten().collect();
    assert_eq!(
        order,
        (0..N).collect::<Vec<_>>(),
        "each record once, in order"
    );
    m.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------
// Leader epochs in commits.

/// The offset and leader epoch of every partition a kept OffsetCommit
/// request names.
fn committed_epochs(frame: &[u8]) -> Vec<(i64, i32)> {
    kept_request::<kafka_protocol::messages::OffsetCommitRequest>(frame)
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| (p.committed_offset, p.committed_leader_epoch))
        .collect()
}

/// A consumer commits the leader epoch of the last record it handled with
/// the offset after it (KIP-320): the OffsetCommit requests it sends, kept
/// at a proxy, name the epoch the records' batch carries. (The test broker
/// keeps no committed epoch to read back, so the request is what shows it.)
#[tokio::test]
async fn commits_carry_the_leader_epoch_of_the_last_record_handled() {
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;
    use kavari_wire::compression::Compression as Codec;
    use kavari_wire::produce::{PartitionBatch, Produce};
    use kavari_wire::record_batch::write::{Record, RecordBatch};
    init_tracing();
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), Ranged::TOPIC, 1).await;
    let proxy = broker.proxy().expect("proxy");

    // Three records in one batch whose partition leader epoch says 5 (the
    // field precedes the CRC's range, so the batch stays valid).
    let mut batch = RecordBatch::with_capacity(1024);
    for seq in 0..3 {
        let m = kavari::codec::encode(&Ranged {
            key: "k".into(),
            seq,
        })
        .expect("encode");
        let headers: Vec<(&str, &[u8])> = m
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        batch.push(
            &Record {
                key: m.key.as_deref(),
                value: &m.value,
                headers: &headers[..],
            },
            1_700_000_000_000,
        );
    }
    let mut records = batch.finish(Codec::None).expect("batch");
    records[12..16].copy_from_slice(&5i32.to_be_bytes());
    let cluster = Arc::new(Cluster::new(broker.bootstrap_list(), "t".into(), WAIT));
    let conn = kavari_tests::leader(&cluster, Ranged::TOPIC, 0).await;
    conn.send_produce(&Produce {
        transactional_id: None,
        acks: -1,
        timeout_ms: 10_000,
        batches: vec![PartitionBatch {
            topic: TopicName(StrBytes::from_static_str(Ranged::TOPIC)),
            partition: 0,
            records: records.into(),
        }],
    })
    .await
    .expect("send")
    .await
    .expect("produce");

    // The epoch the broker hands out with them.
    let tp = TopicPartition::new(Ranged::TOPIC, 0);
    let position = FetchPosition {
        partition: tp.clone(),
        offset: 0,
        leader_epoch: -1,
    };
    let answer = fetch(&conn, &[position], &limits(100, 1 << 20))
        .await
        .expect("fetch");
    let epoch = batches(answer[0].records.clone())
        .next()
        .expect("a batch")
        .expect("readable")
        .partition_leader_epoch;
    assert!(epoch >= 0, "the broker hands out no leader epoch ({epoch})");

    proxy.keep_requests(OFFSET_COMMIT);
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let m = started::<Ranged, _>(
        builder(&broker, &unique_name("epoch")),
        Seqs(Arc::clone(&seen)),
    )
    .await;
    eventually(WAIT, "three records handled and committed", || {
        seen.lock().unwrap().len() == 3
            && m.health().partitions.iter().any(|p| p.committed == Some(3))
    })
    .await;
    m.shutdown().await.expect("shutdown");
    let commits: Vec<(i64, i32)> = proxy
        .kept_requests(OFFSET_COMMIT)
        .iter()
        .flat_map(|f| committed_epochs(f))
        .collect();
    assert!(
        commits.contains(&(3, epoch)),
        "no commit of offset 3 with leader epoch {epoch}: {commits:?}"
    );
    // The reset position, committed before anything was handled, has no
    // record to take an epoch from.
    assert!(
        commits
            .iter()
            .all(|&(offset, e)| offset == 0 && e == -1 || e == epoch),
        "{commits:?}"
    );
}

// ---------------------------------------------------------------------------
// Offsets out of range.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "fetch.range")]
struct Ranged {
    #[kavari(key)]
    key: String,
    seq: u64,
}

struct Seqs(Arc<Mutex<Vec<u64>>>);
impl MessageHandler<Ranged> for Seqs {
    async fn handle(&self, m: Ranged, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(m.seq);
        Ok(())
    }
}

async fn publish_ranged(m: &Kavari, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        m.publish(&Ranged {
            key: "k".into(),
            seq,
        })
        .await
        .expect("publish");
    }
}

/// A group with no committed offset starts where `auto_offset_reset` says,
/// looked up with ListOffsets: `Earliest` from the oldest record, `Latest`
/// from the end, `Error` stops the partition and says so in `health()`.
#[tokio::test]
async fn a_partition_without_a_committed_offset_applies_each_reset_policy() {
    init_tracing();
    let (broker, publisher) = shared_publisher(Ranged::TOPIC, 1).await;
    publish_ranged(&publisher, 0..5).await;

    for reset in [
        OffsetReset::Earliest,
        OffsetReset::Latest,
        OffsetReset::Error,
    ] {
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let m = started::<Ranged, _>(
            builder(broker, &unique_name("reset")).auto_offset_reset(reset),
            Seqs(Arc::clone(&seen)),
        )
        .await;
        match reset {
            OffsetReset::Earliest => {
                eventually(WAIT, "the old records", || seen.lock().unwrap().len() >= 5).await;
                assert_eq!(seen.lock().unwrap()[..5], [0, 1, 2, 3, 4]);
            }
            OffsetReset::Latest => {
                eventually(WAIT, "the start at the end", || {
                    m.health()
                        .partitions
                        .first()
                        .and_then(|p| p.position)
                        .is_some()
                })
                .await;
                publish_ranged(&publisher, 100..102).await;
                eventually(WAIT, "the new records", || seen.lock().unwrap().len() >= 2).await;
                assert_eq!(*seen.lock().unwrap(), [100, 101]);
            }
            _ => {
                eventually(WAIT, "the partition stopped with a reason", || {
                    m.health()
                        .partitions
                        .first()
                        .and_then(|p| p.error.clone())
                        .is_some_and(|e| e.contains("no committed offset"))
                })
                .await;
                assert!(!m.health().ready, "a stopped partition is not ready");
                assert!(seen.lock().unwrap().is_empty());
            }
        }
        m.shutdown().await.expect("shutdown");
    }
}

/// Writes five records (values 0 to 4) to partition 0 of `topic` with
/// rskafka, the independent client.
async fn write_five(broker: &KafkaBroker, topic: &str) {
    let records = (0..5).map(|i| value_record(vec![i])).collect();
    write_records(broker, topic, 0, records).await;
}

fn engine(broker: &KafkaBroker, reset: Option<OffsetSpec>) -> Fetcher {
    let cluster = Arc::new(Cluster::new(broker.bootstrap_list(), "t".into(), WAIT));
    Fetcher::new(
        cluster,
        FetcherConfig {
            limits: limits(50, 16 * 1024),
            reset,
            partition_buffer_bytes: 16 * 1024,
            total_buffer_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
        },
    )
}

/// The broker answers OFFSET_OUT_OF_RANGE: the engine applies the reset
/// policy (a ListOffsets to the leader) and goes on from there, or stops
/// the partition with the reason when there is none.
///
/// nisshi quirk: a Fetch past the high watermark gets an empty answer
/// instead of OFFSET_OUT_OF_RANGE, and records cannot be deleted to move
/// the log start; it answers OFFSET_OUT_OF_RANGE for a negative offset,
/// which is what this test asks for.
#[tokio::test]
async fn an_offset_out_of_range_applies_the_reset_policy() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("fetch.oor");
    broker.create_topic(&topic, 1).await.expect("topic");
    write_five(broker, &topic).await;
    let tp = TopicPartition::new(&topic, 0);
    for (reset, to) in [
        (Some(OffsetSpec::Earliest), 0),
        (Some(OffsetSpec::Latest), 5),
    ] {
        let fetcher = engine(broker, reset);
        let mut feed = fetcher.subscribe(tp.clone(), -5);
        match tokio::time::timeout(WAIT, feed.recv())
            .await
            .expect("an event")
        {
            Some(FetchEvent::Reset {
                from: -5,
                to: got,
                cause: ResetCause::OutOfRange,
            }) => assert_eq!(got, to, "{reset:?}"),
            other => panic!("{reset:?}: {other:?}"),
        }
        if to == 0 {
            match tokio::time::timeout(WAIT, feed.recv())
                .await
                .expect("records")
            {
                Some(FetchEvent::Records { batches, from, .. }) => {
                    let offsets: Vec<i64> = batches
                        .iter()
                        .flat_map(|b| {
                            kavari_wire::fetch::batch_records(b, from, 1 << 20).expect("records")
                        })
                        .map(|r| r.expect("record").offset)
                        .collect();
                    assert_eq!(offsets, [0, 1, 2, 3, 4]);
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let fetcher = engine(broker, None);
    let mut feed = fetcher.subscribe(tp, -5);
    match tokio::time::timeout(WAIT, feed.recv())
        .await
        .expect("an event")
    {
        Some(FetchEvent::Failed(e)) => assert!(e.to_string().contains("out of range"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// A Fetch answer saying the partition's leader moved
/// (NOT_LEADER_OR_FOLLOWER) or that the leader epoch the request named is
/// stale or ahead (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH): the engine
/// uses none of the answer's records, looks the leaders up again (a
/// Metadata request per such answer, beyond what a clean run sends) and
/// goes on from where it was: every record once, in order. The proxy
/// rewrites the error code of real answers, records left in.
#[tokio::test]
async fn a_moved_leader_or_stale_epoch_in_a_fetch_answer_refreshes_metadata_and_loses_nothing() {
    const METADATA: i16 = 3;
    init_tracing();
    let topic = unique_name("fetch.leader");
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), &topic, 1).await;
    let proxy = broker.proxy().expect("proxy");
    write_five(&broker, &topic).await;
    let tp = TopicPartition::new(&topic, 0);
    let mut lookups = Vec::new();
    // 0 first: the same answers unchanged, for the lookups of a clean run.
    for code in [0i16, 6, 74, 75] {
        let before = proxy.requests(METADATA);
        proxy.answer_fetch_with(code, 3);
        let fetcher = engine(&broker, None);
        let mut feed = fetcher.subscribe(tp.clone(), 0);
        let mut offsets = Vec::new();
        while offsets.len() < 5 {
            match tokio::time::timeout(WAIT, feed.recv())
                .await
                .expect("records")
            {
                Some(FetchEvent::Records { batches, from, .. }) => offsets.extend(
                    batches
                        .iter()
                        .flat_map(|b| {
                            kavari_wire::fetch::batch_records(b, from, 1 << 20).expect("records")
                        })
                        .map(|r| r.expect("record").offset),
                ),
                other => panic!("code {code}: {other:?}"),
            }
        }
        assert_eq!(offsets, [0, 1, 2, 3, 4], "code {code}: once, in order");
        lookups.push(proxy.requests(METADATA) - before);
        drop(feed);
        drop(fetcher);
        // Its last long poll answered, so the next run's answers are its own.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (code, n) in [6, 74, 75].iter().zip(&lookups[1..]) {
        assert!(
            *n >= lookups[0] + 3,
            "code {code}: {n} Metadata requests, {} in a clean run",
            lookups[0]
        );
    }
}

// ---------------------------------------------------------------------------
// Nothing left behind.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "fetch.leftovers")]
struct Bulk {
    #[kavari(key)]
    key: String,
    pad: String,
}

/// Partitions fetched into full buffers and never handled: dropping their
/// feeds gives the buffers back, and dropping the engine and its
/// connections leaves no task running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_partitions_and_a_dropped_engine_leave_nothing_behind() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(Bulk::TOPIC, 3).await.expect("topic");
    let publisher = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    let msgs: Vec<Bulk> = (0..300)
        .map(|i| Bulk {
            key: format!("k{i}"),
            pad: "x".repeat(2_000),
        })
        .collect();
    for r in publisher.publish_batch(&msgs).await {
        r.expect("publish");
    }
    publisher.shutdown().await.expect("shutdown");

    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    {
        let fetcher = engine(broker, None);
        let mut feeds: Vec<_> = (0..3)
            .map(|p| fetcher.subscribe(TopicPartition::new(Bulk::TOPIC, p), 0))
            .collect();
        for feed in &mut feeds {
            let event = tokio::time::timeout(WAIT, feed.recv())
                .await
                .expect("records");
            assert!(
                matches!(event, Some(FetchEvent::Records { .. })),
                "{event:?}"
            );
        }
        assert!(
            fetcher.buffered_bytes() >= 3 * 2_000,
            "buffers hold what was fetched"
        );
        assert_eq!(fetcher.subscribed(), 3);
        drop(feeds);
        assert_eq!(fetcher.subscribed(), 0, "revoked partitions are forgotten");
        assert_eq!(fetcher.buffered_bytes(), 0, "their buffers are given back");
    }
    eventually(WAIT, "no task left", || {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
}

// ---------------------------------------------------------------------------
// Incremental fetch sessions (KIP-227).

/// Writes `values` to `partition` of `topic` with rskafka.
async fn write_values(broker: &KafkaBroker, topic: &str, partition: i32, values: &[u8]) {
    let records = values.iter().map(|v| value_record(vec![*v])).collect();
    write_records(broker, topic, partition, records).await;
}

/// Fetches in `session` until `want` values arrived per partition, moving
/// each position past what came: the values by partition, in order.
async fn fetch_until(
    session: &mut FetchSession,
    conn: &kavari_wire::connection::Connection,
    positions: &mut [FetchPosition],
    want: &BTreeMap<i32, usize>,
) -> BTreeMap<i32, Vec<u8>> {
    let mut got: BTreeMap<i32, Vec<u8>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while want
        .iter()
        .any(|(p, n)| got.get(p).map_or(0, Vec::len) < *n)
    {
        assert!(tokio::time::Instant::now() < deadline, "got {got:?}");
        let answer = session
            .fetch(conn, positions, &limits(100, 64 * 1024))
            .await
            .expect("fetch in the session");
        for part in answer {
            assert_eq!(part.error, None, "{part:?}");
            let p = positions
                .iter_mut()
                .find(|p| p.partition == part.partition)
                .expect("an answer for a partition asked");
            let ex = part
                .extract(p.offset, Isolation::ReadCommitted)
                .expect("records");
            for b in &ex.batches {
                for r in kavari_wire::fetch::batch_records(b, ex.from, 1 << 20).expect("batch") {
                    let r = r.expect("record");
                    got.entry(p.partition.partition)
                        .or_default()
                        .extend(r.value.expect("value").iter());
                }
            }
            p.offset = ex.next_offset;
        }
    }
    got
}

/// One broker's share of 64 partitions fetched in one session: the first
/// Fetch names them all, later ones only what changed (an idle round names
/// nothing and gets nothing back), records come once and in order, and a
/// session the broker no longer knows (closed from outside, as a restarted
/// or evicting broker loses it) or whose epoch moved on ends in a full
/// Fetch and a new session, without losing a record.
#[tokio::test]
async fn an_incremental_fetch_session_sends_what_changed_and_recovers_when_the_broker_forgets_it() {
    init_tracing();
    if !kavari_testcontainers::TestBroker::is_kafka() {
        // nisshi grants no sessions: every Fetch is full there.
        return;
    }
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("fetch.sessions");
    broker.create_topic(&topic, 64).await.expect("topic");
    let cluster = Cluster::new(broker.bootstrap_list(), "t".into(), WAIT);
    let meta = cluster
        .topic(&topic)
        .await
        .expect("metadata")
        .expect("the topic");
    let leader = meta.partitions[0].leader.expect("a leader");
    let mut positions: Vec<FetchPosition> = meta
        .partitions
        .iter()
        .filter(|p| p.leader == Some(leader))
        .map(|p| FetchPosition {
            partition: TopicPartition::new(&topic, p.partition),
            offset: 0,
            leader_epoch: p.leader_epoch,
        })
        .collect();
    assert!(positions.len() >= 2, "{positions:?}");
    let conn = cluster.broker(leader).await.expect("the leader");
    let mut session = FetchSession::new();

    // The first Fetch names every partition and opens a session.
    session
        .fetch(&conn, &positions, &limits(100, 64 * 1024))
        .await
        .expect("first fetch");
    let full = session.last_request_bytes();
    let first_id = session.id();
    assert_ne!(first_id, 0, "the broker grants a session");
    // An idle round names no partition, and nothing comes back.
    let idle_answer = session
        .fetch(&conn, &positions, &limits(100, 64 * 1024))
        .await
        .expect("idle fetch");
    let idle = session.last_request_bytes();
    assert!(idle_answer.is_empty(), "no news, yet {idle_answer:?}");
    eprintln!(
        "Fetch request bytes for {} partitions: full {full}, incremental idle {idle}",
        positions.len()
    );
    assert!(idle * 10 < full, "full {full} bytes, idle {idle} bytes");

    // Records on two partitions come back once, in order.
    let (a, b) = (
        positions[0].partition.partition,
        positions[1].partition.partition,
    );
    write_values(broker, &topic, a, &[1, 2, 3]).await;
    write_values(broker, &topic, b, &[4, 5]).await;
    let got = fetch_until(
        &mut session,
        &conn,
        &mut positions,
        &BTreeMap::from([(a, 3), (b, 2)]),
    )
    .await;
    assert_eq!(got, BTreeMap::from([(a, vec![1, 2, 3]), (b, vec![4, 5])]));
    assert_eq!(session.id(), first_id, "still the first session");

    // Closed from outside: the broker answers FETCH_SESSION_ID_NOT_FOUND,
    // and the session starts over with a full Fetch.
    let version = conn
        .version::<kafka_protocol::messages::FetchRequest>()
        .expect("a Fetch version");
    let close = kafka_protocol::messages::FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_session_id(session.id())
        .with_session_epoch(-1);
    conn.send_raw(&close, version, WAIT)
        .await
        .expect("closing the session");
    write_values(broker, &topic, a, &[6]).await;
    let got = fetch_until(
        &mut session,
        &conn,
        &mut positions,
        &BTreeMap::from([(a, 1)]),
    )
    .await;
    assert_eq!(got, BTreeMap::from([(a, vec![6])]));
    let second_id = session.id();
    assert!(
        second_id != 0 && second_id != first_id,
        "a new session: {first_id} then {second_id}"
    );

    // Another Fetch in the session moved its epoch on: the broker answers
    // INVALID_FETCH_SESSION_EPOCH to this one's next, which starts over.
    let skew = kafka_protocol::messages::FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_session_id(session.id())
        .with_session_epoch(session.epoch());
    conn.send_raw(&skew, version, WAIT)
        .await
        .expect("a fetch of another in the session");
    write_values(broker, &topic, b, &[7, 8]).await;
    let got = fetch_until(
        &mut session,
        &conn,
        &mut positions,
        &BTreeMap::from([(b, 2)]),
    )
    .await;
    assert_eq!(got, BTreeMap::from([(b, vec![7, 8])]));
    assert!(
        session.id() != 0 && session.id() != second_id,
        "a third session after {second_id}: {}",
        session.id()
    );
}

/// Each broker is asked on its own: the leaders whose partitions are at
/// their end hold their long polls (here 2 s), and a backlog on another
/// leader is read at the pace of that leader's answers meanwhile, not one
/// `max_wait` a fetch. The idle leaders are not asked again and again
/// either. (One nisshi broker leads everything, so this needs the cluster.)
#[tokio::test]
async fn a_broker_at_its_end_holds_its_long_poll_and_no_other_broker() {
    init_tracing();
    if !kavari_testcontainers::TestBroker::is_kafka() {
        return;
    }
    let topic = unique_name("fetch.idle");
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), &topic, 3).await;
    let proxy = broker.proxy().expect("proxy");
    let cluster = Arc::new(Cluster::new(broker.bootstrap_list(), "t".into(), WAIT));
    let meta = cluster
        .topic(&topic)
        .await
        .expect("metadata")
        .expect("the topic");
    let leader_of = |p: i32| {
        meta.partitions
            .iter()
            .find(|m| m.partition == p)
            .and_then(|m| m.leader)
    };
    let busy_leader = leader_of(0).expect("a leader");
    let idle: Vec<i32> = (1..3)
        .filter(|p| leader_of(*p) != Some(busy_leader))
        .collect();
    assert!(!idle.is_empty(), "three partitions on one leader: {meta:?}");
    // A backlog on partition 0 that takes many rounds of 16 KiB: twenty
    // batches of 10 KB.
    for batch in 0..20u32 {
        let records = (0..100u32)
            .map(|i| value_record((batch * 100 + i).to_be_bytes().repeat(25)))
            .collect();
        write_records(&broker, &topic, 0, records).await;
    }
    proxy.keep_requests(FETCH);
    let fetcher = Fetcher::new(
        cluster,
        FetcherConfig {
            limits: limits(2_000, 16 * 1024),
            reset: None,
            partition_buffer_bytes: 16 * 1024,
            total_buffer_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
        },
    );
    let mut feeds =
        fetcher.subscribe_all((0..3).map(|p| (TopicPartition::new(&topic, p), 0, None)));
    let started = std::time::Instant::now();
    let mut read = 0;
    while read < 2000 {
        match tokio::time::timeout(WAIT, feeds[0].recv())
            .await
            .expect("records in time")
        {
            Some(FetchEvent::Records {
                batches,
                from,
                bytes,
                ..
            }) => {
                for b in &batches {
                    read += kavari_wire::fetch::batch_records(b, from, 1 << 20)
                        .expect("records")
                        .count();
                }
                feeds[0].release(bytes);
            }
            other => panic!("records expected: {other:?}"),
        }
    }
    let took = started.elapsed();
    let fetches = proxy.kept_requests(FETCH).len();
    let long_polls = proxy
        .kept_requests(FETCH)
        .iter()
        .filter(|f| kept_request::<kafka_protocol::messages::FetchRequest>(f).max_wait_ms == 2_000)
        .count();
    eprintln!(
        "2,000 records of one leader read in {took:?}; {fetches} Fetches, {long_polls} of them long polls"
    );
    // The backlog takes about 15 answers of 16 KiB; the idle leaders are
    // asked once per 2 s. A leader asked again at once whenever it
    // answers empty would send thousands.
    assert!(fetches < 200, "{fetches} Fetches in {took:?}");
    assert!(long_polls > 0, "the idle leaders were long-polled");
    // A long poll holding the backlog's leader each time would take 2 s
    // per answer: tens of seconds.
    assert!(took < Duration::from_secs(10), "{took:?}");
}
