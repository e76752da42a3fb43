//! A partition leader SIGKILLed while idempotent publishes (acks=all) are
//! in flight: the controller elects another replica, Kavari finds it and
//! sends its unanswered batches again under the same sequence numbers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kavari_testcontainers::KafkaBroker;

use crate::{Publishing, Setup, assert_log_holds, leader_of_first};

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_loses_no_acknowledged_publish_and_writes_none_twice() {
    let setup = Setup::start("failover", KafkaBroker::builder(), PARTITIONS).await;
    let (broker, topic, cluster) = (&setup.broker, &setup.topic, setup.cluster());
    let manager = setup.publisher().await;

    let publishing = Publishing::start(&manager, 24).await;
    let victim = leader_of_first(cluster, topic).await;
    let wire = kavari_wire::cluster::Cluster::new(
        broker.bootstrap_list(),
        "failover".into(),
        Duration::from_secs(5),
    );
    let all = wire.broker_ids().await.expect("metadata");
    assert_eq!(wire.known_brokers(), all);
    let before = publishing.acked.lock().unwrap().len();
    let killed_at = Instant::now();
    cluster.kill_node(victim).expect("kill the leader");
    let new_leader = cluster
        .wait_for_leader(topic, 0, Some(victim), Duration::from_secs(30))
        .await
        .expect("a new leader");
    let elected = killed_at.elapsed();
    // Once the cluster stops naming the dead node, the client forgets it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let live = wire.broker_ids().await.expect("metadata");
        if !live.contains(&victim) {
            break live;
        }
        assert!(Instant::now() < deadline, "node {victim} still named");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(wire.known_brokers(), live, "{all:?} before the kill");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let acked = publishing.stop().await;
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
    assert_log_holds(broker, topic, PARTITIONS, &acked).await;

    // The dropped cluster leaves no directory behind: its nodes die
    // before their data is removed.
    let dir = cluster.directory().to_path_buf();
    drop(setup);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
