//! read_committed against transactions a Java transactional producer
//! (kafka-clients 4.4, `tests/peers/JavaTransactions.java`) commits and
//! aborts on the cluster: a Kavari member (read_committed, the default)
//! handles exactly the committed records; one reading uncommitted handles
//! the aborted ones too, so the log really holds them. And Kavari's own
//! transaction calls (kavari-wire's `transaction`), read the same way.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kavari::Isolation;
use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;

use crate::{Seen, Setup};

const TRANSACTIONS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_handles_only_what_a_java_transaction_committed() {
    let setup = Setup::start("txn", KafkaBroker::builder(), 3).await;
    let (broker, topic) = (&setup.broker, &setup.topic);

    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/JavaTransactions.java");
    let out =
        tokio::process::Command::from(setup.cluster().java_peer(std::path::Path::new(source)))
            .args([
                broker.bootstrap_servers(),
                topic.clone(),
                kavari_testcontainers::unique_name("txn-id"),
                TRANSACTIONS.to_string(),
            ])
            .output()
            .await
            .expect("java");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("DONE"),
        "the Java producer: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed: BTreeSet<u64> = (0..TRANSACTIONS)
        .filter(|t| t % 2 == 0)
        .flat_map(|t| t * 5..t * 5 + 5)
        .collect();
    let everything: BTreeSet<u64> = (0..TRANSACTIONS * 5).collect();

    let read = |isolation, seen: &Seen| {
        let group = kavari_testcontainers::unique_name("txn-group");
        let seen = seen.clone();
        let setup = &setup;
        async move {
            setup
                .member(&group, &seen, |b| b.isolation_level(isolation))
                .await
        }
    };
    let (committed_only, all) = (Seen::default(), Seen::default());
    let reader = read(Isolation::ReadCommitted, &committed_only).await;
    let uncommitted = read(Isolation::ReadUncommitted, &all).await;
    eventually(
        Duration::from_secs(60),
        "every record read uncommitted",
        || all.seqs() == everything,
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "every committed record handled",
        || committed_only.seqs().len() >= committed.len(),
    )
    .await;
    // Both readers are at the end of the log: what read_committed handled
    // is final.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(committed_only.seqs(), committed);
    reader.shutdown().await.expect("shutdown");
    uncommitted.shutdown().await.expect("shutdown");
}

/// Produces `seqs` as Tickets in one transactional batch of `producer`
/// (from `base_sequence`) to partition 0's leader.
async fn produce_in_transaction(
    cluster: &kavari_wire::cluster::Cluster,
    transactional_id: &str,
    producer: kavari_wire::producer_id::ProducerIdentity,
    topic: &str,
    base_sequence: i32,
    seqs: std::ops::Range<u64>,
) -> Result<(), kavari_wire::WireError> {
    use kavari_wire::Compression;
    use kavari_wire::produce::{PartitionBatch, Produce};
    use kavari_wire::record_batch::write::{Record, RecordBatch, mark_transactional, stamp};

    let mut batch = RecordBatch::with_capacity(1024);
    for t in crate::tickets(seqs) {
        let m = kavari::codec::encode(&t).expect("encode");
        let record = Record {
            key: m.key.as_deref(),
            value: &m.value,
            headers: &m.headers,
        };
        batch.push(&record, chrono::Utc::now().timestamp_millis());
    }
    let mut bytes = batch.finish(Compression::None).expect("finish");
    assert!(stamp(
        &mut bytes,
        producer.id,
        producer.epoch,
        base_sequence
    ));
    assert!(mark_transactional(&mut bytes));
    let request = Produce {
        transactional_id: Some(transactional_id.to_string()),
        acks: -1,
        timeout_ms: 30_000,
        batches: vec![PartitionBatch {
            topic: kafka_protocol::messages::TopicName(topic.to_string().into()),
            partition: 0,
            records: bytes.into(),
        }],
    };
    let conn = kavari_tests::leader(cluster, topic, 0).await;
    let answer = conn.send_produce(&request).await?.await?;
    for t in &answer.responses {
        for p in &t.partition_responses {
            if let Some(e) = kafka_protocol::error::ParseResponseErrorCode::err(p.error_code) {
                return Err(kavari_wire::WireError::broker("Produce", e, None));
            }
        }
    }
    Ok(())
}

/// Kavari's transaction calls on the cluster: an aborted transaction's
/// records are never read_committed, a committed one's are; a newer
/// instance of the transactional id fences the older, whose transaction
/// calls and batches are refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_id_aborts_commits_and_fences_on_the_wire() {
    use kavari_wire::transaction::TransactionCoordinator;

    let setup = Setup::start("txn-wire", KafkaBroker::builder(), 1).await;
    let topic = setup.topic.clone();
    let cluster = Arc::new(kavari_wire::cluster::Cluster::new(
        setup.broker.bootstrap_list(),
        "t".into(),
        Duration::from_secs(30),
    ));
    let id = kavari_testcontainers::unique_name("txn-wire");
    let coordinator = |id: &str| {
        TransactionCoordinator::new(
            Arc::clone(&cluster),
            id,
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
    };
    let old = coordinator(&id);
    let first = old.init(None).await.expect("init");
    let here = [(topic.as_str(), 0)];

    old.add_partitions(first, &here).await.expect("add");
    produce_in_transaction(&cluster, &id, first, &topic, 0, 0..3)
        .await
        .expect("produce");
    old.end(first, false).await.expect("abort");

    old.add_partitions(first, &here).await.expect("add");
    produce_in_transaction(&cluster, &id, first, &topic, 3, 3..6)
        .await
        .expect("produce");
    old.end(first, true).await.expect("commit");

    // A newer instance: the older one is fenced.
    let new = coordinator(&id);
    let second = new.init(None).await.expect("init again");
    assert!(
        second.id != first.id || second.epoch > first.epoch,
        "a new epoch: {first:?} then {second:?}"
    );
    let fenced = old.add_partitions(first, &here).await.expect_err("fenced");
    assert!(fenced.is_fenced(), "{fenced}");
    let stale = produce_in_transaction(&cluster, &id, first, &topic, 6, 100..101)
        .await
        .expect_err("a zombie's batch is refused");
    assert!(
        matches!(
            stale.response_error(),
            Some(ResponseError::InvalidProducerEpoch | ResponseError::ProducerFenced)
        ),
        "{stale}"
    );
    // Asking for the id again with its old epoch does not steal it back.
    let fenced = old.init(Some(first)).await.expect_err("fenced for good");
    assert!(fenced.is_fenced(), "{fenced}");

    new.add_partitions(second, &here).await.expect("add");
    produce_in_transaction(&cluster, &id, second, &topic, 0, 6..9)
        .await
        .expect("produce");
    new.end(second, true).await.expect("commit");

    let (committed_only, all) = (Seen::default(), Seen::default());
    let reader = setup
        .member(
            &kavari_testcontainers::unique_name("txn-wire"),
            &committed_only,
            |b| b,
        )
        .await;
    let uncommitted = setup
        .member(&kavari_testcontainers::unique_name("txn-wire"), &all, |b| {
            b.isolation_level(Isolation::ReadUncommitted)
        })
        .await;
    eventually(
        Duration::from_secs(60),
        "every record read uncommitted",
        || all.seqs() == (0..9).collect::<BTreeSet<u64>>(),
    )
    .await;
    eventually(Duration::from_secs(60), "the committed records", || {
        committed_only.seqs().len() >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        committed_only.seqs(),
        (3..9).collect::<BTreeSet<u64>>(),
        "the aborted records and the zombie's are never read_committed"
    );
    reader.shutdown().await.expect("shutdown");
    uncommitted.shutdown().await.expect("shutdown");
}

/// Reads the setup's topic read_committed and read_uncommitted until the
/// second has `all`; returns what each saw.
async fn read_both(setup: &Setup, all: &BTreeSet<u64>) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let (committed_only, everything) = (Seen::default(), Seen::default());
    let name = || kavari_testcontainers::unique_name("txn-read");
    let reader = setup.member(&name(), &committed_only, |b| b).await;
    let uncommitted = setup
        .member(&name(), &everything, |b| {
            b.isolation_level(Isolation::ReadUncommitted)
        })
        .await;
    eventually(
        Duration::from_secs(60),
        "every record read uncommitted",
        || &everything.seqs() == all,
    )
    .await;
    // Both are at the end of the log once the uncommitted reader is: give
    // the committed reader the same rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    reader.shutdown().await.expect("shutdown");
    uncommitted.shutdown().await.expect("shutdown");
    (committed_only.seqs(), everything.seqs())
}

/// Publishes `seqs` as Tickets, one by one, in one transaction of `m`
/// that commits when `commit`, and aborts otherwise.
async fn in_transaction(
    m: &kavari::Kavari,
    seqs: std::ops::Range<u64>,
    commit: bool,
) -> Result<(), kavari::TransactionError> {
    m.transaction(|tx| async move {
        for t in crate::tickets(seqs) {
            tx.publish(&t).await?;
        }
        if commit {
            Ok(())
        } else {
            Err(kavari::HandlerError::new("the order is refused"))
        }
    })
    .await
}

/// A manager publishing in transactions of its own.
async fn transactional(setup: &Setup, id: &str) -> kavari::Kavari {
    kavari::Kavari::builder(setup.broker.bootstrap_servers())
        .topic_prefix(&setup.prefix)
        .transactional_id(id)
        .build()
        .await
        .expect("build")
}

/// `Kavari::transaction` commits what its body published when the body
/// returns `Ok`, and aborts it when the body returns `Err` or panics (the
/// panic goes on); a manager without a transactional id refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_commits_on_ok_and_aborts_on_err_or_panic() {
    use crate::{Ticket, tickets};
    use kavari::TransactionError;

    let setup = Setup::start("txn-scope", KafkaBroker::builder(), 3).await;
    let m = transactional(&setup, &kavari_testcontainers::unique_name("txn-scope")).await;
    in_transaction(&m, 0..3, true).await.expect("committed");
    let refused = in_transaction(&m, 3..5, false).await;
    assert!(
        matches!(&refused, Err(TransactionError::Aborted { cause }) if cause.to_string() == "the order is refused"),
        "{refused:?}"
    );

    let panicking = m.clone();
    let panicked = tokio::spawn(async move {
        panicking
            .transaction(|tx| async move {
                tx.publish(&Ticket {
                    key: "k5".into(),
                    seq: 5,
                })
                .await?;
                if tx
                    .publish(&Ticket {
                        key: "k6".into(),
                        seq: 6,
                    })
                    .await
                    .is_ok()
                {
                    panic!("a handler bug");
                }
                Ok::<(), kavari::HandlerError>(())
            })
            .await
    })
    .await;
    assert!(panicked.is_err_and(|e| e.is_panic()), "the panic goes on");

    let answer = m
        .transaction(|tx| async move {
            for t in tickets(7..9) {
                tx.publish(&t).await?;
            }
            Ok(42)
        })
        .await
        .expect("committed after an abort and a panic");
    assert_eq!(answer, 42, "the body's value comes back");

    let plain = kavari::Kavari::builder(setup.broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    assert!(matches!(
        plain.transaction(|_| async { Ok(()) }).await,
        Err(TransactionError::NotTransactional)
    ));

    // A batch: one produce per partition, every record its own offset.
    let delivered = m
        .transaction(|tx| async move { Ok(tx.publish_batch(&tickets(9..40)).await?) })
        .await
        .expect("a batch committed");
    let places: BTreeSet<(i32, String)> = delivered
        .iter()
        .map(|d| (d.partition, format!("{:?}", d.offset)))
        .collect();
    assert_eq!(places.len(), 31, "{delivered:?}");

    let (committed, all) = read_both(&setup, &(0..40).collect()).await;
    let mut expected: BTreeSet<u64> = [0, 1, 2, 7, 8].into_iter().collect();
    expected.extend(9..40);
    assert_eq!(
        committed, expected,
        "only the committed transactions are read_committed"
    );
    assert_eq!(all.len(), 40, "the aborted records are in the log");
    m.shutdown().await.expect("shutdown");
}

/// Two managers with one transactional id: the newer fences the older,
/// whose transactions fail as fenced from then on; nothing the older
/// writes afterwards is read_committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_instance_of_a_transactional_id_fences_the_older() {
    use kavari::TransactionError;

    let setup = Setup::start("txn-fence", KafkaBroker::builder(), 3).await;
    let id = kavari_testcontainers::unique_name("txn-fence");
    let old = transactional(&setup, &id).await;
    in_transaction(&old, 0..2, true).await.expect("committed");
    let new = transactional(&setup, &id).await;
    in_transaction(&new, 10..12, true)
        .await
        .expect("the newer commits");
    for attempt in 0..2 {
        let fenced = in_transaction(&old, 20..22, true).await;
        assert!(
            matches!(&fenced, Err(TransactionError::Fenced { transactional_id, .. }) if *transactional_id == id),
            "attempt {attempt}: {fenced:?}"
        );
    }
    in_transaction(&new, 12..13, true)
        .await
        .expect("the newer goes on");

    let (committed, all) = read_both(&setup, &[0, 1, 10, 11, 12].into_iter().collect()).await;
    assert_eq!(committed, all, "nothing of the older's after the fence");
    old.shutdown().await.expect("shutdown");
    new.shutdown().await.expect("shutdown");
}

/// What a writer process (`kavari-test-writer`) printed.
#[derive(Debug, Default)]
struct WriterLog {
    committed: Vec<u64>,
    fenced: Option<String>,
    failed: Vec<String>,
}

/// Starts writer process `writer` with transactional id `id`; its output
/// lands in the log.
fn spawn_writer(
    setup: &Setup,
    id: &str,
    writer: &str,
) -> (tokio::process::Child, Arc<std::sync::Mutex<WriterLog>>) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kavari-test-writer"))
        .args([&setup.broker.bootstrap_servers(), id, writer])
        .arg(format!("KAVARI_TOPIC_PREFIX={}", setup.prefix))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn writer");
    let log: Arc<std::sync::Mutex<WriterLog>> = Arc::default();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let printed = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = printed.lock().unwrap();
            match line.split_once(' ') {
                Some(("COMMITTED", seq)) => log.committed.push(seq.parse().expect("seq")),
                Some(("FENCED", why)) => log.fenced = Some(why.to_string()),
                Some(("FAILED", why)) => log.failed.push(why.to_string()),
                _ => {}
            }
        }
    });
    (child, log)
}

/// A `Written` as read: who wrote it in which transaction, and where.
#[derive(Debug, Clone)]
struct WrittenAt {
    writer: String,
    seq: u64,
    partition: i32,
    offset: i64,
}

/// Every `Written` read.
#[derive(Clone, Default)]
struct WrittenRead(Arc<std::sync::Mutex<Vec<WrittenAt>>>);

impl kavari::MessageHandler<kavari_tests::Written> for WrittenRead {
    async fn handle(
        &self,
        w: kavari_tests::Written,
        ctx: &kavari::MessageContext,
    ) -> Result<(), kavari::HandlerError> {
        self.0.lock().unwrap().push(WrittenAt {
            writer: w.writer,
            seq: w.seq,
            partition: ctx.partition,
            offset: ctx.offset,
        });
        Ok(())
    }
}

/// Two processes with one transactional id, the second started while the
/// first writes: the first is fenced, says so and stops; read_committed
/// shows exactly the transactions each said it committed, and in every
/// partition the first's records all come before the second's (nothing
/// of the first lands after the second began).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_transactional_id_fences_the_first() {
    use kavari::KafkaMessage;
    let setup = Setup::start("txn-procs", KafkaBroker::builder(), 1).await;
    let topic = format!("{}{}", setup.prefix, kavari_tests::Written::TOPIC);
    setup.broker.create_topic(&topic, 3).await.expect("topic");
    let id = kavari_testcontainers::unique_name("txn-procs");
    let (mut first, first_log) = spawn_writer(&setup, &id, "first");
    eventually(Duration::from_secs(60), "the first commits", || {
        first_log.lock().unwrap().committed.len() >= 20
    })
    .await;
    let (mut second, second_log) = spawn_writer(&setup, &id, "second");
    eventually(Duration::from_secs(60), "the second commits", || {
        second_log.lock().unwrap().committed.len() >= 20
    })
    .await;
    let exited = tokio::time::timeout(Duration::from_secs(30), first.wait())
        .await
        .expect("the fenced process stops")
        .expect("wait");
    assert!(exited.success(), "the fenced process stops cleanly");
    drop(second.stdin.take());
    let exited = tokio::time::timeout(Duration::from_secs(30), second.wait())
        .await
        .expect("the second stops when asked")
        .expect("wait");
    assert!(exited.success());
    let (first_log, second_log) = (
        std::mem::take(&mut *first_log.lock().unwrap()),
        std::mem::take(&mut *second_log.lock().unwrap()),
    );
    let why = first_log
        .fenced
        .as_deref()
        .expect("the first says it was fenced");
    assert!(why.contains(&id), "the fencing names the id: {why}");
    // The takeover may cost the second its first transaction (the
    // coordinator was still aborting the first's): never more, and it is
    // never fenced itself.
    assert!(
        second_log.fenced.is_none() && second_log.failed.len() <= 1,
        "{second_log:?}"
    );

    let read = WrittenRead::default();
    let reader = kavari_tests::consumer(
        &setup.broker,
        &kavari_testcontainers::unique_name("txn-procs-read"),
    )
    .topic_prefix(&setup.prefix)
    .build()
    .await
    .expect("build");
    reader
        .subscribe::<kavari_tests::Written, _>(read.clone())
        .expect("subscribe");
    reader.start().await.expect("start");
    let per = 3;
    let want = (first_log.committed.len() + second_log.committed.len()) * per;
    eventually(
        Duration::from_secs(60),
        "every committed record read",
        || read.0.lock().unwrap().len() >= want,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.shutdown().await.expect("shutdown");
    let records = read.0.lock().unwrap().clone();
    for (writer, log) in [("first", &first_log), ("second", &second_log)] {
        let mut seen: Vec<u64> = records
            .iter()
            .filter(|r| r.writer == writer)
            .map(|r| r.seq)
            .collect();
        seen.sort_unstable();
        let want: Vec<u64> = log
            .committed
            .iter()
            .flat_map(|s| std::iter::repeat_n(*s, per))
            .collect();
        assert_eq!(
            seen, want,
            "{writer}: read_committed holds exactly what it committed"
        );
    }
    for partition in 0..3 {
        let last_first = records
            .iter()
            .filter(|r| r.partition == partition && r.writer == "first")
            .map(|r| r.offset)
            .max();
        let first_second = records
            .iter()
            .filter(|r| r.partition == partition && r.writer == "second")
            .map(|r| r.offset)
            .min();
        if let (Some(a), Some(b)) = (last_first, first_second) {
            assert!(
                a < b,
                "partition {partition}: the first's record at {a} after the second's at {b}"
            );
        }
    }
}

/// librdkafka (confluent-kafka, read_committed by default) as an
/// independent reader of Kavari's transactions: it reads the committed
/// records and skips the aborted ones between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_reads_only_what_kavari_transactions_committed() {
    let setup = Setup::start("txn-rdkafka", KafkaBroker::builder(), 1).await;
    let m = transactional(&setup, &kavari_testcontainers::unique_name("txn-rdkafka")).await;
    in_transaction(&m, 0..2, true).await.expect("commit");
    in_transaction(&m, 2..4, false).await.expect_err("abort");
    in_transaction(&m, 4..6, true).await.expect("commit");
    m.shutdown().await.expect("shutdown");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/rdkafka_codecs.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            "read",
            &setup.broker.bootstrap_servers(),
            &setup.topic,
            "1",
            "4",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("the librdkafka peer (run `bash testcontainers/setup.sh`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RECORD "))
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    assert_eq!(keys, ["k0", "k1", "k4", "k5"], "{stdout}");
}

/// A transaction left open past its timeout is aborted by the coordinator:
/// its commit fails, nothing of it is read_committed, and the producer's
/// next transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_timeout_is_aborted_and_the_next_commits() {
    use crate::{Ticket, tickets};
    use kavari::TransactionError;

    let setup = Setup::start("txn-timeout", KafkaBroker::builder(), 1).await;
    let m = kavari::Kavari::builder(setup.broker.bootstrap_servers())
        .topic_prefix(&setup.prefix)
        .transactional_id(kavari_testcontainers::unique_name("txn-timeout"))
        .transaction_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("build");
    let late = m
        .transaction(|tx| async move {
            tx.publish(&Ticket {
                key: "k0".into(),
                seq: 0,
            })
            .await?;
            // The coordinator aborts it meanwhile (checked every second
            // on the test cluster).
            tokio::time::sleep(Duration::from_secs(6)).await;
            Ok(())
        })
        .await;
    assert!(matches!(late, Err(TransactionError::Failed(_))), "{late:?}");
    m.transaction(|tx| async move {
        for t in tickets(1..3) {
            tx.publish(&t).await?;
        }
        Ok(())
    })
    .await
    .expect("the next transaction commits");
    let (committed, all) = read_both(&setup, &(0..3).collect()).await;
    assert_eq!(committed, [1, 2].into_iter().collect::<BTreeSet<u64>>());
    assert_eq!(all.len(), 3);
    m.shutdown().await.expect("shutdown");
}

/// The group's half of exactly-once: offsets committed in a transaction
/// (AddOffsetsToTxn, then TxnOffsetCommit with the member's generation,
/// KIP-447) take effect when the transaction commits, and never when it
/// aborts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_committed_in_a_transaction_land_only_with_it() {
    use kavari_group::{
        CommitOffset, GroupConfig, GroupEvent, GroupMember, MemberPhase, TopicPartition,
    };
    use kavari_wire::transaction::TransactionCoordinator;

    let setup = Setup::start("txn-offsets", KafkaBroker::builder(), 1).await;
    let group = kavari_testcontainers::unique_name("txn-offsets");
    let mut config = GroupConfig::new(setup.broker.bootstrap_list(), &group, [&setup.topic]);
    config.session_timeout = Duration::from_secs(6);
    config.heartbeat_interval = Duration::from_millis(500);
    let (member, mut events) = GroupMember::start(config).expect("member");
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let GroupEvent::Revoking { ack, .. } = e {
                ack.done();
            }
        }
    });
    member
        .wait_for(Duration::from_secs(60), |s| s.phase == MemberPhase::Stable)
        .await
        .expect("the member joined");

    let cluster = Arc::new(kavari_wire::cluster::Cluster::new(
        setup.broker.bootstrap_list(),
        "t".into(),
        Duration::from_secs(30),
    ));
    let id = kavari_testcontainers::unique_name("txn-offsets");
    let coordinator = TransactionCoordinator::new(
        Arc::clone(&cluster),
        &id,
        Duration::from_secs(60),
        Duration::from_secs(30),
    );
    let producer = coordinator.init(None).await.expect("init");
    let tp = TopicPartition::new(&setup.topic, 0);
    let at = |offset| {
        std::collections::BTreeMap::from([(
            tp.clone(),
            CommitOffset {
                offset,
                leader_epoch: None,
            },
        )])
    };
    for (offset, commit) in [(5, true), (9, false)] {
        coordinator
            .add_offsets(producer, &group)
            .await
            .expect("add offsets");
        member
            .commit_in_transaction(&id, producer, &at(offset))
            .await
            .expect("offsets in the transaction");
        coordinator.end(producer, commit).await.expect("end");
    }
    // The transaction's markers land shortly after its end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let committed = member.committed(std::slice::from_ref(&tp)).await;
        let offset = committed
            .ok()
            .and_then(|c| c.get(&tp).copied().flatten())
            .map(|c| c.offset);
        if offset == Some(5) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the committed transaction's offset: {offset:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let committed = member
        .committed(std::slice::from_ref(&tp))
        .await
        .expect("committed");
    assert_eq!(
        committed[&tp].map(|c| c.offset),
        Some(5),
        "the aborted transaction's offset never lands"
    );
    member.close().await;
}
