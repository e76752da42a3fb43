//! Batch handlers: records of one partition handed over many at a time;
//! only the records a batch names as failed are retried and dead-lettered.

use kavari::{BatchError, BatchHandler, SubscribeError};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "batch.rows")]
pub(crate) struct Row {
    #[kavari(key)]
    key: String,
    n: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "batch.rows")]
pub(crate) struct Marker {
    #[kavari(key)]
    key: String,
}

/// Every call: the offsets handed over, and the attempt.
type Calls = Arc<Mutex<Vec<(Vec<i64>, u32)>>>;

/// Fails the rows whose `n` is in `bad`, every time.
struct Insert {
    calls: Calls,
    bad: Vec<u64>,
    log: Arc<Mutex<Vec<String>>>,
}

impl BatchHandler<Row> for Insert {
    async fn handle(&self, batch: Vec<(Row, MessageContext)>) -> Result<(), BatchError> {
        let offsets = batch.iter().map(|(_, ctx)| ctx.offset).collect();
        let attempt = batch.first().map_or(0, |(_, ctx)| ctx.attempt);
        self.calls.lock().unwrap().push((offsets, attempt));
        self.log.lock().unwrap().push(format!(
            "rows {:?}",
            batch.iter().map(|(r, _)| r.n).collect::<Vec<_>>()
        ));
        let mut failed = BatchError::none();
        for (i, (row, _)) in batch.iter().enumerate() {
            if self.bad.contains(&row.n) {
                failed = failed.failed(i, format!("row {} violates a constraint", row.n));
            }
        }
        failed.into_result()
    }
}

struct Markers(Arc<Mutex<Vec<String>>>);

impl MessageHandler<Marker> for Markers {
    async fn handle(&self, m: Marker, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(format!("marker {}", m.key));
        Ok(())
    }
}

fn rows(from: u64, n: u64) -> Vec<Row> {
    (from..from + n)
        .map(|n| Row {
            key: format!("k{n}"),
            n,
        })
        .collect()
}

#[tokio::test]
async fn only_the_records_a_batch_rejects_are_retried_and_dead_lettered() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Row>(broker, 1).await;
    let dlq = format!("{topic}.dlq");
    broker.create_topic(&dlq, 1).await.expect("dlq");
    let group = unique_name("batch");
    let m = consumer(broker, &group)
        .topic_prefix(&prefix)
        .delivery_retry_policy(FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(20)))
        .build()
        .await
        .expect("build");
    // All there before the consumer starts: the first fetch holds them.
    for r in m.publish_batch(&rows(0, 100)).await {
        r.expect("publish");
    }
    let calls: Calls = Arc::default();
    m.subscribe_batch::<Row, _>(
        100,
        Duration::from_secs(2),
        Insert {
            calls: Arc::clone(&calls),
            bad: vec![17, 60],
            log: Arc::default(),
        },
    )
    .expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "the batch committed", || {
        m.health().partitions.first().and_then(|p| p.committed) == Some(100)
    })
    .await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls[0].0,
        (0..100).collect::<Vec<i64>>(),
        "one batch of 100"
    );
    assert_eq!(
        calls[1..],
        [(vec![17, 60], 2), (vec![17, 60], 3)],
        "only the two rejected rows, retried together"
    );
    let mut times: BTreeMap<i64, usize> = BTreeMap::new();
    for (offsets, _) in &calls {
        for o in offsets {
            *times.entry(*o).or_default() += 1;
        }
    }
    assert!(
        times
            .iter()
            .all(|(o, n)| *n == if [17, 60].contains(o) { 3 } else { 1 }),
        "the other 98 handled once: {times:?}"
    );
    assert_eq!(m.health().partitions[0].dead_lettered, 2);
    let letters = fetch_topic(broker, &dlq, 1).await;
    let mut offsets: Vec<String> = letters
        .iter()
        .filter_map(|(_, r)| header(&r.record.headers, "original_offset"))
        .collect();
    offsets.sort();
    assert_eq!(offsets, ["17", "60"]);
    assert!(
        letters
            .iter()
            .all(|(_, r)| header(&r.record.headers, "original_error")
                .is_some_and(|e| e.contains("violates"))),
        "each dead letter says why"
    );
    m.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_batch_goes_after_max_wait_and_closes_before_another_type() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, _) = prefixed_topic::<Row>(broker, 1).await;
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let m = consumer(broker, &unique_name("batch-wait"))
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("build");
    m.subscribe_batch::<Row, _>(
        100,
        Duration::from_millis(300),
        Insert {
            calls: Arc::default(),
            bad: vec![],
            log: Arc::clone(&log),
        },
    )
    .expect("subscribe");
    m.subscribe::<Marker, _>(Markers(Arc::clone(&log)))
        .expect("subscribe");
    assert!(matches!(
        m.subscribe::<Row, _>(RowByRow),
        Err(SubscribeError::BatchAndRecordHandlers { .. })
    ));
    m.start().await.expect("start");
    eventually(WAIT, "the partition assigned", || {
        m.health().partitions.len() == 1
    })
    .await;
    for r in m.publish_batch(&rows(0, 2)).await {
        r.expect("publish");
    }
    m.publish(&Marker { key: "m".into() })
        .await
        .expect("publish");
    for r in m.publish_batch(&rows(2, 3)).await {
        r.expect("publish");
    }
    eventually(WAIT, "everything handled", || {
        log.lock().unwrap().len() == 3
    })
    .await;
    // Three partial batches' worth of waiting, at most.
    assert_eq!(
        *log.lock().unwrap(),
        ["rows [0, 1]", "marker m", "rows [2, 3, 4]"],
        "the marker closes the batch before it; the last batch goes after max_wait"
    );
    m.shutdown().await.expect("shutdown");

    let concurrent = consumer(broker, "x")
        .processing_order(kavari::ProcessingOrder::Key { max_in_flight: 8 })
        .build()
        .await
        .expect("build");
    let refused = concurrent.subscribe_batch::<Row, _>(
        10,
        Duration::from_millis(10),
        Insert {
            calls: Arc::default(),
            bad: vec![],
            log: Arc::default(),
        },
    );
    assert!(matches!(
        refused,
        Err(SubscribeError::BatchNeedsPartitionOrder { .. })
    ));
}

struct RowByRow;

impl MessageHandler<Row> for RowByRow {
    async fn handle(&self, _: Row, _: &MessageContext) -> Result<(), HandlerError> {
        Ok(())
    }
}
