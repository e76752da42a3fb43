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
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::connection::Connection;
use crate::reader::Reader;
use crate::record_batch::read::{Batch, ControlType, FetchedRecord, batches};
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

/// Sends one Fetch for `positions` (all led by the broker behind `conn`)
/// and reads its answer. Throttling and partition errors are in the
/// answer; a request-level error is an `Err`.
pub async fn fetch(
    conn: &Connection,
    positions: &[FetchPosition],
    limits: &FetchLimits,
) -> Result<Vec<PartitionResponse>, WireError> {
    let version = conn.version::<FetchRequest>()?;
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
    let max_wait_ms = i32::try_from(limits.max_wait.as_millis()).unwrap_or(i32::MAX);
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(limits.min_bytes)
        .with_max_bytes(limits.max_bytes)
        .with_isolation_level(limits.isolation.level())
        // No fetch session (KIP-227): every request is a full one.
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    // The broker may hold the request for max_wait before answering.
    let body = conn
        .send_raw(&req, version, conn.timeout() + limits.max_wait)
        .await?;
    parse_response(body, version).map_err(|e| match e {
        WireError::Malformed { what, detail } => {
            conn.malformed(what, format!("v{version} response: {detail}"))
        }
        other => other,
    })
}

/// Reads a Fetch response body (after its header), versions 4 to 12.
pub fn parse_response(body: Bytes, version: i16) -> Result<Vec<PartitionResponse>, WireError> {
    let flexible = version >= 12;
    let mut r = Reader::new(body, "Fetch response");
    let _throttle_ms = r.i32()?;
    if version >= 7 {
        let error = r.i16()?;
        let _session = r.i32()?;
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
    Ok(out)
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use indexmap::IndexMap;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::protocol::Encodable;
    use kafka_protocol::records::{
        Compression as KpCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    use super::*;

    /// One record as an independent encoder writes it.
    fn record(offset: i64, producer_id: i64, transactional: bool) -> Record {
        Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 3,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            // The encoder batches records whose offset - sequence agree.
            sequence: offset as i32,
            timestamp: 1_700_000_000_000 + offset,
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::from(format!("v{offset}"))),
            headers: IndexMap::from([(
                StrBytes::from_static_str("msg_type"),
                Some(Bytes::from_static(b"T")),
            )]),
        }
    }

    /// A transaction marker: one control record, key = version 0, type.
    fn marker(offset: i64, producer_id: i64, commit: bool) -> Record {
        let mut key = vec![0, 0, 0, u8::from(commit)];
        key.truncate(4);
        Record {
            control: true,
            transactional: true,
            key: Some(Bytes::from(key)),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            headers: IndexMap::new(),
            ..record(offset, producer_id, true)
        }
    }

    /// Batches, each encoded on its own by kafka-protocol.
    fn encode(batches: &[Vec<Record>], compression: KpCompression) -> Bytes {
        let mut buf = BytesMut::new();
        for b in batches {
            RecordBatchEncoder::encode(
                &mut buf,
                b,
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .expect("encode");
        }
        buf.freeze()
    }

    fn response(records: Bytes, aborted: Vec<(i64, i64)>) -> PartitionResponse {
        PartitionResponse {
            partition: TopicPartition::new("t", 0),
            error: None,
            high_watermark: 100,
            last_stable_offset: 100,
            log_start_offset: 0,
            aborted,
            records,
        }
    }

    fn offsets(e: &Extracted) -> Vec<i64> {
        records(e).iter().map(|r| r.offset).collect()
    }

    fn records(e: &Extracted) -> Vec<FetchedRecord> {
        e.records(MAX).expect("records")
    }

    const RC: Isolation = Isolation::ReadCommitted;
    const MAX: usize = 1 << 20;

    /// Offsets a lying broker writes are refused, not trusted: records
    /// out of order or twice in a batch, and a batch whose last offset
    /// runs off the end of the offsets.
    #[test]
    fn offsets_out_of_order_or_out_of_range_are_malformed() {
        let batch = |offsets: [i64; 4]| {
            let records = offsets.map(|o| record(o, -1, false)).to_vec();
            response(encode(&[records], KpCompression::None), vec![])
        };
        // Four records in offsets 3..=5: more than the batch has room for.
        let refused = batch([5, 3, 5, 4]).extract(0, RC).expect_err("4 in 3");
        assert!(
            refused.to_string().contains("4 records in 3 offsets"),
            "{refused}"
        );
        // Four in 3..=6, but 4 after 5.
        let e = batch([3, 5, 4, 6]).extract(0, RC).expect("extract");
        let refused = e.records(MAX).expect_err("out of order");
        assert!(
            refused.to_string().contains("a record at offset 4"),
            "{refused}"
        );

        let last = Record {
            offset: i64::MAX,
            ..record(0, -1, false)
        };
        let bytes = encode(&[vec![last]], KpCompression::None);
        let refused = response(bytes, vec![])
            .extract(0, RC)
            .expect_err("no offset after i64::MAX");
        assert!(
            refused.to_string().contains("last offset delta"),
            "{refused}"
        );
    }

    /// A batch past the high watermark, or one that goes back behind the
    /// one before it, is refused.
    #[test]
    fn batches_past_the_high_watermark_or_out_of_order_are_malformed() {
        let jump = encode(
            &[(1_000_000..1_000_002)
                .map(|o| record(o, -1, false))
                .collect()],
            KpCompression::None,
        );
        let refused = response(jump, vec![]).extract(0, RC).expect_err("past");
        assert!(
            refused.to_string().contains("high watermark of 100"),
            "{refused}"
        );
        let back = encode(
            &[
                (5..8).map(|o| record(o, -1, false)).collect(),
                (2..4).map(|o| record(o, -1, false)).collect(),
            ],
            KpCompression::None,
        );
        assert!(response(back, vec![]).extract(0, RC).is_err());
    }

    #[test]
    fn plain_batches_give_every_record_with_its_parts() {
        for compression in [
            KpCompression::None,
            KpCompression::Gzip,
            KpCompression::Snappy,
        ] {
            let bytes = encode(
                &[
                    (0..3).map(|o| record(o, -1, false)).collect(),
                    (3..5).map(|o| record(o, -1, false)).collect(),
                ],
                compression,
            );
            let e = response(bytes, vec![]).extract(0, RC).expect("extract");
            assert_eq!(offsets(&e), [0, 1, 2, 3, 4], "{compression:?}");
            assert_eq!(e.next_offset, 5);
            let r = &records(&e)[4];
            assert_eq!(r.key.as_deref(), Some(&b"k4"[..]));
            assert_eq!(r.value.as_deref(), Some(&b"v4"[..]));
            assert_eq!(r.timestamp_ms, 1_700_000_000_004);
            // The batch's leader epoch, for the commit after it (KIP-320).
            assert_eq!(r.leader_epoch, 3);
            assert_eq!(
                r.headers.iter().collect::<Vec<_>>(),
                [(&b"msg_type"[..], Some(&b"T"[..]))]
            );
            // Starting inside a batch skips what came before the position.
            let e = response(
                encode(
                    &[(0..5).map(|o| record(o, -1, false)).collect()],
                    compression,
                ),
                vec![],
            )
            .extract(3, RC)
            .expect("extract");
            assert_eq!(offsets(&e), [3, 4]);
        }
    }

    /// Producer 7 aborts (offsets 0-1, marker at 2), producer 8 commits
    /// (3-4, marker at 5), producer 7 writes again and commits (6, marker 7).
    fn transactions() -> (Bytes, Vec<(i64, i64)>) {
        let bytes = encode(
            &[
                vec![record(0, 7, true), record(1, 7, true)],
                vec![marker(2, 7, false)],
                vec![record(3, 8, true), record(4, 8, true)],
                vec![marker(5, 8, true)],
                vec![record(6, 7, true)],
                vec![marker(7, 7, true)],
            ],
            KpCompression::None,
        );
        (bytes, vec![(7, 0)])
    }

    #[test]
    fn aborted_transactions_are_dropped_and_markers_skipped() {
        let (bytes, aborted) = transactions();
        let e = response(bytes.clone(), aborted.clone())
            .extract(0, RC)
            .expect("extract");
        assert_eq!(offsets(&e), [3, 4, 6], "read_committed");
        assert_eq!(e.next_offset, 8, "past the last marker");
        let e = response(bytes, aborted)
            .extract(0, Isolation::ReadUncommitted)
            .expect("extract");
        assert_eq!(
            offsets(&e),
            [0, 1, 3, 4, 6],
            "read_uncommitted: markers still hidden"
        );
    }

    #[test]
    fn a_response_of_only_a_marker_or_a_gap_still_advances() {
        let only_marker = encode(&[vec![marker(41, 9, true)]], KpCompression::None);
        let e = response(only_marker, vec![])
            .extract(41, RC)
            .expect("extract");
        assert!(records(&e).is_empty());
        assert_eq!(e.next_offset, 42);
        // Compaction left offsets 10-19 out: the position jumps the gap.
        let gap = encode(
            &[
                vec![record(8, -1, false), record(9, -1, false)],
                vec![record(20, -1, false)],
            ],
            KpCompression::None,
        );
        let e = response(gap, vec![]).extract(8, RC).expect("extract");
        assert_eq!(offsets(&e), [8, 9, 20]);
        assert_eq!(e.next_offset, 21);
    }

    #[test]
    fn a_batch_cut_short_by_the_byte_limit_is_left_for_the_next_fetch() {
        let bytes = encode(
            &[
                vec![record(0, -1, false)],
                (1..4).map(|o| record(o, -1, false)).collect(),
            ],
            KpCompression::None,
        );
        let cut = bytes.slice(..bytes.len() - 5);
        let e = response(cut, vec![]).extract(0, RC).expect("extract");
        assert_eq!(offsets(&e), [0]);
        assert_eq!(e.next_offset, 1);
    }

    #[test]
    fn a_corrupt_batch_is_an_error_naming_its_offset() {
        let bytes = encode(
            &[(0..3).map(|o| record(o, -1, false)).collect()],
            KpCompression::None,
        );
        let mut bad = bytes.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let e = response(Bytes::from(bad), vec![])
            .extract(0, RC)
            .expect_err("corrupt");
        assert!(e.to_string().contains("CRC"), "{e}");
        // Unknown codec bits (attributes are CRC-covered: recompute it).
        let mut bad = bytes.to_vec();
        bad[22] |= 0x07;
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let e = response(Bytes::from(bad), vec![])
            .extract(0, RC)
            .expect_err("unknown codec");
        assert!(e.to_string().contains("unknown compression codec 7"), "{e}");
    }

    /// What kafka-protocol encodes as a broker, for every version Kavari
    /// reads, is what our reader parses; a cut-short body is an error.
    #[test]
    fn responses_parse_as_the_protocol_encodes_them() {
        let (records, _) = transactions();
        for version in 4..=12 {
            let resp = FetchResponse::default()
                .with_throttle_time_ms(5)
                .with_responses(vec![
                    FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_static_str("orders")))
                        .with_partitions(vec![
                            PartitionData::default()
                                .with_partition_index(2)
                                .with_high_watermark(8)
                                .with_last_stable_offset(8)
                                .with_log_start_offset(0)
                                .with_aborted_transactions(Some(vec![
                                    AbortedTransaction::default()
                                        .with_producer_id(7.into())
                                        .with_first_offset(0),
                                ]))
                                .with_records(Some(records.clone())),
                            PartitionData::default()
                                .with_partition_index(3)
                                .with_error_code(ResponseError::NotLeaderOrFollower.code())
                                .with_records(None),
                        ]),
                ]);
            let mut buf = BytesMut::new();
            resp.encode(&mut buf, version).expect("encode");
            let body = buf.freeze();
            let parsed = parse_response(body.clone(), version).expect("parse");
            assert_eq!(parsed.len(), 2, "v{version}");
            let p = &parsed[0];
            assert_eq!(p.partition, TopicPartition::new("orders", 2));
            assert_eq!((p.high_watermark, p.last_stable_offset), (8, 8));
            assert_eq!(p.aborted, [(7, 0)]);
            assert_eq!(p.records, records);
            assert_eq!(parsed[1].error, Some(ResponseError::NotLeaderOrFollower));
            assert!(parsed[1].records.is_empty());
            for cut in [1, 7, body.len() / 2, body.len() - 1] {
                assert!(
                    parse_response(body.slice(..cut), version).is_err(),
                    "v{version} cut at {cut}"
                );
            }
        }
    }
}
