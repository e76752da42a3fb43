//! Every response Kavari reads, at every version it speaks: the shape it
//! walks before decoding agrees with kafka-protocol's decoder byte for
//! byte, and a corrupted answer is an error, never a panic or an
//! allocation the size of what a corrupt length claims.

use bytes::{Bytes, BytesMut};
use cap::Cap;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiVersionsRequest,
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeShareGroupOffsetsRequest, ElectLeadersRequest, EndTxnRequest, FetchRequest,
    FindCoordinatorRequest, HeartbeatRequest, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
    ShareAcknowledgeRequest, ShareFetchRequest, ShareGroupDescribeRequest,
    ShareGroupHeartbeatRequest, SyncGroupRequest, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::Encodable;
use kavari_wire::connection::{Request, decode_response};
use kavari_wire::response_shape::{Struct, Ty};

/// The whole test binary may hold 32 MiB at once: an allocation sized by a
/// corrupt length (2^31 elements, or 2^20 of a hundred bytes) is refused,
/// and the process aborts saying how many bytes it asked for.
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, 32 << 20);

/// Reports a failed assertion without a backtrace: reading the debug
/// symbols for one would itself pass the allocator's cap.
fn plain_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a random value of `ty` the way a broker would. `set` makes
/// every integer and flag differ from kafka-protocol's defaults and every
/// array non-empty, as a tagged field must be to be written back.
struct Gen {
    rng: Rng,
    version: i16,
    flexible: bool,
}

impl Gen {
    fn int(&mut self, out: &mut Vec<u8>, bytes: usize, set: bool) {
        let v = if set {
            1 + self.rng.below(100)
        } else {
            self.rng.next()
        };
        out.extend_from_slice(&v.to_be_bytes()[8 - bytes..]);
    }

    fn len(&mut self, out: &mut Vec<u8>, n: usize, int_width: usize) {
        if self.flexible {
            uvarint(out, n as u64 + 1);
        } else {
            out.extend_from_slice(&(n as u32).to_be_bytes()[4 - int_width..]);
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, ty: &Ty, set: bool) {
        match ty {
            Ty::I8 => self.int(out, 1, set),
            Ty::Bool => out.push(u8::from(set || self.rng.below(2) == 1)),
            Ty::I16 => self.int(out, 2, set),
            Ty::I32 => self.int(out, 4, set),
            Ty::I64 => self.int(out, 8, set),
            Ty::Uuid => (0..2).for_each(|_| self.int(out, 8, set)),
            Ty::Str | Ty::Bytes => {
                let n = self.rng.below(6) as usize;
                self.len(out, n, if matches!(ty, Ty::Str) { 2 } else { 4 });
                out.extend((0..n).map(|_| b'a' + self.rng.below(26) as u8));
            }
            Ty::Array(element) => {
                let n = if set { 1 } else { self.rng.below(3) as usize };
                self.len(out, n, 4);
                (0..n).for_each(|_| self.value(out, element, set));
            }
            Ty::Struct(s) => self.structure(out, s, set),
            Ty::Nullable(s) => {
                if set || self.rng.below(2) == 1 {
                    out.push(1);
                    self.structure(out, s, set);
                } else {
                    out.push(0xff);
                }
            }
        }
    }

    fn structure(&mut self, out: &mut Vec<u8>, s: &Struct, set: bool) {
        let version = self.version;
        for field in s.fields.iter().filter(|f| f.in_version(version)) {
            self.value(out, &field.ty, set);
        }
        if !self.flexible {
            return;
        }
        let mut tagged = Vec::new();
        for tag in s.tags.iter().filter(|t| t.since <= version) {
            if self.rng.below(2) == 0 {
                let mut value = Vec::new();
                self.value(&mut value, &tag.ty, true);
                tagged.push((tag.tag, value));
            }
        }
        if self.rng.below(3) == 0 {
            // A tag this version does not know, which the decoder keeps.
            let value = (0..self.rng.below(4)).map(|_| 0xab).collect();
            tagged.push((90 + self.rng.below(9) as u32, value));
        }
        uvarint(out, tagged.len() as u64);
        for (tag, value) in tagged {
            uvarint(out, u64::from(tag));
            uvarint(out, value.len() as u64);
            out.extend(value);
        }
    }
}

fn samples<R: Request>(version: i16, count: u64) -> Vec<Bytes> {
    let flexible = version >= R::SHAPE.flexible_since;
    (1..=count)
        .map(|seed| {
            let mut g = Gen {
                rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
                version,
                flexible,
            };
            let mut out = Vec::new();
            g.structure(&mut out, &R::SHAPE.body, false);
            Bytes::from(out)
        })
        .collect()
}

/// Every generated answer walks to its last byte, decodes, and encodes
/// back to the same bytes: the shape reads what kafka-protocol reads.
fn shape_matches_the_decoder<R: Request>()
where
    R::Response: Encodable + std::fmt::Debug,
{
    plain_panics();
    for version in R::MIN..=R::MAX {
        for body in samples::<R>(version, 40) {
            let trailing = R::SHAPE
                .check(&body, version, R::NAME)
                .unwrap_or_else(|e| panic!("{} v{version}: {e}: {body:02x?}", R::NAME));
            assert_eq!(trailing, 0, "{} v{version} {body:02x?}", R::NAME);
            let decoded = decode_response::<R>(body.clone(), version)
                .unwrap_or_else(|e| panic!("{} v{version}: {e}: {body:02x?}", R::NAME));
            let mut again = BytesMut::new();
            decoded
                .encode(&mut again, version)
                .unwrap_or_else(|e| panic!("{} v{version}: {e}: {decoded:?}", R::NAME));
            assert_eq!(
                &again[..],
                &body[..],
                "{} v{version} decoded as {decoded:?}",
                R::NAME
            );
        }
    }
}

/// Corrupts every byte and every length-sized window of generated answers:
/// decoding returns (an error or a value) without a panic or an allocation
/// past the test binary's cap.
fn corrupt_answers_are_bounded<R: Request>() {
    plain_panics();
    const BIG: [[u8; 5]; 3] = [
        [0x7f, 0xff, 0xff, 0xff, 0xff],
        [0x00, 0x10, 0x00, 0x00, 0x00],
        [0xff, 0xff, 0xff, 0xff, 0x07],
    ];
    for version in R::MIN..=R::MAX {
        for body in samples::<R>(version, 6) {
            let mut corrupt = Vec::new();
            for at in 0..body.len() {
                for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    let mut b = body.to_vec();
                    b[at] = byte;
                    corrupt.push(b);
                }
                for big in BIG {
                    let mut b = body.to_vec();
                    let end = (at + 5).min(b.len());
                    b[at..end].copy_from_slice(&big[..end - at]);
                    corrupt.push(b);
                }
            }
            corrupt.push(body[..body.len() / 2].to_vec());
            for b in corrupt {
                let _ = decode_response::<R>(Bytes::from(b), version);
            }
        }
    }
}

macro_rules! every_response {
    ($($name:ident: $req:ty),* $(,)?) => {
        mod shapes {
            use super::*;
            $(#[test] fn $name() { shape_matches_the_decoder::<$req>(); })*
        }
        mod corrupt {
            use super::*;
            $(#[test] fn $name() { corrupt_answers_are_bounded::<$req>(); })*
        }
    };
}

every_response! {
    api_versions: ApiVersionsRequest,
    metadata: MetadataRequest,
    find_coordinator: FindCoordinatorRequest,
    join_group: JoinGroupRequest,
    sync_group: SyncGroupRequest,
    heartbeat: HeartbeatRequest,
    leave_group: LeaveGroupRequest,
    offset_commit: OffsetCommitRequest,
    offset_fetch: OffsetFetchRequest,
    produce: ProduceRequest,
    fetch: FetchRequest,
    list_offsets: ListOffsetsRequest,
    offset_for_leader_epoch: OffsetForLeaderEpochRequest,
    create_topics: CreateTopicsRequest,
    sasl_handshake: SaslHandshakeRequest,
    sasl_authenticate: SaslAuthenticateRequest,
    init_producer_id: InitProducerIdRequest,
    describe_groups: DescribeGroupsRequest,
    elect_leaders: ElectLeadersRequest,
    create_partitions: CreatePartitionsRequest,
    list_groups: ListGroupsRequest,
    delete_topics: DeleteTopicsRequest,
    describe_configs: DescribeConfigsRequest,
    add_partitions_to_txn: AddPartitionsToTxnRequest,
    add_offsets_to_txn: AddOffsetsToTxnRequest,
    end_txn: EndTxnRequest,
    txn_offset_commit: TxnOffsetCommitRequest,
    consumer_group_heartbeat: ConsumerGroupHeartbeatRequest,
    consumer_group_describe: ConsumerGroupDescribeRequest,
    share_group_heartbeat: ShareGroupHeartbeatRequest,
    share_group_describe: ShareGroupDescribeRequest,
    share_fetch: ShareFetchRequest,
    share_acknowledge: ShareAcknowledgeRequest,
    incremental_alter_configs: IncrementalAlterConfigsRequest,
    describe_share_group_offsets: DescribeShareGroupOffsetsRequest,
}

/// A batch of 600,000 tiny records (5 MB) is read one record at a time,
/// within the binary's 32 MiB: decoded all at once they would take about
/// 80 MB, as a broker's 19 KB batch claiming 30 million records once took
/// 4 GB.
#[test]
fn a_batch_of_many_tiny_records_is_read_record_by_record() {
    use kavari_wire::Compression;
    use kavari_wire::fetch::batch_records;
    use kavari_wire::record_batch::read::batches;
    use kavari_wire::record_batch::write::{Record, RecordBatch};
    plain_panics();
    const RECORDS: usize = 600_000;
    let headers: [(&str, &[u8]); 0] = [];
    let mut batch = RecordBatch::with_capacity(RECORDS * 10);
    for _ in 0..RECORDS {
        let record = Record {
            key: None,
            value: &[],
            headers: &headers[..],
        };
        batch.push(&record, 1);
    }
    let bytes = Bytes::from(batch.finish(Compression::None).expect("finish"));
    let batch = batches(bytes).next().expect("a batch").expect("it reads");
    let mut read = 0;
    for record in batch_records(&batch, 0, 1 << 20).expect("records") {
        assert_eq!(record.expect("a record").offset, read);
        read += 1;
    }
    assert_eq!(read, RECORDS as i64);
}

/// A Metadata answer listing 600,000 brokers (7 MB, every length true) is
/// refused before it is decoded, within the binary's 32 MiB: decoded it
/// would take about 60 MB, as 4.5 million brokers once took 1.95 GB. One
/// that lists as many brokers as a response may hold still reads.
#[test]
fn a_metadata_answer_listing_too_many_brokers_is_refused_before_decoding() {
    use kavari_wire::response_shape::MAX_ELEMENTS;
    plain_panics();
    // Version 1, not flexible: brokers (node_id, host, port, rack), the
    // controller id, no topics.
    let body = |brokers: usize| {
        let mut out = Vec::with_capacity(brokers * 12 + 16);
        out.extend_from_slice(&i32::try_from(brokers).expect("fits").to_be_bytes());
        for id in 0..brokers {
            out.extend_from_slice(&i32::try_from(id).expect("fits").to_be_bytes());
            out.extend_from_slice(&0i16.to_be_bytes()); // host ""
            out.extend_from_slice(&9092i32.to_be_bytes());
            out.extend_from_slice(&(-1i16).to_be_bytes()); // no rack
        }
        out.extend_from_slice(&0i32.to_be_bytes()); // controller_id
        out.extend_from_slice(&0i32.to_be_bytes()); // topics
        Bytes::from(out)
    };
    let err = decode_response::<MetadataRequest>(body(600_000), 1).expect_err("refused");
    assert!(err.to_string().contains("600000 elements"), "{err}");
    let read = decode_response::<MetadataRequest>(body(MAX_ELEMENTS / 4), 1).expect("reads");
    assert_eq!(read.brokers.len(), MAX_ELEMENTS / 4);
}

/// A batch whose records decompress to about 35 MB (2 million records,
/// gzip) is read record by record within the binary's 32 MiB: its records
/// are decompressed a chunk at a time, not the whole batch at once (a
/// batch of a few kilobytes once decompressed to 200 MiB before a record
/// was read).
#[test]
fn a_compressed_batch_is_decompressed_as_its_records_are_read() {
    use std::io::Write;

    use kavari_wire::fetch::batch_records;
    use kavari_wire::record_batch::read::batches;
    plain_panics();
    const RECORDS: i32 = 2_000_000;
    const VALUE: [u8; 8] = *b"abcdefgh";
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut framed = Vec::with_capacity(40);
    let mut record = Vec::with_capacity(32);
    let mut decompressed = 0;
    for delta in 0..RECORDS {
        record.clear();
        record.push(0); // attributes
        record.push(0); // timestamp delta
        zigzag(&mut record, i64::from(delta)); // offset delta
        zigzag(&mut record, -1); // no key
        zigzag(&mut record, VALUE.len() as i64);
        record.extend_from_slice(&VALUE);
        zigzag(&mut record, 0); // no headers
        framed.clear();
        zigzag(&mut framed, record.len() as i64);
        framed.extend_from_slice(&record);
        gzip.write_all(&framed).expect("compress");
        decompressed += framed.len();
    }
    let compressed = gzip.finish().expect("finish");
    // The batch: its header (magic 2, attributes saying gzip), then the
    // records; the CRC covers the attributes onwards.
    let mut batch = Vec::with_capacity(61 + compressed.len());
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let length = 49 + compressed.len();
    batch.extend_from_slice(&i32::try_from(length).expect("fits").to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&[0; 4]); // the CRC, below
    batch.extend_from_slice(&1i16.to_be_bytes()); // attributes: gzip
    batch.extend_from_slice(&(RECORDS - 1).to_be_bytes()); // last offset delta
    batch.extend_from_slice(&1i64.to_be_bytes()); // base timestamp
    batch.extend_from_slice(&1i64.to_be_bytes()); // max timestamp
    batch.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    batch.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    batch.extend_from_slice(&RECORDS.to_be_bytes());
    batch.extend_from_slice(&compressed);
    drop(compressed);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    eprintln!(
        "{decompressed} bytes of records in {} compressed",
        batch.len()
    );
    assert!(decompressed > 32 << 20, "more than the binary may hold");

    let batch = batches(Bytes::from(batch))
        .next()
        .expect("a batch")
        .expect("it reads");
    let mut read = 0;
    for record in batch_records(&batch, 0, 64 << 20).expect("records") {
        let record = record.expect("a record");
        assert_eq!(record.offset, read);
        assert_eq!(record.value.as_deref(), Some(&VALUE[..]));
        read += 1;
    }
    assert_eq!(read, i64::from(RECORDS));
}

/// Appends `v` as a zigzag varint.
fn zigzag(out: &mut Vec<u8>, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}
