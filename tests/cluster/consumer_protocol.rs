//! The consumer group protocol (KIP-848, `GroupProtocol::Consumer`): the
//! broker assigns, members reconcile to it by revoking first, and Kavari
//! members share a group with each other and with Java consumers of the
//! same protocol.

use std::collections::BTreeSet;
use std::time::Duration;

use kavari::{GroupProtocol, Kavari};
use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;

use crate::{Seen, Setup, tickets};

const PARTITIONS: i32 = 6;

/// A started member of `group` speaking the consumer protocol.
async fn member(setup: &Setup, group: &str, seen: &Seen) -> Kavari {
    setup
        .member(group, seen, |b| b.group_protocol(GroupProtocol::Consumer))
        .await
}

fn owned(member: &Kavari) -> BTreeSet<i32> {
    member
        .health()
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect()
}

/// Three members split six partitions; one leaves and the other two take
/// its partitions from its last commit: every record is handled, and
/// none twice while the group stood still.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_the_partitions_and_take_over_a_leavers() {
    let setup = Setup::start("kip848", KafkaBroker::builder(), PARTITIONS).await;
    let group = kavari_testcontainers::unique_name("kip848");
    let seen = [Seen::default(), Seen::default(), Seen::default()];
    let mut members = Vec::new();
    for s in &seen {
        members.push(member(&setup, &group, s).await);
    }
    eventually(
        Duration::from_secs(60),
        "each member owns two partitions",
        || {
            let owns: Vec<BTreeSet<i32>> = members.iter().map(owned).collect();
            owns.iter().all(|o| o.len() == 2)
                && owns.iter().flatten().collect::<BTreeSet<_>>().len() == PARTITIONS as usize
        },
    )
    .await;
    let publisher = setup.publisher().await;
    for r in publisher.publish_batch(&tickets(0..600)).await {
        r.expect("publish");
    }
    let handled = |seen: &[Seen]| -> BTreeSet<u64> { seen.iter().flat_map(Seen::seqs).collect() };
    eventually(Duration::from_secs(60), "every record handled", || {
        handled(&seen).len() == 600
    })
    .await;
    let once: usize = seen.iter().map(|s| s.all().len()).sum();
    assert_eq!(
        once, 600,
        "no record handled twice while the group stood still"
    );
    assert!(
        seen.iter().all(|s| !s.all().is_empty()),
        "each member handled its share"
    );

    let leaver = members.remove(0);
    leaver.shutdown().await.expect("shutdown");
    eventually(
        Duration::from_secs(60),
        "the two left own every partition",
        || {
            let owns: BTreeSet<i32> = members.iter().flat_map(owned).collect();
            owns.len() == PARTITIONS as usize && members.iter().all(|m| !owned(m).is_empty())
        },
    )
    .await;
    for r in publisher.publish_batch(&tickets(600..1200)).await {
        r.expect("publish");
    }
    eventually(
        Duration::from_secs(60),
        "every later record handled",
        || handled(&seen[1..]).range(600..).count() == 600,
    )
    .await;
    // The leaver committed what it handled as it gave its partitions up:
    // none of the first 600 is handled again.
    let first: usize = seen
        .iter()
        .map(|s| s.all().iter().filter(|h| h.seq < 600).count())
        .sum();
    assert_eq!(first, 600, "records of the leaver handled again");
    for m in members {
        m.shutdown().await.expect("shutdown");
    }
    publisher.shutdown().await.expect("shutdown");
}

/// A Java consumer speaking the consumer protocol and a Kavari member in
/// one group: the broker splits the partitions between them, both handle
/// and commit their share; the Java member leaves and Kavari takes its
/// partitions from its commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_consumer_and_a_kavari_member_share_a_consumer_protocol_group() {
    use crate::java_member::JavaMember;

    let setup = Setup::start("kip848-java", KafkaBroker::builder(), PARTITIONS).await;
    let group = kavari_testcontainers::unique_name("kip848-java");
    let mut java = JavaMember::spawn(&setup, &group, "consumer");
    let handled = Seen::default();
    let kavari = member(&setup, &group, &handled).await;
    eventually(
        Duration::from_secs(90),
        "the partitions split between Java and Kavari",
        || {
            let java = java.owns.lock().unwrap().clone();
            let kavari = owned(&kavari);
            !java.is_empty()
                && !kavari.is_empty()
                && java.is_disjoint(&kavari)
                && java.len() + kavari.len() == PARTITIONS as usize
        },
    )
    .await;
    let publisher = setup.publisher().await;
    for r in publisher.publish_batch(&tickets(0..600)).await {
        r.expect("publish");
    }
    eventually(Duration::from_secs(60), "every record handled once", || {
        java.handled
            .lock()
            .unwrap()
            .union(&handled.positions())
            .count()
            == 600
    })
    .await;
    let java_count = java.handled.lock().unwrap().len();
    eprintln!(
        "consumer protocol with Java: Java handled {java_count}, Kavari {}",
        handled.positions().len()
    );
    assert!(java_count > 0 && !handled.positions().is_empty());
    assert!(
        java.handled
            .lock()
            .unwrap()
            .is_disjoint(&handled.positions()),
        "no record handled by both while the group stood still"
    );

    // The Java member leaves: Kavari takes every partition and handles
    // what comes next, nothing of before again.
    drop(java.child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), java.child.wait()).await;
    assert!(java.stopped.load(std::sync::atomic::Ordering::SeqCst));
    eventually(
        Duration::from_secs(60),
        "Kavari owns every partition",
        || owned(&kavari).len() == PARTITIONS as usize,
    )
    .await;
    for r in publisher.publish_batch(&tickets(600..700)).await {
        r.expect("publish");
    }
    eventually(Duration::from_secs(60), "the later records handled", || {
        handled.seqs().range(600..).count() == 100
    })
    .await;
    assert!(
        java.handled
            .lock()
            .unwrap()
            .is_disjoint(&handled.positions()),
        "records the Java member committed handled again"
    );
    assert_eq!(
        handled.all().len(),
        handled.positions().len(),
        "a record handled twice"
    );
    kavari.shutdown().await.expect("shutdown");
    publisher.shutdown().await.expect("shutdown");
}
