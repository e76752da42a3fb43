//! read_committed against transactions a Java transactional producer
//! (kafka-clients 4.4, `tests/peers/JavaTransactions.java`) commits and
//! aborts on the cluster: a Kavari member (read_committed, the default)
//! handles exactly the committed records; one reading uncommitted handles
//! the aborted ones too, so the log really holds them.

use std::collections::BTreeSet;
use std::time::Duration;

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
