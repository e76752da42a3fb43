//! A partition leader SIGKILLed while idempotent publishes (acks=all) are
//! in flight: the controller elects another replica, Kavari finds it and
//! sends its unanswered batches again under the same sequence numbers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kavari::Kavari;
use kavari_testcontainers::KafkaCluster;
use kavari_tests::init_tracing;

use crate::{Acked, assert_log_holds, prefixed, publish_until, with_topic};

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_loses_no_acknowledged_publish_and_writes_none_twice() {
    init_tracing();
    let (prefix, topic) = prefixed("failover");
    let cluster = KafkaCluster::start().await.expect("a Kafka cluster");
    let broker = with_topic(cluster, &topic, PARTITIONS).await;
    let cluster = broker.kafka().expect("a Kafka cluster");
    let manager = Kavari::builder(broker.bootstrap_servers())
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("build");

    let acked = Acked::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers = publish_until(&manager, 24, &acked, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = cluster
        .leader(&topic, 0)
        .await
        .expect("metadata")
        .expect("a leader of partition 0");
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    cluster.kill_node(victim).expect("kill the leader");
    let new_leader = cluster
        .wait_for_leader(&topic, 0, Some(victim), Duration::from_secs(30))
        .await
        .expect("a new leader");
    let elected = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.expect("a publisher");
    }
    manager.shutdown().await.expect("shutdown");

    // Publishing resumed on every partition: the first acknowledgement
    // after the kill, per partition.
    let mut resumed: BTreeMap<i32, Duration> = BTreeMap::new();
    let total = {
        let acked = acked.lock().unwrap();
        for (partition, _, at) in acked.values() {
            if *at > killed_at {
                let after = at.duration_since(killed_at);
                let first = resumed.entry(*partition).or_insert(after);
                *first = (*first).min(after);
            }
        }
        acked.len()
    };
    eprintln!(
        "failover: node {victim} (leader of {topic}/0) SIGKILLed after {before} acknowledged \
         publishes; node {new_leader} led it {elected:?} later; first acknowledgement after \
         the kill, per partition: {resumed:?}; {total} acknowledged in all"
    );
    assert_eq!(resumed.len(), 3, "publishing resumed on every partition");
    assert_log_holds(&broker, &topic, PARTITIONS, &acked).await;
}
