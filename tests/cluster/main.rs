//! What only a cluster of several Apache Kafka brokers can show: leaders
//! that die or move while records flow, replicas that keep what was
//! acknowledged. Each test runs on a [`KafkaCluster`] of three KRaft nodes
//! (replication 3, `min.insync.replicas=2`), whatever `KAVARI_TEST_BROKER`
//! says: a single nisshi process has no replicas to fail over to.
//!
//! Times are printed (`cargo test -p kavari-tests --test cluster --
//! --nocapture`).

mod failover;
mod java_member;
mod leader_moves;
mod new_partitions;
mod rolling_restart;
mod transactions;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kavari::{KafkaMessage, Kavari};
use kavari_testcontainers::{KafkaBroker, KafkaCluster};
use kavari_tests::logged_records;
use serde::{Deserialize, Serialize};

/// The message every test here publishes: a key and its sequence number.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "cluster.tickets")]
pub(crate) struct Ticket {
    #[kavari(key)]
    pub(crate) key: String,
    pub(crate) seq: u64,
}

/// Every acknowledged publish: (key, seq) → (partition, offset, when).
pub(crate) type Acked = Arc<Mutex<BTreeMap<(String, u64), (i32, i64, Instant)>>>;

/// A prefix of the test's own and [`Ticket`]'s topic under it.
pub(crate) fn prefixed(test: &str) -> (String, String) {
    let prefix = format!("{}.", kavari_testcontainers::unique_name(test));
    let topic = format!("{prefix}{}", Ticket::TOPIC);
    (prefix, topic)
}

/// `topic` with `partitions` created (three copies each) on `cluster`,
/// and the test-kit handle on it.
pub(crate) async fn with_topic(cluster: KafkaCluster, topic: &str, partitions: i32) -> KafkaBroker {
    let broker = KafkaBroker::from(cluster);
    broker
        .create_topic(topic, partitions)
        .await
        .expect("create topic");
    broker
}

/// One task per key publishing its tickets one after another, each
/// acknowledged publish recorded in `acked`, until [`stop`](Self::stop). A
/// failed publish fails the test: within the delivery timeout a leader
/// change must lose nothing.
pub(crate) struct Publishing {
    pub(crate) acked: Acked,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publishing {
    /// Starts `keys` publishers and returns once they have published for
    /// two seconds.
    pub(crate) async fn start(manager: &Kavari, keys: usize) -> Self {
        let acked = Acked::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..keys)
            .map(|k| {
                let (manager, acked, stop) =
                    (manager.clone(), Arc::clone(&acked), Arc::clone(&stop));
                tokio::spawn(async move {
                    let key = format!("key-{k}");
                    let mut seq = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let ticket = Ticket {
                            key: key.clone(),
                            seq,
                        };
                        let d = manager.publish(&ticket).await.unwrap_or_else(|e| {
                            panic!("{key} #{seq}: a publish failed across a leader change: {e}")
                        });
                        acked
                            .lock()
                            .unwrap()
                            .insert((key.clone(), seq), (d.partition, d.offset, Instant::now()));
                        seq += 1;
                    }
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        Self { acked, stop, tasks }
    }

    /// Stops every publisher and waits for its last publish.
    pub(crate) async fn stop(self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a publisher");
        }
        self.acked
    }
}

/// The leader of `topic`/0 now.
pub(crate) async fn leader_of_first(cluster: &KafkaCluster, topic: &str) -> i32 {
    cluster
        .leader(topic, 0)
        .await
        .expect("metadata")
        .expect("a leader of partition 0")
}

/// Reads every partition of `topic` and checks the log against what was
/// acknowledged: each acknowledged publish once, at the partition and
/// offset it was acknowledged with; nothing written twice; each key's
/// records in the order they were published.
pub(crate) async fn assert_log_holds(
    broker: &KafkaBroker,
    topic: &str,
    partitions: i32,
    acked: &Acked,
) {
    let acked = acked.lock().unwrap().clone();
    let mut seen: BTreeMap<(String, u64), Vec<(i32, i64)>> = BTreeMap::new();
    for p in 0..partitions {
        for r in logged_records(broker, topic, p).await {
            let t: Ticket = kavari::codec::decode_value(&r.value).expect("a ticket");
            seen.entry((t.key, t.seq)).or_default().push((p, r.offset));
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, at)| at.len() > 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    for ((key, seq), (partition, offset, _)) in &acked {
        assert_eq!(
            seen.get(&(key.clone(), *seq)),
            Some(&vec![(*partition, *offset)]),
            "{key} #{seq}: acknowledged at {partition}@{offset}"
        );
    }
    let mut last: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    for ((key, seq), at) in &seen {
        let offset = at[0].1;
        if let Some((prev_seq, prev_offset)) = last.insert(key, (*seq, offset)) {
            assert!(
                prev_seq < *seq && prev_offset < offset,
                "{key}: #{prev_seq} at {prev_offset} before #{seq} at {offset}"
            );
        }
    }
}
