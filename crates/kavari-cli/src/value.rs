//! A record as one JSON object: key, headers (strings where UTF-8) and the
//! value decoded from MessagePack or JSON (base64 when neither).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kavari_wire::record_batch::read::FetchedRecord;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// `bytes` as JSON text: a string where UTF-8, else base64.
fn text(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": BASE64.encode(bytes) }),
    }
}

/// The value decoded as its `content-type` header says (or by its first
/// byte): MessagePack or JSON into JSON; text; base64 when neither.
pub(crate) fn decode(bytes: &[u8], content_type: Option<&str>) -> Value {
    let json_first = content_type.is_some_and(|c| c.contains("json"))
        || matches!(bytes.first(), Some(b'{' | b'[' | b'"'));
    let as_json = || serde_json::from_slice::<Value>(bytes).ok();
    // Whole: MessagePack reads one value from the front, and text such as
    // "hello" starts with a byte that is a valid small integer.
    let as_msgpack = || {
        let mut rest = bytes;
        let value = Value::deserialize(&mut rmp_serde::Deserializer::new(&mut rest)).ok()?;
        rest.is_empty().then_some(value)
    };
    let decoded = if json_first {
        as_json().or_else(as_msgpack)
    } else {
        as_msgpack().or_else(as_json)
    };
    decoded.unwrap_or_else(|| text(bytes))
}

/// The header `name`'s value as text.
pub(crate) fn header<'a>(record: &'a FetchedRecord, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|(k, _)| *k == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v?).ok())
}

/// One record as the `tail` line shows it.
pub(crate) fn line(topic: &str, partition: i32, record: &FetchedRecord) -> Value {
    let mut headers = Map::new();
    for (k, v) in record.headers.iter() {
        let name = String::from_utf8_lossy(k).into_owned();
        headers.insert(name, v.map_or(Value::Null, text));
    }
    json!({
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": record.key.as_deref().map_or(Value::Null, text),
        "headers": headers,
        "value": record
            .value
            .as_deref()
            .map_or(Value::Null, |v| decode(v, header(record, "content-type"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_by_what_they_are() {
        let msgpack =
            rmp_serde::to_vec_named(&json!({"id": "o-1", "cents": 1250})).expect("encode");
        assert_eq!(decode(&msgpack, None), json!({"id": "o-1", "cents": 1250}));
        assert_eq!(
            decode(br#"{"id":"o-2"}"#, Some("application/json")),
            json!({"id": "o-2"})
        );
        assert_eq!(decode(&[0xc1, 0xff], None), json!({"base64": "wf8="}));
        assert_eq!(decode(b"hello", Some("text/plain")), json!("hello"));
    }
}
