//! Share groups (KIP-932, `share_group`): members receive records of the
//! same partitions, each record acquired and acknowledged one by one; a
//! Java share consumer and a Kavari member share one group's records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{HandlerError, Kavari, MessageContext, MessageHandler, ProcessingOrder};
use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;

use crate::java_member::JavaMember;
use crate::{Seen, Setup, Ticket, tickets};

/// Every ticket a member handled, with its delivery count.
#[derive(Clone, Default)]
struct Jobs(Arc<Mutex<Vec<(u64, u16)>>>);

impl MessageHandler<Ticket> for Jobs {
    async fn handle(&self, t: Ticket, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((t.seq, ctx.delivery_count));
        Ok(())
    }
}

/// A started member of share group `group` handling tickets with
/// `handler`, `in_flight` records side by side (the default when `None`).
async fn share_member<H: MessageHandler<Ticket>>(
    setup: &Setup,
    group: &str,
    in_flight: Option<usize>,
    handler: H,
) -> Kavari {
    let mut builder = Kavari::builder(setup.broker.bootstrap_servers())
        .topic_prefix(&setup.prefix)
        .share_group(group);
    if let Some(max_in_flight) = in_flight {
        builder = builder.processing_order(ProcessingOrder::Unordered { max_in_flight });
    }
    let m = builder.build().await.expect("build");
    m.subscribe::<Ticket, _>(handler).expect("subscribe");
    m.start().await.expect("start");
    m
}

/// Six members of one share group on a two-partition topic: all six get
/// work, and each of 5,000 jobs is handled and accepted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_share_members_on_two_partitions_all_work_and_handle_each_job_once() {
    const N: u64 = 5_000;
    let setup = Setup::start("share", KafkaBroker::builder(), 2).await;
    let group = kavari_testcontainers::unique_name("share");
    let jobs: Vec<Jobs> = (0..6).map(|_| Jobs::default()).collect();
    let mut members = Vec::new();
    for j in &jobs {
        members.push(share_member(&setup, &group, Some(4), j.clone()).await);
    }
    eventually(
        Duration::from_secs(60),
        "every member has partitions",
        || {
            members
                .iter()
                .all(|m| m.health().share.is_some_and(|s| !s.partitions.is_empty()))
        },
    )
    .await;
    let publisher = setup.publisher().await;
    for chunk in tickets(0..N).chunks(1_000) {
        for r in publisher.publish_batch(chunk).await {
            r.expect("publish");
        }
    }
    let handled = || -> Vec<(u64, u16)> {
        jobs.iter()
            .flat_map(|j| j.0.lock().unwrap().clone())
            .collect()
    };
    eventually(Duration::from_secs(120), "every job handled", || {
        handled().iter().map(|h| h.0).collect::<BTreeSet<_>>().len() as u64 == N
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_member: Vec<usize> = jobs.iter().map(|j| j.0.lock().unwrap().len()).collect();
    eprintln!("share group: jobs per member {per_member:?}");
    assert!(
        per_member.iter().all(|n| *n > 0),
        "all six worked: {per_member:?}"
    );
    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for (seq, _) in handled() {
        *times.entry(seq).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs handled twice: {twice:?}");
    let accepted: u64 = members
        .iter()
        .map(|m| m.health().share.map_or(0, |s| s.accepted))
        .sum();
    assert_eq!(accepted, N, "each accepted once");
    for m in members {
        m.shutdown().await.expect("shutdown");
    }
    // The broker's view: every record was accepted, so a new member of
    // the group is given none of them.
    let later = Jobs::default();
    let newcomer = share_member(&setup, &group, Some(4), later.clone()).await;
    eventually(
        Duration::from_secs(60),
        "the newcomer has partitions",
        || {
            newcomer
                .health()
                .share
                .is_some_and(|s| !s.partitions.is_empty())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        later.0.lock().unwrap().is_empty(),
        "accepted records delivered again"
    );
    newcomer.shutdown().await.expect("shutdown");
    publisher.shutdown().await.expect("shutdown");
}

/// Fails ticket 1's first two deliveries (retriable) and every delivery of
/// ticket 2; counts deliveries by seq.
#[derive(Clone, Default)]
struct Flaky(Arc<Mutex<BTreeMap<u64, Vec<u16>>>>);

impl MessageHandler<Ticket> for Flaky {
    async fn handle(&self, t: Ticket, ctx: &MessageContext) -> Result<(), HandlerError> {
        let attempts = {
            let mut seen = self.0.lock().unwrap();
            let d = seen.entry(t.seq).or_default();
            d.push(ctx.delivery_count);
            d.len()
        };
        match t.seq {
            1 if attempts <= 2 => Err(HandlerError::new("the service is down")),
            2 => Err(HandlerError::new("never works")),
            _ => Ok(()),
        }
    }
}

/// The letters on the dead-letter topic, by seq.
#[derive(Clone, Default)]
struct Letters(Arc<Mutex<Vec<u64>>>);

impl MessageHandler<Ticket> for Letters {
    async fn handle(&self, t: Ticket, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(t.seq);
        Ok(())
    }
}

/// A retriable failure releases the record: the broker delivers it again
/// (the delivery count grows) until it is accepted. One that always fails
/// stops at the delivery limit: rejected after its dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_released_then_given_up_at_the_limit() {
    let setup = Setup::start("share-fail", KafkaBroker::builder(), 1).await;
    let dlq = format!("{}.dlq", setup.topic);
    setup.broker.create_topic(&dlq, 1).await.expect("dlq");
    let group = kavari_testcontainers::unique_name("share-fail");
    let flaky = Flaky::default();
    let m = share_member(&setup, &group, None, flaky.clone()).await;
    let publisher = setup.publisher().await;
    for r in publisher.publish_batch(&tickets(0..4)).await {
        r.expect("publish");
    }
    eventually(Duration::from_secs(90), "every ticket settled", || {
        m.health()
            .share
            .is_some_and(|s| s.accepted == 3 && s.rejected == 1)
    })
    .await;
    let deliveries = flaky.0.lock().unwrap().clone();
    assert_eq!(deliveries[&0], [1], "ticket 0 delivered once");
    assert_eq!(
        deliveries[&1],
        [1, 2, 3],
        "ticket 1 released twice, accepted on the third"
    );
    assert_eq!(
        deliveries[&2],
        [1, 2, 3, 4, 5],
        "ticket 2 delivered up to the limit (5)"
    );
    let share = m.health().share.expect("share health");
    assert_eq!((share.released, share.in_flight), (6, 0), "{share:?}");
    // Its dead letter, on the dead-letter topic.
    let letters = Letters::default();
    let reader = kavari_tests::consumer(
        &setup.broker,
        &kavari_testcontainers::unique_name("share-dlq"),
    )
    .topic_for::<Ticket>(dlq)
    .build()
    .await
    .expect("build");
    reader
        .subscribe::<Ticket, _>(letters.clone())
        .expect("subscribe");
    reader.start().await.expect("start");
    eventually(Duration::from_secs(60), "the dead letter", || {
        *letters.0.lock().unwrap() == [2]
    })
    .await;
    for manager in [m, reader, publisher] {
        manager.shutdown().await.expect("shutdown");
    }
}

/// Waits `delay` per job, then records it.
#[derive(Clone, Default)]
struct Slow(Arc<Mutex<Vec<(u64, std::time::Instant)>>>);

impl MessageHandler<Ticket> for Slow {
    async fn handle(&self, t: Ticket, _: &MessageContext) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0
            .lock()
            .unwrap()
            .push((t.seq, std::time::Instant::now()));
        Ok(())
    }
}

/// A member shut down with records acquired releases them: the other
/// member gets them well before the lock timeout (10 s on the test
/// cluster); and a consumer group on the same topic sees every record as
/// well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_shut_down_releases_what_it_holds() {
    // About 6 s of work for one member.
    const N: u64 = 400;
    let setup = Setup::start("share-release", KafkaBroker::builder(), 1).await;
    let group = kavari_testcontainers::unique_name("share-release");
    let (first, second) = (Slow::default(), Slow::default());
    let leaving = share_member(&setup, &group, Some(20), first.clone()).await;
    let classic = crate::Seen::default();
    let group_member = setup
        .member(
            &kavari_testcontainers::unique_name("classic"),
            &classic,
            |b| b,
        )
        .await;
    let publisher = setup.publisher().await;
    for r in publisher.publish_batch(&tickets(0..N)).await {
        r.expect("publish");
    }
    eventually(Duration::from_secs(60), "the first member busy", || {
        leaving
            .health()
            .share
            .is_some_and(|s| s.accepted >= 20 && s.in_flight > 0)
    })
    .await;
    let staying = share_member(&setup, &group, Some(20), second.clone()).await;
    eventually(Duration::from_secs(60), "the second member joined", || {
        staying
            .health()
            .share
            .is_some_and(|s| !s.partitions.is_empty())
    })
    .await;
    let left_at = std::time::Instant::now();
    leaving.shutdown().await.expect("shutdown");
    let released = leaving.health().share.map_or(0, |s| s.released);
    assert!(
        released > 0,
        "the first member released what it had not begun"
    );
    let done = || -> BTreeSet<u64> {
        first
            .0
            .lock()
            .unwrap()
            .iter()
            .chain(second.0.lock().unwrap().iter())
            .map(|j| j.0)
            .collect()
    };
    eventually(Duration::from_secs(60), "every job handled", || {
        done().len() as u64 == N
    })
    .await;
    let first_after = second
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|j| j.1)
        .filter(|at| *at >= left_at)
        .min()
        .expect("the second member handled jobs after the first left");
    let took = first_after.duration_since(left_at);
    eprintln!(
        "share release: the second member handled {} jobs, the first of them {took:?} after the first member left",
        second.0.lock().unwrap().len()
    );
    assert!(
        took < Duration::from_secs(5),
        "released records waited for the lock timeout (10 s): {took:?}"
    );
    eventually(
        Duration::from_secs(60),
        "the consumer group saw every record",
        || classic.seqs().len() as u64 == N,
    )
    .await;
    for manager in [staying, group_member, publisher] {
        manager.shutdown().await.expect("shutdown");
    }
}

/// Three member processes of a share group; one is SIGKILLed while its
/// handlers run. The records it held are delivered to the others once the
/// broker releases them (when the dead member's connections close, at the
/// latest when their locks run out: 10 s on the test cluster): none is
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_killed_member_go_to_the_others_after_the_lock_timeout() {
    use kavari::KafkaMessage;
    use kavari_tests::{CrashJob, Printed, spawn_consumer};
    const N: u64 = 600;
    let setup = Setup::start("share-kill", KafkaBroker::builder(), 1).await;
    let topic = format!("{}{}", setup.prefix, CrashJob::TOPIC);
    setup.broker.create_topic(&topic, 2).await.expect("topic");
    let group = kavari_testcontainers::unique_name("share-kill");
    let settings = [
        format!("KAVARI_TOPIC_PREFIX={}", setup.prefix),
        format!("KAVARI_SHARE_GROUP={group}"),
        "KAVARI_PROCESSING_ORDER=unordered:8".to_string(),
        "JOB_MS=20".to_string(),
    ];
    let bin = env!("CARGO_BIN_EXE_kavari-test-consumer");
    let bootstrap = setup.broker.bootstrap_servers();
    let printed: Arc<Mutex<Printed>> = Arc::default();
    let mut children: Vec<_> = (0..3)
        .map(|i| spawn_consumer(bin, &bootstrap, &group, i, &settings, &printed))
        .collect();
    eventually(
        Duration::from_secs(60),
        "every member has partitions",
        || printed.lock().unwrap().owns.iter().all(|n| *n > 0),
    )
    .await;
    let publisher = setup.publisher().await;
    let jobs = CrashJob::numbered(N, N);
    for r in publisher.publish_batch(&jobs).await {
        r.expect("publish");
    }
    // The victim: a process inside its handlers, well into its work.
    let busy = |i: usize| {
        let printed = printed.lock().unwrap();
        let (begun, done) = printed.begun_and_done(i);
        done > 10 && begun > done
    };
    eventually(
        Duration::from_secs(60),
        "a process inside its handlers",
        || (0..3).any(busy),
    )
    .await;
    let victim = (0..3).find(|i| busy(*i)).unwrap_or(0);
    children[victim].start_kill().expect("SIGKILL");
    let _ = children[victim].wait().await;
    let unfinished: BTreeSet<u64> = {
        let printed = printed.lock().unwrap();
        let done: BTreeSet<u64> = printed
            .done
            .iter()
            .filter(|d| d.0 == victim)
            .map(|d| d.1)
            .collect();
        printed
            .begun
            .iter()
            .filter(|b| b.0 == victim && !done.contains(&b.1))
            .map(|b| b.1)
            .collect()
    };
    eventually(Duration::from_secs(120), "every job done", || {
        printed.lock().unwrap().jobs_done().len() as u64 == N
    })
    .await;
    let by_others: BTreeSet<u64> = printed
        .lock()
        .unwrap()
        .done
        .iter()
        .filter(|d| d.0 != victim)
        .map(|d| d.1)
        .collect();
    eprintln!(
        "share kill: {} jobs in the killed member's handlers, all done by the others",
        unfinished.len()
    );
    assert!(!unfinished.is_empty());
    assert!(
        unfinished.is_subset(&by_others),
        "jobs the killed member held were lost: {:?}",
        unfinished.difference(&by_others).collect::<Vec<_>>()
    );
    for (_, child) in children
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != victim)
    {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    publisher.shutdown().await.expect("shutdown");
}

/// A Java share consumer (kafka-clients 4.4, `peers/JavaMember.java`, `share`)
/// and a Kavari member in one share group: both get records, and each of
/// 5,000 (more if the JVM was slow to take part) is handled once, by one of
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_share_consumer_and_a_kavari_member_share_the_records() {
    const N: u64 = 5_000;
    let setup = Setup::start("share-java", KafkaBroker::builder(), 2).await;
    let group = kavari_testcontainers::unique_name("share-java");
    let seen = Seen::default();
    let member = share_member(&setup, &group, Some(4), seen.clone()).await;
    let java = JavaMember::spawn(&setup, &group, "share");
    let cluster = kavari_wire::cluster::Cluster::new(
        setup.broker.bootstrap_list(),
        "share-java".into(),
        Duration::from_secs(10),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let members = kavari_group::admin::describe_group(&cluster, &group)
            .await
            .map_or(0, |d| d.members.len());
        if members == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Java member never joined ({members} members)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let publisher = setup.publisher().await;
    let (java_handled, mut child) = (java.handled, java.child);
    // A JVM on a loaded machine polls late, after Kavari has handled all:
    // records go out a hundred at a time until Java has handled one.
    let mut published = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while java_handled.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Java member handled nothing of {published} records"
        );
        for r in publisher
            .publish_batch(&tickets(published..published + 100))
            .await
        {
            r.expect("publish");
        }
        published += 100;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total = N.max(published);
    for chunk in tickets(published..total).chunks(1_000) {
        for r in publisher.publish_batch(chunk).await {
            r.expect("publish");
        }
    }
    eventually(
        Duration::from_secs(120),
        "every record handled by one side",
        || {
            let java = java_handled.lock().unwrap();
            java.union(&seen.positions()).count() as u64 == total
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (java_count, kavari_count) = (java_handled.lock().unwrap().len(), seen.all().len());
    eprintln!("share interop: Java handled {java_count}, Kavari {kavari_count} of {total}");
    assert!(
        java_count > 0 && kavari_count > 0,
        "both handled records: Java {java_count}, Kavari {kavari_count}"
    );
    assert_eq!(
        (java_count + kavari_count) as u64,
        total,
        "no record handled twice"
    );
    drop(child.stdin.take());
    // Its close waits for its acknowledgements (up to 30 s).
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    assert!(
        java.stopped.load(std::sync::atomic::Ordering::SeqCst),
        "the Java member stopped cleanly"
    );
    member.shutdown().await.expect("shutdown");
    publisher.shutdown().await.expect("shutdown");
}
