//! The fetch engine: one task that keeps at most one Fetch out per
//! broker, covering every subscribed partition that broker leads and that
//! has room in its buffer, and hands each partition's records to its
//! [`PartitionFeed`]. Brokers are asked independently: each is asked again
//! as soon as it answers.
//!
//! Buffers are bounded in bytes: a partition whose consumer has not yet
//! released `partition_buffer_bytes` is left out of the next requests (a
//! slow partition pauses alone), and nothing is fetched while all
//! partitions together hold `total_buffer_bytes`. A partition's position
//! moves past control batches, aborted transactions and compacted gaps.
//! An offset out of range applies the reset policy; a batch that cannot be
//! read stops its partition with the reason (never a silent skip, never an
//! endless retry of the same bytes).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::cluster::{Cluster, Lane};
use crate::fetch::{FetchLimits, FetchPosition, FetchSession, Isolation, PartitionResponse};
use crate::leader_epoch::{EpochCheck, EpochEnd, epoch_ends};
use crate::list_offsets::{OffsetSpec, by_leader, no_leader};
use crate::log_rate::LogRate;
use crate::record_batch::read::Batch;
use crate::{TopicPartition, WireError, is_retriable_code, needs_metadata_refresh};

/// How the fetch engine fetches and buffers.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// The limits of each Fetch request.
    pub limits: FetchLimits,
    /// Where a partition whose offset fell out of the log starts again
    /// (`auto.offset.reset`); `None` stops it with an error.
    pub reset: Option<OffsetSpec>,
    /// Bytes a partition may hold fetched but not released before it is
    /// left out of requests.
    pub partition_buffer_bytes: usize,
    /// Bytes all partitions may hold together before fetching pauses
    /// (librdkafka's `queued.max.messages.kbytes`).
    pub total_buffer_bytes: usize,
    /// The most one record batch may decompress to.
    pub max_batch_bytes: usize,
}

/// What a partition's consumer receives.
#[derive(Debug)]
#[non_exhaustive]
pub enum FetchEvent {
    /// Record batches in offset order (possibly none, when only the high
    /// watermark moved), checked but not yet decoded: the consumer decodes
    /// each as it handles it ([`batch_records`](crate::fetch::batch_records)).
    /// `bytes` must be [released](PartitionFeed::release) as they are
    /// handled.
    Records {
        /// The batches.
        batches: Vec<Batch>,
        /// Records before this offset are not for the consumer.
        from: i64,
        /// The batches' bytes as fetched, counted against the buffers.
        bytes: usize,
        /// The partition's high watermark.
        high_watermark: i64,
    },
    /// The position moved: out of range and the reset policy moved it,
    /// or the log was truncated under it.
    Reset {
        /// The offset asked for.
        from: i64,
        /// Where fetching goes on.
        to: i64,
        /// Why.
        cause: ResetCause,
    },
    /// The partition cannot go on: a batch did not decode, the offset is out
    /// of range with no reset policy, or the broker refused for good.
    Failed(WireError),
}

/// Why a partition's position moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetCause {
    /// The offset fell out of the log (retention): `auto_offset_reset`.
    OutOfRange,
    /// The log was truncated under the position (an unclean leader
    /// election, KIP-320): fetching goes on where the new log diverges,
    /// or by `auto_offset_reset` when the leader cannot say where.
    Truncated,
}

/// A subscribed partition's state in the engine.
#[derive(Debug)]
struct Feed {
    id: u64,
    offset: i64,
    tx: mpsc::UnboundedSender<FetchEvent>,
    buffered: Arc<AtomicUsize>,
    stopped: bool,
    /// The high watermark of the partition's latest answer (-1 before the
    /// first), shared with its [`PartitionFeed`].
    high_watermark: Arc<AtomicI64>,
    /// Where the last answer said the readable log ends: the last stable
    /// offset under `ReadCommitted`, the high watermark otherwise (-1
    /// before the first answer).
    end: i64,
    /// The leader epoch of the last record batch handed over (-1: none):
    /// what the new leader is asked about after a leader change (KIP-320).
    epoch: i32,
    /// The leader epoch (from metadata) the position was last fetched or
    /// checked under (-1: not yet).
    checked_under: i32,
}

#[derive(Debug)]
struct FetchState {
    cluster: Arc<Cluster>,
    config: FetcherConfig,
    feeds: Mutex<HashMap<TopicPartition, Feed>>,
    buffered_total: AtomicUsize,
    next_id: AtomicU64,
    wake: Notify,
    /// Retried failures are logged once per cause (and broker) and
    /// [`LOG_EVERY`], with how many they stand for.
    log: LogRate<(&'static str, i32)>,
}

/// How often one kind of retried fetch failure is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(30);

impl FetchState {
    /// The offset `spec` names in `partition`, asked of its leader.
    async fn offset_for(
        &self,
        partition: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<i64, WireError> {
        let isolation = self.config.limits.isolation;
        let one = std::slice::from_ref(partition);
        by_leader(&self.cluster, one, spec, isolation)
            .await
            .remove(partition)
            .unwrap_or_else(|| Err(no_leader(partition)))
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, Feed>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine. Dropping it ends its task; feeds then see their channel
/// close.
#[derive(Debug)]
pub struct Fetcher {
    shared: Arc<FetchState>,
    task: JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One partition's records, for its consumer. Dropping it unsubscribes.
#[derive(Debug)]
pub struct PartitionFeed {
    partition: TopicPartition,
    id: u64,
    rx: mpsc::UnboundedReceiver<FetchEvent>,
    buffered: Arc<AtomicUsize>,
    high_watermark: Arc<AtomicI64>,
    shared: Weak<FetchState>,
}

impl PartitionFeed {
    /// The next event; `None` when the engine is gone.
    pub async fn recv(&mut self) -> Option<FetchEvent> {
        self.rx.recv().await
    }

    /// Gives `bytes` of a handled [`FetchEvent::Records`] back to the
    /// buffers, so the partition is fetched again.
    pub fn release(&self, bytes: usize) {
        let bytes = bytes.min(self.buffered.load(Ordering::Acquire));
        self.buffered.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(shared) = self.shared.upgrade() {
            shared.buffered_total.fetch_sub(bytes, Ordering::AcqRel);
            shared.wake.notify_one();
        }
    }

    /// The partition.
    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// The high watermark of the partition's latest fetch answer, with or
    /// without records (the engine fetches ahead: it may be newer than the
    /// events received so far); `None` before the first answer.
    pub fn high_watermark(&self) -> Option<i64> {
        let hw = self.high_watermark.load(Ordering::Acquire);
        (hw >= 0).then_some(hw)
    }
}

impl Drop for PartitionFeed {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut feeds = shared.feeds();
        if feeds.get(&self.partition).is_some_and(|f| f.id == self.id) {
            feeds.remove(&self.partition);
        }
        drop(feeds);
        let held = self.buffered.swap(0, Ordering::AcqRel);
        shared.buffered_total.fetch_sub(held, Ordering::AcqRel);
        shared.wake.notify_one();
    }
}

impl Fetcher {
    /// Starts the engine on `cluster`'s connections.
    pub fn new(cluster: Arc<Cluster>, config: FetcherConfig) -> Self {
        let shared = Arc::new(FetchState {
            cluster,
            config,
            feeds: Mutex::new(HashMap::new()),
            buffered_total: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            wake: Notify::new(),
            log: LogRate::new(LOG_EVERY),
        });
        let task = tokio::spawn(run(Arc::clone(&shared)));
        Self { shared, task }
    }

    /// Fetches `partition` from `offset` until the feed is dropped; a feed
    /// of the same partition made before is replaced.
    pub fn subscribe(&self, partition: TopicPartition, offset: i64) -> PartitionFeed {
        self.subscribe_at(partition, offset, None)
    }

    /// [`subscribe`](Self::subscribe), knowing the leader epoch of the
    /// record before `offset` (a committed offset's): the position is
    /// checked with the leader before the first Fetch, so a log truncated
    /// under it meanwhile is found (KIP-320).
    pub fn subscribe_at(
        &self,
        partition: TopicPartition,
        offset: i64,
        leader_epoch: Option<i32>,
    ) -> PartitionFeed {
        let feed = self.feed(&mut self.shared.feeds(), partition, offset, leader_epoch);
        self.shared.wake.notify_one();
        feed
    }

    /// [`subscribe_at`](Self::subscribe_at) for several partitions at
    /// once: the next Fetch covers all of them (subscribed one by one, the
    /// first could start a round that the others then wait out).
    pub fn subscribe_all(
        &self,
        partitions: impl IntoIterator<Item = (TopicPartition, i64, Option<i32>)>,
    ) -> Vec<PartitionFeed> {
        let made = {
            let mut feeds = self.shared.feeds();
            partitions
                .into_iter()
                .map(|(partition, offset, epoch)| self.feed(&mut feeds, partition, offset, epoch))
                .collect()
        };
        self.shared.wake.notify_one();
        made
    }

    fn feed(
        &self,
        feeds: &mut HashMap<TopicPartition, Feed>,
        partition: TopicPartition,
        offset: i64,
        leader_epoch: Option<i32>,
    ) -> PartitionFeed {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let buffered = Arc::new(AtomicUsize::new(0));
        let high_watermark = Arc::new(AtomicI64::new(-1));
        feeds.insert(
            partition.clone(),
            Feed {
                id,
                offset,
                tx,
                buffered: Arc::clone(&buffered),
                stopped: false,
                high_watermark: Arc::clone(&high_watermark),
                end: -1,
                epoch: leader_epoch.unwrap_or(-1),
                checked_under: -1,
            },
        );
        PartitionFeed {
            partition,
            id,
            rx,
            buffered,
            high_watermark,
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// The most one record batch may decompress to, for decoding what the
    /// feeds hand out.
    pub fn max_batch_bytes(&self) -> usize {
        self.shared.config.max_batch_bytes
    }

    /// Partitions subscribed now (a feed counts until it is dropped).
    pub fn subscribed(&self) -> usize {
        self.shared.feeds().len()
    }

    /// Bytes fetched and not yet released, over all partitions.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.buffered_total.load(Ordering::Acquire)
    }

    /// The offset `spec` names in `partition`, asked of its leader.
    pub async fn offset_for(
        &self,
        partition: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<i64, WireError> {
        self.shared.offset_for(partition, spec).await
    }

    /// The offset `spec` names in each of `partitions`: one ListOffsets per
    /// leader. Each partition has its own answer (one without a leader, or
    /// whose leader could not be asked, is an `Err`).
    pub async fn offsets_for(
        &self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> HashMap<TopicPartition, Result<i64, WireError>> {
        let isolation = self.shared.config.limits.isolation;
        by_leader(&self.shared.cluster, partitions, spec, isolation).await
    }
}

mod engine;
#[cfg(test)]
mod tests;
mod truncation;

use engine::run;
