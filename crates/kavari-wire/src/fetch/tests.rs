use bytes::BytesMut;
use indexmap::IndexMap;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchResponse, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression as KpCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
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
    // A marker written under a later leader epoch than the records before
    // it: the epoch of the record before the next offset is the marker's,
    // what a new leader is asked about (KIP-320).
    let only_marker = encode(
        &[vec![Record {
            partition_leader_epoch: 4,
            ..marker(41, 9, true)
        }]],
        KpCompression::None,
    );
    let e = response(only_marker, vec![])
        .extract(41, RC)
        .expect("extract");
    assert!(records(&e).is_empty());
    assert_eq!(e.next_offset, 42);
    assert_eq!(e.last_epoch, 4, "a hidden batch's epoch counts");
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
