//! [`MessageContext`]: where a message came from, as its handler sees it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kavari_wire::record_batch::read::FetchedRecord;

/// Where a message came from, and which attempt this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContext {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key, when it is UTF-8.
    pub key: Option<String>,
    /// Every record header.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// The record's timestamp.
    pub timestamp: DateTime<Utc>,
    /// 1 on the first delivery to this handler, then 2, 3, … on retries.
    pub attempt: u32,
    /// How many times the broker has delivered the record: in a share
    /// group (`share_group`) its delivery count, which grows each time a
    /// member released it or its lock ran out; 1 elsewhere.
    pub delivery_count: u16,
    /// The transaction the record is handled in, under exactly-once
    /// handling: see [`transaction`](Self::transaction).
    pub(crate) transaction: Option<crate::transaction::Transaction>,
    /// The transaction also holds earlier records of the partition: an
    /// attempt that fails cannot abort it alone.
    pub(crate) transaction_shared: bool,
}

impl MessageContext {
    /// A context for `topic`/`partition` at `offset`: no key, no headers,
    /// stamped now, first attempt. For calling a handler in its own unit
    /// tests; set the public fields for anything else.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
            attempt: 1,
            delivery_count: 1,
            transaction: None,
            transaction_shared: false,
        }
    }

    /// Under exactly-once handling (the builder's `exactly_once`), the
    /// transaction this attempt runs in: what the handler publishes
    /// through it lands together with the record's offset commit, or not
    /// at all (a failed attempt's publishes are aborted before the retry).
    /// `None` otherwise.
    pub fn transaction(&self) -> Option<&crate::transaction::Transaction> {
        self.transaction.as_ref()
    }

    /// Fills this (a partition's reusable) context with `record`'s fields,
    /// reusing its allocations: the key's string, and the header map with
    /// its names and value buffers when the record's header names are the
    /// map's, in the same (sorted) order, as Kavari writes them. Otherwise
    /// the map is built anew. The attempt starts at 1.
    pub(crate) fn refill(&mut self, record: &FetchedRecord) {
        let (offset, timestamp_ms, key, headers) = (
            record.offset,
            record.timestamp_ms,
            record.key.as_deref(),
            &record.headers,
        );
        self.offset = offset;
        self.attempt = 1;
        // Records of a batch often share their millisecond: the calendar
        // arithmetic is done only for a new one (or over a timestamp finer
        // than a record's, as `new` stamps).
        if self.timestamp.timestamp_millis() != timestamp_ms
            || !self
                .timestamp
                .timestamp_subsec_nanos()
                .is_multiple_of(1_000_000)
        {
            self.timestamp =
                chrono::DateTime::from_timestamp_millis(timestamp_ms).unwrap_or_default();
        }
        match key.and_then(|k| std::str::from_utf8(k).ok()) {
            Some(k) => {
                let s = self.key.get_or_insert_with(String::new);
                s.clear();
                s.push_str(k);
            }
            None => self.key = None,
        }
        // One walk: names compared and values copied together; a name
        // that differs builds the map anew.
        let mut same_names = self.headers.len() == headers.len();
        if same_names {
            for ((name, value), (known, slot)) in headers.iter().zip(self.headers.iter_mut()) {
                if name != known.as_bytes() {
                    same_names = false;
                    break;
                }
                slot.clear();
                slot.extend_from_slice(value.unwrap_or_default());
            }
        }
        if !same_names {
            // By name; the last of a repeated name wins.
            self.headers = headers
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        v.unwrap_or_default().to_vec(),
                    )
                })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use kavari_wire::Compression;
    use kavari_wire::record_batch::read::batches;
    use kavari_wire::record_batch::write::{Record, RecordBatch};

    use super::*;

    /// A record's key and headers.
    type Spec<'a> = (Option<&'a [u8]>, Vec<(&'a str, &'a [u8])>);

    /// Records with the given (key, headers), read back as the fetcher
    /// hands them over.
    fn fetched(records: &[Spec<'_>]) -> Vec<FetchedRecord> {
        let mut batch = RecordBatch::with_capacity(0);
        for (key, headers) in records {
            batch.push(
                &Record {
                    key: *key,
                    value: b"v",
                    headers: &headers[..],
                },
                1_700_000_000_000,
            );
        }
        let bytes = bytes::Bytes::from(batch.finish(Compression::None).expect("finish"));
        batches(bytes)
            .flat_map(|b| b.expect("batch").records(1 << 20).expect("records"))
            .collect()
    }

    fn fill(ctx: &mut MessageContext, r: &FetchedRecord) {
        ctx.refill(r);
    }

    /// A reused context shows each record's own timestamp, to the
    /// millisecond, whether it repeats the last one's millisecond or not:
    /// the first included, in the millisecond `new` stamped at.
    #[test]
    fn a_refilled_context_shows_each_records_timestamp() {
        let mut ctx = MessageContext::new("t", 0, 0);
        let now = ctx.timestamp.timestamp_millis();
        let stamps = [now, now, now + 1, now, 0, 0, 1_700_000_000_000];
        let mut batch = RecordBatch::with_capacity(0);
        for &ms in &stamps {
            let record = Record {
                key: None,
                value: b"v",
                headers: &[][..],
            };
            batch.push(&record, ms);
        }
        let bytes = bytes::Bytes::from(batch.finish(Compression::None).expect("finish"));
        let records: Vec<FetchedRecord> = batches(bytes)
            .flat_map(|b| b.expect("batch").records(1 << 20).expect("records"))
            .collect();
        for (r, &ms) in records.iter().zip(&stamps) {
            fill(&mut ctx, r);
            assert_eq!(
                ctx.timestamp,
                DateTime::from_timestamp_millis(ms).expect("in range"),
                "record at {ms}"
            );
        }
    }

    /// A reused context shows each record exactly as a fresh one would:
    /// same names reuse the map, other names or orders rebuild it, a
    /// repeated name keeps its last value, a key that is absent or not
    /// UTF-8 is `None`.
    #[test]
    fn a_refilled_context_shows_exactly_the_current_record() {
        let records = fetched(&[
            (
                Some(b"k1"),
                vec![("content-type", b"a"), ("msg_type", b"T")],
            ),
            (
                Some(b"k2"),
                vec![("content-type", b"b"), ("msg_type", b"U")],
            ),
            (None, vec![("msg_type", b"V"), ("content-type", b"c")]),
            (Some(&[0xff]), vec![("x", b"1"), ("x", b"2")]),
            (Some(b"k5"), vec![]),
        ]);
        let mut ctx = MessageContext::new("t", 0, 0);
        let mut seen = Vec::new();
        for r in &records {
            fill(&mut ctx, r);
            ctx.attempt = 3; // a handler's retries must not leak into the next record
            let headers: Vec<(String, String)> = ctx
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            seen.push((ctx.offset, ctx.key.clone(), headers));
        }
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            seen,
            [
                (
                    0,
                    Some("k1".into()),
                    h(&[("content-type", "a"), ("msg_type", "T")])
                ),
                (
                    1,
                    Some("k2".into()),
                    h(&[("content-type", "b"), ("msg_type", "U")])
                ),
                (2, None, h(&[("content-type", "c"), ("msg_type", "V")])),
                (3, None, h(&[("x", "2")])),
                (4, Some("k5".into()), h(&[])),
            ]
        );
        fill(&mut ctx, &records[0]);
        assert_eq!(ctx.attempt, 1);
    }
}
