//! The fault suite: Kafka down at start, broker restarts, silent network
//! partitions, and a seeded chaos run. Nothing acknowledged may be lost.
//!
//! Recovery times are printed (`cargo test -p kavari-tests --test faults --
//! --nocapture`): from the fault's end to the first message handled after it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kavari::{
    FibonacciRetryPolicy, HandlerError, HealthState, KafkaMessage, Kavari, MessageContext,
    MessageHandler, PublishError,
};
use kavari_testcontainers::{KafkaBroker, Storage, unique_name};
use kavari_tests::{eventually, init_tracing, logged_records, own_broker};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "faults.jobs")]
struct Job {
    #[kavari(key)]
    key: String,
    seq: u64,
}

/// Every handled seq with how often, and when the latest was handled.
#[derive(Default)]
struct Handled {
    counts: BTreeMap<u64, u32>,
    last_at: Option<Instant>,
}

type Shared = Arc<Mutex<Handled>>;

struct Record(Shared);

impl MessageHandler<Job> for Record {
    async fn handle(&self, job: Job, _: &MessageContext) -> Result<(), HandlerError> {
        let mut h = self.0.lock().unwrap();
        *h.counts.entry(job.seq).or_default() += 1;
        h.last_at = Some(Instant::now());
        Ok(())
    }
}

fn builder(broker: &KafkaBroker, group: &str) -> kavari::KavariBuilder {
    Kavari::builder(broker.bootstrap_servers())
        .group_id(group)
        .request_timeout(Duration::from_secs(3))
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(10))
        .commit_interval(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(15))
        .publishing_retry_policy(
            FibonacciRetryPolicy::new(30).with_unit(Duration::from_millis(200)),
        )
}

async fn consumer(broker: &KafkaBroker, group: &str, handled: &Shared) -> Kavari {
    let m = builder(broker, group).build().await.expect("build");
    m.subscribe::<Job, _>(Record(Arc::clone(handled)))
        .expect("subscribe");
    m.start().await.expect("start");
    m
}

fn job(seq: u64) -> Job {
    Job {
        key: format!("k{}", seq % 31),
        seq,
    }
}

/// The first time a message is handled after `since`.
async fn first_handled_after(handled: &Shared, since: Instant) -> Duration {
    eventually(
        Duration::from_secs(90),
        "a message handled after the fault",
        || handled.lock().unwrap().last_at.is_some_and(|t| t > since),
    )
    .await;
    handled
        .lock()
        .unwrap()
        .last_at
        .map(|t| t - since)
        .unwrap_or_default()
}

fn assert_all_handled(handled: &Shared, acknowledged: &BTreeSet<u64>, what: &str) {
    let h = handled.lock().unwrap();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|s| !h.counts.contains_key(s))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: acknowledged but never handled: {missing:?}"
    );
    let duplicates: u32 = h.counts.values().map(|c| c - 1).sum();
    eprintln!(
        "{what}: {} acknowledged, all handled, {duplicates} handled more than once",
        acknowledged.len()
    );
}

/// Waits (at most 90 s) until every acknowledged seq was handled, then
/// asserts it and reports duplicates.
async fn expect_all_handled(handled: &Shared, acknowledged: &BTreeSet<u64>, what: &str) {
    eventually(
        Duration::from_secs(90),
        "every acknowledged publish handled",
        || {
            let h = handled.lock().unwrap();
            acknowledged.iter().all(|s| h.counts.contains_key(s))
        },
    )
    .await;
    assert_all_handled(handled, acknowledged, what);
}

#[tokio::test]
async fn kafka_down_at_start_then_up() {
    init_tracing();
    let file = KafkaBroker::builder().storage(Storage::File);
    let broker = own_broker(file, Job::TOPIC, 3).await;
    broker.kill().expect("kill");

    let started = Instant::now();
    let handled = Shared::default();
    let m = consumer(&broker, &unique_name("down"), &handled).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "build and start return while Kafka is down"
    );
    assert!(!m.health().ready);
    assert!(
        matches!(
            m.health().state,
            HealthState::Connecting | HealthState::Starting
        ),
        "{:?}",
        m.health().state
    );

    // Publishes wait and retry by policy meanwhile.
    let publisher = m.clone();
    let publishes = tokio::spawn(async move {
        let mut ok = BTreeSet::new();
        for seq in 0..50 {
            if publisher.publish(&job(seq)).await.is_ok() {
                ok.insert(seq);
            }
        }
        ok
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let up_at = Instant::now();
    broker.spawn_again().expect("broker up");
    let recovery = first_handled_after(&handled, up_at).await;
    eprintln!("kafka down at start: first message handled {recovery:?} after the broker came up");
    let ok = publishes.await.expect("publisher");
    assert_eq!(ok.len(), 50, "every publish succeeded once Kafka was up");
    eventually(Duration::from_secs(60), "all handled", || {
        handled.lock().unwrap().counts.len() == 50
    })
    .await;
    assert!(m.health().ready);
    assert_all_handled(&handled, &ok, "kafka down at start");
    m.shutdown().await.expect("shutdown");
}

/// Publishes `job(seq)` for `seqs`, one every `gap`, recording which were
/// acknowledged and handing back the records of those that failed.
fn publish_loop(
    m: Kavari,
    seqs: std::ops::Range<u64>,
    gap: Duration,
) -> tokio::task::JoinHandle<(BTreeSet<u64>, Vec<u64>)> {
    tokio::spawn(async move {
        let mut ok = BTreeSet::new();
        let mut failed = Vec::new();
        for seq in seqs {
            match m.publish(&job(seq)).await {
                Ok(_) => {
                    ok.insert(seq);
                }
                Err(PublishError::Failed { message, .. }) => {
                    // The record came back: the caller lost nothing.
                    let back: Job = kavari::codec::decode_value(&message.value).expect("record");
                    assert_eq!(back.seq, seq);
                    failed.push(seq);
                }
                Err(e) => panic!("unexpected publish error: {e}"),
            }
            tokio::time::sleep(gap).await;
        }
        (ok, failed)
    })
}

#[tokio::test]
async fn broker_restart_under_load_loses_nothing() {
    init_tracing();
    let file = KafkaBroker::builder().storage(Storage::File);
    let broker = own_broker(file, Job::TOPIC, 6).await;
    let group = unique_name("restart");
    let handled = Shared::default();
    let consumers = [
        consumer(&broker, &group, &handled).await,
        consumer(&broker, &group, &handled).await,
        consumer(&broker, &group, &handled).await,
    ];
    let publisher = builder(&broker, &group).build().await.expect("publisher");
    let publishes = publish_loop(publisher.clone(), 0..600, Duration::from_millis(5));

    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.kill().expect("kill");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up_at = Instant::now();
    broker.spawn_again().expect("restart");
    let recovery = first_handled_after(&handled, up_at).await;
    eprintln!("broker restart: first message handled {recovery:?} after the broker came back");

    let (ok, failed) = publishes.await.expect("publisher");
    eprintln!(
        "broker restart: {} publishes acknowledged, {} handed back",
        ok.len(),
        failed.len()
    );
    expect_all_handled(&handled, &ok, "broker restart").await;
    for c in &consumers {
        c.shutdown().await.expect("shutdown");
    }
    publisher.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn silent_partition_longer_than_the_session_timeout() {
    init_tracing();
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), Job::TOPIC, 4).await;
    let proxy = broker.proxy().expect("proxy");
    let group = unique_name("partition");
    let handled = Shared::default();
    let a = consumer(&broker, &group, &handled).await;
    let b = consumer(&broker, &group, &handled).await;
    let publisher = builder(&broker, &group).build().await.expect("publisher");

    let (ok_before, _) = publish_loop(publisher.clone(), 0..100, Duration::ZERO)
        .await
        .expect("publish");
    eventually(Duration::from_secs(60), "the first 100 handled", || {
        handled.lock().unwrap().counts.len() >= 100
    })
    .await;

    // No RST, no FIN: every byte in flight just stops, past the session timeout.
    proxy.black_hole();
    let during = publish_loop(publisher.clone(), 100..110, Duration::from_millis(100));
    // The members notice within a request timeout (3 s): health must say so
    // at some point of the 8 s.
    let mut noticed = None;
    let black_holed_at = Instant::now();
    while black_holed_at.elapsed() < Duration::from_secs(8) {
        if noticed.is_none() && (!a.health().ready || !b.health().ready) {
            noticed = Some(black_holed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let noticed = noticed.expect("a silent partition shows in health");
    eprintln!("silent partition: health not ready {noticed:?} after the black hole began");
    // Regression: requests queued behind a black-holed one each waited out a
    // timeout of their own, so detection took the whole session timeout.
    assert!(
        noticed < Duration::from_secs(5),
        "detected after {noticed:?}; the bound is the 3 s request timeout plus a heartbeat"
    );
    let healed_at = Instant::now();
    proxy.heal();
    let (ok_during, failed_during) = during.await.expect("publish during");
    let (ok_after, _) = publish_loop(publisher.clone(), 110..210, Duration::ZERO)
        .await
        .expect("publish after");
    let recovery = first_handled_after(&handled, healed_at).await;
    eprintln!(
        "silent partition: first message handled {recovery:?} after healing; during it {} publishes acknowledged, {} handed back",
        ok_during.len(),
        failed_during.len()
    );
    let acknowledged: BTreeSet<u64> = ok_before
        .iter()
        .chain(&ok_during)
        .chain(&ok_after)
        .copied()
        .collect();
    expect_all_handled(&handled, &acknowledged, "silent partition").await;
    for m in [&a, &b, &publisher] {
        m.shutdown().await.expect("shutdown");
    }
}

/// Publishes while, at random, consumers restart, the broker restarts and
/// the proxy cuts every connection. `KAVARI_CHAOS_SECS` lengthens the run
/// (default 20 s); `KAVARI_CHAOS_SEED` replays one.
/// A consumer of `group`, with cooperative-sticky assignment when asked.
async fn member(broker: &KafkaBroker, group: &str, handled: &Shared, cooperative: bool) -> Kavari {
    let mut b = builder(broker, group);
    if cooperative {
        b = b.assignors(vec![Arc::new(kavari::assignor::CooperativeStickyAssignor)]);
    }
    let m = b.build().await.expect("build");
    m.subscribe::<Job, _>(Record(Arc::clone(handled)))
        .expect("subscribe");
    m.start().await.expect("start");
    m
}

#[tokio::test]
async fn seeded_chaos_loses_nothing() {
    chaos(false).await;
}

/// The chaos run with cooperative-sticky members: incremental rebalances
/// (partitions that stay are never revoked) under the same faults.
#[tokio::test]
async fn seeded_chaos_with_cooperative_members_loses_nothing() {
    chaos(true).await;
}

/// Members restarted, the broker killed and restarted, every connection
/// cut, at seeded random times, while a publisher runs: every acknowledged
/// publish is handled.
async fn chaos(cooperative: bool) {
    init_tracing();
    let seed: u64 = std::env::var("KAVARI_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let secs: u64 = std::env::var("KAVARI_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!(
        "chaos: seed={seed} secs={secs} cooperative={cooperative} (replay with KAVARI_CHAOS_SEED={seed})"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let proxied_file = KafkaBroker::builder().storage(Storage::File).behind_proxy();
    let broker = own_broker(proxied_file, Job::TOPIC, 6).await;
    let proxy = broker.proxy().expect("proxy");
    let group = unique_name("chaos");
    let handled = Shared::default();
    let mut consumers = Vec::new();
    for _ in 0..3 {
        consumers.push(member(&broker, &group, &handled, cooperative).await);
    }
    let publisher = builder(&broker, &group).build().await.expect("publisher");
    let total = secs * 100;
    let publishes = publish_loop(publisher.clone(), 0..total, Duration::from_millis(10));

    let end = Instant::now() + Duration::from_secs(secs);
    let mut actions = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..3_000))).await;
        match rng.random_range(0..3) {
            0 => {
                let i = rng.random_range(0..consumers.len());
                actions.push(format!("restart consumer {i}"));
                let fresh = member(&broker, &group, &handled, cooperative).await;
                let old = std::mem::replace(&mut consumers[i], fresh);
                let _ = old.shutdown().await;
            }
            // On a cluster, one node crashes (the others keep serving its
            // partitions); a single broker crashes whole.
            1 => match broker.kafka() {
                Some(cluster) => {
                    let ids = cluster.node_ids();
                    let node = ids[rng.random_range(0..ids.len())];
                    actions.push(format!("SIGKILL node {node}"));
                    cluster.kill_node(node).expect("kill");
                    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
                    cluster.spawn_node(node).expect("restart");
                }
                None => {
                    actions.push("restart the broker".to_string());
                    broker.kill().expect("kill");
                    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
                    broker.spawn_again().expect("restart");
                }
            },
            _ => {
                actions.push("cut every connection".to_string());
                proxy.cut_all();
            }
        }
    }
    eprintln!("chaos: seed={seed} actions: {actions:?}");
    let (ok, failed) = publishes.await.expect("publisher");
    eprintln!(
        "chaos: seed={seed}: {} acknowledged, {} handed back to the caller",
        ok.len(),
        failed.len()
    );
    expect_all_handled(&handled, &ok, &format!("chaos seed={seed}")).await;
    for c in &consumers {
        let _ = c.shutdown().await;
    }
    let _ = publisher.shutdown().await;
    // Duplicates in the log itself (not redeliveries to handlers): the
    // publisher is idempotent, so a batch sent again after a cut
    // connection or a lost answer is written once.
    let mut in_log: BTreeMap<u64, u32> = BTreeMap::new();
    for p in 0..6 {
        for r in logged_records(&broker, Job::TOPIC, p).await {
            let job: Job = kavari::codec::decode_value(&r.value).expect("a job");
            *in_log.entry(job.seq).or_default() += 1;
        }
    }
    let written_twice: Vec<_> = in_log.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "chaos: seed={seed}: {} records in the log, {} written more than once",
        in_log.len(),
        written_twice.len()
    );
    assert!(
        written_twice.is_empty(),
        "chaos seed={seed}: written more than once: {written_twice:?} (actions {actions:?})"
    );
}

#[tokio::test]
async fn giving_up_is_a_failed_state_and_an_error_not_a_silent_stop() {
    init_tracing();
    let broker = KafkaBroker::start().await.expect("broker");
    broker.create_topic(Job::TOPIC, 1).await.expect("topic");
    broker.kill().expect("kill"); // and never back
    let handled = Shared::default();
    let m = builder(&broker, &unique_name("giveup"))
        .give_up_after(Duration::from_secs(3))
        .build()
        .await
        .expect("build");
    m.subscribe::<Job, _>(Record(Arc::clone(&handled)))
        .expect("subscribe");
    m.start().await.expect("start");
    let waited = tokio::time::timeout(Duration::from_secs(30), m.wait())
        .await
        .expect("wait() returns once the consumer gives up");
    let Err(kavari::ShutdownError::ConsumerFailed { reason }) = waited else {
        panic!("expected ConsumerFailed, got {waited:?}");
    };
    assert!(reason.contains("gave up"), "{reason}");
    assert!(
        matches!(m.health().state, HealthState::Failed(_)),
        "{:?}",
        m.health().state
    );
    assert!(!m.health().ready);
    assert!(matches!(
        m.shutdown().await,
        Err(kavari::ShutdownError::ConsumerFailed { .. })
    ));
}

/// A cluster that refuses every connection for 20 s, with a consumer
/// started and a publish retrying: the log says so in a few lines that
/// count the failures, not in a line per attempt.
#[tokio::test]
async fn an_unreachable_cluster_logs_a_bounded_number_of_lines() {
    let (captured, _guard) = kavari_tests::CapturedLogs::warnings();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let m = Kavari::builder(format!("127.0.0.1:{port}"))
        .group_id(unique_name("down"))
        .request_timeout(Duration::from_secs(3))
        .publishing_retry_policy(
            FibonacciRetryPolicy::new(40).with_unit(Duration::from_millis(100)),
        )
        .build()
        .await
        .expect("build");
    m.subscribe::<Job, _>(Record(Shared::default()))
        .expect("subscribe");
    m.start().await.expect("start");
    let job = Job {
        key: "k".into(),
        seq: 1,
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), m.publish(&job)).await;
    let lines = captured.lines();
    eprintln!("{} lines in 20 s:\n{}", lines.len(), lines.join("\n"));
    assert!(!lines.is_empty(), "the outage is logged");
    assert!(lines.len() <= 6, "{} lines in 20 s", lines.len());
    drop(m);
}

/// The broker goes away for 15 s under a running consumer: the fetch
/// engine and the partitions say so in a few lines that count the
/// failures, not in a line per retry.
#[tokio::test]
async fn a_broker_outage_under_a_consumer_logs_a_bounded_number_of_lines() {
    let (captured, _guard) = kavari_tests::CapturedLogs::warnings();
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), Job::TOPIC, 2).await;
    let proxy = broker.proxy().expect("proxy");
    let handled = Shared::default();
    let m = consumer(&broker, &unique_name("quiet"), &handled).await;
    eventually(Duration::from_secs(30), "the consumer ready", || {
        let h = m.health();
        h.ready && h.partitions.len() == 2
    })
    .await;
    let before = captured.lines().len();
    proxy.refuse();
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.heal();
    let lines = captured.lines();
    let during: Vec<&String> = lines[before..]
        .iter()
        .filter(|l| l.contains("kavari_wire::fetcher") || l.contains("consume::worker"))
        .collect();
    eprintln!(
        "{} fetch lines in 15 s:\n{}",
        during.len(),
        lines[before..].join("\n")
    );
    // One line per cause, not one per attempt: each leader's fetch (two
    // partitions: at most two leaders), each partition's commit and start,
    // one metadata look-up. A storm is a line every retry: dozens.
    assert!(during.len() <= 7, "{} fetch lines in 15 s", during.len());
    drop(m);
}

/// A Fetch answer the partition cannot go on from (here a refusal for
/// good, TOPIC_AUTHORIZATION_FAILED, on a real answer) stops the partition
/// with the reason in health, then the partition is fetched again after a
/// wait: once the broker answers well, the rest is handled and health
/// clears, with no restart and no rebalance. (The refusal is put on the
/// answer that brings the next records: in a fetch session, an answer
/// with no news names no partition to refuse.)
#[tokio::test]
async fn a_partition_stopped_by_a_bad_answer_is_fetched_again() {
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    init_tracing();
    let group = unique_name("refetch");
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), Job::TOPIC, 1).await;
    let proxy = broker.proxy().expect("proxy");
    let handled: Shared = Arc::default();
    let m = consumer(&broker, &group, &handled).await;
    for seq in 0..5 {
        m.publish(&job(seq)).await.expect("publish");
    }
    eventually(Duration::from_secs(60), "the first five handled", || {
        handled.lock().unwrap().counts.len() == 5
    })
    .await;
    proxy.answer_fetch_with(TOPIC_AUTHORIZATION_FAILED, 1);
    for seq in 5..10 {
        m.publish(&job(seq)).await.expect("publish");
    }
    eventually(
        Duration::from_secs(30),
        "the partition shows the fault",
        || {
            m.health().partitions.iter().any(|p| {
                p.error
                    .as_deref()
                    .is_some_and(|e| e.contains("fetching again"))
            })
        },
    )
    .await;
    let acknowledged: BTreeSet<u64> = (0..10).collect();
    expect_all_handled(&handled, &acknowledged, "refetched").await;
    eventually(Duration::from_secs(30), "health clears", || {
        m.health().partitions.iter().all(|p| p.error.is_none())
    })
    .await;
    m.shutdown().await.expect("shutdown");
}
