//! Every node restarted, one after another, while a three-member group
//! handles 100,000 records: leaders and the group coordinator move with
//! each restart. Nothing acknowledged is lost, records handled twice stay
//! few (those handled but not yet committed when a partition moved), and
//! every member is ready again at the end.

use std::time::{Duration, Instant};

use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;

use crate::{Seen, Setup, tickets};

const RECORDS: u64 = 100_000;
const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_a_three_member_group_loses_nothing() {
    let setup = Setup::start("rolling", KafkaBroker::builder(), PARTITIONS).await;
    let cluster = setup.cluster();
    let group = kavari_testcontainers::unique_name("rolling");
    let seen = Seen::default();
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(setup.member(&group, &seen, |b| b).await);
    }
    let publisher = setup.publisher().await;
    let publishing = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            for chunk in 0..RECORDS / 1000 {
                for r in publisher
                    .publish_batch(&tickets(chunk * 1000..(chunk + 1) * 1000))
                    .await
                {
                    r.unwrap_or_else(|e| panic!("a publish failed across a restart: {e}"));
                    acked += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };

    let rolling = Instant::now();
    for node in cluster.node_ids() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.stop_node(node).expect("stop a node");
        cluster.restart_node(node).await.expect("the node back");
        eprintln!(
            "rolling restart: node {node} back after {:?}",
            rolling.elapsed()
        );
    }
    let acked = publishing.await.expect("the publisher");
    assert_eq!(acked, RECORDS);
    eventually(Duration::from_secs(180), "every record handled", || {
        seen.seqs().len() as u64 == RECORDS
    })
    .await;
    eventually(Duration::from_secs(60), "every member ready", || {
        members.iter().all(|m| m.health().ready)
    })
    .await;
    let handlings = seen.all().len() as u64;
    let twice = handlings - RECORDS;
    eprintln!(
        "rolling restart: {RECORDS} records, {twice} handled more than once, all three nodes \
         restarted in {:?}",
        rolling.elapsed()
    );
    // Handled again only what was handled and not yet committed when a
    // partition moved: a sliver of the whole, never a replay from the start.
    assert!(twice < RECORDS / 10, "{twice} handled twice");
    for m in &members {
        m.shutdown().await.expect("shutdown");
    }
    publisher.shutdown().await.expect("shutdown");
}
