//! The wire envelope: the value in its type's [`Codec`] (MessagePack with
//! named fields by default, JSON, or text), `msg_type` and `content-type`
//! headers, UTF-8 key.

pub(crate) mod format;

use std::borrow::Cow;
use std::collections::BTreeMap;

use format::BoxError;
pub use format::Codec;

use crate::message::KafkaMessage;

/// Encoding and decoding a message type's value (the codec itself, in
/// `format.rs`, knows no message type).
impl Codec {
    /// Appends `msg`'s value in this encoding to `out`.
    pub(crate) fn encode_into<M: KafkaMessage>(
        self,
        msg: &M,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        match self {
            Codec::MessagePack => rmp_serde::encode::write_named(out, msg).map_err(Into::into),
            Codec::Json => serde_json::to_writer(out, msg).map_err(Into::into),
            Codec::Text => msg.write_text(out).map_err(Into::into),
        }
    }

    /// Decodes `value` from this encoding into `M`.
    pub(crate) fn decode<M: KafkaMessage>(self, value: &[u8]) -> Result<M, BoxError> {
        match self {
            Codec::MessagePack => rmp_serde::from_slice(value).map_err(Into::into),
            Codec::Json => serde_json::from_slice(value).map_err(Into::into),
            Codec::Text => {
                let text = std::str::from_utf8(value)?;
                M::read_text(text).map_err(Into::into)
            }
        }
    }
}

/// Header naming the message type.
pub const MSG_TYPE_HEADER: &str = "msg_type";
/// Header naming the value's encoding.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// The content type of MessagePack values, the default codec's.
pub const MSGPACK_CONTENT_TYPE: &str = "application/msgpack";

/// A message as it goes on the wire: what publish sends, and what a failed
/// publish hands back so the caller loses nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    /// The topic it is for: borrowed when it is a message type's own
    /// (`KafkaMessage::TOPIC`), so typed publishes allocate no topic name.
    pub topic: Cow<'static, str>,
    /// The partition key (UTF-8), if any.
    pub key: Option<Vec<u8>>,
    /// The value, in the encoding its `content-type` header names.
    pub value: Vec<u8>,
    /// The record headers.
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl EncodedMessage {
    /// The `msg_type` header, when present and UTF-8.
    pub fn msg_type(&self) -> Option<&str> {
        self.headers
            .get(MSG_TYPE_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Key, value and header bytes: what counts against size limits.
    pub fn size(&self) -> usize {
        self.record().size()
    }
}

/// Why a message could not be encoded.
///
/// Its message names the cause; it has no `source()`, so that a report of
/// the chain does not print the cause twice.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {msg_type} as {codec}: {cause}")]
pub struct EncodeError {
    /// The message type.
    pub msg_type: &'static str,
    /// The type's codec.
    pub codec: Codec,
    /// The encoder's error.
    pub cause: Box<dyn std::error::Error + Send + Sync>,
}

/// Why a record could not be decoded into a message type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record has no `msg_type` header.
    #[error("record has no msg_type header")]
    MissingType,
    /// A header is not valid UTF-8.
    #[error("header {header} is not UTF-8")]
    HeaderNotUtf8 {
        /// The header's name.
        header: &'static str,
    },
    /// The record is of another type than the one asked for.
    #[error("record is of type {found}, expected {expected}")]
    WrongType {
        /// The type asked for.
        expected: &'static str,
        /// The record's `msg_type`.
        found: String,
    },
    /// The `content-type` header names an encoding Kavari does not read.
    #[error(
        "unsupported content-type {0:?} (Kavari reads application/msgpack, application/json and text/plain)"
    )]
    UnsupportedContentType(String),
    /// The record has no `content-type`, and its value is neither a JSON
    /// object nor a MessagePack map.
    #[error("value without a content-type is neither a JSON object nor a MessagePack map")]
    Unrecognized,
    /// The record has no value (a tombstone).
    #[error("record has no value")]
    MissingValue,
    /// The value is not MessagePack of the expected shape.
    #[error("{codec} value does not decode as {msg_type}: {cause}")]
    Payload {
        /// The type asked for.
        msg_type: &'static str,
        /// The encoding the value was read in.
        codec: Codec,
        /// The decoder's error (in the message already: no `source()`).
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Encodes `msg` into its envelope.
pub fn encode<M: KafkaMessage>(msg: &M) -> Result<EncodedMessage, EncodeError> {
    let (key, value) = with_record(msg, |key, value| (key.map(<[u8]>::to_vec), value.to_vec()))?;
    let headers = envelope_headers::<M>()
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.to_vec()))
        .collect();
    Ok(EncodedMessage {
        topic: Cow::Borrowed(M::TOPIC),
        key,
        value,
        headers,
    })
}

/// The headers of `M`'s envelope, in the order they are written.
pub(crate) fn envelope_headers<M: KafkaMessage>() -> [(&'static str, &'static [u8]); 2] {
    [
        (CONTENT_TYPE_HEADER, M::CODEC.content_type().as_bytes()),
        (MSG_TYPE_HEADER, M::NAME.as_bytes()),
    ]
}

/// Writes `msg`'s key and encodes its value into a per-thread scratch
/// buffer and hands both to `f`: a publish copies them straight into its
/// batch, allocating nothing.
pub(crate) fn with_record<M: KafkaMessage, R>(
    msg: &M,
    f: impl FnOnce(Option<&[u8]>, &[u8]) -> R,
) -> Result<R, EncodeError> {
    /// Scratch larger than this is released after use.
    const KEEP: usize = 64 * 1024;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let failed = |cause: BoxError| EncodeError {
        msg_type: M::NAME,
        codec: M::CODEC,
        cause,
    };
    SCRATCH.with(|scratch| {
        // A Serialize impl that itself encodes finds the scratch taken and
        // uses a buffer of its own.
        let mut own = Vec::new();
        let mut borrowed = scratch.try_borrow_mut();
        let buf = match &mut borrowed {
            Ok(buf) => &mut **buf,
            Err(_) => &mut own,
        };
        buf.clear();
        let has_key = msg.write_key(buf);
        let key_len = buf.len();
        let result = M::CODEC.encode_into(msg, buf).map_err(failed).map(|()| {
            let (key, value) = buf.split_at(key_len);
            f(has_key.then_some(key), value)
        });
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
        result
    })
}

/// The record's `msg_type`.
pub fn msg_type(headers: &BTreeMap<String, Vec<u8>>) -> Result<&str, DecodeError> {
    let t = headers
        .get(MSG_TYPE_HEADER)
        .ok_or(DecodeError::MissingType)?;
    std::str::from_utf8(t).map_err(|_| DecodeError::HeaderNotUtf8 {
        header: MSG_TYPE_HEADER,
    })
}

/// Decodes a value of type `M` in the type's own codec, without looking at
/// headers.
pub fn decode_value<M: KafkaMessage>(value: &[u8]) -> Result<M, DecodeError> {
    decode_as::<M>(M::CODEC, value)
}

/// Decodes a value of type `M` in the encoding its record's
/// `content-type` names: `application/msgpack`, `application/json` or
/// `text/plain`. Without the header the value is recognised by its first
/// bytes ([`Codec::detect`]), a text type's value being text; a header
/// naming another encoding, or a value recognised as neither, is an error.
pub fn decode_with_content_type<M: KafkaMessage>(
    content_type: Option<&[u8]>,
    value: &[u8],
) -> Result<M, DecodeError> {
    let codec = match content_type {
        // What Kavari writes, compared as bytes: the common case parses
        // nothing.
        Some(b"application/msgpack") => Codec::MessagePack,
        Some(b"application/json") => Codec::Json,
        Some(ct) => {
            let ct = std::str::from_utf8(ct).map_err(|_| DecodeError::HeaderNotUtf8 {
                header: CONTENT_TYPE_HEADER,
            })?;
            Codec::from_content_type(ct)
                .ok_or_else(|| DecodeError::UnsupportedContentType(ct.to_string()))?
        }
        None if M::CODEC == Codec::Text => Codec::Text,
        None => Codec::detect(value).ok_or(DecodeError::Unrecognized)?,
    };
    decode_as::<M>(codec, value)
}

fn decode_as<M: KafkaMessage>(codec: Codec, value: &[u8]) -> Result<M, DecodeError> {
    codec
        .decode::<M>(value)
        .map_err(|cause| DecodeError::Payload {
            msg_type: M::NAME,
            codec,
            cause,
        })
}

/// Decodes a record into `M`, checking its headers first.
pub fn decode<M: KafkaMessage>(
    headers: &BTreeMap<String, Vec<u8>>,
    value: Option<&[u8]>,
) -> Result<M, DecodeError> {
    let found = msg_type(headers)?;
    if found != M::NAME {
        return Err(DecodeError::WrongType {
            expected: M::NAME,
            found: found.to_string(),
        });
    }
    let value = value.ok_or(DecodeError::MissingValue)?;
    decode_with_content_type::<M>(headers.get(CONTENT_TYPE_HEADER).map(Vec::as_slice), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "orders")]
    struct OrderPlaced {
        #[kavari(key)]
        order_id: String,
        amount_cents: u64,
        note: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "orders", name = "OrderV1")]
    struct OrderV1 {
        order_id: String,
    }

    fn order() -> OrderPlaced {
        OrderPlaced {
            order_id: "o-1".into(),
            amount_cents: 1250,
            note: Some("ü".into()),
        }
    }

    #[test]
    fn round_trip_keeps_value_key_and_headers() {
        let e = encode(&order()).unwrap();
        assert_eq!(e.topic, "orders");
        assert_eq!(e.key.as_deref(), Some(&b"o-1"[..]));
        assert_eq!(e.msg_type(), Some("OrderPlaced"));
        assert_eq!(
            e.headers.get(CONTENT_TYPE_HEADER).map(Vec::as_slice),
            Some(&b"application/msgpack"[..])
        );
        let back: OrderPlaced = decode(&e.headers, Some(&e.value)).unwrap();
        assert_eq!(back, order());
    }

    #[test]
    fn value_is_a_map_with_field_names() {
        // Named fields let a reader with fewer or more fields decode it: the
        // Python library and later versions of a type stay compatible.
        let e = encode(&order()).unwrap();
        let v: rmpv_like::Value = rmp_serde::from_slice(&e.value).unwrap();
        assert!(v.is_map_with_key("amount_cents"));
        let old: OrderV1 = decode_value(&e.value).unwrap();
        assert_eq!(old.order_id, "o-1");
    }

    /// A tiny stand-in for rmpv: decode any MessagePack map's keys.
    mod rmpv_like {
        use std::collections::BTreeMap;
        #[derive(serde::Deserialize)]
        #[serde(transparent)]
        pub(super) struct Value(BTreeMap<String, serde::de::IgnoredAny>);
        impl Value {
            pub(super) fn is_map_with_key(&self, k: &str) -> bool {
                self.0.contains_key(k)
            }
        }
    }

    #[test]
    fn renamed_type_uses_its_name_and_null_key() {
        let e = encode(&OrderV1 {
            order_id: "x".into(),
        })
        .unwrap();
        assert_eq!(e.msg_type(), Some("OrderV1"));
        assert_eq!(e.key, None);
    }

    #[derive(Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "readings")]
    struct Reading {
        #[kavari(key)]
        sensor: u64,
        celsius: f32,
    }

    /// A hand-written impl: only `key`, so `write_key` is the default.
    #[derive(Serialize, Deserialize)]
    struct Manual(String);

    impl KafkaMessage for Manual {
        const TOPIC: &'static str = "manual";
        const NAME: &'static str = "Manual";
        fn key(&self) -> Option<String> {
            Some(format!("m-{}", self.0))
        }
    }

    /// The key a publish writes (`write_key`, no allocation) is the key
    /// `key()` names, for derived keys of any `Display` type, for no key,
    /// and for hand-written impls; the value after it is untouched.
    #[test]
    fn written_keys_match_key() {
        fn check<M: KafkaMessage>(m: &M) {
            let e = encode(m).unwrap();
            assert_eq!(e.key, m.key().map(String::into_bytes));
            assert_eq!(e.value, rmp_serde::to_vec_named(m).unwrap());
        }
        check(&order());
        check(&Reading {
            sensor: 1_234_567,
            celsius: -3.5,
        });
        check(&OrderV1 {
            order_id: "x".into(),
        });
        check(&Manual("7".into()));
        assert_eq!(
            encode(&Manual("7".into())).unwrap().key.as_deref(),
            Some(&b"m-7"[..])
        );
    }

    #[test]
    fn typed_errors_for_bad_records() {
        let e = encode(&order()).unwrap();
        let mut h = e.headers.clone();
        h.remove(MSG_TYPE_HEADER);
        assert!(matches!(
            decode::<OrderPlaced>(&h, Some(&e.value)),
            Err(DecodeError::MissingType)
        ));
        assert!(matches!(
            decode::<OrderV1>(&e.headers, Some(&e.value)),
            Err(DecodeError::WrongType { found, .. }) if found == "OrderPlaced"
        ));
        let mut h = e.headers.clone();
        h.insert(MSG_TYPE_HEADER.into(), vec![0xff, 0xfe]);
        assert!(matches!(
            decode::<OrderPlaced>(&h, Some(&e.value)),
            Err(DecodeError::HeaderNotUtf8 { header: "msg_type" })
        ));
        let mut h = e.headers.clone();
        h.insert(CONTENT_TYPE_HEADER.into(), b"application/avro".to_vec());
        assert!(matches!(
            decode::<OrderPlaced>(&h, Some(&e.value)),
            Err(DecodeError::UnsupportedContentType(_))
        ));
        // A header that lies about the value: a payload error naming it.
        h.insert(CONTENT_TYPE_HEADER.into(), b"application/json".to_vec());
        assert!(matches!(
            decode::<OrderPlaced>(&h, Some(&e.value)),
            Err(DecodeError::Payload {
                codec: Codec::Json,
                ..
            })
        ));
        h.remove(CONTENT_TYPE_HEADER);
        assert!(matches!(
            decode::<OrderPlaced>(&h, Some(b"not a map")),
            Err(DecodeError::Unrecognized)
        ));
        assert!(matches!(
            decode::<OrderPlaced>(&e.headers, None),
            Err(DecodeError::MissingValue)
        ));
        assert!(matches!(
            decode::<OrderPlaced>(&e.headers, Some(b"\xc1garbage")),
            Err(DecodeError::Payload { .. })
        ));
        // A missing content-type (an older producer) is accepted.
        let mut h = e.headers.clone();
        h.remove(CONTENT_TYPE_HEADER);
        assert!(decode::<OrderPlaced>(&h, Some(&e.value)).is_ok());
    }

    #[test]
    fn random_bytes_never_panic() {
        let seed = 0x5eed_u64;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let valid = encode(&order()).unwrap().value;
        for i in 0..20_000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = rng.random_range(0..64);
                (0..len).map(|_| rng.random()).collect()
            } else {
                // Mutations of a valid value reach deeper into the decoder.
                let mut v = valid.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..v.len());
                    v[at] = rng.random();
                }
                v.truncate(rng.random_range(0..=v.len()));
                v
            };
            // Ok or Err, never a panic (seed={seed}, case {i}).
            let _ = decode_value::<OrderPlaced>(&bytes);
            let _ = decode_with_content_type::<JsonOrder>(None, &bytes);
            let _ = decode_with_content_type::<Count>(None, &bytes);
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "orders", name = "OrderPlaced", codec = "json")]
    struct JsonOrder {
        #[kavari(key)]
        order_id: String,
        amount_cents: u64,
        note: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "counts", codec = "text")]
    struct Count(i64);

    #[derive(Debug, PartialEq, Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "greetings", codec = "text")]
    struct Greeting(String);

    fn content_type(e: &EncodedMessage) -> Option<&str> {
        e.headers
            .get(CONTENT_TYPE_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    #[test]
    fn a_json_type_publishes_json_and_says_so() {
        let m = JsonOrder {
            order_id: "o-1".into(),
            amount_cents: 5,
            note: None,
        };
        let e = encode(&m).unwrap();
        assert_eq!(content_type(&e), Some("application/json"));
        let json: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"order_id": "o-1", "amount_cents": 5, "note": null})
        );
        assert_eq!(decode::<JsonOrder>(&e.headers, Some(&e.value)).unwrap(), m);
    }

    /// Whatever a type publishes with, it reads every record by the
    /// record's own encoding: MessagePack and JSON (Python's, with its
    /// spacing, escaped non-ASCII, a missing `Optional` and an extra field)
    /// with or without a `content-type`.
    #[test]
    fn records_decode_by_what_they_are_not_by_what_the_type_writes() {
        let python =
            br#"  {"order_id": "o-1", "amount_cents": 1250, "extra": [1, 2], "note": "\u00fc"}"#;
        let no_note = br#"{"order_id": "o-2", "amount_cents": 7}"#;
        let packed = encode(&order()).unwrap().value;
        let json_ct = Some(&b"application/json"[..]);
        for (ct, value, note) in [
            (None, &python[..], Some("ü")),
            (json_ct, &python[..], Some("ü")),
            (None, &no_note[..], None),
            (None, &packed[..], Some("ü")),
            (Some(&b"application/msgpack"[..]), &packed[..], Some("ü")),
        ] {
            let a: OrderPlaced = decode_with_content_type(ct, value).unwrap();
            let b: JsonOrder = decode_with_content_type(ct, value).unwrap();
            assert_eq!(a.note.as_deref(), note);
            assert_eq!(b.note.as_deref(), note);
            assert_eq!(a.order_id, b.order_id);
        }
    }

    /// Python's primitive payloads: the value is the text itself.
    #[test]
    fn a_text_type_is_its_fields_display_and_from_str() {
        let e = encode(&Count(-42)).unwrap();
        assert_eq!(e.value, b"-42");
        assert_eq!(content_type(&e), Some("text/plain; charset=utf-8"));
        assert_eq!(
            decode::<Count>(&e.headers, Some(&e.value)).unwrap(),
            Count(-42)
        );
        // As Python writes it: no content-type.
        assert_eq!(
            decode_with_content_type::<Count>(None, b"17").unwrap(),
            Count(17)
        );
        assert_eq!(
            decode_with_content_type::<Greeting>(None, "hé {".as_bytes()).unwrap(),
            Greeting("hé {".into())
        );
        let e = decode_with_content_type::<Count>(None, b"4.5").unwrap_err();
        assert!(e.to_string().contains("cannot parse \"4.5\""), "{e}");
        // A text record of a type that is not text cannot be read.
        let e = decode_with_content_type::<OrderPlaced>(Some(b"text/plain"), b"x").unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Payload {
                    codec: Codec::Text,
                    ..
                }
            ),
            "{e}"
        );
    }
}
