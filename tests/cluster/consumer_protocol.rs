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

/// A started member of `group` with the instance id `instance`.
async fn static_member(setup: &Setup, group: &str, instance: &str, seen: &Seen) -> Kavari {
    setup
        .member(group, seen, |b| {
            b.group_protocol(GroupProtocol::Consumer)
                .group_instance_id(instance)
        })
        .await
}

/// A static member restarted within the session timeout gets its
/// partitions back, and nobody else's assignment moves meanwhile; a
/// second member with an instance id in use is refused and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_gets_its_partitions_back() {
    let setup = Setup::start("kip848-static", KafkaBroker::builder(), PARTITIONS).await;
    let group = kavari_testcontainers::unique_name("kip848-static");
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let a = static_member(&setup, &group, "pod-a", &seen_a).await;
    let b = static_member(&setup, &group, "pod-b", &seen_b).await;
    eventually(Duration::from_secs(60), "the partitions split", || {
        let (x, y) = (owned(&a), owned(&b));
        x.len() == 3 && y.len() == 3 && x.is_disjoint(&y)
    })
    .await;
    let (had, kept) = (owned(&a), owned(&b));

    // An instance id in use: refused, the reason in health.
    let intruder = static_member(&setup, &group, "pod-a", &Seen::default()).await;
    eventually(Duration::from_secs(30), "the intruder failed", || {
        matches!(intruder.health().state, kavari::HealthState::Failed(_))
    })
    .await;
    let kavari::HealthState::Failed(why) = intruder.health().state else {
        unreachable!()
    };
    assert!(why.contains("UnreleasedInstanceId"), "{why}");
    let _ = intruder.shutdown().await;

    a.shutdown().await.expect("shutdown");
    // The broker keeps pod-a's partitions for it for the session timeout:
    // pod-b is never given them.
    let restarted_at = std::time::Instant::now();
    let again = static_member(&setup, &group, "pod-a", &seen_a).await;
    while restarted_at.elapsed() < Duration::from_secs(3) {
        assert_eq!(owned(&b), kept, "pod-b's assignment moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(
        Duration::from_secs(30),
        "pod-a has its partitions back",
        || owned(&again) == had,
    )
    .await;
    assert_eq!(owned(&b), kept, "pod-b's assignment moved");
    again.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}

/// A broker assignor that does not exist fails the member, with the
/// broker's reason in health; the classic assignors are refused with the
/// consumer protocol before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_assignor_fails_the_member_and_says_why() {
    let setup = Setup::start("kip848-assignor", KafkaBroker::builder(), 2).await;
    let group = kavari_testcontainers::unique_name("kip848-assignor");
    let m = setup
        .member(&group, &Seen::default(), |b| {
            b.group_protocol(GroupProtocol::Consumer)
                .group_remote_assignor("no-such-assignor")
        })
        .await;
    eventually(Duration::from_secs(30), "the member failed", || {
        matches!(m.health().state, kavari::HealthState::Failed(_))
    })
    .await;
    let kavari::HealthState::Failed(why) = m.health().state else {
        unreachable!()
    };
    assert!(why.contains("UnsupportedAssignor"), "{why}");
    let _ = m.shutdown().await;

    let refused = Kavari::builder(setup.broker.bootstrap_servers())
        .group_id(&group)
        .group_protocol(GroupProtocol::Consumer)
        .assignors(vec![std::sync::Arc::new(kavari::assignor::RangeAssignor)])
        .build()
        .await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("group_remote_assignor")),
        "classic assignors with the consumer protocol"
    );
}
