//! read_committed against transactions a Java transactional producer
//! (kafka-clients 4.4, `tests/peers/JavaTransactions.java`) commits and
//! aborts on the cluster: a Kavari member (read_committed, the default)
//! handles exactly the committed records; one reading uncommitted handles
//! the aborted ones too, so the log really holds them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{HandlerError, Isolation, MessageContext, MessageHandler, OffsetReset};
use kavari_testcontainers::KafkaBroker;
use kavari_tests::{consumer, eventually, init_tracing, started};

use crate::{Ticket, prefixed, with_topic};

const TRANSACTIONS: u64 = 20;

/// Every seq handled.
#[derive(Clone, Default)]
struct Seqs(Arc<Mutex<BTreeSet<u64>>>);

impl MessageHandler<Ticket> for Seqs {
    async fn handle(&self, t: Ticket, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().insert(t.seq);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_handles_only_what_a_java_transaction_committed() {
    init_tracing();
    let (prefix, topic) = prefixed("txn");
    let cluster = KafkaBroker::builder()
        .start_cluster()
        .await
        .expect("a Kafka cluster");
    let broker = with_topic(cluster, &topic, 3).await;

    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/JavaTransactions.java");
    let out = tokio::process::Command::from(
        broker
            .kafka()
            .expect("a Kafka cluster")
            .java_peer(std::path::Path::new(source)),
    )
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

    let read = |isolation, seqs: &Seqs| {
        started::<Ticket, _>(
            consumer(&broker, &kavari_testcontainers::unique_name("txn-group"))
                .topic_prefix(&prefix)
                .auto_offset_reset(OffsetReset::Earliest)
                .isolation_level(isolation),
            seqs.clone(),
        )
    };
    let (committed_only, all) = (Seqs::default(), Seqs::default());
    let reader = read(Isolation::ReadCommitted, &committed_only).await;
    let uncommitted = read(Isolation::ReadUncommitted, &all).await;
    eventually(
        Duration::from_secs(60),
        "every record read uncommitted",
        || *all.0.lock().unwrap() == everything,
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "every committed record handled",
        || committed_only.0.lock().unwrap().len() >= committed.len(),
    )
    .await;
    // Both readers are at the end of the log: what read_committed handled
    // is final.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(*committed_only.0.lock().unwrap(), committed);
    reader.shutdown().await.expect("shutdown");
    uncommitted.shutdown().await.expect("shutdown");
}
