//! The fetch engine: one task that sends one Fetch per broker per round,
//! covering every subscribed partition that broker leads and that has room
//! in its buffer, and hands each partition's records to its
//! [`PartitionFeed`].
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

use futures::future::join_all;
use kafka_protocol::ResponseError;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::cluster::{Cluster, Lane};
use crate::fetch::{FetchLimits, FetchPosition, Isolation, PartitionResponse, fetch};
use crate::list_offsets::{OffsetSpec, list_offsets};
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
    /// The offset was out of range and the reset policy moved it.
    Reset {
        /// The offset asked for.
        from: i64,
        /// Where fetching goes on.
        to: i64,
    },
    /// The partition cannot go on: a batch did not decode, the offset is out
    /// of range with no reset policy, or the broker refused for good.
    Failed(WireError),
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
        let feed = self.feed(&mut self.shared.feeds(), partition, offset);
        self.shared.wake.notify_one();
        feed
    }

    /// [`subscribe`](Self::subscribe) for several partitions at once: the
    /// next Fetch covers all of them (subscribed one by one, the first
    /// could start a round that the others then wait out).
    pub fn subscribe_all(
        &self,
        partitions: impl IntoIterator<Item = (TopicPartition, i64)>,
    ) -> Vec<PartitionFeed> {
        let made = {
            let mut feeds = self.shared.feeds();
            partitions
                .into_iter()
                .map(|(partition, offset)| self.feed(&mut feeds, partition, offset))
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
        offset_for(&self.shared, partition, spec).await
    }

    /// The offset `spec` names in each of `partitions`: one ListOffsets per
    /// leader. Each partition has its own answer (one without a leader, or
    /// whose leader could not be asked, is an `Err`).
    pub async fn offsets_for(
        &self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> HashMap<TopicPartition, Result<i64, WireError>> {
        offsets_for(&self.shared, partitions, spec).await
    }
}

async fn offset_for(
    shared: &FetchState,
    partition: &TopicPartition,
    spec: OffsetSpec,
) -> Result<i64, WireError> {
    offsets_for(shared, std::slice::from_ref(partition), spec)
        .await
        .remove(partition)
        .unwrap_or_else(|| Err(no_leader(partition)))
}

async fn offsets_for(
    shared: &FetchState,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
) -> HashMap<TopicPartition, Result<i64, WireError>> {
    let mut topics: Vec<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let metadata = match shared.cluster.topics(&topics).await {
        Ok(m) => m,
        Err(e) => {
            return partitions
                .iter()
                .map(|tp| (tp.clone(), Err(e.clone())))
                .collect();
        }
    };
    let leader_of = |tp: &TopicPartition| {
        metadata
            .iter()
            .filter(|t| t.name == tp.topic)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition == tp.partition)
            .and_then(|p| p.leader)
    };
    let mut answers = HashMap::new();
    let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
    for tp in partitions {
        match leader_of(tp) {
            Some(leader) => by_leader.entry(leader).or_default().push(tp.clone()),
            None => {
                answers.insert(tp.clone(), Err(no_leader(tp)));
            }
        }
    }
    let isolation = shared.config.limits.isolation;
    let asked = by_leader.into_iter().map(|(leader, tps)| async move {
        let answer = async {
            let conn = shared.cluster.broker(leader).await?;
            list_offsets(&conn, &tps, spec, isolation).await
        }
        .await;
        match answer {
            Ok(each) => each,
            Err(e) => tps.into_iter().map(|tp| (tp, Err(e.clone()))).collect(),
        }
    });
    answers.extend(join_all(asked).await.into_iter().flatten());
    answers
}

fn no_leader(partition: &TopicPartition) -> WireError {
    WireError::broker(
        "Metadata",
        ResponseError::LeaderNotAvailable,
        Some(format!("no leader for {partition}")),
    )
}

/// Partitions' leaders and epochs, from the last metadata answer.
type Leaders = HashMap<TopicPartition, (i32, i32)>;

/// The engine's loop; it ends when the [`Fetcher`] is dropped (aborted).
async fn run(shared: Arc<FetchState>) {
    let mut leaders: Leaders = HashMap::new();
    let mut stale = true;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    // While a partition is left out for its full buffer and will soon want
    // fetching again, partitions at their end are
    // not long-polled: the broker would hold the request for max_wait, and
    // the busy partition with it. The loop waits here instead, for the busy
    // one (a wake) or until the others are due (a short wait, doubling up to
    // max_wait), and then asks without a wait.
    let mut short_wait = SHORT_WAIT;
    let mut poll_due: Option<tokio::time::Instant> = None;
    loop {
        let Ready {
            wanted,
            caught_up,
            pending,
        } = ready(&shared);
        if wanted.is_empty() {
            let wake = shared.wake.notified();
            let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
            continue;
        }
        let limits = if pending && caught_up {
            let due = *poll_due.get_or_insert_with(|| tokio::time::Instant::now() + short_wait);
            let wake = shared.wake.notified();
            if tokio::time::timeout_at(due, wake).await.is_ok() {
                continue;
            }
            short_wait = short_wait
                .saturating_mul(2)
                .min(shared.config.limits.max_wait);
            poll_due = None;
            FetchLimits {
                max_wait: Duration::ZERO,
                ..shared.config.limits
            }
        } else {
            short_wait = SHORT_WAIT;
            poll_due = None;
            shared.config.limits
        };
        if stale || wanted.iter().any(|(tp, _)| !leaders.contains_key(tp)) {
            match refresh(&shared, &wanted).await {
                Ok(l) => {
                    leaders = l;
                    stale = false;
                }
                Err(e) => {
                    if let Some(n) = shared.log.admit(("metadata", -1)) {
                        tracing::warn!(error = %e, failures = n, "fetch: metadata lookup failed; retrying");
                    }
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            }
        }
        let mut by_broker: BTreeMap<i32, Vec<FetchPosition>> = BTreeMap::new();
        for (tp, offset) in wanted {
            if let Some(&(leader, epoch)) = leaders.get(&tp) {
                by_broker.entry(leader).or_default().push(FetchPosition {
                    partition: tp,
                    offset,
                    leader_epoch: epoch,
                });
            }
        }
        if by_broker.is_empty() {
            // Subscribed partitions without a leader now.
            stale = true;
            tokio::time::sleep(backoff.next()).await;
            continue;
        }
        let rounds = by_broker.into_iter().map(|(broker, positions)| {
            let shared = Arc::clone(&shared);
            async move {
                let started = std::time::Instant::now();
                let answer = async {
                    let conn = shared.cluster.broker_on(broker, Lane::Fetch).await?;
                    fetch(&conn, &positions, &limits).await
                }
                .await;
                tracing::trace!(
                    broker,
                    partitions = positions.len(),
                    took = ?started.elapsed(),
                    bytes = answer.as_ref().map_or(0, |ps| ps.iter().map(|p| p.records.len()).sum::<usize>()),
                    "fetch round"
                );
                (broker, positions, answer)
            }
        });
        let mut trouble = false;
        for (broker, positions, answer) in join_all(rounds).await {
            match answer {
                Ok(parts) => {
                    for part in parts {
                        let asked = positions
                            .iter()
                            .find(|p| p.partition == part.partition)
                            .map(|p| p.offset);
                        if let Some(asked) = asked {
                            trouble |= hand_over(&shared, part, asked, &mut stale).await;
                        }
                    }
                }
                Err(e) => {
                    if let Some(n) = shared.log.admit(("fetch", broker)) {
                        tracing::warn!(broker, error = %e, partitions = positions.len(), failures = n, "fetch failed; retrying");
                    }
                    stale = true;
                    trouble = true;
                }
            }
        }
        if trouble {
            tokio::time::sleep(backoff.next()).await;
        } else {
            backoff.reset();
        }
    }
}

/// The first wait of a round while a full partition has more at the broker.
const SHORT_WAIT: Duration = Duration::from_millis(5);

/// What the next round may fetch.
struct Ready {
    /// Partitions to fetch now, with their offsets: subscribed, not
    /// stopped, with room in their buffer, while the total has room.
    wanted: Vec<(TopicPartition, i64)>,
    /// Every wanted partition is at its end (as far as its last answer
    /// told): the broker would hold the request.
    caught_up: bool,
    /// A partition left out will soon want fetching: its buffer is full
    /// and the broker has more for it.
    pending: bool,
}

fn ready(shared: &FetchState) -> Ready {
    let config = &shared.config;
    if shared.buffered_total.load(Ordering::Acquire) >= config.total_buffer_bytes {
        return Ready {
            wanted: Vec::new(),
            caught_up: false,
            pending: true,
        };
    }
    let feeds = shared.feeds();
    let mut ready = Ready {
        wanted: Vec::new(),
        caught_up: true,
        pending: false,
    };
    for (tp, f) in feeds.iter().filter(|(_, f)| !f.stopped) {
        if f.buffered.load(Ordering::Acquire) < config.partition_buffer_bytes {
            ready.wanted.push((tp.clone(), f.offset));
            ready.caught_up &= f.end >= 0 && f.offset >= f.end;
        } else {
            ready.pending |= f.end > f.offset;
        }
    }
    ready
}

async fn refresh(
    shared: &FetchState,
    wanted: &[(TopicPartition, i64)],
) -> Result<Leaders, WireError> {
    let mut topics: Vec<&str> = wanted.iter().map(|(tp, _)| tp.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let mut leaders = HashMap::new();
    for t in shared.cluster.topics(&topics).await? {
        for p in t.partitions {
            if let Some(leader) = p.leader {
                leaders.insert(
                    TopicPartition::new(t.name.clone(), p.partition),
                    (leader, p.leader_epoch),
                );
            }
        }
    }
    Ok(leaders)
}

/// Hands one partition's answer to its feed; true when the answer calls
/// for a pause (an error that a retry may clear).
async fn hand_over(
    shared: &FetchState,
    part: PartitionResponse,
    asked: i64,
    stale: &mut bool,
) -> bool {
    let tp = part.partition.clone();
    let config = &shared.config;
    match part.error {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            let outcome = match config.reset {
                Some(spec) => {
                    tracing::warn!(partition = %tp, offset = asked, ?spec, "offset out of range; applying auto_offset_reset");
                    offset_for(shared, &tp, spec).await.map(Some)
                }
                None => Ok(None),
            };
            let mut feeds = shared.feeds();
            let Some(feed) = feeds.get_mut(&tp).filter(|f| f.offset == asked) else {
                return false;
            };
            return match outcome {
                Ok(Some(to)) => {
                    feed.offset = to;
                    let _ = feed.tx.send(FetchEvent::Reset { from: asked, to });
                    false
                }
                Ok(None) => {
                    feed.stopped = true;
                    let _ = feed.tx.send(FetchEvent::Failed(WireError::broker(
                        "Fetch",
                        ResponseError::OffsetOutOfRange,
                        Some(format!(
                            "offset {asked} of {tp} is out of range and auto_offset_reset is Error"
                        )),
                    )));
                    false
                }
                Err(e) => {
                    if let Some(n) = shared.log.admit(("offset reset", -1)) {
                        tracing::warn!(partition = %tp, error = %e, failures = n, "offset reset failed; retrying");
                    }
                    true
                }
            };
        }
        Some(code) if needs_metadata_refresh(code) || is_retriable_code(code) => {
            tracing::debug!(partition = %tp, ?code, "fetch: partition error; refreshing metadata");
            *stale |= needs_metadata_refresh(code);
            return true;
        }
        Some(code) => {
            let mut feeds = shared.feeds();
            if let Some(feed) = feeds.get_mut(&tp).filter(|f| f.offset == asked) {
                tracing::error!(partition = %tp, ?code, "fetch refused; the partition stops");
                feed.stopped = true;
                let _ = feed.tx.send(FetchEvent::Failed(WireError::broker(
                    "Fetch",
                    code,
                    Some(tp.to_string()),
                )));
            }
            return false;
        }
    }
    let extracted = part.extract(asked, config.limits.isolation);
    let mut feeds = shared.feeds();
    // Revoked, re-subscribed or moved meanwhile: this answer is stale.
    let Some(feed) = feeds.get_mut(&tp).filter(|f| f.offset == asked) else {
        return false;
    };
    feed.end = match config.limits.isolation {
        Isolation::ReadCommitted if part.last_stable_offset >= 0 => part.last_stable_offset,
        _ => part.high_watermark,
    };
    let known = feed
        .high_watermark
        .swap(part.high_watermark, Ordering::AcqRel);
    match extracted {
        // Bytes that hold no record at or past the offset (a batch cut
        // short, the same old batch again): a broker that keeps answering
        // so would be asked again at once, thousands of times a second.
        // The round backs off instead.
        Ok(ex) if ex.next_offset <= asked && !part.records.is_empty() => {
            if let Some(n) = shared.log.admit(("no progress", -1)) {
                tracing::warn!(
                    partition = %tp, offset = asked, bytes = part.records.len(), answers = n,
                    "fetch answers hold bytes but no record at or past the offset; backing off"
                );
            }
            return true;
        }
        Ok(ex) if ex.batches.is_empty() && part.high_watermark == known => {
            feed.offset = ex.next_offset;
        }
        Ok(ex) => {
            feed.offset = ex.next_offset;
            feed.buffered.fetch_add(ex.bytes, Ordering::AcqRel);
            shared.buffered_total.fetch_add(ex.bytes, Ordering::AcqRel);
            let _ = feed.tx.send(FetchEvent::Records {
                batches: ex.batches,
                from: ex.from,
                bytes: ex.bytes,
                high_watermark: part.high_watermark,
            });
        }
        Err(e) => {
            tracing::error!(partition = %tp, offset = asked, error = %e, "a record batch cannot be read; the partition stops");
            feed.stopped = true;
            let _ = feed.tx.send(FetchEvent::Failed(e));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    //! The test broker refuses a batch with a bad CRC or an unknown codec on
    //! produce (as Kafka does), so what the engine does with one it fetched
    //! is shown against a scripted peer that answers ApiVersions, Metadata
    //! and Fetch, the last with a crafted batch.

    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse,
        MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::compression::Compression;
    use crate::fetch::Isolation;
    use crate::record_batch::write::{Record, RecordBatch};

    /// One batch of three records (offsets 0 to 2), its last byte flipped
    /// when `corrupt`: then its CRC fails.
    fn batch(corrupt: bool) -> Bytes {
        let mut batch = RecordBatch::with_capacity(0);
        let headers: [(&str, &[u8]); 0] = [];
        for i in 0..3u8 {
            batch.push(
                &Record {
                    key: None,
                    value: &[i],
                    headers: &headers[..],
                },
                1,
            );
        }
        let mut bytes = batch.finish(Compression::None).expect("finish");
        if corrupt {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x01;
        }
        Bytes::from(bytes)
    }

    fn framed(
        correlation_id: i32,
        header_version: i16,
        body: &impl Encodable,
        version: i16,
    ) -> Vec<u8> {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, header_version)
            .expect("header");
        body.encode(&mut buf, version).expect("body");
        let mut out = (buf.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Serves one connection: answers by API key, each Fetch with `records`
    /// under a high watermark of 3, and counts Fetch requests.
    async fn serve(mut s: TcpStream, port: u16, fetches: Arc<AtomicUsize>, records: Bytes) {
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
            if s.read_exact(&mut body).await.is_err() {
                return;
            }
            let mut body = Bytes::from(body);
            let (key, version) = (
                i16::from_be_bytes([body[0], body[1]]),
                i16::from_be_bytes([body[2], body[3]]),
            );
            let header_version = match ApiKey::try_from(key) {
                Ok(ApiKey::ApiVersions) => ApiVersionsRequest::header_version(version),
                Ok(ApiKey::Metadata) => MetadataRequest::header_version(version),
                _ => FetchRequest::header_version(version),
            };
            let header = RequestHeader::decode(&mut body, header_version).expect("header");
            let id = header.correlation_id;
            let answer = match ApiKey::try_from(key) {
                Ok(ApiKey::ApiVersions) => {
                    let keys = [
                        (ApiKey::Metadata, 1, 12),
                        (ApiKey::Fetch, 4, 12),
                        (ApiKey::ListOffsets, 1, 7),
                    ];
                    let resp = ApiVersionsResponse::default().with_api_keys(
                        keys.iter()
                            .map(|(k, min, max)| {
                                ApiVersion::default()
                                    .with_api_key(*k as i16)
                                    .with_min_version(*min)
                                    .with_max_version(*max)
                            })
                            .collect(),
                    );
                    framed(id, 0, &resp, version)
                }
                Ok(ApiKey::Metadata) => {
                    let resp = MetadataResponse::default()
                        .with_brokers(vec![
                            MetadataResponseBroker::default()
                                .with_node_id(1.into())
                                .with_host(StrBytes::from_static_str("127.0.0.1"))
                                .with_port(i32::from(port)),
                        ])
                        .with_topics(vec![
                            MetadataResponseTopic::default()
                                .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                                .with_partitions(vec![
                                    MetadataResponsePartition::default()
                                        .with_partition_index(0)
                                        .with_leader_id(1.into())
                                        .with_leader_epoch(0),
                                ]),
                        ]);
                    framed(
                        id,
                        MetadataResponse::header_version(version),
                        &resp,
                        version,
                    )
                }
                _ => {
                    fetches.fetch_add(1, Ordering::Relaxed);
                    let resp = FetchResponse::default().with_responses(vec![
                        FetchableTopicResponse::default()
                            .with_topic(TopicName(StrBytes::from_static_str("t")))
                            .with_partitions(vec![
                                PartitionData::default()
                                    .with_partition_index(0)
                                    .with_high_watermark(3)
                                    .with_last_stable_offset(3)
                                    .with_records(Some(records.clone())),
                            ]),
                    ]);
                    framed(id, FetchResponse::header_version(version), &resp, version)
                }
            };
            let mut out = BytesMut::new();
            out.put_slice(&answer);
            if s.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// A peer that answers every Fetch with `records`, and a fetcher on it;
    /// the peer's count of Fetch requests.
    async fn scripted(records: Bytes) -> (Fetcher, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&fetches);
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(
                    s,
                    address.port(),
                    Arc::clone(&counted),
                    records.clone(),
                ));
            }
        });
        let cluster = Arc::new(Cluster::new(
            vec![address.to_string()],
            "t".into(),
            Duration::from_secs(5),
        ));
        let fetcher = Fetcher::new(
            cluster,
            FetcherConfig {
                limits: FetchLimits {
                    max_wait: Duration::from_millis(10),
                    min_bytes: 1,
                    max_bytes: 1 << 20,
                    partition_max_bytes: 1 << 20,
                    isolation: Isolation::ReadCommitted,
                },
                reset: None,
                partition_buffer_bytes: 1 << 20,
                total_buffer_bytes: 1 << 20,
                max_batch_bytes: 1 << 20,
            },
        );
        (fetcher, fetches)
    }

    /// A broker that answers every Fetch at offset 3 with the batch of
    /// offsets 0 to 2 again: no progress, and no busy loop either (the
    /// engine asked such a broker thousands of times a second).
    #[tokio::test]
    async fn answers_without_progress_are_not_asked_again_at_once() {
        let (fetcher, fetches) = scripted(batch(false)).await;
        let mut feed = fetcher.subscribe(TopicPartition::new("t", 0), 3);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let asked = fetches.load(Ordering::Relaxed);
        // 100 ms doubling: about 5 rounds in 2 s (a first one without wait).
        assert!((2..=12).contains(&asked), "{asked} fetches in 2 s");
        assert!(feed.rx.try_recv().is_err(), "nothing to deliver");
    }

    #[tokio::test]
    async fn a_batch_failing_its_crc_stops_its_partition_once_with_the_reason() {
        let (fetcher, fetches) = scripted(batch(true)).await;
        let mut feed = fetcher.subscribe(TopicPartition::new("t", 0), 0);
        match tokio::time::timeout(Duration::from_secs(10), feed.recv()).await {
            Ok(Some(FetchEvent::Failed(e))) => {
                assert!(e.to_string().contains("fails its CRC"), "{e}");
                assert!(e.to_string().contains("offset 0"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // Stopped: no endless refetching of the same bytes, no more events.
        let after = fetches.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            fetches.load(Ordering::Relaxed),
            after,
            "the partition is not fetched again"
        );
        assert!(feed.rx.try_recv().is_err());
        assert_eq!(
            fetcher.subscribed(),
            1,
            "still subscribed until its owner lets go"
        );
    }
}
