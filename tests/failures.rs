//! Records that cannot be handled, against a real broker: the failure
//! policies (dead-letter, block, skip), dead-letter topics created when
//! missing, and partitions that wait at a record showing so in `health()`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{
    FailurePolicy, HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, NoRetry,
    PublishError,
};
use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{consumer, eventually, fetch_topic, header, init_tracing, prefixed_topic};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "failing.jobs")]
struct Job {
    #[kavari(key)]
    id: u32,
    /// Calls that fail before one succeeds (`u32::MAX`: every call fails,
    /// permanently).
    failures: u32,
}

/// Fails each job's first `failures` calls; records every success and the
/// partition's health seen while failing.
#[derive(Clone, Default)]
struct Flaky {
    calls: Arc<Mutex<BTreeMap<u32, u32>>>,
    done: Arc<Mutex<Vec<u32>>>,
}

impl MessageHandler<Job> for Flaky {
    async fn handle(&self, job: Job, _: &MessageContext) -> Result<(), HandlerError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(job.id).or_default();
            *n += 1;
            *n
        };
        if job.failures == u32::MAX {
            return Err(HandlerError::permanent(format!(
                "job {} cannot be done",
                job.id
            )));
        }
        if n <= job.failures {
            return Err(HandlerError::new(format!("job {} not yet ({n})", job.id)));
        }
        self.done.lock().unwrap().push(job.id);
        Ok(())
    }
}

fn jobs(failing: u32, failures: u32) -> Vec<Job> {
    (0..5)
        .map(|id| Job {
            id,
            failures: if id == failing { failures } else { 0 },
        })
        .collect()
}

/// The partition count of `topic`, `None` when the cluster does not know it.
async fn partitions_of(broker: &KafkaBroker, topic: &str) -> Option<usize> {
    let cluster = kavari_wire::cluster::Cluster::new(
        broker.bootstrap_list(),
        "kavari-test".into(),
        Duration::from_secs(10),
    );
    match cluster.topic(topic).await.expect("metadata") {
        Some(t) if t.error.is_none() && !t.partitions.is_empty() => Some(t.partitions.len()),
        _ => None,
    }
}

/// A manager of the test's own topic (with `partitions`) and group,
/// configured further by `configure`, subscribed with `handler` and started
/// after `msgs` are published.
async fn run_with(
    partitions: i32,
    msgs: &[Job],
    handler: Flaky,
    configure: impl FnOnce(kavari::KavariBuilder) -> kavari::KavariBuilder,
) -> (&'static KafkaBroker, Kavari, String) {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Job>(broker, partitions).await;
    let m = configure(
        consumer(broker, &unique_name("fail"))
            .topic_prefix(&prefix)
            .delivery_retry_policy(NoRetry),
    )
    .build()
    .await
    .expect("build");
    for r in m.publish_batch(msgs).await {
        r.expect("publish");
    }
    m.subscribe::<Job, _>(handler).expect("subscribe");
    m.start().await.expect("start");
    (broker, m, topic)
}

fn all_committed(m: &Kavari, total: i64) -> bool {
    let h = m.health();
    h.partitions.iter().filter_map(|p| p.committed).sum::<i64>() == total
}

/// A record that fails for good goes to `<topic>.dlq`, which Kavari creates
/// with the source topic's partition count; the partition moves on.
#[tokio::test]
async fn a_missing_dead_letter_topic_is_created_like_its_source() {
    let flaky = Flaky::default();
    let (broker, m, topic) = run_with(3, &jobs(2, u32::MAX), flaky.clone(), |b| b).await;
    let dlq = format!("{topic}.dlq");
    eventually(WAIT, "everything committed", || all_committed(&m, 5)).await;
    m.shutdown().await.expect("shutdown");
    assert_eq!(flaky.done.lock().unwrap().len(), 4);
    assert_eq!(partitions_of(broker, &dlq).await, Some(3));
    let letters = fetch_topic(broker, &dlq, 3).await;
    assert_eq!(letters.len(), 1);
    let h = &letters[0].1.record.headers;
    assert!(header(h, "original_error").is_some_and(|e| e.contains("job 2 cannot be done")));
}

/// With creation off, a missing dead-letter topic stops the partition at
/// the record, visibly: health names the offset and the topic, the manager
/// is not ready, the records before it are committed. Once the topic
/// exists the dead letter is written and the partition goes on.
#[tokio::test]
async fn a_dead_letter_that_cannot_be_written_blocks_the_partition_visibly() {
    let flaky = Flaky::default();
    let (broker, m, topic) = run_with(1, &jobs(2, u32::MAX), flaky.clone(), |b| {
        b.create_dead_letter_topics(false)
    })
    .await;
    let dlq = format!("{topic}.dlq");
    eventually(WAIT, "the partition blocked at offset 2", || {
        let h = m.health();
        let p = h.partitions.first().cloned();
        !h.ready
            && p.as_ref()
                .and_then(|p| p.error.as_deref())
                .is_some_and(|e| e.starts_with("blocked at offset 2") && e.contains(&dlq))
            && p.and_then(|p| p.committed) == Some(2)
    })
    .await;
    assert_eq!(partitions_of(broker, &dlq).await, None, "not created");
    broker.create_topic(&dlq, 1).await.expect("dlq");
    eventually(WAIT, "the partition went on", || {
        let h = m.health();
        h.ready && all_committed(&m, 5) && h.partitions[0].error.is_none()
    })
    .await;
    m.shutdown().await.expect("shutdown");
    assert_eq!(fetch_topic(broker, &dlq, 1).await.len(), 1);
    assert_eq!(*flaky.done.lock().unwrap(), [0, 1, 3, 4]);
}

/// `Block`: a failing handler is tried again, past its delivery retries,
/// until it succeeds; health shows the wait; nothing is dead-lettered.
#[tokio::test]
async fn block_retries_the_handler_until_it_succeeds() {
    let flaky = Flaky::default();
    let (broker, m, topic) = run_with(1, &jobs(1, 4), flaky.clone(), |b| {
        b.on_handler_failure(FailurePolicy::Block)
    })
    .await;
    eventually(WAIT, "blocked at offset 1", || {
        let h = m.health();
        !h.ready
            && h.partitions
                .first()
                .and_then(|p| p.error.clone())
                .is_some_and(|e| {
                    e.starts_with("blocked at offset 1") && e.contains("job 1 not yet")
                })
    })
    .await;
    eventually(WAIT, "all handled", || all_committed(&m, 5)).await;
    let h = m.health();
    assert!(h.ready && h.partitions[0].error.is_none(), "{h:?}");
    m.shutdown().await.expect("shutdown");
    assert_eq!(*flaky.done.lock().unwrap(), [0, 1, 2, 3, 4], "in order");
    assert_eq!(flaky.calls.lock().unwrap()[&1], 5);
    assert_eq!(partitions_of(broker, &format!("{topic}.dlq")).await, None);
}

/// `Skip` (asked for): the record is logged and left behind, nothing else.
#[tokio::test]
async fn skip_moves_on_without_a_dead_letter() {
    let flaky = Flaky::default();
    let (broker, m, topic) = run_with(1, &jobs(3, u32::MAX), flaky.clone(), |b| {
        b.on_handler_failure(FailurePolicy::Skip)
    })
    .await;
    eventually(WAIT, "all committed", || all_committed(&m, 5)).await;
    m.shutdown().await.expect("shutdown");
    assert_eq!(*flaky.done.lock().unwrap(), [0, 1, 2, 4]);
    assert_eq!(partitions_of(broker, &format!("{topic}.dlq")).await, None);
}

/// Poison under `Block`: no retry can decode it, so the partition waits
/// at it, saying why.
#[tokio::test]
async fn poison_under_block_waits_at_the_record() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Job>(broker, 1).await;
    let m = consumer(broker, &unique_name("fail"))
        .topic_prefix(&prefix)
        .on_poison(FailurePolicy::Block)
        .build()
        .await
        .expect("build");
    let mut poison = kavari::codec::encode(&Job { id: 9, failures: 0 }).expect("encode");
    poison.topic = topic.into();
    poison.value = b"\xc1 not MessagePack".to_vec();
    m.publish(&Job { id: 0, failures: 0 })
        .await
        .expect("publish");
    m.publish_encoded(poison).await.expect("publish");
    let flaky = Flaky::default();
    m.subscribe::<Job, _>(flaky.clone()).expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "blocked at the poison", || {
        let h = m.health();
        !h.ready
            && h.partitions.first().is_some_and(|p| {
                p.committed == Some(1)
                    && p.error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("blocked at offset 1: poison"))
            })
    })
    .await;
    m.shutdown().await.ok();
    assert_eq!(*flaky.done.lock().unwrap(), [0]);
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "failing.big")]
struct Big {
    blob: String,
}

/// A publish the main topic refuses (too large) goes to a dead-letter
/// topic created for it.
#[tokio::test]
async fn a_failed_publish_creates_its_dead_letter_topic() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Big>(broker, 2).await;
    let m = Kavari::builder(broker.bootstrap_servers())
        .topic_prefix(&prefix)
        .max_message_bytes(1000)
        .build()
        .await
        .expect("build");
    let r = m
        .publish(&Big {
            blob: "x".repeat(2000),
        })
        .await;
    match r {
        Err(PublishError::DeadLettered { dlq, .. }) => {
            assert_eq!(dlq.topic, format!("{topic}.dlq"))
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    m.shutdown().await.expect("shutdown");
    assert_eq!(
        partitions_of(broker, &format!("{topic}.dlq")).await,
        Some(2)
    );
}
