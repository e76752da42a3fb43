//! Dead letters: the headers a dead letter carries (every name a constant,
//! for the tools that read them), the one builder publishing, consuming
//! and the test kit write letters with, and the writer the consumer is
//! handed (so consuming never calls the publisher itself).
//!
//! A dead letter of a record of `topic` goes to `<topic><suffix>` (`.dlq`
//! by default) with its key and value unchanged (its type and encoding go
//! with it: `msg_type` and `content-type` are kept), why in
//! [`ORIGINAL_ERROR_HEADER`], and, for a record that was consumed, where it
//! came from and how often its handler was tried.

use crate::codec::{CONTENT_TYPE_HEADER, EncodedMessage, MSG_TYPE_HEADER};

/// Why the record was dead-lettered: the last error, as text.
pub const ORIGINAL_ERROR_HEADER: &str = "original_error";
/// The topic a consumed record was read from.
pub const ORIGINAL_TOPIC_HEADER: &str = "original_topic";
/// The partition a consumed record was read from.
pub const ORIGINAL_PARTITION_HEADER: &str = "original_partition";
/// The offset of a consumed record.
pub const ORIGINAL_OFFSET_HEADER: &str = "original_offset";
/// How many times the handler was tried on a consumed record.
pub const ATTEMPTS_HEADER: &str = "attempts";
/// The consumer group that gave the record up.
pub const GROUP_ID_HEADER: &str = "group_id";
/// Set by `kavari dlq replay` on a record it published again: the dead
/// letter's `topic/partition/offset`.
pub const REPLAYED_FROM_HEADER: &str = "kavari-replayed-from";

/// Where a consumed record came from, for its dead letter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) attempts: u32,
    pub(crate) group_id: &'a str,
}

/// The dead letter of a record of `topic` (its key, value and headers),
/// on `<topic><suffix>`, saying `error`, and where it was consumed from
/// when it was.
pub(crate) fn letter<'h>(
    topic: &str,
    suffix: &str,
    key: Option<&[u8]>,
    value: &[u8],
    headers: impl IntoIterator<Item = (&'h String, &'h Vec<u8>)>,
    error: &str,
    origin: Option<Origin<'_>>,
) -> EncodedMessage {
    let mut kept: std::collections::BTreeMap<String, Vec<u8>> = headers
        .into_iter()
        .filter(|(k, _)| *k == MSG_TYPE_HEADER || *k == CONTENT_TYPE_HEADER)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut put = |k: &str, v: String| kept.insert(k.to_string(), v.into_bytes());
    put(ORIGINAL_ERROR_HEADER, error.to_string());
    if let Some(o) = origin {
        put(ORIGINAL_TOPIC_HEADER, topic.to_string());
        put(ORIGINAL_PARTITION_HEADER, o.partition.to_string());
        put(ORIGINAL_OFFSET_HEADER, o.offset.to_string());
        put(ATTEMPTS_HEADER, o.attempts.to_string());
        put(GROUP_ID_HEADER, o.group_id.to_string());
    }
    EncodedMessage {
        topic: format!("{topic}{suffix}").into(),
        key: key.map(<[u8]>::to_vec),
        value: value.to_vec(),
        headers: kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumed record's letter says where it came from; a published
    /// one's only why; both keep the type and encoding and nothing else.
    #[test]
    fn letters_keep_the_type_and_say_why_and_where() {
        let headers: std::collections::BTreeMap<String, Vec<u8>> = [
            (MSG_TYPE_HEADER, "OrderPlaced"),
            (CONTENT_TYPE_HEADER, "application/msgpack"),
            ("traceparent", "00-1-2-01"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        let origin = Origin {
            partition: 2,
            offset: 41,
            attempts: 3,
            group_id: "billing",
        };
        let consumed = letter(
            "orders",
            ".dlq",
            Some(b"k"),
            b"v",
            &headers,
            "boom",
            Some(origin),
        );
        assert_eq!(consumed.topic, "orders.dlq");
        assert_eq!(consumed.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(consumed.value, b"v");
        let names: Vec<&str> = consumed.headers.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                ATTEMPTS_HEADER,
                CONTENT_TYPE_HEADER,
                GROUP_ID_HEADER,
                MSG_TYPE_HEADER,
                ORIGINAL_ERROR_HEADER,
                ORIGINAL_OFFSET_HEADER,
                ORIGINAL_PARTITION_HEADER,
                ORIGINAL_TOPIC_HEADER,
            ]
        );
        assert_eq!(consumed.headers[ORIGINAL_OFFSET_HEADER], b"41");
        let published = letter("orders", ".dlq", None, b"v", &headers, "boom", None);
        let names: Vec<&str> = published.headers.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [CONTENT_TYPE_HEADER, MSG_TYPE_HEADER, ORIGINAL_ERROR_HEADER]
        );
    }
}
