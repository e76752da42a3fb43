//! The consumer group protocol (KIP-848, `GroupProtocol::Consumer`): the
//! broker assigns, members reconcile to it by revoking first, and Kavari
//! members share a group with each other and with Java consumers of the
//! same protocol.

use std::collections::BTreeSet;
use std::time::Duration;

use kavari::{GroupProtocol, Kavari, KavariBuilder};
use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;

use crate::{Seen, Setup, owned, tickets};

const PARTITIONS: i32 = 6;

/// A started member of `group` speaking the consumer protocol.
async fn member(setup: &Setup, group: &str, seen: &Seen) -> Kavari {
    setup
        .member(group, seen, |b| b.group_protocol(GroupProtocol::Consumer))
        .await
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

/// Three consumer processes handle 50,000 jobs of about a millisecond
/// while the group churns: one is SIGKILLed and replaced, one leaves
/// cleanly and comes back, then another is SIGKILLed and replaced. No job
/// is lost, and the jobs handled twice are no more than the killed
/// processes handled since their last commits.
async fn churn(protocol: &str) {
    use kavari::KafkaMessage;
    use kavari_tests::{CrashJob, Printed, spawn_consumer};
    use std::sync::{Arc, Mutex};

    const N: u64 = 50_000;
    const PARTS: i32 = 6;
    let setup = Setup::start("churn", KafkaBroker::builder(), 1).await;
    let topic = format!("{}{}", setup.prefix, CrashJob::TOPIC);
    setup
        .broker
        .create_topic(&topic, PARTS)
        .await
        .expect("topic");
    let group = kavari_testcontainers::unique_name("churn");
    let settings = [
        format!("KAVARI_TOPIC_PREFIX={}", setup.prefix),
        format!("KAVARI_GROUP_PROTOCOL={protocol}"),
        "JOB_MS=1".to_string(),
    ];
    let bin = env!("CARGO_BIN_EXE_kavari-test-consumer");
    let bootstrap = setup.broker.bootstrap_servers();
    let printed: Arc<Mutex<Printed>> = Arc::default();
    let spawn = |i| spawn_consumer(bin, &bootstrap, &group, i, &settings, &printed);
    let mut children: Vec<_> = (0..3).map(spawn).collect();
    eventually(Duration::from_secs(60), "the partitions split", || {
        let owns = printed.lock().unwrap().owns;
        owns.iter().all(|n| *n > 0) && owns.iter().sum::<usize>() == PARTS as usize
    })
    .await;
    let publisher = setup.publisher().await;
    let jobs = CrashJob::numbered(N, N);
    for chunk in jobs.chunks(10_000) {
        for r in publisher.publish_batch(chunk).await {
            r.expect("publish");
        }
    }
    let done = || printed.lock().unwrap().done.len() as u64;
    // What a killed process handled since its last commit: one commit
    // interval of jobs per partition it owned, twice for a loaded machine.
    let per_partition = CrashJob::COMMIT_INTERVAL.as_millis() as u64 + 1;
    let mut bound = 0;
    for (step, after) in [(0, N / 5), (1, 2 * N / 5), (2, 3 * N / 5)] {
        eventually(
            Duration::from_secs(120),
            "progress before the next step",
            || done() > after,
        )
        .await;
        let owned = printed.lock().unwrap().owns[step];
        if step == 1 {
            // A clean leave: revoked and committed first.
            drop(children[step].stdin.take());
            let _ = tokio::time::timeout(Duration::from_secs(30), children[step].wait()).await;
        } else {
            children[step].start_kill().expect("SIGKILL");
            let _ = children[step].wait().await;
            bound += owned as u64 * per_partition * 2;
        }
        children[step] = spawn(step);
    }
    eventually(Duration::from_secs(180), "every job handled", || {
        printed.lock().unwrap().jobs_done().len() as u64 == N
    })
    .await;
    for child in &mut children {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    let done: Vec<u64> = printed.lock().unwrap().done.iter().map(|d| d.1).collect();
    let twice = done.len() as u64 - N;
    eprintln!("churn ({protocol}): {N} jobs, {twice} handled twice (bound {bound})");
    assert_eq!(
        done.iter().copied().collect::<BTreeSet<_>>(),
        (0..N).collect::<BTreeSet<_>>(),
        "no job lost"
    );
    assert!(
        twice <= bound,
        "{twice} jobs handled twice, more than {bound}"
    );
    publisher.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_killed_and_leaving_under_load_lose_nothing() {
    churn("consumer").await;
}

/// The same churn with the classic protocol: unaffected by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_members_killed_and_leaving_under_load_lose_nothing() {
    churn("classic").await;
}

/// A member's rack (`client_rack`) reaches its group's coordinator under
/// each protocol: in the classic subscription, and in the heartbeats of
/// the consumer and share protocols, as the coordinator describes the
/// member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_rack_reaches_the_coordinator_under_every_protocol() {
    let setup = Setup::start("rack", KafkaBroker::builder(), 2).await;
    let cluster = kavari_wire::cluster::Cluster::new(
        setup.broker.bootstrap_list(),
        "rack".into(),
        Duration::from_secs(10),
    );
    /// How a member of each kind joins group `g`.
    type Join = fn(KavariBuilder, &str) -> KavariBuilder;
    let kinds: [(&str, Join); 3] = [
        ("classic", |b, g| b.group_id(g)),
        ("consumer", |b, g| {
            b.group_id(g).group_protocol(GroupProtocol::Consumer)
        }),
        ("share", |b, g| b.share_group(g)),
    ];
    for (kind, join) in kinds {
        let group = kavari_testcontainers::unique_name(&format!("rack-{kind}"));
        let rack = format!("zone-{kind}");
        let builder = Kavari::builder(setup.broker.bootstrap_servers())
            .topic_prefix(&setup.prefix)
            .client_rack(&rack);
        let m = join(builder, &group).build().await.expect("build");
        m.subscribe::<crate::Ticket, _>(Seen::default())
            .expect("subscribe");
        m.start().await.expect("start");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let racks = loop {
            let described = kavari_group::admin::describe_group(&cluster, &group).await;
            let racks: Vec<Option<String>> = described
                .map(|d| d.members.into_iter().map(|m| m.rack).collect())
                .unwrap_or_default();
            if !racks.is_empty() || tokio::time::Instant::now() > deadline {
                break racks;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(racks, [Some(rack)], "the {kind} group's member");
        m.shutdown().await.expect("shutdown");
    }
}
