//! Processing orders: records of one partition handled side by side by key
//! (or in no order), each key's records in offset order, the commit never
//! past an unfinished record.

use std::time::Instant;

use kavari::ProcessingOrder;

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "ordering.jobs")]
pub(crate) struct KeyedJob {
    #[kavari(key)]
    key: String,
    seq: u64,
}

/// How long each job's handler waits, as on a database call.
const JOB_TIME: Duration = Duration::from_millis(20);

/// What the handler saw: per key the offsets in the order they began, keys
/// found already running (an overlap), and when each record finished.
#[derive(Default)]
struct Seen {
    by_key: HashMap<String, Vec<i64>>,
    running: BTreeSet<String>,
    overlaps: Vec<(String, i64)>,
    finished: Vec<Instant>,
    most_at_once: usize,
    /// The most records health showed in flight, and whether it said
    /// since when.
    most_shown: usize,
    shown_since: bool,
}

struct Slow(Arc<Mutex<Seen>>);

impl MessageHandler<KeyedJob> for Slow {
    async fn handle(&self, job: KeyedJob, ctx: &MessageContext) -> Result<(), HandlerError> {
        {
            let mut seen = self.0.lock().unwrap();
            if !seen.running.insert(job.key.clone()) {
                seen.overlaps.push((job.key.clone(), ctx.offset));
            }
            seen.most_at_once = seen.most_at_once.max(seen.running.len());
            seen.by_key
                .entry(job.key.clone())
                .or_default()
                .push(ctx.offset);
        }
        tokio::time::sleep(JOB_TIME).await;
        let mut seen = self.0.lock().unwrap();
        seen.running.remove(&job.key);
        seen.finished.push(Instant::now());
        Ok(())
    }
}

/// Records handled per second from the first to the last finish.
fn rate(finished: &[Instant]) -> f64 {
    match (finished.first(), finished.last()) {
        (Some(a), Some(b)) if finished.len() > 1 => {
            (finished.len() - 1) as f64 / b.duration_since(*a).as_secs_f64().max(1e-3)
        }
        _ => 0.0,
    }
}

/// Handles the topic's first `n` records with `order`; returns what the
/// handler saw once the commit covers them.
async fn handle(
    broker: &KafkaBroker,
    prefix: &str,
    topic: &str,
    order: ProcessingOrder,
    n: u64,
) -> Seen {
    let group = unique_name("ordering");
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let m = consumer(broker, &group)
        .topic_prefix(prefix)
        .processing_order(order)
        .build()
        .await
        .expect("build");
    m.subscribe::<KeyedJob, _>(Slow(Arc::clone(&seen)))
        .expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "the records handled", || {
        let mut seen = seen.lock().unwrap();
        if let Some(p) = m.health().partitions.first() {
            seen.most_shown = seen.most_shown.max(p.in_flight);
            seen.shown_since |= p.in_flight > 0 && p.in_flight_since.is_some();
        }
        seen.finished.len() as u64 >= n
    })
    .await;
    m.shutdown().await.expect("shutdown");
    let commits = committed(broker, &group, topic, 1).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let handled = seen.finished.len() as i64;
    let at = commits[&0].expect("a commit");
    assert!(
        at >= n as i64 && at <= handled,
        "the commit ({at}) covers the {n} records and nothing past the {handled} handled"
    );
    seen
}

#[tokio::test]
async fn key_order_runs_keys_side_by_side_and_each_key_in_offset_order() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<KeyedJob>(broker, 1).await;
    const N: u64 = 2_000;
    const KEYS: u64 = 200;
    let jobs: Vec<KeyedJob> = (0..N)
        .map(|seq| KeyedJob {
            key: format!("k{}", seq % KEYS),
            seq,
        })
        .collect();
    publish_all(broker, &prefix, &jobs).await;

    let by_key = handle(
        broker,
        &prefix,
        &topic,
        ProcessingOrder::Key { max_in_flight: 64 },
        N,
    )
    .await;
    // One at a time, a sample is enough to know the rate: 100 records
    // take about 2 s.
    let in_order = handle(broker, &prefix, &topic, ProcessingOrder::Partition, 100).await;

    assert!(
        by_key.overlaps.is_empty(),
        "records of one key ran side by side: {:?}",
        &by_key.overlaps[..by_key.overlaps.len().min(10)]
    );
    assert_eq!(by_key.by_key.len() as u64, KEYS);
    for (key, offsets) in &by_key.by_key {
        let first: Vec<i64> = offsets.iter().copied().take(10).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "key {key} ran out of offset order: {offsets:?}"
        );
        assert_eq!(
            offsets.len() as u64,
            N / KEYS,
            "key {key} handled once per record: {first:?}…"
        );
    }
    assert!(
        by_key.most_at_once > 1 && by_key.most_at_once <= 64,
        "at most the window runs at once: {}",
        by_key.most_at_once
    );
    assert!(
        by_key.most_shown > 1 && by_key.most_shown <= 64 && by_key.shown_since,
        "health shows the records in flight and since when: at most {}",
        by_key.most_shown
    );
    let (fast, slow) = (rate(&by_key.finished), rate(&in_order.finished));
    eprintln!(
        "key order, 64 in flight: {fast:.0} records/s; partition order: {slow:.0} records/s ({:.1}x); at most {} at once",
        fast / slow,
        by_key.most_at_once
    );
    assert!(
        fast >= 10.0 * slow,
        "key order ({fast:.0}/s) is not 10 times partition order ({slow:.0}/s)"
    );
}

#[tokio::test]
async fn unordered_runs_any_records_side_by_side_within_the_window() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<KeyedJob>(broker, 1).await;
    const N: u64 = 300;
    // One key: key order would run them one at a time.
    let jobs: Vec<KeyedJob> = (0..N)
        .map(|seq| KeyedJob {
            key: "same".into(),
            seq,
        })
        .collect();
    publish_all(broker, &prefix, &jobs).await;
    let seen = handle(
        broker,
        &prefix,
        &topic,
        ProcessingOrder::Unordered { max_in_flight: 16 },
        N,
    )
    .await;
    assert_eq!(seen.by_key["same"].len() as u64, N);
    // The handler tracks running keys: with one key, an overlap is two
    // records running at once.
    assert!(
        !seen.overlaps.is_empty(),
        "unordered records of one key ran side by side"
    );
    let rate = rate(&seen.finished);
    assert!(
        rate > 5.0 / JOB_TIME.as_secs_f64(),
        "16 in flight handle well above 5 records per {JOB_TIME:?}: {rate:.0}/s"
    );
}
