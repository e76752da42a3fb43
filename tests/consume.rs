//! The typed consumer runtime against a real broker: dispatch, poison input,
//! retries and dead letters, crash safety, restarts and shutdown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::codec::EncodedMessage;
use kavari::{
    FibonacciRetryPolicy, HandlerError, HealthState, KafkaMessage, Kavari, MessageContext,
    MessageHandler, NoRetry,
};
use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{
    CrashJob, consumer, eventually, fetch_topic, header, init_tracing, prefixed_topic,
};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(60);

async fn committed(
    broker: &KafkaBroker,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Option<i64>> {
    // A throwaway member of another group only to read offsets would not
    // do: read through a member of the same group that joins nothing.
    let config = kavari_group::GroupConfig::new(broker.bootstrap_list(), group, [topic]);
    let store = kavari_group::GroupMember::start(config).expect("member").0;
    let tps: Vec<_> = (0..partitions)
        .map(|p| kavari_group::TopicPartition::new(topic, p))
        .collect();
    let mut out = BTreeMap::new();
    for _ in 0..100 {
        if let Ok(c) = store.committed(&tps).await {
            for (tp, o) in c {
                out.insert(tp.partition, o);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.simulate_crash();
    out
}

// ---------------------------------------------------------------------------
// End to end: two types on one topic, three handlers.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "e2e.orders")]
struct Placed {
    #[kavari(key)]
    key: String,
    seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "e2e.orders")]
struct Cancelled {
    #[kavari(key)]
    key: String,
    seq: u64,
}

type Seen = Arc<Mutex<Vec<(String, u64)>>>;

struct Record(Seen);
impl MessageHandler<Placed> for Record {
    async fn handle(&self, m: Placed, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((m.key, m.seq));
        Ok(())
    }
}
struct AlsoRecord(Seen);
impl MessageHandler<Placed> for AlsoRecord {
    async fn handle(&self, m: Placed, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((m.key, m.seq));
        Ok(())
    }
}
impl MessageHandler<Cancelled> for Record {
    async fn handle(&self, m: Cancelled, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((m.key, m.seq));
        Ok(())
    }
}

fn assert_per_key_order(seen: &[(String, u64)], what: &str) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (k, s) in seen {
        if let Some(prev) = last.insert(k, *s) {
            assert!(prev < *s, "{what}: key {k} saw {s} after {prev}");
        }
    }
}

#[tokio::test]
async fn every_handler_sees_exactly_its_messages_in_key_order() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(Placed::TOPIC, 3).await.expect("topic");
    let group = unique_name("e2e");
    let m = consumer(broker, &group).build().await.expect("build");
    let (a1, a2, b): (Seen, Seen, Seen) = Default::default();
    m.subscribe::<Placed, _>(Record(Arc::clone(&a1)))
        .expect("subscribe");
    m.subscribe::<Placed, _>(AlsoRecord(Arc::clone(&a2)))
        .expect("subscribe");
    m.subscribe::<Cancelled, _>(Record(Arc::clone(&b)))
        .expect("subscribe");
    assert!(
        m.subscribe::<Placed, _>(Record(Arc::clone(&a1))).is_err(),
        "the same handler twice is refused"
    );
    m.start().await.expect("start");

    let mut placed = Vec::new();
    let mut cancelled = Vec::new();
    for i in 0..1000u64 {
        let key = format!("k{}", i % 17);
        if i % 2 == 0 {
            placed.push(Placed { key, seq: i });
        } else {
            cancelled.push(Cancelled { key, seq: i });
        }
    }
    // Publish in order per key: one batch per type, each awaited in order.
    for (p, c) in placed.iter().zip(&cancelled) {
        let (r1, r2) = tokio::join!(m.publish(p), m.publish(c));
        r1.expect("publish");
        r2.expect("publish");
    }
    eventually(WAIT, "all 1,000 handled", || {
        a1.lock().unwrap().len() >= 500
            && a2.lock().unwrap().len() >= 500
            && b.lock().unwrap().len() >= 500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let want_placed: BTreeSet<u64> = placed.iter().map(|p| p.seq).collect();
    let want_cancelled: BTreeSet<u64> = cancelled.iter().map(|c| c.seq).collect();
    for (seen, want, what) in [
        (&a1, &want_placed, "handler 1"),
        (&a2, &want_placed, "handler 2"),
        (&b, &want_cancelled, "cancel handler"),
    ] {
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 500, "{what} saw each message once");
        assert_eq!(
            &seen.iter().map(|s| s.1).collect::<BTreeSet<_>>(),
            want,
            "{what}"
        );
        assert_per_key_order(&seen, what);
    }
    let health = m.health();
    assert_eq!(health.state, HealthState::Running);
    assert!(health.ready);
    assert_eq!(health.partitions.len(), 3);
    m.shutdown().await.expect("shutdown");
    let offsets = committed(broker, &group, Placed::TOPIC, 3).await;
    let total: i64 = offsets.values().map(|o| o.unwrap_or(0)).sum();
    assert_eq!(total, 1000, "everything handled is committed: {offsets:?}");
}

// ---------------------------------------------------------------------------
// Poison input skipped (relaxed, the default) or dead-lettered.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "poison.relaxed")]
struct GoodRelaxed {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "poison.strict")]
struct GoodStrict {
    n: u32,
}

struct Count(Arc<Mutex<Vec<u32>>>);
impl MessageHandler<GoodRelaxed> for Count {
    async fn handle(&self, m: GoodRelaxed, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(m.n);
        Ok(())
    }
}
impl MessageHandler<GoodStrict> for Count {
    async fn handle(&self, m: GoodStrict, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(m.n);
        Ok(())
    }
}

/// Three records nobody can handle, then a good one.
fn poison<M: KafkaMessage>(good: &M) -> Vec<EncodedMessage> {
    let valid = kavari::codec::encode(good).expect("encode");
    let mut no_header = valid.clone();
    no_header.headers.remove("msg_type");
    let mut unknown = valid.clone();
    unknown
        .headers
        .insert("msg_type".into(), b"Nobody".to_vec());
    let mut garbage = valid.clone();
    garbage.value = b"\xc1\xc1 not msgpack".to_vec();
    vec![no_header, unknown, garbage, valid]
}

async fn publish_raw(m: &Kavari, records: Vec<EncodedMessage>) {
    for r in records {
        m.publish_encoded(r).await.expect("publish raw");
    }
}

#[tokio::test]
async fn relaxed_mode_skips_poison_and_moves_on() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker
        .create_topic(GoodRelaxed::TOPIC, 1)
        .await
        .expect("topic");
    broker
        .create_topic("poison.relaxed.dlq", 1)
        .await
        .expect("dlq");
    let group = unique_name("relaxed");
    let m = consumer(broker, &group).build().await.expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    m.subscribe::<GoodRelaxed, _>(Count(Arc::clone(&seen)))
        .expect("subscribe");
    m.start().await.expect("start");
    publish_raw(&m, poison(&GoodRelaxed { n: 7 })).await;
    eventually(WAIT, "the good record", || !seen.lock().unwrap().is_empty()).await;
    m.shutdown().await.expect("shutdown");
    assert_eq!(*seen.lock().unwrap(), [7]);
    assert!(
        fetch_topic(broker, "poison.relaxed.dlq", 1)
            .await
            .is_empty()
    );
    assert_eq!(
        committed(broker, &group, GoodRelaxed::TOPIC, 1).await[&0],
        Some(4)
    );
}

#[tokio::test]
async fn strict_mode_dead_letters_poison_and_moves_on() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker
        .create_topic(GoodStrict::TOPIC, 1)
        .await
        .expect("topic");
    broker
        .create_topic("poison.strict.dlq", 1)
        .await
        .expect("dlq");
    let group = unique_name("strict");
    let m = consumer(broker, &group)
        .on_poison(kavari::FailurePolicy::DeadLetter)
        .build()
        .await
        .expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    m.subscribe::<GoodStrict, _>(Count(Arc::clone(&seen)))
        .expect("subscribe");
    m.start().await.expect("start");
    publish_raw(&m, poison(&GoodStrict { n: 8 })).await;
    eventually(WAIT, "the good record", || !seen.lock().unwrap().is_empty()).await;
    m.shutdown().await.expect("shutdown");
    assert_eq!(*seen.lock().unwrap(), [8]);
    let letters = fetch_topic(broker, "poison.strict.dlq", 1).await;
    assert_eq!(letters.len(), 3, "three poison records dead-lettered");
    let offsets: Vec<_> = letters
        .iter()
        .map(|(_, r)| header(&r.record.headers, "original_offset").expect("original_offset"))
        .collect();
    assert_eq!(offsets, ["0", "1", "2"]);
    for (_, r) in &letters {
        assert_eq!(
            header(&r.record.headers, "original_topic").as_deref(),
            Some("poison.strict")
        );
        assert_eq!(
            header(&r.record.headers, "group_id").as_deref(),
            Some(group.as_str())
        );
        assert!(header(&r.record.headers, "original_error").is_some());
    }
    assert_eq!(
        committed(broker, &group, GoodStrict::TOPIC, 1).await[&0],
        Some(4)
    );
}

// ---------------------------------------------------------------------------
// Retries and dead letters of handler failures.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "retry.jobs")]
struct Job {
    #[kavari(key)]
    id: String,
    flaky: bool,
}

#[derive(Default)]
struct Flaky {
    calls: Mutex<HashMap<String, Vec<u32>>>,
}

struct FlakyHandler(Arc<Flaky>);
impl MessageHandler<Job> for FlakyHandler {
    async fn handle(&self, job: Job, ctx: &MessageContext) -> Result<(), HandlerError> {
        let n = {
            let mut calls = self.0.calls.lock().unwrap();
            let v = calls.entry(job.id.clone()).or_default();
            v.push(ctx.attempt);
            v.len()
        };
        if job.flaky {
            if n <= 2 {
                return Err(HandlerError::new(format!("transient failure {n}")));
            }
            return Ok(());
        }
        Err(HandlerError::new("always fails"))
    }
}

#[tokio::test]
async fn failing_handlers_are_retried_then_dead_lettered_with_provenance() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(Job::TOPIC, 1).await.expect("topic");
    broker.create_topic("retry.jobs.dlq", 1).await.expect("dlq");
    let group = unique_name("retry");
    let m = consumer(broker, &group)
        .delivery_retry_policy(FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(20)))
        .build()
        .await
        .expect("build");
    let flaky = Arc::new(Flaky::default());
    m.subscribe::<Job, _>(FlakyHandler(Arc::clone(&flaky)))
        .expect("subscribe");
    m.start().await.expect("start");
    m.publish(&Job {
        id: "flaky".into(),
        flaky: true,
    })
    .await
    .expect("publish");
    m.publish(&Job {
        id: "doomed".into(),
        flaky: false,
    })
    .await
    .expect("publish");

    eventually(WAIT, "both jobs done", || {
        let calls = flaky.calls.lock().unwrap();
        calls.get("flaky").map(Vec::len) == Some(3) && calls.get("doomed").map(Vec::len) == Some(3)
    })
    .await;
    eventually(WAIT, "the commit past the dead letter", || {
        m.health().partitions.first().and_then(|p| p.committed) == Some(2)
    })
    .await;
    m.shutdown().await.expect("shutdown");
    let calls = flaky.calls.lock().unwrap().clone();
    assert_eq!(
        calls["flaky"],
        [1, 2, 3],
        "fails twice, then succeeds: three calls"
    );
    assert_eq!(calls["doomed"], [1, 2, 3], "three attempts by the policy");

    let letters = fetch_topic(broker, "retry.jobs.dlq", 1).await;
    assert_eq!(letters.len(), 1, "only the doomed job is dead-lettered");
    let r = &letters[0].1.record;
    assert_eq!(r.key.as_deref(), Some(&b"doomed"[..]));
    let h = |name| header(&r.headers, name).unwrap_or_else(|| panic!("header {name}"));
    assert_eq!(h("msg_type"), "Job");
    assert!(h("original_error").contains("always fails"));
    assert_eq!(h("original_topic"), "retry.jobs");
    assert_eq!(h("original_partition"), "0");
    assert_eq!(h("original_offset"), "1");
    assert_eq!(h("attempts"), "3");
    assert_eq!(h("group_id"), group);
    assert_eq!(committed(broker, &group, Job::TOPIC, 1).await[&0], Some(2));
}

// ---------------------------------------------------------------------------
// Restart and shutdown.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "restart.events")]
struct Event {
    #[kavari(key)]
    key: String,
    seq: u64,
}

struct Slow {
    seen: Arc<Mutex<Vec<u64>>>,
    delay: Duration,
    no_retry: bool,
}
impl MessageHandler<Event> for Slow {
    async fn handle(&self, e: Event, _: &MessageContext) -> Result<(), HandlerError> {
        tokio::time::sleep(self.delay).await;
        self.seen.lock().unwrap().push(e.seq);
        if self.no_retry {
            return Ok(());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_restarted_group_handles_nothing_twice_and_shutdown_waits_for_slow_handlers() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(Event::TOPIC, 2).await.expect("topic");
    let group = unique_name("restart");

    // First life: a slow handler; shut down while one is in flight.
    let first = Arc::new(Mutex::new(Vec::new()));
    let m = consumer(broker, &group).build().await.expect("build");
    m.subscribe::<Event, _>(Slow {
        seen: Arc::clone(&first),
        delay: Duration::from_millis(300),
        no_retry: true,
    })
    .expect("subscribe");
    m.start().await.expect("start");
    for seq in 0..20 {
        m.publish(&Event {
            key: format!("k{seq}"),
            seq,
        })
        .await
        .expect("publish");
    }
    eventually(WAIT, "a first message handled", || {
        !first.lock().unwrap().is_empty()
    })
    .await;
    m.shutdown()
        .await
        .expect("shutdown waits for the handler in flight");
    let handled_first: BTreeSet<u64> = first.lock().unwrap().iter().copied().collect();
    assert!(
        handled_first.len() < 20,
        "shut down midway: {handled_first:?}"
    );
    let offsets = committed(broker, &group, Event::TOPIC, 2).await;
    let committed_total: i64 = offsets.values().map(|o| o.unwrap_or(0)).sum();
    assert_eq!(
        committed_total,
        handled_first.len() as i64,
        "every handled message, the slow one in flight included, is committed: {offsets:?}"
    );

    // Second life: the rest, and nothing again.
    let second = Arc::new(Mutex::new(Vec::new()));
    let m2 = consumer(broker, &group).build().await.expect("build");
    m2.subscribe::<Event, _>(Slow {
        seen: Arc::clone(&second),
        delay: Duration::ZERO,
        no_retry: false,
    })
    .expect("subscribe");
    m2.start().await.expect("start");
    eventually(WAIT, "the rest handled", || {
        handled_first.len() + second.lock().unwrap().len() >= 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    m2.shutdown().await.expect("shutdown");
    let handled_second: BTreeSet<u64> = second.lock().unwrap().iter().copied().collect();
    assert!(
        handled_first.is_disjoint(&handled_second),
        "handled twice: {:?}",
        handled_first
            .intersection(&handled_second)
            .collect::<Vec<_>>()
    );
    assert_eq!(handled_first.len() + second.lock().unwrap().len(), 20);
}

// ---------------------------------------------------------------------------
// Crash safety: three consumer processes, one SIGKILLed inside a handler.

#[tokio::test]
async fn a_consumer_killed_mid_handler_loses_nothing() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker
        .create_topic(CrashJob::TOPIC, 6)
        .await
        .expect("topic");
    let group = unique_name("crash");
    let bin = env!("CARGO_BIN_EXE_kavari-test-consumer");

    let done: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let begun: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut children = Vec::new();
    for i in 0..3 {
        let mut child = tokio::process::Command::new(bin)
            .args([broker.bootstrap_servers(), group.clone()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn consumer");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (done, begun) = (Arc::clone(&done), Arc::clone(&begun));
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(s) = line.strip_prefix("DONE ") {
                    done.lock().unwrap().push((i, s.parse().unwrap()));
                } else if let Some(s) = line.strip_prefix("BEGIN ") {
                    begun.lock().unwrap().push((i, s.parse().unwrap()));
                }
            }
        });
        children.push(child);
    }

    let publisher = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    const N: u64 = 300;
    for seq in 0..N {
        publisher
            .publish(&CrashJob {
                key: format!("k{seq}"),
                seq,
            })
            .await
            .expect("publish");
    }
    // Kill process 0 while it is inside a handler: it printed BEGIN of a
    // job whose DONE it has not printed.
    eventually(WAIT, "process 0 inside a handler", || {
        let begun = begun.lock().unwrap();
        let done = done.lock().unwrap();
        begun.iter().filter(|(i, _)| *i == 0).count() > 5
            && begun.iter().filter(|(i, _)| *i == 0).count()
                > done.iter().filter(|(i, _)| *i == 0).count()
    })
    .await;
    children[0].start_kill().expect("SIGKILL");
    let _ = children[0].wait().await;

    eventually(
        Duration::from_secs(120),
        "every job handled by someone",
        || {
            let handled: BTreeSet<u64> = done.lock().unwrap().iter().map(|(_, s)| *s).collect();
            handled.len() as u64 == N
        },
    )
    .await;
    for child in &mut children[1..] {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    let done = done.lock().unwrap().clone();
    let duplicates = done.len() as u64 - N;
    eprintln!(
        "crash test: {N} jobs, {duplicates} handled twice (in flight at the kill or uncommitted)"
    );
    let handled: BTreeSet<u64> = done.iter().map(|(_, s)| *s).collect();
    assert_eq!(handled, (0..N).collect::<BTreeSet<_>>(), "no job lost");
    publisher.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn subscribe_without_group_and_after_start_are_errors() {
    let broker = shared_broker().await.expect("broker");
    let m = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    // Refused where the mistake is made, not only at start().
    assert_eq!(
        m.subscribe::<Job, _>(FlakyHandler(Arc::default())),
        Err(kavari::SubscribeError::NoGroupId)
    );
    m.start().await.expect("nothing to start");
    let m = consumer(broker, &unique_name("g"))
        .delivery_retry_policy(NoRetry)
        .build()
        .await
        .expect("build");
    m.subscribe::<Job, _>(FlakyHandler(Arc::default()))
        .expect("subscribe");
    m.start().await.expect("start");
    assert!(
        m.subscribe::<Event, _>(Slow {
            seen: Arc::default(),
            delay: Duration::ZERO,
            no_retry: true
        })
        .is_err()
    );
    m.shutdown().await.expect("shutdown");
    m.shutdown().await.expect("shutdown twice");
}

#[tokio::test]
async fn dropping_the_last_handle_leaves_the_group_without_hanging() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic_group = unique_name("drop");
    let survivor_seen = Arc::new(Mutex::new(Vec::new()));
    let make = |seen: Arc<Mutex<Vec<u64>>>| {
        let group = topic_group.clone();
        async move {
            let m = consumer(broker, &group)
                .session_timeout(Duration::from_secs(30))
                .heartbeat_interval(Duration::from_secs(1))
                .build()
                .await
                .expect("build");
            m.subscribe::<Event, _>(Slow {
                seen,
                delay: Duration::ZERO,
                no_retry: true,
            })
            .expect("subscribe");
            m.start().await.expect("start");
            m
        }
    };
    broker.create_topic(Event::TOPIC, 2).await.ok();
    let survivor = make(Arc::clone(&survivor_seen)).await;
    let dropped = make(Arc::default()).await;
    eventually(WAIT, "both members share the partitions", || {
        survivor.health().partitions.len() == 1 && dropped.health().partitions.len() == 1
    })
    .await;
    let dropped_at = std::time::Instant::now();
    drop(dropped);
    // Far sooner than the 30 s session timeout: the dropped member left.
    eventually(
        Duration::from_secs(20),
        "the survivor owns both partitions",
        || survivor.health().partitions.len() == 2 && survivor.health().ready,
    )
    .await;
    assert!(dropped_at.elapsed() < Duration::from_secs(20));
    survivor.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------
// A partition blocked behind a dead letter that cannot be written.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "blocked.jobs")]
struct Blocking {
    seq: u64,
    doomed: bool,
}

struct FailDoomed(Arc<Mutex<Vec<u64>>>);
impl MessageHandler<Blocking> for FailDoomed {
    async fn handle(&self, job: Blocking, _: &MessageContext) -> Result<(), HandlerError> {
        if job.doomed {
            return Err(HandlerError::permanent("doomed"));
        }
        self.0.lock().unwrap().push(job.seq);
        Ok(())
    }
}

/// Offsets 0-3 are handled, offset 4 fails for good and its dead-letter
/// topic does not exist, so the partition waits there: the handled prefix
/// is committed within a commit interval anyway, and health shows where
/// the partition stands.
#[tokio::test]
async fn a_blocked_partition_commits_its_handled_prefix() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Blocking>(broker, 1).await;
    let group = unique_name("blocked");
    let m = consumer(broker, &group)
        .topic_prefix(&prefix)
        .delivery_retry_policy(NoRetry)
        .create_dead_letter_topics(false)
        .commit_interval(Duration::from_millis(500))
        .build()
        .await
        .expect("build");
    let handled = Arc::new(Mutex::new(Vec::new()));
    m.subscribe::<Blocking, _>(FailDoomed(Arc::clone(&handled)))
        .expect("subscribe");
    for seq in 0..5 {
        m.publish(&Blocking {
            seq,
            doomed: seq == 4,
        })
        .await
        .expect("publish");
    }
    m.start().await.expect("start");
    eventually(WAIT, "offsets 0-3 handled", || {
        handled.lock().unwrap().len() == 4
    })
    .await;
    // Well within a few commit intervals, while offset 4 stays blocked.
    eventually(
        Duration::from_secs(5),
        "the handled prefix committed",
        || m.health().partitions.first().and_then(|p| p.committed) == Some(4),
    )
    .await;
    let p = m.health().partitions[0].clone();
    assert_eq!(p.position, Some(4), "the next offset to handle: {p:?}");
    assert!(p.last_progress.is_some(), "{p:?}");
    assert_eq!(committed(broker, &group, &topic, 1).await[&0], Some(4));
    m.shutdown().await.ok();
}

// ---------------------------------------------------------------------------
// Topic mapping, and handler errors from anyhow and boxed errors.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "mapped.jobs")]
struct Mapped {
    #[kavari(key)]
    id: String,
    fail: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "mapped.jobs")]
struct Renamed {
    #[kavari(key)]
    id: String,
    fail: bool,
}

#[derive(Debug)]
struct LookupFailed(std::io::Error);
impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("looking up the customer")
    }
}
impl std::error::Error for LookupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Records (type, id, the context's topic); fails the ones marked `fail`
/// with an anyhow chain (`Mapped`) or a boxed error chain (`Renamed`).
/// (type, id, the context's topic) of each handled message.
type Handled = Vec<(&'static str, String, String)>;

#[derive(Clone, Default)]
struct Topics(Arc<Mutex<Handled>>);
impl MessageHandler<Mapped> for Topics {
    async fn handle(&self, m: Mapped, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(("Mapped", m.id, ctx.topic.clone()));
        if m.fail {
            let lookup: anyhow::Result<()> = Err(anyhow::anyhow!("connection reset"));
            use anyhow::Context as _;
            lookup.context("loading the order")?;
        }
        Ok(())
    }
}
impl MessageHandler<Renamed> for Topics {
    async fn handle(&self, m: Renamed, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(("Renamed", m.id, ctx.topic.clone()));
        if m.fail {
            let boxed: Box<dyn std::error::Error + Send + Sync> =
                Box::new(LookupFailed(std::io::Error::other("timed out")));
            Err(boxed)?;
        }
        Ok(())
    }
}

/// A topic prefix and a per-type topic route publishing, subscribing and
/// dead letters alike; the context shows the real topic, and the dead
/// letters of anyhow and boxed errors carry their whole chain.
#[tokio::test]
async fn a_topic_prefix_routes_publish_subscribe_and_dead_letters() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let prefix = format!("{}.", unique_name("env"));
    let mapped = format!("{prefix}mapped.jobs");
    let renamed = format!("{prefix}renamed-jobs");
    for t in [&mapped, &renamed] {
        broker.create_topic(t, 1).await.expect("topic");
        broker
            .create_topic(&format!("{t}.dlq"), 1)
            .await
            .expect("dlq");
    }
    let m = consumer(broker, &unique_name("mapped"))
        .topic_prefix(&prefix)
        .topic_for::<Renamed>("renamed-jobs")
        .delivery_retry_policy(NoRetry)
        .build()
        .await
        .expect("build");
    let seen = Topics::default();
    m.subscribe::<Mapped, _>(seen.clone()).expect("subscribe");
    m.subscribe::<Renamed, _>(seen.clone()).expect("subscribe");
    m.start().await.expect("start");
    let job = |id: &str, fail| Mapped {
        id: id.into(),
        fail,
    };
    let d = m.publish(&job("m1", false)).await.expect("publish");
    assert_eq!(d.topic, mapped);
    let batch = m.publish_batch(&[job("m2", true)]).await;
    assert_eq!(batch[0].as_ref().expect("publish").topic, mapped);
    for (id, fail) in [("r1", false), ("r2", true)] {
        let d = m
            .publish(&Renamed {
                id: id.into(),
                fail,
            })
            .await
            .expect("publish");
        assert_eq!(d.topic, renamed);
    }
    eventually(WAIT, "all four handled", || {
        seen.0.lock().unwrap().len() == 4
    })
    .await;
    let mut got = seen.0.lock().unwrap().clone();
    got.sort();
    let expected = [
        ("Mapped", "m1", &mapped),
        ("Mapped", "m2", &mapped),
        ("Renamed", "r1", &renamed),
        ("Renamed", "r2", &renamed),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(t, id, topic)| (*t, id.to_string(), topic.to_string()))
        .collect();
    assert_eq!(got, expected);
    eventually(
        WAIT,
        "both partitions committed past the dead letters",
        || {
            let h = m.health();
            h.partitions.len() == 2 && h.partitions.iter().all(|p| p.committed == Some(2))
        },
    )
    .await;
    m.shutdown().await.expect("shutdown");
    for (topic, error) in [
        (&mapped, "loading the order: connection reset"),
        (&renamed, "looking up the customer: timed out"),
    ] {
        let letters = fetch_topic(broker, &format!("{topic}.dlq"), 1).await;
        assert_eq!(letters.len(), 1, "one dead letter in {topic}.dlq");
        let h = &letters[0].1.record.headers;
        assert_eq!(header(h, "original_topic").as_deref(), Some(topic.as_str()));
        let original = header(h, "original_error").expect("original_error");
        assert!(original.ends_with(error), "{original:?}");
        assert_eq!(
            header(h, "content-type").as_deref(),
            Some("application/msgpack"),
            "the dead letter keeps the value's content type"
        );
    }
}

// ---------------------------------------------------------------------------
// `Latest` across a handover.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "latest.events")]
struct Fresh {
    n: u32,
}

struct CountFresh(Arc<Mutex<Vec<u32>>>);
impl MessageHandler<Fresh> for CountFresh {
    async fn handle(&self, f: Fresh, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(f.n);
        Ok(())
    }
}

/// A member with `Latest` gets an empty partition and handles nothing
/// before it leaves; what is written before the next member starts is
/// still handled: the reset position was committed, so the next owner does
/// not reset past those records.
#[tokio::test]
async fn latest_commits_its_reset_position_so_a_handover_skips_nothing() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, _) = prefixed_topic::<Fresh>(broker, 1).await;
    let group = unique_name("latest");
    let member = || {
        consumer(broker, &group)
            .topic_prefix(&prefix)
            .auto_offset_reset(kavari::OffsetReset::Latest)
            .build()
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first = member().await.expect("build");
    first
        .subscribe::<Fresh, _>(CountFresh(Arc::clone(&seen)))
        .expect("subscribe");
    first.start().await.expect("start");
    eventually(WAIT, "the first member consumes from the log end", || {
        first.health().partitions.first().and_then(|p| p.position) == Some(0)
    })
    .await;
    first.shutdown().await.expect("shutdown");

    let second = member().await.expect("build");
    for n in 0..5 {
        second.publish(&Fresh { n }).await.expect("publish");
    }
    second
        .subscribe::<Fresh, _>(CountFresh(Arc::clone(&seen)))
        .expect("subscribe");
    second.start().await.expect("start");
    eventually(Duration::from_secs(20), "the five records handled", || {
        seen.lock().unwrap().len() == 5
    })
    .await;
    second.shutdown().await.expect("shutdown");
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3, 4]);
}

// ---------------------------------------------------------------------------
// A subscribed topic created after the group formed.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "later.events")]
struct Later {
    n: u32,
}

struct CountLater(Arc<Mutex<Vec<u32>>>);
impl MessageHandler<Later> for CountLater {
    async fn handle(&self, l: Later, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(l.n);
        Ok(())
    }
}

/// A member subscribed to a topic that does not exist yet gets its
/// partitions once it is created: the leader looks the topics up every
/// `metadata_max_age` and rebalances when they changed.
#[tokio::test]
async fn a_subscribed_topic_created_later_is_consumed() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let prefix = format!("{}.", unique_name("later"));
    let topic = format!("{prefix}{}", Later::TOPIC);
    let m = consumer(broker, &unique_name("later"))
        .topic_prefix(&prefix)
        .metadata_max_age(Duration::from_secs(1))
        .build()
        .await
        .expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    m.subscribe::<Later, _>(CountLater(Arc::clone(&seen)))
        .expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "the group formed", || {
        m.health().state == HealthState::Running
    })
    .await;
    assert!(m.health().partitions.is_empty(), "nothing to assign yet");
    broker.create_topic(&topic, 2).await.expect("topic");
    for n in 0..4 {
        m.publish(&Later { n }).await.expect("publish");
    }
    eventually(WAIT, "the new topic's records handled", || {
        seen.lock().unwrap().len() == 4
    })
    .await;
    m.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------
// A shutdown that runs out of time.

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "stuck.jobs")]
struct Stuck {
    n: u32,
}

#[derive(Clone, Default)]
struct Sleepy {
    started: Arc<std::sync::atomic::AtomicBool>,
    finished: Arc<std::sync::atomic::AtomicBool>,
}
impl MessageHandler<Stuck> for Sleepy {
    async fn handle(&self, _: Stuck, _: &MessageContext) -> Result<(), HandlerError> {
        use std::sync::atomic::Ordering;
        self.started.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A handler outlives the shutdown timeout: `shutdown()` says so, and from
/// then on nothing of the consumer runs: the handler is not carried on to
/// its end, and nothing is committed past what was before.
#[tokio::test]
async fn after_a_timed_out_shutdown_nothing_runs_or_commits() {
    use std::sync::atomic::Ordering;
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Stuck>(broker, 1).await;
    let group = unique_name("stuck");
    let m = consumer(broker, &group)
        .topic_prefix(&prefix)
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("build");
    m.publish(&Stuck { n: 0 }).await.expect("publish");
    let sleepy = Sleepy::default();
    m.subscribe::<Stuck, _>(sleepy.clone()).expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "the handler started", || {
        sleepy.started.load(Ordering::SeqCst)
    })
    .await;
    let began = std::time::Instant::now();
    assert!(matches!(
        m.shutdown().await,
        Err(kavari::ShutdownError::HandlersInFlight { .. })
    ));
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !sleepy.finished.load(Ordering::SeqCst),
        "the handler ran on after shutdown() returned"
    );
    assert_ne!(
        committed(broker, &group, &topic, 1).await[&0],
        Some(1),
        "nothing committed after shutdown() returned"
    );
}
