//! A broker that lies cannot kill the process: each test meets a scripted
//! broker telling one lie, with the whole test binary's memory capped at
//! 256 MiB (an allocation past it aborts the binary, which fails the run),
//! and asserts that the lie costs an error naming it, and that publishing
//! works again once the broker tells the truth.

mod broker;

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use broker::{GroupLie, Lie, LyingBroker};
use cap::Cap;
use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, PublishError};
use serde::{Deserialize, Serialize};

/// The memory every test of this binary shares, the lying broker's answers
/// included (a lie of 60 MB is held by the broker and by the client while
/// it is read).
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, 256 << 20);

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "orders")]
struct Order {
    #[kavari(key)]
    id: String,
}

const SECONDS_10: Duration = Duration::from_secs(10);

pub(crate) fn order(i: u32) -> Order {
    Order {
        id: format!("o-{i}"),
    }
}

/// A manager on `broker` that gives a publish `delivery` and writes no
/// dead letters (their topic would meet the same lie).
async fn manager(broker: &LyingBroker, delivery: Duration) -> Kavari {
    kavari_tests::init_tracing();
    Kavari::builder(broker.bootstrap())
        .enable_idempotence(false)
        .request_timeout(delivery)
        .delivery_timeout(delivery)
        .dead_letter_suffix(None)
        .build()
        .await
        .expect("build")
}

/// Publishes while `lie` is told: the publish fails naming `expected`, by
/// its deadline (`delivery`: a lie of tens of megabytes takes a debug
/// build a while to write and to read); then the broker tells the truth
/// and the next publish lands.
async fn lie_then_truth(lie: Lie, expected: &str, delivery: Duration) {
    let broker = LyingBroker::start().await;
    let manager = manager(&broker, delivery).await;
    broker.lie(lie);
    let started = std::time::Instant::now();
    match manager.publish(&order(1)).await {
        Err(e @ PublishError::Failed { .. }) => {
            assert!(e.to_string().contains(expected), "{lie:?}: {e}");
        }
        other => panic!("{lie:?}: expected a failure, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took < delivery * 2 + Duration::from_secs(1),
        "{lie:?}: the publish took {took:?}"
    );
    broker.lie(Lie::None);
    let landed = manager.publish(&order(2)).await;
    assert!(landed.is_ok(), "{lie:?}, then the truth: {landed:?}");
    manager.shutdown().await.expect("shutdown");
}

/// One topic of a million partitions (26 MB on the wire; a client once
/// spawned a sender per partition and aborted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_of_a_million_partitions() {
    lie_then_truth(
        Lie::Partitions(1_000_000),
        "a response may hold",
        SECONDS_10,
    )
    .await;
}

/// 200,000 partitions fit what a response may hold, and are still more
/// than a topic may have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_of_two_hundred_thousand_partitions() {
    lie_then_truth(Lie::Partitions(200_000), "more than the 100000", SECONDS_10).await;
}

/// A cluster of 4.5 million brokers (54 MB on the wire; it once took
/// 1.95 GB, and 991 MB stayed after the broker turned sane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_four_and_a_half_million_brokers() {
    lie_then_truth(Lie::Brokers(4_500_000), "a response may hold", SECONDS_10).await;
}

/// A topic of 50,000 partitions is believed, and costs a sender only for
/// the partitions published to: a thousand publishes of distinct keys
/// stay within the binary's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_of_many_partitions_costs_only_what_is_used() {
    let broker = LyingBroker::start().await;
    let manager = manager(&broker, SECONDS_10).await;
    broker.lie(Lie::Partitions(50_000));
    let orders: Vec<Order> = (0..1000).map(order).collect();
    for r in manager.publish_batch(&orders).await {
        r.expect("published");
    }
    assert_eq!(manager.publish_stats().records_acknowledged, 1000);
    manager.shutdown().await.expect("shutdown");
}

/// Counts the orders handled.
struct Count(Arc<AtomicUsize>);

impl MessageHandler<Order> for Count {
    async fn handle(&self, _: Order, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A member of a group on `broker`, with the cooperative-sticky assignor
/// (the leader's costliest), counting what it handles.
async fn member(broker: &LyingBroker) -> (Kavari, Arc<AtomicUsize>) {
    member_with(broker, |b| b).await
}

/// [`member`], configured further by `configure`.
async fn member_with(
    broker: &LyingBroker,
    configure: impl FnOnce(kavari::KavariBuilder) -> kavari::KavariBuilder,
) -> (Kavari, Arc<AtomicUsize>) {
    kavari_tests::init_tracing();
    let handled = Arc::new(AtomicUsize::new(0));
    let builder = Kavari::builder(broker.bootstrap())
        .group_id("hostile")
        .request_timeout(Duration::from_secs(5))
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(500))
        .commit_interval(Duration::from_millis(200))
        .assignors(vec![Arc::new(kavari::assignor::CooperativeStickyAssignor)]);
    let manager = configure(builder).build().await.expect("build");
    manager
        .subscribe::<Order, _>(Count(Arc::clone(&handled)))
        .expect("subscribe");
    manager.start().await.expect("start");
    (manager, handled)
}

/// Waits until `done`, at most 30 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A SyncGroup assignment naming a million partitions of a topic that has
/// one (4 MB on the wire; memory once grew to 4 GB): the member takes the
/// one there is, and handles its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_of_a_million_partitions() {
    let broker = LyingBroker::start().await;
    broker.lie_in_group(GroupLie::Assignment(1_000_000));
    let (manager, handled) = member(&broker).await;
    until("the order", || handled.load(Ordering::Relaxed) == 1).await;
    let partitions = manager.health().partitions;
    assert_eq!(
        partitions.len(),
        1,
        "cut to the topic's partitions: {partitions:?}"
    );
    manager.shutdown().await.expect("shutdown");
}

/// A SyncGroup assignment naming a topic of 32,767 bytes with 1.5 million
/// partitions (6 MB; each partition once cloned the name): refused, the
/// member joins again with a backoff, not a storm, and once the
/// coordinator assigns what the leader did, the record is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_naming_a_topic_of_32767_bytes() {
    let broker = LyingBroker::start().await;
    broker.lie_in_group(GroupLie::LongTopicName(1_500_000));
    let (manager, handled) = member(&broker).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(handled.load(Ordering::Relaxed), 0);
    assert!(!manager.health().ready, "{:?}", manager.health());
    let joins = broker.joins();
    assert!((1..=10).contains(&joins), "{joins} JoinGroups in 5 s");
    broker.lie_in_group(GroupLie::None);
    until("the order", || handled.load(Ordering::Relaxed) == 1).await;
    manager.shutdown().await.expect("shutdown");
}

/// The member leads 2,002 members (itself and 2,001 made up) over a topic
/// of 100,000 partitions with cooperative-sticky (the assignor once asked
/// for 3.3 GB): it assigns within the memory cap and takes its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_of_two_thousand_members_and_a_hundred_thousand_partitions() {
    let broker = LyingBroker::start().await;
    broker.lie(Lie::Partitions(100_000));
    broker.lie_in_group(GroupLie::Members(2_002));
    let (manager, _handled) = member(&broker).await;
    // Health lists a partition once its worker has begun: wait for them all.
    until("its share", || manager.health().partitions.len() >= 49).await;
    let share = manager.health().partitions.len();
    assert!(
        (49..=50).contains(&share),
        "100,000 partitions over 2,002 members: {share}"
    );
    manager.shutdown().await.expect("shutdown");
}

/// One gzip batch of 2 million minimal records (no type, so poison, each
/// skipped by policy; 14 MB decompressed from 2.8 MB; a batch of
/// 30 million once took 3.98 GB and 9.7 million log lines): read record by
/// record within the cap, each skip counted, the position past the batch,
/// and `shutdown()` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_of_two_million_records() {
    use kavari_wire::Compression;
    use kavari_wire::record_batch::write::{Record, RecordBatch};
    const RECORDS: usize = 2_000_000;
    let broker = LyingBroker::start().await;
    let headers: [(&str, &[u8]); 0] = [];
    let mut batch = RecordBatch::with_capacity(RECORDS * 8);
    for _ in 0..RECORDS {
        let record = Record {
            key: None,
            value: &[],
            headers: &headers[..],
        };
        batch.push(&record, 1);
    }
    let batch = bytes::Bytes::from(batch.finish(Compression::Gzip).expect("compress"));
    eprintln!("{RECORDS} records in {} bytes", batch.len());
    broker.serve_batch(batch, RECORDS as i64);
    let (manager, handled) =
        member_with(&broker, |b| b.on_poison(kavari::FailurePolicy::Skip)).await;
    let past = || {
        manager
            .health()
            .partitions
            .iter()
            .any(|p| p.partition == 0 && p.position == Some(RECORDS as i64))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !past() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            manager.health()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = manager.health();
    let p0 = health
        .partitions
        .iter()
        .find(|p| p.partition == 0)
        .expect("partition 0");
    assert_eq!(p0.skipped, RECORDS as u64, "each counted: {p0:?}");
    assert_eq!(handled.load(Ordering::Relaxed), 0);
    tokio::time::timeout(Duration::from_secs(30), manager.shutdown())
        .await
        .expect("shutdown returns")
        .expect("shutdown");
}
