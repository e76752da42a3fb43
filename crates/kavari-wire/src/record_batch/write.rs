//! Writing record batches in place: a publish encodes its record straight
//! into the open batch's buffer, so a message's bytes are copied once on
//! their way to the socket and nothing is allocated per record.

use std::collections::BTreeMap;

use bytes::BufMut;

use super::{CRC_FROM, HEADER_LEN, put_varlong, varlong_len};
use crate::compression::{CodecError, Compression};

/// Bytes a record may take beyond its key, value and header names and
/// values: attributes, the deltas, the lengths (as varints, at their widest).
pub fn record_overhead(headers: usize) -> usize {
    // length 5, attributes 1, timestamp delta 10, offset delta 5, key and
    // value lengths 5 + 5, header count 5; per header two lengths 5 + 5.
    36 + 10 * headers
}

/// A record's headers as a batch writes them: an encoded message's map, or
/// a typed message's fixed envelope pairs.
pub trait Headers {
    /// How many there are.
    fn count(&self) -> usize;
    /// Each header's name and value, in the order they are written.
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
}

impl Headers for BTreeMap<String, Vec<u8>> {
    fn count(&self) -> usize {
        self.len()
    }

    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))
    }
}

impl Headers for [(&str, &[u8])] {
    fn count(&self) -> usize {
        self.len()
    }

    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|(k, v)| (k.as_bytes(), *v))
    }
}

/// A record's parts, borrowed from whoever holds them.
pub struct Record<'a, H: Headers + ?Sized> {
    /// The key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// The headers.
    pub headers: &'a H,
}

impl<H: Headers + ?Sized> Record<'_, H> {
    /// Key, value and header bytes: what counts against size limits.
    pub fn size(&self) -> usize {
        self.key.map_or(0, <[u8]>::len)
            + self.value.len()
            + self
                .headers
                .pairs()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// The most bytes it can take in a batch.
    pub fn bound(&self) -> usize {
        self.size() + record_overhead(self.headers.count())
    }
}

/// One batch being filled.
#[derive(Debug)]
pub struct RecordBatch {
    /// The header's room, then the records.
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    /// The most bytes the buffer grows to by doubling (a record that needs
    /// more still gets room for itself).
    limit: usize,
}

impl RecordBatch {
    /// An empty batch whose buffer holds `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            limit: usize::MAX,
        }
    }

    /// The batch, its buffer growing to at most `max_bytes` (the size at
    /// which its owner closes it) rather than doubling past it: a batch
    /// closed at 512 KiB would otherwise hold up to 1 MiB while it waits
    /// to be sent.
    #[must_use]
    pub fn within(mut self, max_bytes: usize) -> Self {
        self.limit = max_bytes;
        self
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        usize::try_from(self.count).unwrap_or(0)
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's size on the wire, uncompressed.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record written at `timestamp_ms`; returns its index.
    pub fn push<H: Headers + ?Sized>(
        &mut self,
        record: &Record<'_, H>,
        timestamp_ms: i64,
    ) -> usize {
        let Record {
            key,
            value,
            headers,
        } = *record;
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let timestamp_delta = timestamp_ms - self.base_timestamp;
        let offset_delta = self.count;
        let body = 1
            + varlong_len(timestamp_delta)
            + varlong_len(i64::from(offset_delta))
            + key.map_or(1, |k| varlen_len(k.len()) + k.len())
            + varlen_len(value.len())
            + value.len()
            + varlen_len(headers.count())
            + headers
                .pairs()
                .map(|(k, v)| varlen_len(k.len()) + k.len() + varlen_len(v.len()) + v.len())
                .sum::<usize>();
        let need = body + 5; // the length's varint at its widest
        if self.buf.capacity() - self.buf.len() < need {
            let wanted = (self.buf.capacity().saturating_mul(2))
                .min(self.limit)
                .max(self.buf.len() + need);
            self.buf.reserve_exact(wanted - self.buf.len());
        }
        let buf = &mut self.buf;
        put_varlen(buf, body);
        buf.push(0); // attributes: unused in v2 records
        put_varlong(buf, timestamp_delta);
        put_varlong(buf, i64::from(offset_delta));
        match key {
            Some(k) => put_bytes(buf, k),
            None => put_varlong(buf, -1),
        }
        put_bytes(buf, value);
        put_varlen(buf, headers.count());
        for (k, v) in headers.pairs() {
            put_bytes(buf, k);
            put_bytes(buf, v);
        }
        self.count += 1;
        self.len() - 1
    }

    /// The finished batch: header written, records compressed as asked,
    /// CRC set.
    pub fn finish(self, compression: Compression) -> Result<Vec<u8>, CodecError> {
        let mut buf = self.buf;
        if compression != Compression::None {
            let mut out = Vec::with_capacity(buf.len() / 2 + HEADER_LEN);
            out.resize(HEADER_LEN, 0);
            compression.compress(&buf[HEADER_LEN..], &mut out)?;
            buf = out;
        }
        // The batch stays in memory until it is answered: give back the
        // room that growing by doubling left over.
        buf.shrink_to_fit();
        let batch_length = i32::try_from(buf.len() - 12).map_err(|_| CodecError::TooLarge {
            codec: compression,
            limit: i32::MAX as usize,
        })?;
        let mut h = &mut buf[..HEADER_LEN];
        h.put_i64(0); // base offset: the broker assigns it
        h.put_i32(batch_length);
        h.put_i32(-1); // partition leader epoch
        h.put_i8(2); // magic
        h.put_u32(0); // CRC, set below
        h.put_i16(compression.id()); // attributes: compression, create time
        h.put_i32(self.count - 1); // last offset delta
        h.put_i64(self.base_timestamp);
        h.put_i64(self.max_timestamp);
        h.put_i64(-1); // producer id: not idempotent
        h.put_i16(-1); // producer epoch
        h.put_i32(-1); // base sequence
        h.put_i32(self.count);
        let crc = crc32c::crc32c(&buf[CRC_FROM..]);
        buf[CRC_FROM - 4..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
        Ok(buf)
    }
}

/// Writes a producer id, epoch and base sequence into a finished batch
/// (idempotent producing) and sets its CRC again; `false` for bytes too
/// short to be a batch.
pub fn stamp(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) -> bool {
    let Some(fields) = batch.get_mut(43..57) else {
        return false;
    };
    let mut h = &mut fields[..];
    h.put_i64(producer_id);
    h.put_i16(epoch);
    h.put_i32(base_sequence);
    let crc = crc32c::crc32c(&batch[CRC_FROM..]);
    batch[CRC_FROM - 4..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    true
}

/// Marks a finished batch as part of a transaction (attribute bit 4) and
/// sets its CRC again; `false` for bytes too short to be a batch.
pub fn mark_transactional(batch: &mut [u8]) -> bool {
    let Some(attributes) = batch.get_mut(CRC_FROM..CRC_FROM + 2) else {
        return false;
    };
    let value = u16::from_be_bytes([attributes[0], attributes[1]]) | TRANSACTIONAL;
    attributes.copy_from_slice(&value.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_FROM..]);
    batch[CRC_FROM - 4..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    true
}

/// The batch attribute of a transaction's batches.
const TRANSACTIONAL: u16 = 0x10;

/// A length (or count) as a zigzag varint.
fn put_varlen(buf: &mut Vec<u8>, len: usize) {
    put_varlong(buf, i64::try_from(len).unwrap_or(i64::MAX));
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varlen(buf, bytes.len());
    buf.extend_from_slice(bytes);
}

fn varlen_len(len: usize) -> usize {
    varlong_len(i64::try_from(len).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn varlong(v: i64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varlong(&mut b, v);
        assert_eq!(b.len(), varlong_len(v), "length of {v}");
        b
    }

    /// Zigzag varints as the protocol guide and protobuf define them.
    #[test]
    fn varints_match_the_protocol() {
        assert_eq!(varlong(0), [0x00]);
        assert_eq!(varlong(-1), [0x01]);
        assert_eq!(varlong(1), [0x02]);
        assert_eq!(varlong(63), [0x7e]);
        assert_eq!(varlong(-64), [0x7f]);
        assert_eq!(varlong(64), [0x80, 0x01]);
        assert_eq!(varlong(300), [0xd8, 0x04]);
        assert_eq!(varlong(i64::MIN).len(), 10);
        assert_eq!(varlong(i64::MAX).len(), 10);
    }

    type Rec = (Option<Vec<u8>>, Vec<u8>, BTreeMap<String, Vec<u8>>, i64);

    fn random_records(rng: &mut impl Rng, n: usize) -> Vec<Rec> {
        (0..n)
            .map(|_| {
                let key = rng
                    .random_bool(0.7)
                    .then(|| (0..rng.random_range(0..40)).map(|_| rng.random()).collect());
                let value = (0..rng.random_range(0..3000))
                    .map(|_| rng.random())
                    .collect();
                let headers = (0..rng.random_range(0..4))
                    .map(|i| {
                        let v = (0..rng.random_range(0..200))
                            .map(|_| rng.random())
                            .collect();
                        (format!("h{i}"), v)
                    })
                    .collect();
                // Timestamps may go backwards (a clock step): deltas are signed.
                let ts = 1_700_000_000_000 + rng.random_range(-5_000..5_000);
                (key, value, headers, ts)
            })
            .collect()
    }

    /// A stamped batch carries the producer id, epoch and sequences (one
    /// per record from the base) to an independent decoder, CRC valid.
    #[test]
    fn stamped_batches_carry_the_producer_and_sequences() {
        let mut batch = RecordBatch::with_capacity(0);
        let headers: &[(&str, &[u8])] = &[];
        for v in [&b"a"[..], b"b", b"c"] {
            batch.push(
                &Record {
                    key: None,
                    value: v,
                    headers,
                },
                1,
            );
        }
        let mut bytes = batch.finish(Compression::Snappy).expect("finish");
        assert!(stamp(&mut bytes, 4242, 7, 100));
        let set = RecordBatchDecoder::decode(&mut Bytes::from(bytes)).expect("CRC valid");
        for (i, r) in set.records.iter().enumerate() {
            assert_eq!((r.producer_id, r.producer_epoch), (4242, 7));
            assert_eq!(r.sequence, 100 + i as i32);
        }
        assert!(!stamp(&mut [0u8; 20], 1, 1, 1), "too short to be a batch");
    }

    /// Our batches decode, CRC checked, with an independent implementation
    /// (kafka-protocol's), with every compression Kavari writes.
    #[test]
    fn batches_decode_with_an_independent_decoder() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy] {
            for n in [1, 2, 17, 300] {
                let records = random_records(&mut rng, n);
                let mut batch = RecordBatch::with_capacity(0);
                for (i, (k, v, h, ts)) in records.iter().enumerate() {
                    let before = batch.size();
                    let record = Record {
                        key: k.as_deref(),
                        value: v,
                        headers: h,
                    };
                    assert_eq!(batch.push(&record, *ts), i);
                    let payload = k.as_ref().map_or(0, Vec::len)
                        + v.len()
                        + h.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                    assert!(batch.size() - before <= payload + record_overhead(h.len()));
                }
                assert_eq!(batch.len(), n);
                let mut bytes = Bytes::from(batch.finish(compression).expect("finish"));
                let set = RecordBatchDecoder::decode(&mut bytes).expect("decodes");
                assert!(bytes.is_empty(), "one batch, nothing after it");
                assert_eq!(set.version, 2);
                assert_eq!(set.records.len(), n);
                for (i, (got, (k, v, h, ts))) in set.records.iter().zip(&records).enumerate() {
                    assert_eq!(got.offset, i as i64);
                    assert_eq!(got.timestamp, *ts);
                    assert_eq!(got.key.as_deref(), k.as_deref());
                    assert_eq!(got.value.as_deref(), Some(v.as_slice()));
                    let headers: BTreeMap<String, Vec<u8>> = got
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.as_deref().unwrap_or_default().to_vec()))
                        .collect();
                    assert_eq!(&headers, h);
                    assert_eq!(got.producer_id, -1);
                }
            }
        }
    }

    /// A corrupted byte anywhere the CRC covers is caught by a reader.
    #[test]
    fn the_crc_covers_the_records() {
        let mut batch = RecordBatch::with_capacity(0);
        let headers: [(&str, &[u8]); 1] = [("h", b"v")];
        let record = Record {
            key: Some(b"k"),
            value: b"value",
            headers: &headers[..],
        };
        batch.push(&record, 1);
        let good = batch.finish(Compression::None).expect("finish");
        for i in CRC_FROM..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(
                RecordBatchDecoder::decode(&mut Bytes::from(bad)).is_err(),
                "flipped byte {i} went unnoticed"
            );
        }
    }

    /// A record with key `k`, a 1,000-byte value and no headers.
    fn thousand_byte_record() -> Record<'static, [(&'static str, &'static [u8])]> {
        static VALUE: [u8; 1000] = [0xab; 1000];
        Record {
            key: Some(b"k"),
            value: &VALUE,
            headers: &[],
        }
    }

    /// A finished batch waits for its answer holding its bytes only, not
    /// the room its buffer grew into while records came.
    #[test]
    fn a_finished_batch_holds_no_room_beyond_its_bytes() {
        let record = thousand_byte_record();
        for compression in [Compression::None, Compression::Gzip] {
            let mut batch = RecordBatch::with_capacity(0);
            for i in 0..300 {
                batch.push(&record, i);
            }
            let finished = batch.finish(compression).expect("finish");
            let room = finished.capacity() - finished.len();
            assert!(room < 64, "{compression:?}: {room} bytes of room kept");
        }
    }

    /// An open batch waits to be sent holding at most the size its owner
    /// closes it at, however it grew; a record larger than that still fits.
    #[test]
    fn an_open_batch_grows_no_further_than_its_limit() {
        let record = thousand_byte_record();
        let max = 64 * 1024;
        // Starting small (doubling up to the limit) and starting at most of
        // it (where doubling once would pass it).
        for start in [0, 60 * 1024] {
            let mut batch = RecordBatch::with_capacity(start).within(max);
            while batch.size() + record.bound() <= max {
                batch.push(&record, 0);
            }
            assert!(batch.len() > 60, "{} records", batch.len());
            assert!(
                batch.buf.capacity() <= max,
                "from {start}: {} bytes held for a batch closed at {max}",
                batch.buf.capacity()
            );
        }
        let big = vec![0xcd; 3 * max];
        let mut batch = RecordBatch::with_capacity(0).within(max);
        batch.push(
            &Record {
                key: None,
                value: &big,
                headers: &[][..],
            },
            0,
        );
        let finished = batch.finish(Compression::None).expect("finish");
        assert!(finished.len() > 3 * max);
    }

    /// Our batches read back through our reader with every codec, lz4 and
    /// zstd included.
    #[test]
    fn batches_read_back_with_every_codec() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records = random_records(&mut rng, 50);
            let mut batch = RecordBatch::with_capacity(0);
            for (k, v, h, ts) in &records {
                let record = Record {
                    key: k.as_deref(),
                    value: v,
                    headers: h,
                };
                batch.push(&record, *ts);
            }
            let bytes = Bytes::from(batch.finish(compression).expect("finish"));
            let batches: Vec<_> = crate::record_batch::read::batches(bytes)
                .collect::<Result<_, _>>()
                .expect("reads");
            assert_eq!(batches.len(), 1);
            assert_eq!(batches[0].compression, compression);
            let got = batches[0].records(1 << 24).expect("decodes");
            assert_eq!(got.len(), records.len(), "{compression:?}");
            for (i, (got, (k, v, h, ts))) in got.iter().zip(&records).enumerate() {
                assert_eq!(got.offset, i as i64);
                assert_eq!(got.timestamp_ms, *ts);
                assert_eq!(got.key.as_deref(), k.as_deref());
                assert_eq!(got.value.as_deref(), Some(v.as_slice()));
                let headers: BTreeMap<String, Vec<u8>> = got
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            v.unwrap_or_default().to_vec(),
                        )
                    })
                    .collect();
                assert_eq!(&headers, h);
            }
        }
    }
}
