//! Reading record batches from a fetch response: split into whole batches
//! (the broker may cut the last one short), check each CRC, decompress with
//! any codec as the records are read, and slice keys, values and headers
//! out of the batch bytes (or out of each decompressed chunk) without a
//! copy per record.

use std::io::Read;

use bytes::{Buf, Bytes, BytesMut};

use super::{CRC_FROM, HEADER_LEN};
use crate::WireError;
use crate::compression::Compression;
use crate::reader::Reader;

/// A record read from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    /// The record's offset.
    pub offset: i64,
    /// Milliseconds since the epoch: create time, or the broker's append
    /// time for a topic with `message.timestamp.type=LogAppendTime`.
    pub timestamp_ms: i64,
    /// The key; `None` when null.
    pub key: Option<Bytes>,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The headers in the order written, checked when the record was read
    /// and walked without allocating.
    pub headers: RecordHeaders,
    /// The leader epoch of the batch it came in (-1 when the writer set
    /// none): what a commit of the offset after it carries (KIP-320).
    pub leader_epoch: i32,
}

impl FetchedRecord {
    /// Bytes of its key, value and header section: what it counts against
    /// the fetch buffers.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self.headers.byte_len()
    }
}

/// A record's header section as written: `count` headers, each a varint
/// name length, the name, a varint value length (-1 for null), the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordHeaders {
    count: usize,
    raw: Bytes,
}

impl RecordHeaders {
    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the section: names, values and their lengths.
    pub fn byte_len(&self) -> usize {
        self.raw.len()
    }

    /// Each header's name and value (`None` when null), in the order
    /// written.
    pub fn iter(&self) -> HeaderIter<'_> {
        HeaderIter {
            rest: &self.raw,
            left: self.count,
        }
    }
}

/// The iterator [`RecordHeaders::iter`] returns.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The section was checked when the record was read; a failure here
        // only ends the walk.
        take_header(&mut self.rest).ok()
    }
}

/// The next header of a section: its name and value (`None` when null), or
/// what is wrong with it.
#[inline]
fn take_header<'a>(rest: &mut &'a [u8]) -> Result<(&'a [u8], Option<&'a [u8]>), &'static str> {
    let name_len = take_varlong(rest).ok_or("a header name's length is cut short")?;
    let name_len = usize::try_from(name_len).map_err(|_| "a header with a null name")?;
    let name = take(rest, name_len).ok_or("a header name is cut short")?;
    let value = match take_varlong(rest).ok_or("a header value's length is cut short")? {
        -1 => None,
        n => {
            let n = usize::try_from(n).map_err(|_| "a header value of negative length")?;
            Some(take(rest, n).ok_or("a header value is cut short")?)
        }
    };
    Ok((name, value))
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

/// A zigzag varint length of bytes that follow it: `None` for -1; an
/// error below that or past the bytes left.
fn take_len(rest: &mut &[u8]) -> Result<Option<usize>, &'static str> {
    let n = take_len_value(rest)?;
    match n {
        Some(n) if n > rest.len() => Err("longer than the bytes left"),
        n => Ok(n),
    }
}

/// A zigzag varint count or length: `None` for -1, an error below that.
fn take_len_value(rest: &mut &[u8]) -> Result<Option<usize>, &'static str> {
    match take_varlong(rest).ok_or("cut short")? {
        -1 => Ok(None),
        n => usize::try_from(n).map(Some).map_err(|_| "negative"),
    }
}

#[inline]
fn take_varlong(rest: &mut &[u8]) -> Option<i64> {
    // Most varints of a record (deltas, header lengths) are one byte.
    if let Some((&b, tail)) = rest.split_first()
        && b & 0x80 == 0
    {
        *rest = tail;
        return Some(i64::from(b >> 1) ^ -i64::from(b & 1));
    }
    take_long_varlong(rest)
}

fn take_long_varlong(rest: &mut &[u8]) -> Option<i64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// What a transaction's control record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// The transaction was aborted.
    Abort,
    /// The transaction was committed.
    Commit,
    /// A control record type this client does not know (skipped).
    Other(i16),
}

/// One whole batch, its header read, its records not yet decoded.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The first record's offset.
    pub base_offset: i64,
    /// The offset after the batch's last record (even when compaction
    /// removed that record): where the next fetch starts.
    pub next_offset: i64,
    /// The leader epoch the batch was written under.
    pub partition_leader_epoch: i32,
    /// The producer's id, -1 when not idempotent.
    pub producer_id: i64,
    /// Whether the batch belongs to a transaction.
    pub is_transactional: bool,
    /// Whether the batch holds control records (transaction markers).
    pub is_control: bool,
    /// The codec of its records.
    pub compression: Compression,
    base_timestamp: i64,
    max_timestamp: i64,
    log_append_time: bool,
    count: usize,
    /// The records, as written (compressed or not).
    body: Bytes,
}

/// Batches in a partition's record bytes, in order. A batch cut short at
/// the end is left out (the broker stops at the fetch's byte limit); a
/// corrupt batch is an error and ends the iteration.
pub fn batches(records: Bytes) -> Batches {
    Batches {
        rest: records,
        failed: false,
    }
}

/// The iterator [`batches`] returns.
#[derive(Debug)]
pub struct Batches {
    rest: Bytes,
    failed: bool,
}

impl Iterator for Batches {
    type Item = Result<Batch, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.len() < 17 {
            return None;
        }
        let result = next_batch(&mut self.rest).transpose();
        if matches!(result, Some(Err(_))) {
            self.failed = true;
        }
        result
    }
}

/// The next whole batch of `rest`; `None` when only part of one is left.
fn next_batch(rest: &mut Bytes) -> Result<Option<Batch>, WireError> {
    let malformed = |detail: String| WireError::Malformed {
        what: "record batch",
        detail,
    };
    let mut r = Reader::new(rest.clone(), "record batch");
    let base_offset = r.i64()?;
    let length = r.i32()?;
    let length = usize::try_from(length)
        .ok()
        .filter(|l| *l >= HEADER_LEN - 12)
        .ok_or_else(|| malformed(format!("batch at offset {base_offset} has length {length}")))?;
    let total = 12 + length;
    if rest.len() < total {
        return Ok(None); // cut short by the broker
    }
    let whole = rest.split_to(total);
    let mut r = Reader::new(whole.slice(12..), "record batch");
    let partition_leader_epoch = r.i32()?;
    let magic = r.i8()?;
    if magic != 2 {
        return Err(malformed(format!(
            "batch at offset {base_offset} is message format v{magic}; only v2 (Kafka 0.11 and later) is read"
        )));
    }
    let crc = r.u32()?;
    let actual = crc32c::crc32c(&whole[CRC_FROM..]);
    if crc != actual {
        return Err(malformed(format!(
            "batch at offset {base_offset} fails its CRC (stored {crc:#010x}, computed {actual:#010x})"
        )));
    }
    let attributes = r.i16()?;
    let last_offset_delta = r.i32()?;
    let base_timestamp = r.i64()?;
    let max_timestamp = r.i64()?;
    let producer_id = r.i64()?;
    let _producer_epoch = r.i16()?;
    let _base_sequence = r.i32()?;
    let count = r.i32()?;
    let compression = Compression::from_id(attributes & 0x07)
        .map_err(|e| malformed(format!("batch at offset {base_offset}: {e}")))?;
    // Offsets the broker hands out are checked before any arithmetic: a
    // negative base or delta, or a last offset at the end of i64's range,
    // is no log.
    let next_offset = (base_offset >= 0 && last_offset_delta >= 0)
        .then(|| {
            base_offset
                .checked_add(i64::from(last_offset_delta))?
                .checked_add(1)
        })
        .flatten()
        .ok_or_else(|| {
            malformed(format!(
                "batch at offset {base_offset} has last offset delta {last_offset_delta}"
            ))
        })?;
    // Each record has its own offset delta in 0..=last_offset_delta.
    let count = usize::try_from(count)
        .ok()
        .filter(|c| i64::try_from(*c).is_ok_and(|c| c <= next_offset - base_offset))
        .ok_or_else(|| {
            malformed(format!(
                "batch at offset {base_offset} claims {count} records in {} offsets",
                next_offset - base_offset
            ))
        })?;
    Ok(Some(Batch {
        base_offset,
        next_offset,
        partition_leader_epoch,
        producer_id,
        is_transactional: attributes & 0x10 != 0,
        is_control: attributes & 0x20 != 0,
        compression,
        base_timestamp,
        max_timestamp,
        log_append_time: attributes & 0x08 != 0,
        count,
        body: r.rest(),
    }))
}

/// A batch's records, decoded as they are taken
/// ([`Batch::iter_records`]).
#[derive(Debug)]
pub struct Records<'a> {
    batch: &'a Batch,
    source: Source<'a>,
    /// Records the header says are left.
    left: usize,
    /// The next record's offset is at least this.
    after: i64,
}

impl Iterator for Records<'_> {
    type Item = Result<FetchedRecord, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let batch = self.batch;
        let body = match &mut self.source {
            Source::Plain(r) => match r.var_len() {
                Ok(Some(len)) => r.bytes(len),
                Ok(None) => Err(r.error("a record of length -1")),
                Err(e) => Err(e),
            },
            Source::Decompressing(d) => d.next_record(batch.base_offset),
        };
        let record = body.and_then(|body| batch.record(body)).and_then(|record| {
            // In the batch, and each after the one before: a record is
            // never delivered twice or out of order.
            if record.offset < self.after || record.offset >= batch.next_offset {
                return Err(WireError::Malformed {
                    what: "record batch",
                    detail: format!(
                        "batch at offset {}: a record at offset {} (next expected from {}, the batch ends before {})",
                        batch.base_offset, record.offset, self.after, batch.next_offset
                    ),
                });
            }
            self.after = record.offset + 1;
            Ok(record)
        });
        if record.is_err() {
            self.left = 0;
        }
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Every record takes at least 7 bytes: never trust the count alone.
        let bytes = match &self.source {
            Source::Plain(r) => r.remaining(),
            Source::Decompressing(d) => d.pending.len() + d.limit.saturating_sub(d.read),
        };
        (0, Some(self.left.min(bytes / 7 + 1)))
    }
}

/// Where a batch's records are read from.
#[derive(Debug)]
enum Source<'a> {
    /// The batch's own bytes (uncompressed).
    Plain(Reader),
    /// Its bytes decompressed chunk by chunk as records are taken.
    Decompressing(Decompressing<'a>),
}

/// How much is decompressed at a time: records are sliced out of each
/// chunk, so a batch costs about a chunk and its largest record, not its
/// whole decompressed size.
const CHUNK: usize = 64 * 1024;

/// A compressed batch's records, decompressed a chunk at a time.
struct Decompressing<'a> {
    decoder: Box<dyn Read + Send + 'a>,
    codec: Compression,
    /// Decompressed bytes not yet taken as records.
    pending: BytesMut,
    /// Decompressed bytes so far, at most `limit`.
    read: usize,
    limit: usize,
    eof: bool,
}

impl std::fmt::Debug for Decompressing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressing")
            .field("codec", &self.codec)
            .field("pending", &self.pending.len())
            .field("read", &self.read)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Decompressing<'_> {
    /// The next record's bytes (after its length).
    fn next_record(&mut self, base_offset: i64) -> Result<Bytes, WireError> {
        let malformed = |detail: String| WireError::Malformed {
            what: "record batch",
            detail: format!("batch at offset {base_offset}: {detail}"),
        };
        loop {
            if let Some((at, len)) = record_length(&self.pending).map_err(malformed)? {
                if len > self.limit {
                    return Err(malformed(format!(
                        "a record of {len} bytes, past the {} the batch may decompress to",
                        self.limit
                    )));
                }
                if self.pending.len() >= at + len {
                    let mut record = self.pending.split_to(at + len);
                    record.advance(at);
                    return Ok(record.freeze());
                }
            }
            if self.eof {
                return Err(malformed(format!(
                    "its {:?} records end inside a record",
                    self.codec
                )));
            }
            self.fill().map_err(malformed)?;
        }
    }

    /// Decompresses up to another chunk onto `pending`.
    fn fill(&mut self) -> Result<(), String> {
        let start = self.pending.len();
        self.pending.resize(start + CHUNK, 0);
        let n = loop {
            match self.decoder.read(&mut self.pending[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.pending.truncate(start);
                    return Err(format!("{:?} records did not decompress: {e}", self.codec));
                }
            }
        };
        self.pending.truncate(start + n);
        self.eof = n == 0;
        self.read += n;
        if self.read > self.limit {
            return Err(format!(
                "{:?} records decompress to more than {} bytes",
                self.codec, self.limit
            ));
        }
        Ok(())
    }
}

/// A record's length at the start of `bytes` (a zigzag varint) and how
/// many bytes it takes; `None` when `bytes` end inside it.
fn record_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().take(10).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let n = ((v >> 1) as i64) ^ -((v & 1) as i64);
            let len = usize::try_from(n).map_err(|_| format!("a record of length {n}"))?;
            return Ok(Some((i + 1, len)));
        }
    }
    if bytes.len() >= 10 {
        return Err("a record length longer than 10 bytes".into());
    }
    Ok(None)
}

impl Batch {
    /// How many records its header says it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether its header says it holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Its bytes as fetched: header and records (compressed when they are).
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// The records, decompressed (to at most `max_bytes`) and decoded.
    pub fn records(&self, max_bytes: usize) -> Result<Vec<FetchedRecord>, WireError> {
        self.iter_records(max_bytes)?.collect()
    }

    /// The records, decompressed (to at most `max_bytes` in all) and
    /// decoded one by one as they are taken: a batch claiming millions of
    /// tiny records costs a chunk of its decompressed bytes at a time, not
    /// its whole decompressed size, nor a record each. A
    /// record that does not decode, or is outside the batch or out of
    /// order, is an `Err` item, after which the iterator ends.
    pub fn iter_records(&self, max_bytes: usize) -> Result<Records<'_>, WireError> {
        let source = match self.compression {
            Compression::None => Source::Plain(Reader::new(self.body.clone(), "record")),
            codec => Source::Decompressing(Decompressing {
                decoder: codec.decoder(&self.body, max_bytes).map_err(|e| {
                    WireError::Malformed {
                        what: "record batch",
                        detail: format!("batch at offset {}: {e}", self.base_offset),
                    }
                })?,
                codec,
                pending: BytesMut::new(),
                read: 0,
                limit: max_bytes,
                eof: false,
            }),
        };
        Ok(Records {
            batch: self,
            source,
            left: self.count,
            after: self.base_offset,
        })
    }

    /// A record from its bytes (after its length). Read over the slice,
    /// and only the key, the value and the header section are cut from
    /// `body` (a count each, no copy).
    fn record(&self, body: Bytes) -> Result<FetchedRecord, WireError> {
        let malformed = |detail: &str| WireError::Malformed {
            what: "record",
            detail: detail.to_string(),
        };
        let mut rest: &[u8] = &body;
        take(&mut rest, 1).ok_or_else(|| malformed("no attributes"))?;
        let timestamp_delta =
            take_varlong(&mut rest).ok_or_else(|| malformed("a cut timestamp delta"))?;
        let offset_delta =
            take_varlong(&mut rest).ok_or_else(|| malformed("a cut offset delta"))?;
        let cut = |rest: &mut &[u8], what: &str| -> Result<Option<Bytes>, WireError> {
            let len = take_len(rest).map_err(|e| malformed(&format!("{what}: {e}")))?;
            Ok(len.map(|n| {
                let from = body.len() - rest.len();
                *rest = &rest[n..];
                body.slice(from..from + n)
            }))
        };
        let key = cut(&mut rest, "the key")?;
        let value = cut(&mut rest, "the value")?;
        let count = take_len_value(&mut rest)
            .map_err(|e| malformed(&format!("the header count: {e}")))?
            .unwrap_or(0);
        // Checked here once, so the walk later cannot fail.
        let raw = body.slice(body.len() - rest.len()..);
        let mut check: &[u8] = &raw;
        for _ in 0..count {
            take_header(&mut check).map_err(|detail| WireError::Malformed {
                what: "record header",
                detail: detail.to_string(),
            })?;
        }
        let headers = RecordHeaders { count, raw };
        Ok(FetchedRecord {
            offset: self.base_offset.saturating_add(offset_delta),
            timestamp_ms: if self.log_append_time {
                self.max_timestamp
            } else {
                self.base_timestamp.saturating_add(timestamp_delta)
            },
            key,
            value,
            headers,
            leader_epoch: self.partition_leader_epoch,
        })
    }

    /// A control batch's marker type (from its one record's key).
    pub fn control_type(&self) -> Result<ControlType, WireError> {
        let records = self.records(64 * 1024)?;
        let key =
            records
                .first()
                .and_then(|r| r.key.clone())
                .ok_or_else(|| WireError::Malformed {
                    what: "control record",
                    detail: format!("control batch at {} has no keyed record", self.base_offset),
                })?;
        let mut k = Reader::new(key, "control record");
        let _version = k.i16()?;
        Ok(match k.i16()? {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            other => ControlType::Other(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{take_header, take_len, take_varlong};
    use crate::record_batch::put_varlong;

    /// Every varint reads back as written, one byte long or ten, and a
    /// cut one is `None`.
    #[test]
    fn varlongs_read_back_as_written() {
        let edges = [
            i64::MIN,
            i64::MIN + 1,
            -65,
            -64,
            63,
            64,
            i64::MAX - 1,
            i64::MAX,
        ];
        for v in (-300..300).chain(edges) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            buf.push(0xee);
            let mut rest = &buf[..];
            assert_eq!(take_varlong(&mut rest), Some(v), "{v}");
            assert_eq!(rest, [0xee], "{v}: the bytes after it are left");
            let mut cut = &buf[..buf.len() - 2];
            assert_eq!(take_varlong(&mut cut), None, "{v} cut short");
        }
    }

    /// A header as written: zigzag varint lengths (one byte each here).
    fn section(parts: &[(i8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (len, bytes) in parts {
            out.push(((*len as i64) << 1 ^ (*len as i64) >> 63) as u8);
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Names and values come out as written, a null value as `None`; a
    /// section that lies about a length is an error, never a panic or a
    /// read past its end.
    #[test]
    fn headers_are_read_and_a_lying_section_is_refused() {
        let good = section(&[(4, b"name"), (2, b"vv"), (1, b"n"), (-1, b"")]);
        let mut rest = &good[..];
        assert_eq!(take_header(&mut rest), Ok((&b"name"[..], Some(&b"vv"[..]))));
        assert_eq!(take_header(&mut rest), Ok((&b"n"[..], None)));
        assert!(rest.is_empty());

        let refused = [
            (section(&[(-1, b""), (0, b"")]), "a header with a null name"),
            (section(&[(9, b"short")]), "a header name is cut short"),
            (
                section(&[(1, b"n"), (9, b"short")]),
                "a header value is cut short",
            ),
            (
                section(&[(1, b"n"), (-2, b"")]),
                "a header value of negative length",
            ),
            (
                section(&[(1, b"n")]),
                "a header value's length is cut short",
            ),
            (vec![0x80], "a header name's length is cut short"),
        ];
        for (bytes, why) in refused {
            assert_eq!(take_header(&mut &bytes[..]), Err(why), "{bytes:?}");
        }
    }

    /// A key's or value's length: -1 is null; a negative one, or one past
    /// the bytes left, is refused before anything is sliced.
    #[test]
    fn a_length_is_bounded_by_the_bytes_left() {
        assert_eq!(take_len(&mut &section(&[(2, b"ab")])[..]), Ok(Some(2)));
        assert_eq!(take_len(&mut &section(&[(-1, b"")])[..]), Ok(None));
        assert_eq!(
            take_len(&mut &section(&[(3, b"ab")])[..]),
            Err("longer than the bytes left")
        );
        assert_eq!(take_len(&mut &section(&[(-2, b"")])[..]), Err("negative"));
        assert_eq!(take_len(&mut &[][..]), Err("cut short"));
    }
}
