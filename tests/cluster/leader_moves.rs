//! Leaders that move while a publisher and a consumer group work: a node
//! stopped gracefully (Kafka's controlled shutdown hands its leaderships
//! to other replicas first), started again, and the leaderships moved
//! back to it by a preferred-leader election through the Admin API.
//! Nothing acknowledged is lost, nothing is written twice, every record is
//! handled; the Metadata requests the clients sent meanwhile are counted
//! at the fault proxy in front of the nodes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;
use kavari_wire::admin::Election;

use crate::{Publishing, Seen, Setup, assert_log_holds, leader_of_first};

const PARTITIONS: i32 = 6;
const METADATA: i16 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_moved_by_shutdown_and_election_reroute_with_no_loss() {
    let setup = Setup::start("moves", KafkaBroker::builder().behind_proxy(), PARTITIONS).await;
    let (broker, topic, cluster) = (&setup.broker, setup.topic.as_str(), setup.cluster());
    let proxy = broker.proxy().expect("the proxy");
    let publisher = setup.publisher().await;
    let handled = Seen::default();
    let member = setup
        .member(
            &kavari_testcontainers::unique_name("moves"),
            &handled,
            |b| b,
        )
        .await;

    let publishing = Publishing::start(&publisher, 12).await;
    let moved = leader_of_first(cluster, topic).await;
    let metadata_before = proxy.requests(METADATA);
    let moving = Instant::now();
    cluster.stop_node(moved).expect("controlled shutdown");
    let interim = cluster
        .wait_for_leader(topic, 0, Some(moved), Duration::from_secs(30))
        .await
        .expect("another leader");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart_node(moved).await.expect("the node back");
    // Back in sync, then leader again of the partitions it prefers.
    let mut elected = false;
    for _ in 0..100 {
        let election = cluster
            .elect_leaders(
                Election::Preferred,
                topic,
                &(0..PARTITIONS).collect::<Vec<_>>(),
            )
            .await;
        if election.is_ok() && cluster.leader(topic, 0).await.ok().flatten() == Some(moved) {
            elected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        elected,
        "node {moved} leads {topic}/0 again after a preferred election"
    );
    let moved_back = moving.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acked = publishing.stop().await;
    let metadata = proxy.requests(METADATA) - metadata_before;
    let total = acked.lock().unwrap().len();
    eprintln!(
        "leader moves: {topic}/0 led by node {moved}, then {interim} (controlled shutdown), then \
         {moved} again (preferred election) in {moved_back:?}; {total} publishes acknowledged; \
         {metadata} Metadata requests from the publisher and the member meanwhile"
    );
    assert_log_holds(broker, topic, PARTITIONS, &acked).await;
    let want: BTreeSet<(String, u64)> = acked.lock().unwrap().keys().cloned().collect();
    eventually(
        Duration::from_secs(60),
        "every acknowledged ticket handled",
        || {
            let handled: BTreeSet<(String, u64)> =
                handled.all().into_iter().map(|h| (h.key, h.seq)).collect();
            handled.is_superset(&want)
        },
    )
    .await;
    member.shutdown().await.expect("shutdown");
    publisher.shutdown().await.expect("shutdown");
}
