//! A broker that lies cannot kill the process: each test meets a scripted
//! broker telling one lie, with the whole test binary's memory capped at
//! 256 MiB (an allocation past it aborts the binary, which fails the run),
//! and asserts that the lie costs an error naming it, and that publishing
//! works again once the broker tells the truth.

mod broker;

use std::time::Duration;

use broker::{Lie, LyingBroker};
use cap::Cap;
use kavari::{KafkaMessage, Kavari, PublishError};
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

fn order(i: u32) -> Order {
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
