//! Fetch: one request for many partitions of one broker, its response read
//! with the bounds-checked [`Reader`] (record bytes are sliced out of the
//! frame, not copied), and each partition's records extracted as a
//! `read_committed` consumer must see them: aborted transactions dropped,
//! control batches skipped, and the position moved past every batch, so
//! transaction markers and compacted-away offsets never stall a consumer.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};

use crate::connection::Connection;
use crate::reader::Reader;
use crate::record_batch::read::{Batch, ControlType, FetchedRecord, batches};
use crate::topic_name;
use crate::{TopicPartition, WireError};

/// Which records a consumer sees (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Records of committed transactions and non-transactional records, up
    /// to the last stable offset (the default, as librdkafka's).
    #[default]
    ReadCommitted,
    /// Every record up to the high watermark, aborted ones included.
    ReadUncommitted,
}

impl Isolation {
    fn level(self) -> i8 {
        match self {
            Self::ReadUncommitted => 0,
            Self::ReadCommitted => 1,
        }
    }
}

/// The limits of one Fetch request.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// How long the broker may wait for `min_bytes` (`fetch.max.wait.ms`).
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering (`fetch.min.bytes`).
    pub min_bytes: i32,
    /// Bytes of the whole response (`fetch.max.bytes`); the broker still
    /// returns one whole batch when the first is larger.
    pub max_bytes: i32,
    /// Bytes per partition (`max.partition.fetch.bytes`).
    pub partition_max_bytes: i32,
    /// Which records are seen.
    pub isolation: Isolation,
}

/// One partition to fetch, from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPosition {
    /// The partition.
    pub partition: TopicPartition,
    /// The next offset to read.
    pub offset: i64,
    /// The leader epoch last seen for it (KIP-320), -1 when unknown.
    pub leader_epoch: i32,
}

/// A partition's part of a Fetch response, its records not yet decoded.
#[derive(Debug, Clone)]
pub struct PartitionResponse {
    /// The partition.
    pub partition: TopicPartition,
    /// The broker's error for it, if any.
    pub error: Option<ResponseError>,
    /// The offset after the last record written.
    pub high_watermark: i64,
    /// The offset after the last record of a finished transaction (-1 when
    /// the broker does not say).
    pub last_stable_offset: i64,
    /// The oldest offset kept (-1 when the broker does not say).
    pub log_start_offset: i64,
    /// Aborted transactions in the range: (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
    /// The record batches, as the broker sent them.
    pub records: Bytes,
}

/// Sends one full Fetch for `positions` (all led by the broker behind
/// `conn`), outside any session, and reads its answer. Throttling and
/// partition errors are in the answer; a request-level error is an `Err`.
/// A consumer fetching again and again keeps a [`FetchSession`] instead.
pub async fn fetch(
    conn: &Connection,
    positions: &[FetchPosition],
    limits: &FetchLimits,
) -> Result<Vec<PartitionResponse>, WireError> {
    let version = conn.version::<FetchRequest>()?;
    // Session id 0 and epoch -1: no session (KIP-227).
    let request = fetch_request(positions.iter(), &[], limits, 0, -1);
    Ok(send_fetch(conn, &request, version, limits)
        .await?
        .partitions)
}

/// A Fetch request for `positions`, dropping `forget` from the session
/// `session_id` at `epoch`.
fn fetch_request<'a>(
    positions: impl Iterator<Item = &'a FetchPosition>,
    forget: &[&TopicPartition],
    limits: &FetchLimits,
    session_id: i32,
    epoch: i32,
) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for p in positions {
        topics.entry(&p.partition.topic).or_default().push(
            FetchPartition::default()
                .with_partition(p.partition.partition)
                .with_current_leader_epoch(p.leader_epoch)
                .with_fetch_offset(p.offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(limits.partition_max_bytes),
        );
    }
    let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in forget {
        forgotten.entry(&tp.topic).or_default().push(tp.partition);
    }
    let max_wait_ms = i32::try_from(limits.max_wait.as_millis()).unwrap_or(i32::MAX);
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(limits.min_bytes)
        .with_max_bytes(limits.max_bytes)
        .with_isolation_level(limits.isolation.level())
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        )
        .with_forgotten_topics_data(
            forgotten
                .into_iter()
                .map(|(t, ps)| {
                    ForgottenTopic::default()
                        .with_topic(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

/// A Fetch answer: the session it belongs to and the partitions in it.
#[derive(Debug, Clone)]
pub struct FetchAnswer {
    /// The broker's session id (0: none).
    pub session_id: i32,
    /// The partitions answered.
    pub partitions: Vec<PartitionResponse>,
}

/// Sends `request` and reads its answer.
async fn send_fetch(
    conn: &Connection,
    request: &FetchRequest,
    version: i16,
    limits: &FetchLimits,
) -> Result<FetchAnswer, WireError> {
    // The broker may hold the request for max_wait before answering.
    let body = conn
        .send_raw(request, version, conn.timeout() + limits.max_wait)
        .await?;
    parse_answer(body, version).map_err(|e| match e {
        WireError::Malformed { what, detail } => {
            conn.malformed(what, format!("v{version} response: {detail}"))
        }
        other => other,
    })
}

/// Reads a Fetch response body (after its header), versions 4 to 12: its
/// partitions.
pub fn parse_response(body: Bytes, version: i16) -> Result<Vec<PartitionResponse>, WireError> {
    parse_answer(body, version).map(|a| a.partitions)
}

/// Reads a Fetch response body (after its header), versions 4 to 12: the
/// session and the partitions.
pub fn parse_answer(body: Bytes, version: i16) -> Result<FetchAnswer, WireError> {
    let flexible = version >= 12;
    let mut r = Reader::new(body, "Fetch response");
    let _throttle_ms = r.i32()?;
    let mut session_id = 0;
    if version >= 7 {
        let error = r.i16()?;
        session_id = r.i32()?;
        if let Some(e) = error.err() {
            return Err(WireError::broker("Fetch", e, None));
        }
    }
    let mut out = Vec::new();
    let topics = r.len(flexible, 2)?.unwrap_or(0);
    for _ in 0..topics {
        let topic = r.string(flexible)?;
        let partitions = r.len(flexible, 30)?.unwrap_or(0);
        for _ in 0..partitions {
            let partition = r.i32()?;
            let error = r.i16()?.err();
            let high_watermark = r.i64()?;
            let last_stable_offset = r.i64()?;
            let log_start_offset = if version >= 5 { r.i64()? } else { -1 };
            let n = r.len(flexible, 16)?.unwrap_or(0);
            let mut aborted = Vec::with_capacity(n);
            for _ in 0..n {
                aborted.push((r.i64()?, r.i64()?));
                if flexible {
                    r.skip_tagged_fields()?;
                }
            }
            if version >= 11 {
                let _preferred_read_replica = r.i32()?;
            }
            let records = r.nullable_bytes(flexible)?.unwrap_or_default();
            if flexible {
                r.skip_tagged_fields()?;
            }
            out.push(PartitionResponse {
                partition: TopicPartition::new(topic.clone(), partition),
                error,
                high_watermark,
                last_stable_offset,
                log_start_offset,
                aborted,
                records,
            });
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(FetchAnswer {
        session_id,
        partitions: out,
    })
}

/// A partition's answer as its consumer should see it, and where its next
/// fetch starts. The batches are checked (CRC, codec) but their records are
/// not decoded yet: the consumer decodes one batch at a time as it handles
/// them, so a fetched answer is held once, as the broker sent it.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    /// The batches whose records the consumer sees, in offset order.
    pub batches: Vec<Batch>,
    /// Records before this offset are not shown (a batch may begin before
    /// the fetched position).
    pub from: i64,
    /// The next offset to fetch: past every whole batch in the response,
    /// shown to the consumer or not.
    pub next_offset: i64,
    /// The batches' bytes as fetched (compressed when they are): what they
    /// count against the fetch buffers.
    pub bytes: usize,
    /// The leader epoch of the last whole batch, shown or not (-1: none):
    /// the epoch of the record before `next_offset`, which a consumer asks
    /// a new leader about (KIP-320).
    pub last_epoch: i32,
}

impl Extracted {
    /// Every shown record, decoded (each batch decompressed to at most
    /// `max_batch_bytes`).
    pub fn records(&self, max_batch_bytes: usize) -> Result<Vec<FetchedRecord>, WireError> {
        let mut out = Vec::new();
        for batch in &self.batches {
            for record in batch_records(batch, self.from, max_batch_bytes)? {
                out.push(record?);
            }
        }
        Ok(out)
    }
}

/// The records of `batch` at or after `from`, decompressed (to at most
/// `max_batch_bytes`) at once and decoded one by one as they are taken
/// ([`Batch::iter_records`]).
pub fn batch_records(
    batch: &Batch,
    from: i64,
    max_batch_bytes: usize,
) -> Result<impl Iterator<Item = Result<FetchedRecord, WireError>> + '_, WireError> {
    Ok(batch
        .iter_records(max_batch_bytes)?
        .filter(move |r| r.as_ref().map_or(true, |r| r.offset >= from)))
}

impl PartitionResponse {
    /// The batches a consumer at `offset` should see under `isolation`.
    ///
    /// With `ReadCommitted`, a transactional batch whose producer has an
    /// aborted transaction starting at or before it is dropped, until that
    /// producer's abort marker; control batches are never shown. The
    /// position moves past every whole batch, so a response of only
    /// markers or of compacted gaps still advances.
    pub fn extract(&self, offset: i64, isolation: Isolation) -> Result<Extracted, WireError> {
        let mut aborted: Vec<(i64, i64)> = self.aborted.clone();
        // Oldest first: a transaction is aborted for a batch once its first
        // offset is at or before the batch's last.
        aborted.sort_by_key(|&(_, first)| std::cmp::Reverse(first));
        let mut aborting: HashSet<i64> = HashSet::new();
        let mut out = Extracted {
            batches: Vec::new(),
            from: offset,
            next_offset: offset,
            bytes: 0,
            last_epoch: -1,
        };
        let mut previous_end = i64::MIN;
        for batch in batches(self.records.clone()) {
            let batch = batch?;
            // Batches follow each other, and a consumer is never sent one
            // past the high watermark: a broker that does is not believed
            // (a jump to offset 1,000,000 under a high watermark of 31
            // would be committed).
            let past_the_end = self.high_watermark >= 0 && batch.next_offset > self.high_watermark;
            if batch.base_offset < previous_end || past_the_end {
                return Err(WireError::Malformed {
                    what: "record batch",
                    detail: format!(
                        "{}: a batch at offsets {}..{} after one ending at {previous_end}, under a high watermark of {}",
                        self.partition, batch.base_offset, batch.next_offset, self.high_watermark
                    ),
                });
            }
            previous_end = batch.next_offset;
            if batch.next_offset <= offset {
                continue; // wholly before the position
            }
            let committed = isolation == Isolation::ReadCommitted;
            if committed && batch.is_transactional {
                while let Some(&(producer, first)) = aborted.last() {
                    if first >= batch.next_offset {
                        break;
                    }
                    aborting.insert(producer);
                    aborted.pop();
                }
            }
            out.next_offset = out.next_offset.max(batch.next_offset);
            out.last_epoch = batch.partition_leader_epoch;
            if batch.is_control {
                if committed && batch.control_type()? == ControlType::Abort {
                    aborting.remove(&batch.producer_id);
                }
                continue;
            }
            if committed && batch.is_transactional && aborting.contains(&batch.producer_id) {
                continue;
            }
            out.bytes += batch.wire_len();
            out.batches.push(batch);
        }
        Ok(out)
    }
}

mod session;
#[cfg(test)]
mod tests;

pub use session::FetchSession;
