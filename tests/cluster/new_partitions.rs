//! Partitions added to a subscribed topic (CreatePartitions): the group's
//! leader finds the new count at its next metadata look-up
//! (`metadata_max_age`), the group rebalances, and records on the new
//! partitions are handled.

use std::time::{Duration, Instant};

use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;

use crate::{Seen, Setup, tickets};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_to_a_subscribed_topic_are_consumed_within_the_metadata_age() {
    let setup = Setup::start("grown", KafkaBroker::builder(), 2).await;
    let seen = Seen::default();
    let member = setup
        .member(&kavari_testcontainers::unique_name("grown"), &seen, |b| {
            b.metadata_max_age(Duration::from_secs(3))
        })
        .await;
    eventually(Duration::from_secs(60), "both partitions owned", || {
        member.health().partitions.len() == 2
    })
    .await;

    let added = Instant::now();
    setup
        .broker
        .add_partitions(&setup.topic, 4)
        .await
        .expect("two more partitions");
    // A publisher that starts now sees four partitions and spreads its keys
    // over them.
    let publisher = setup.publisher().await;
    let mut on_new = 0;
    for r in publisher.publish_batch(&tickets(0..200)).await {
        if r.expect("publish").partition >= 2 {
            on_new += 1;
        }
    }
    assert!(on_new > 0, "some keys land on the new partitions");
    eventually(Duration::from_secs(60), "every ticket handled", || {
        seen.seqs().len() == 200
    })
    .await;
    let first_on_new = seen
        .all()
        .iter()
        .filter(|h| h.partition >= 2)
        .map(|h| h.at)
        .min()
        .expect("a record of a new partition");
    eprintln!(
        "new partitions: {on_new} of 200 records on the two added partitions; the first handled \
         {:?} after the partitions were added (metadata_max_age 3 s)",
        first_on_new.duration_since(added)
    );
    assert_eq!(
        member.health().partitions.len(),
        4,
        "the member owns all four"
    );
    member.shutdown().await.expect("shutdown");
    publisher.shutdown().await.expect("shutdown");
}
