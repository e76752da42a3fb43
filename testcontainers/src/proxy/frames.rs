//! The proxy's view of the Kafka frames it passes: requests counted (and
//! kept) by API key, and answers rewritten to carry an error code or to
//! leave an API out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Answers to rewrite: the next answers of an API get an error code (a
/// Produce, Fetch or OffsetCommit answer as its first partition's, a
/// ConsumerGroupHeartbeat answer as its own); ApiVersions answers leave an
/// API out.
#[derive(Debug, Default)]
pub(super) struct AnswerRewrite {
    /// By API key: the code, and how many answers are still to get it.
    pub(super) armed: std::sync::Mutex<std::collections::HashMap<i16, (i16, usize)>>,
    /// An API key ApiVersions answers do not offer (-1: none).
    pub(super) hidden: std::sync::atomic::AtomicI32,
}

/// The APIs whose answers the proxy can give an error code.
pub(super) const REWRITTEN: [i16; 4] = [PRODUCE, FETCH, OFFSET_COMMIT, CONSUMER_GROUP_HEARTBEAT];

impl AnswerRewrite {
    /// The code for the next answer of API `key`, if one is due.
    pub(super) fn take(&self, key: i16) -> Option<i16> {
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        let (code, left) = armed.get_mut(&key)?;
        *left = left.checked_sub(1)?;
        Some(*code)
    }
}

/// One connection's requests in flight whose answers may be rewritten
/// (Produce, Fetch, ApiVersions): correlation id → (key, version).
pub(super) type ProduceVersions = Arc<std::sync::Mutex<std::collections::HashMap<i32, (i16, i16)>>>;

/// Requests seen from clients, by Kafka API key.
#[derive(Debug)]
pub(super) struct RequestCounts {
    pub(super) counts: [AtomicU64; 128],
    /// API keys whose requests are kept whole, with those kept so far.
    pub(super) kept: std::sync::Mutex<std::collections::HashMap<i16, Vec<Vec<u8>>>>,
}

impl RequestCounts {
    pub(super) fn kept(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<i16, Vec<Vec<u8>>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the request frames of one client's byte stream (4-byte length,
/// then the header's API key), counts each by its key and keeps those of
/// the keys asked for.
#[derive(Debug, Default)]
pub(super) struct FrameScanner {
    pub(super) header: Vec<u8>,
    pub(super) skip: usize,
    /// The request being kept: its key and its bytes so far.
    pub(super) keeping: Option<(i16, Vec<u8>)>,
}

/// Length, API key, API version and correlation id: the start of every
/// request frame.
pub(super) const REQUEST_START: usize = 12;

/// The API keys whose answers may be rewritten.
pub(super) const PRODUCE: i16 = 0;
pub(super) const FETCH: i16 = 1;
pub(super) const API_VERSIONS: i16 = 18;
pub(super) const OFFSET_COMMIT: i16 = 8;
pub(super) const CONSUMER_GROUP_HEARTBEAT: i16 = 68;

impl FrameScanner {
    pub(super) fn feed(
        &mut self,
        mut bytes: &[u8],
        counts: &RequestCounts,
        produce: &ProduceVersions,
    ) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                if let Some((_, frame)) = &mut self.keeping {
                    frame.extend_from_slice(&bytes[..n]);
                }
                bytes = &bytes[n..];
                if self.skip == 0
                    && let Some((key, frame)) = self.keeping.take()
                {
                    counts.kept().entry(key).or_default().push(frame);
                }
                continue;
            }
            let want = REQUEST_START - self.header.len();
            let n = want.min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == REQUEST_START {
                let len = i32::from_be_bytes([
                    self.header[0],
                    self.header[1],
                    self.header[2],
                    self.header[3],
                ]);
                let key = i16::from_be_bytes([self.header[4], self.header[5]]);
                if let Some(c) = usize::try_from(key).ok().and_then(|k| counts.counts.get(k)) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                if counts.kept().contains_key(&key) {
                    self.keeping = Some((key, self.header[4..].to_vec()));
                }
                if key == API_VERSIONS || REWRITTEN.contains(&key) {
                    let version = i16::from_be_bytes([self.header[6], self.header[7]]);
                    let correlation = i32::from_be_bytes([
                        self.header[8],
                        self.header[9],
                        self.header[10],
                        self.header[11],
                    ]);
                    produce
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(correlation, (key, version));
                }
                self.skip = usize::try_from(len)
                    .unwrap_or(0)
                    .saturating_sub(REQUEST_START - 4);
                self.header.clear();
                if self.skip == 0
                    && let Some((key, frame)) = self.keeping.take()
                {
                    counts.kept().entry(key).or_default().push(frame);
                }
            }
        }
    }
}

/// How many bytes of `bytes` are whole frames (4-byte length, then that
/// many bytes).
pub(super) fn whole_frames(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if bytes.len() < at + 4 + len {
            break;
        }
        at += 4 + len;
    }
    at
}

/// Rewrites the error code of Produce answers among whole `frames`, as
/// `rewrite` asks.
pub(super) fn rewrite_answers(
    frames: &mut [u8],
    produce: &ProduceVersions,
    rewrite: &AnswerRewrite,
) {
    let mut at = 0;
    while let Some(len) = frames.get(at..at + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let body = at + 4..at + 4 + len;
        at = body.end;
        let Some(frame) = frames.get_mut(body) else {
            return;
        };
        let Some(correlation) = frame
            .get(..4)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        else {
            continue;
        };
        let request = produce
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&correlation);
        match request {
            Some((API_VERSIONS, version)) => {
                let hidden = rewrite.hidden.load(Ordering::Relaxed);
                if let Ok(hidden) = i16::try_from(hidden) {
                    hide_api(&mut frame[4..], version, hidden);
                }
            }
            Some((key, version)) => {
                let code_at = match key {
                    PRODUCE => first_error_at(&frame[4..], version >= 9, 0),
                    // Throttle time from v3.
                    OFFSET_COMMIT => {
                        first_error_at(&frame[4..], version >= 8, if version >= 3 { 4 } else { 0 })
                    }
                    // Flexible: the header's tagged fields, the throttle
                    // time, then the answer's error.
                    CONSUMER_GROUP_HEARTBEAT => top_level_error_at(&frame[4..]),
                    // Throttle time; from v7 the answer's error and session.
                    _ => first_error_at(
                        &frame[4..],
                        version >= 12,
                        if version >= 7 { 10 } else { 4 },
                    ),
                };
                let Some(code_at) = code_at else { continue };
                let Some(code) = rewrite.take(key) else {
                    continue;
                };
                frame[4 + code_at..4 + code_at + 2].copy_from_slice(&code.to_be_bytes());
            }
            None => {}
        }
    }
}

/// Makes an ApiVersions answer's body (after the correlation id; its
/// header has no tagged fields whatever the version) offer versions -1..-1
/// of `api_key`: a range no client can use.
pub(super) fn hide_api(body: &mut [u8], version: i16, api_key: i16) {
    // The error code, then the count of keys.
    let mut at = 2;
    let count = if version >= 3 {
        let Some(&b) = body.get(at) else { return };
        if b & 0x80 != 0 {
            return; // more than 127 keys: not a broker this proxy tests
        }
        at += 1;
        usize::from(b).saturating_sub(1)
    } else {
        let Some(c) = body.get(at..at + 4) else {
            return;
        };
        at += 4;
        usize::try_from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(0)
    };
    // Each key: api key, min and max version, and a tagged-field count of
    // 0 in flexible versions.
    let entry = if version >= 3 { 7 } else { 6 };
    for _ in 0..count {
        let Some(e) = body.get_mut(at..at + entry) else {
            return;
        };
        if i16::from_be_bytes([e[0], e[1]]) == api_key {
            e[2..6].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        }
        at += entry;
    }
}

/// Where the first partition's error code is in a Produce or Fetch
/// answer's body (after the correlation id), `flexible` or not, whose
/// topics array follows `fields` bytes of top-level fields. Both answers
/// name each topic, then each partition's index and error code first.
pub(super) fn first_error_at(body: &[u8], flexible: bool, fields: usize) -> Option<usize> {
    let mut at = 0;
    let uvarint = |at: &mut usize| uvarint_at(body, at);
    if flexible {
        // The response header's tagged fields.
        let tags = uvarint(&mut at)?;
        for _ in 0..tags {
            uvarint(&mut at)?;
            let size = uvarint(&mut at)?;
            at += size;
        }
    }
    at += fields;
    // The topics array's count, then the first topic's name.
    if flexible {
        uvarint(&mut at)?.checked_sub(2)?; // at least one topic
        let len = uvarint(&mut at)?.checked_sub(1)?;
        at += len;
    } else {
        count(body, &mut at)?;
        let len = i16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        at += 2 + usize::try_from(len).ok()?;
    }
    // The partitions array's count, then the first partition's index.
    if flexible {
        uvarint(&mut at)?.checked_sub(2)?; // at least one partition
    } else {
        count(body, &mut at)?;
    }
    at += 4;
    (body.len() >= at + 2).then_some(at)
}

/// Where a flexible answer's own error code is, after its header's tagged
/// fields and its throttle time.
pub(super) fn top_level_error_at(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    let tags = uvarint_at(body, &mut at)?;
    for _ in 0..tags {
        uvarint_at(body, &mut at)?;
        at += uvarint_at(body, &mut at)?;
    }
    at += 4;
    (body.len() >= at + 2).then_some(at)
}

/// Reads an unsigned varint of `body` at `at`.
fn uvarint_at(body: &[u8], at: &mut usize) -> Option<usize> {
    let mut v = 0usize;
    for i in 0..5 {
        let b = *body.get(*at)?;
        *at += 1;
        v |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Reads a non-flexible array's count at `at`: `None` unless it names at
/// least one element.
pub(super) fn count(body: &[u8], at: &mut usize) -> Option<()> {
    let c = body.get(*at..*at + 4)?;
    *at += 4;
    (i32::from_be_bytes([c[0], c[1], c[2], c[3]]) >= 1).then_some(())
}
