//! Exactly-once handling (`exactly_once`): each record's publishes, made
//! through its context's transaction, land with its offset commit or not
//! at all; a failed attempt's publishes are aborted before the retry, and
//! a dead letter lands with the commit. Under both group protocols: the
//! consumer protocol's (KIP-848) member epoch is the generation the
//! offsets go into a transaction with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{
    FibonacciRetryPolicy, GroupProtocol, HandlerError, Isolation, KafkaMessage, Kavari,
    MessageContext, MessageHandler,
};
use kavari_testcontainers::KafkaBroker;
use kavari_tests::{consumer, eventually};
use serde::{Deserialize, Serialize};

use crate::{Setup, Ticket, tickets};

/// What handling a ticket publishes.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "cluster.billed")]
pub(crate) struct Billed {
    #[kavari(key)]
    key: String,
    seq: u64,
}

/// Publishes a `Billed` per ticket in the record's transaction; tickets
/// whose seq ends in 3 fail their first attempt after publishing, ticket 7
/// fails every attempt (a permanent error: dead-lettered).
#[derive(Clone, Default)]
struct Bill(Arc<Mutex<BTreeMap<u64, u32>>>);

impl MessageHandler<Ticket> for Bill {
    async fn handle(&self, t: Ticket, ctx: &MessageContext) -> Result<(), HandlerError> {
        let tx = ctx
            .transaction()
            .ok_or_else(|| HandlerError::permanent("no transaction"))?;
        tx.publish(&Billed {
            key: t.key.clone(),
            seq: t.seq,
        })
        .await?;
        let attempts = {
            let mut calls = self.0.lock().unwrap();
            let n = calls.entry(t.seq).or_default();
            *n += 1;
            *n
        };
        if t.seq == 7 {
            return Err(HandlerError::permanent("ticket 7 cannot be billed"));
        }
        if t.seq % 10 == 3 && attempts == 1 {
            return Err(HandlerError::new("the billing service timed out"));
        }
        Ok(())
    }
}

/// Every `Billed` read, by seq, with how often.
#[derive(Clone, Default)]
struct Read(Arc<Mutex<BTreeMap<u64, usize>>>);

impl MessageHandler<Billed> for Read {
    async fn handle(&self, b: Billed, _: &MessageContext) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(b.seq).or_default() += 1;
        Ok(())
    }
}

/// The tickets read from the dead-letter topic.
#[derive(Clone, Default)]
struct Letters(Arc<Mutex<Vec<u64>>>);

impl MessageHandler<Ticket> for Letters {
    async fn handle(&self, t: Ticket, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(t.seq);
        Ok(())
    }
}

/// Whether `group` is a group of the consumer protocol (KIP-848), as its
/// coordinator describes it.
async fn speaks_consumer_protocol(setup: &Setup, group: &str) -> bool {
    let cluster = kavari_wire::cluster::Cluster::new(
        setup.broker.bootstrap_list(),
        "eos".into(),
        Duration::from_secs(10),
    );
    let described = kavari_group::admin::describe_group(&cluster, group)
        .await
        .expect("describe the group");
    described.epochs.is_some()
}

async fn reader(setup: &Setup, read: &Read, isolation: Isolation) -> Kavari {
    let m = consumer(
        &setup.broker,
        &kavari_testcontainers::unique_name("billed-reader"),
    )
    .topic_prefix(&setup.prefix)
    .isolation_level(isolation)
    .build()
    .await
    .expect("build");
    m.subscribe::<Billed, _>(read.clone()).expect("subscribe");
    m.start().await.expect("start");
    m
}

/// A transaction per record: ticket 3's handler runs exactly twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_records_publishes_land_once_with_its_commit() {
    bill_tickets(1, GroupProtocol::Classic).await;
}

/// Records sharing transactions (the default, up to 100): a failure aborts
/// the earlier records' publishes too, and they are handled again; still
/// one bill per ticket lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sharing_a_transaction_land_once_after_a_failure() {
    bill_tickets(100, GroupProtocol::Classic).await;
}

/// The same under the consumer group protocol (KIP-848): the offsets go
/// into the transaction with the member's epoch as its generation, and
/// the coordinator takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_land_once_with_their_commit_under_the_consumer_protocol() {
    bill_tickets(100, GroupProtocol::Consumer).await;
}

/// Bills 30 tickets exactly once, `per_transaction` records of a partition
/// per transaction at most, as a member of `protocol`'s group, and checks
/// what read_committed readers see.
async fn bill_tickets(per_transaction: usize, protocol: GroupProtocol) {
    const N: u64 = 30;
    let setup = Setup::start("eos", KafkaBroker::builder(), 3).await;
    let billed = format!("{}{}", setup.prefix, Billed::TOPIC);
    setup.broker.create_topic(&billed, 3).await.expect("topic");
    let dlq = format!("{}.dlq", setup.topic);
    setup.broker.create_topic(&dlq, 3).await.expect("dlq");
    let publisher = setup.publisher().await;
    for r in publisher.publish_batch(&tickets(0..N)).await {
        r.expect("publish");
    }

    let bill = Bill::default();
    let group = kavari_testcontainers::unique_name("eos");
    let m = consumer(&setup.broker, &group)
        .topic_prefix(&setup.prefix)
        .group_protocol(protocol)
        .exactly_once("billing")
        .records_per_transaction(per_transaction)
        .delivery_retry_policy(FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(20)))
        .build()
        .await
        .expect("build");
    m.subscribe::<Ticket, _>(bill.clone()).expect("subscribe");
    m.start().await.expect("start");
    eventually(Duration::from_secs(90), "every ticket committed", || {
        let h = m.health();
        h.partitions.len() == 3
            && h.partitions
                .iter()
                .map(|p| p.committed.unwrap_or(0))
                .sum::<i64>()
                == N as i64
    })
    .await;
    assert_eq!(
        speaks_consumer_protocol(&setup, &group).await,
        protocol == GroupProtocol::Consumer,
        "the group speaks {protocol:?}"
    );

    let (committed, all) = (Read::default(), Read::default());
    let r1 = reader(&setup, &committed, Isolation::ReadCommitted).await;
    let r2 = reader(&setup, &all, Isolation::ReadUncommitted).await;
    let want: BTreeMap<u64, usize> = (0..N).filter(|s| *s != 7).map(|s| (s, 1)).collect();
    eventually(Duration::from_secs(60), "every bill read committed", || {
        *committed.0.lock().unwrap() == want
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "the aborted attempts read uncommitted",
        || all.0.lock().unwrap().values().sum::<usize>() > want.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        *committed.0.lock().unwrap(),
        want,
        "one bill per ticket, none of an aborted attempt, none of the dead-lettered ticket"
    );
    let attempts = bill.0.lock().unwrap().clone();
    if per_transaction == 1 {
        assert_eq!(attempts[&3], 2, "ticket 3 was retried once");
    } else {
        // Handled again when a later record of its transaction failed.
        assert!(attempts[&3] >= 2, "ticket 3 was retried: {attempts:?}");
        assert!(
            attempts.values().sum::<u32>() > N as u32 + 3,
            "records that shared a failed transaction were handled again: {attempts:?}"
        );
    }
    assert!(attempts[&7] >= 1, "ticket 7 was tried");
    assert_eq!(
        m.health()
            .partitions
            .iter()
            .map(|p| p.dead_lettered)
            .sum::<u64>(),
        1
    );
    // The dead letter, committed with the ticket's offset: read as a
    // ticket from the dead-letter topic, read_committed.
    let letters = Letters::default();
    let dead = consumer(
        &setup.broker,
        &kavari_testcontainers::unique_name("eos-dlq"),
    )
    .topic_for::<Ticket>(dlq)
    .build()
    .await
    .expect("build");
    dead.subscribe::<Ticket, _>(letters.clone())
        .expect("subscribe");
    dead.start().await.expect("start");
    eventually(Duration::from_secs(60), "the dead letter", || {
        !letters.0.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        *letters.0.lock().unwrap(),
        [7],
        "ticket 7's dead letter, once"
    );
    for manager in [m, r1, r2, publisher, dead] {
        manager.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn exactly_once_refuses_what_it_cannot_keep() {
    let b = || {
        Kavari::builder("127.0.0.1:1")
            .group_id("g")
            .exactly_once("p")
    };
    assert!(
        b().processing_order(kavari::ProcessingOrder::Key { max_in_flight: 4 })
            .build()
            .await
            .is_err(),
        "exactly_once needs partition order"
    );
    let m = b().build().await.expect("build");
    m.subscribe::<Ticket, _>(Bill::default())
        .expect("one handler");
    assert!(matches!(
        m.subscribe::<Ticket, _>(SecondTicketHandler),
        Err(kavari::SubscribeError::ExactlyOnceOneHandler { .. })
    ));
}

/// A second handler type for tickets.
struct SecondTicketHandler;

impl MessageHandler<Ticket> for SecondTicketHandler {
    async fn handle(&self, _: Ticket, _: &MessageContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Counts each job's results.
#[derive(Clone, Default)]
struct Results(Arc<Mutex<BTreeMap<u64, usize>>>);

impl MessageHandler<kavari_tests::CrashJobDone> for Results {
    async fn handle(
        &self,
        done: kavari_tests::CrashJobDone,
        _: &MessageContext,
    ) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(done.seq).or_default() += 1;
        Ok(())
    }
}

/// Three consumer processes handling 20,000 jobs of 1 ms exactly once
/// (up to 100 records per transaction), two of them SIGKILLed mid-stream
/// one after the other (each replaced): jobs in flight at a kill are
/// handled again by the partition's next owner, yet read_committed shows
/// exactly one result per job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_killed_mid_stream_leave_one_result_per_job() {
    kill_members_mid_stream("classic").await;
}

/// The same under the consumer group protocol (KIP-848): the broker
/// hands a killed member's partitions on when its session ends, and the
/// next owner's transactional producer fences the dead one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_killed_mid_stream_leave_one_result_per_job_under_the_consumer_protocol() {
    kill_members_mid_stream("consumer").await;
}

/// Handles 20,000 jobs in three consumer processes of `protocol`
/// (`KAVARI_GROUP_PROTOCOL`), two of them SIGKILLed mid-stream.
async fn kill_members_mid_stream(protocol: &str) {
    use kavari_tests::{CrashJob, CrashJobDone, Printed, spawn_consumer};
    const N: u64 = 20_000;
    let setup = Setup::start("eos-kill", KafkaBroker::builder(), 1).await;
    for topic in [CrashJob::TOPIC, CrashJobDone::TOPIC] {
        let topic = format!("{}{topic}", setup.prefix);
        setup.broker.create_topic(&topic, 6).await.expect("topic");
    }
    let group = kavari_testcontainers::unique_name("eos-kill");
    let settings = [
        format!("KAVARI_TOPIC_PREFIX={}", setup.prefix),
        "KAVARI_EXACTLY_ONCE=crash".to_string(),
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
        owns.iter().all(|n| *n > 0) && owns.iter().sum::<usize>() == 6
    })
    .await;
    assert_eq!(
        speaks_consumer_protocol(&setup, &group).await,
        protocol == "consumer",
        "the group speaks {protocol}"
    );
    let publisher = setup.publisher().await;
    let jobs = CrashJob::numbered(N, N);
    for r in publisher.publish_batch(&jobs).await {
        r.expect("publish");
    }
    for (victim, after) in [(0, N / 4), (1, N / 2)] {
        // Inside a handler: it began a job it has not finished.
        eventually(
            Duration::from_secs(120),
            "the victim inside a handler",
            || {
                let printed = printed.lock().unwrap();
                let (begun, done) = printed.begun_and_done(victim);
                printed.done.len() as u64 > after && begun > done
            },
        )
        .await;
        children[victim].start_kill().expect("SIGKILL");
        let _ = children[victim].wait().await;
        children[victim] = spawn(victim);
    }

    let results = Results::default();
    let reader = consumer(
        &setup.broker,
        &kavari_testcontainers::unique_name("eos-results"),
    )
    .topic_prefix(&setup.prefix)
    .build()
    .await
    .expect("build");
    reader
        .subscribe::<CrashJobDone, _>(results.clone())
        .expect("subscribe");
    reader.start().await.expect("start");
    eventually(Duration::from_secs(180), "a result for every job", || {
        results.0.lock().unwrap().len() as u64 == N
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (handled, begun) = {
        let printed = printed.lock().unwrap();
        (printed.done.len(), printed.begun.len())
    };
    let twice: Vec<(u64, usize)> = results
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| **n != 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    eprintln!(
        "exactly-once crash test: {N} jobs, begun {begun} times, handled {handled} times, results twice: {twice:?}"
    );
    assert!(twice.is_empty(), "one result per job: {twice:?}");
    assert!(
        begun as u64 > N,
        "the jobs in flight at the kills were begun again"
    );
    for child in &mut children {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    reader.shutdown().await.expect("shutdown");
    publisher.shutdown().await.expect("shutdown");
}
