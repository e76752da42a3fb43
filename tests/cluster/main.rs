//! What only a cluster of several Apache Kafka brokers can show: leaders
//! that die or move while records flow, replicas that keep what was
//! acknowledged. Each test runs on a [`KafkaCluster`] of three KRaft nodes
//! (replication 3, `min.insync.replicas=2`), whatever `KAVARI_TEST_BROKER`
//! says: a single nisshi process has no replicas to fail over to.
//!
//! Times are printed (`cargo test -p kavari-tests --test cluster --
//! --nocapture`).

mod consumer_protocol;
mod exactly_once;
mod failover;
pub(crate) mod java_member;
mod leader_moves;
mod new_partitions;
mod rolling_restart;
mod share_groups;
mod transactions;
mod truncation;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kavari::{
    HandlerError, KafkaMessage, Kavari, KavariBuilder, MessageContext, MessageHandler, OffsetReset,
};
use kavari_testcontainers::{BrokerBuilder, KafkaBroker, KafkaCluster};
use kavari_tests::{consumer, init_tracing, logged_records, started};
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

/// Tickets `seqs`, each keyed `k<seq>`.
pub(crate) fn tickets(seqs: std::ops::Range<u64>) -> Vec<Ticket> {
    seqs.map(|seq| Ticket {
        key: format!("k{seq}"),
        seq,
    })
    .collect()
}

/// A test's cluster: the handle, a topic prefix of the test's own and
/// [`Ticket`]'s topic under it.
pub(crate) struct Setup {
    pub(crate) broker: KafkaBroker,
    pub(crate) prefix: String,
    pub(crate) topic: String,
}

impl Setup {
    /// A Kafka cluster started from `builder` (three nodes unless it says
    /// otherwise) with [`Ticket`]'s topic of `partitions` under a prefix
    /// named after `test`.
    pub(crate) async fn start(test: &str, builder: BrokerBuilder, partitions: i32) -> Self {
        init_tracing();
        let prefix = format!("{}.", kavari_testcontainers::unique_name(test));
        let topic = format!("{prefix}{}", Ticket::TOPIC);
        let broker = KafkaBroker::from(builder.start_cluster().await.expect("a Kafka cluster"));
        broker
            .create_topic(&topic, partitions)
            .await
            .expect("create topic");
        Self {
            broker,
            prefix,
            topic,
        }
    }

    /// The cluster's nodes.
    pub(crate) fn cluster(&self) -> &KafkaCluster {
        self.broker.kafka().expect("a Kafka cluster")
    }

    /// A manager publishing under the prefix.
    pub(crate) async fn publisher(&self) -> Kavari {
        Kavari::builder(self.broker.bootstrap_servers())
            .topic_prefix(&self.prefix)
            .build()
            .await
            .expect("publisher")
    }

    /// A started member of `group` reading from the earliest offset, each
    /// ticket it handles recorded in `seen`; `configure` adds settings.
    pub(crate) async fn member(
        &self,
        group: &str,
        seen: &Seen,
        configure: impl FnOnce(KavariBuilder) -> KavariBuilder,
    ) -> Kavari {
        let builder = consumer(&self.broker, group)
            .topic_prefix(&self.prefix)
            .auto_offset_reset(OffsetReset::Earliest);
        started::<Ticket, _>(configure(builder), seen.clone()).await
    }
}

/// The partitions `member` owns now.
pub(crate) fn owned(member: &Kavari) -> BTreeSet<i32> {
    member
        .health()
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect()
}

/// A ticket as a member handled it.
#[derive(Debug, Clone)]
pub(crate) struct Handled {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: String,
    pub(crate) seq: u64,
    pub(crate) at: Instant,
}

/// Every ticket handled, in the order handled (once per handling: a
/// ticket handled twice is in it twice).
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<Vec<Handled>>>);

impl MessageHandler<Ticket> for Seen {
    async fn handle(&self, t: Ticket, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(Handled {
            partition: ctx.partition,
            offset: ctx.offset,
            key: t.key,
            seq: t.seq,
            at: Instant::now(),
        });
        Ok(())
    }
}

impl Seen {
    /// Every ticket handled so far.
    pub(crate) fn all(&self) -> Vec<Handled> {
        self.0.lock().unwrap().clone()
    }

    /// The distinct sequence numbers handled.
    pub(crate) fn seqs(&self) -> BTreeSet<u64> {
        self.0.lock().unwrap().iter().map(|h| h.seq).collect()
    }

    /// The distinct (partition, offset) positions handled.
    pub(crate) fn positions(&self) -> BTreeSet<(i32, i64)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|h| (h.partition, h.offset))
            .collect()
    }
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
                        acked.lock().unwrap().insert(
                            (key.clone(), seq),
                            (
                                d.partition,
                                d.offset.get().expect("an offset"),
                                Instant::now(),
                            ),
                        );
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
