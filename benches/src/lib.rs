//! Shared pieces of Kavari's benchmarks: payload types of fixed sizes.

use kavari::KafkaMessage;
use serde::{Deserialize, Serialize};

/// A message whose encoded value is about `size` bytes.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "bench")]
pub struct Payload {
    /// The partition key.
    #[kavari(key)]
    pub id: String,
    /// A sequence number.
    pub seq: u64,
    /// Filler to reach the wanted size.
    #[serde(with = "serde_bytes_like")]
    pub body: Vec<u8>,
}

impl Payload {
    /// A payload whose MessagePack value is close to `size` bytes.
    pub fn of_size(seq: u64, size: usize) -> Self {
        Self {
            id: format!("key-{}", seq % 1024),
            seq,
            body: vec![0xab; size.saturating_sub(32)],
        }
    }
}

/// Serializes bytes as a MessagePack bin, not an array of integers.
mod serde_bytes_like {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}
