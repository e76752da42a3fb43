//! The embedded "consumer" protocol: what members put in JoinGroup metadata
//! (subscription) and what the leader sends in SyncGroup (assignment).
//!
//! Both are an int16 version followed by the versioned body. A newer version
//! than we know is read as the newest we know, as the Java client does: later
//! versions only append fields.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, consumer_protocol_assignment,
    consumer_protocol_subscription,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kavari_wire::WireError;
use kavari_wire::reader::Reader;

use crate::TopicPartition;

/// The subscription version Kavari writes (owned partitions, generation, rack).
pub const SUBSCRIPTION_VERSION: i16 = 3;
/// The assignment version Kavari writes; versions 1 to 3 carry the same fields.
pub const ASSIGNMENT_VERSION: i16 = 1;
const HIGHEST: i16 = 3;

/// A member's subscription, as carried in its JoinGroup protocol metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Topics the member consumes.
    pub topics: Vec<String>,
    /// Assignor-specific data.
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (cooperative rebalancing).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which it got them; -1 when unknown.
    pub generation: i32,
    /// The member's rack, when configured.
    pub rack_id: Option<String>,
}

/// A member's assignment, as carried in the SyncGroup response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The partitions assigned.
    pub partitions: Vec<TopicPartition>,
    /// Assignor-specific data.
    pub user_data: Option<Bytes>,
}

/// Bytes that are not a consumer-protocol message.
#[derive(Debug, thiserror::Error)]
#[error("malformed consumer protocol {what}: {detail}")]
pub struct ProtocolError {
    what: &'static str,
    detail: String,
}

fn malformed(what: &'static str, detail: impl std::fmt::Display) -> ProtocolError {
    ProtocolError {
        what,
        detail: detail.to_string(),
    }
}

impl From<WireError> for ProtocolError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Malformed { what, detail } => ProtocolError { what, detail },
            other => malformed("message", other),
        }
    }
}

/// The int16 version prefix, a newer one read as the newest known.
fn read_version(r: &mut Reader, what: &'static str) -> Result<i16, ProtocolError> {
    if r.remaining() < 2 {
        return Err(malformed(what, "shorter than its version prefix"));
    }
    let version = r.i16()?;
    if version < 0 {
        return Err(malformed(what, format!("negative version {version}")));
    }
    Ok(version.min(HIGHEST))
}

/// Topics, each with its partitions (non-flexible arrays).
/// The longest topic name Kafka allows.
const MAX_TOPIC_NAME: usize = 249;

/// A topic name, refused when longer than Kafka allows: a name is cloned
/// per partition, and a peer's 32 KB names times a million partitions
/// would be gigabytes.
fn topic_name(r: &mut Reader) -> Result<String, WireError> {
    let name = r.string(false)?;
    if name.len() > MAX_TOPIC_NAME {
        return Err(WireError::Malformed {
            what: "topic name",
            detail: format!(
                "{} bytes (Kafka's are at most {MAX_TOPIC_NAME})",
                name.len()
            ),
        });
    }
    Ok(name)
}

fn topic_partitions(r: &mut Reader) -> Result<Vec<TopicPartition>, ProtocolError> {
    let topics = r.array(false, 6, |r| {
        let topic = topic_name(r)?;
        let partitions = r.array(false, 4, Reader::i32)?;
        Ok((topic, partitions))
    })?;
    Ok(topics
        .into_iter()
        .flat_map(|(t, ps)| {
            ps.into_iter()
                .map(move |p| TopicPartition::new(t.clone(), p))
        })
        .collect())
}

/// Groups partitions by topic, topics and partitions sorted.
pub(crate) fn by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        out.entry(tp.topic.as_str()).or_default().push(tp.partition);
    }
    for ps in out.values_mut() {
        ps.sort_unstable();
        ps.dedup();
    }
    out
}

impl Subscription {
    /// Encodes with the version prefix.
    pub fn encode(&self) -> Bytes {
        let owned = by_topic(&self.owned_partitions)
            .into_iter()
            .map(|(t, ps)| {
                consumer_protocol_subscription::TopicPartition::default()
                    .with_topic(kavari_wire::topic_name(t))
                    .with_partitions(ps)
            })
            .collect();
        let body = ConsumerProtocolSubscription::default()
            .with_topics(
                self.topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            )
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(owned)
            .with_generation_id(self.generation)
            .with_rack_id(self.rack_id.clone().map(StrBytes::from_string));
        let mut buf = BytesMut::new();
        buf.put_i16(SUBSCRIPTION_VERSION);
        // Encoding our own well-formed struct at a supported version cannot
        // fail; an error would mean a kafka-protocol bug, and leaves the
        // body empty, which peers reject loudly.
        if let Err(e) = body.encode(&mut buf, SUBSCRIPTION_VERSION) {
            tracing::error!(error = %e, "encoding a consumer subscription failed");
        }
        buf.freeze()
    }

    /// Decodes bytes from any client (Java, librdkafka, Kavari).
    pub fn decode(bytes: &Bytes) -> Result<Self, ProtocolError> {
        let what = "subscription";
        let mut r = Reader::new(bytes.clone(), what);
        let version = read_version(&mut r, what)?;
        let topics = r.array(false, 2, topic_name)?;
        let user_data = r.nullable_bytes(false)?;
        let owned_partitions = if version >= 1 {
            topic_partitions(&mut r)?
        } else {
            Vec::new()
        };
        let generation = if version >= 2 { r.i32()? } else { -1 };
        let rack_id = if version >= 3 {
            r.nullable_string(false)?
        } else {
            None
        };
        Ok(Self {
            topics,
            user_data,
            owned_partitions,
            generation,
            rack_id,
        })
    }
}

impl Assignment {
    /// Encodes with the version prefix.
    pub fn encode(&self) -> Bytes {
        let assigned = by_topic(&self.partitions)
            .into_iter()
            .map(|(t, ps)| {
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(kavari_wire::topic_name(t))
                    .with_partitions(ps)
            })
            .collect();
        let body = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(assigned)
            .with_user_data(self.user_data.clone());
        let mut buf = BytesMut::new();
        buf.put_i16(ASSIGNMENT_VERSION);
        if let Err(e) = body.encode(&mut buf, ASSIGNMENT_VERSION) {
            tracing::error!(error = %e, "encoding a consumer assignment failed");
        }
        buf.freeze()
    }

    /// Decodes bytes from any client. Empty bytes are an empty assignment
    /// (what a broker sends a member the leader gave nothing).
    pub fn decode(bytes: &Bytes) -> Result<Self, ProtocolError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let mut r = Reader::new(bytes.clone(), "assignment");
        read_version(&mut r, "assignment")?;
        let partitions = topic_partitions(&mut r)?;
        let user_data = r.nullable_bytes(false)?;
        Ok(Self {
            partitions,
            user_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    /// Layout from the Kafka protocol guide (ConsumerProtocolSubscription v0):
    /// version int16, topics [string], user_data bytes.
    #[test]
    fn v0_subscription_bytes_match_the_java_layout() {
        let mut java = vec![0, 0]; // version 0
        java.extend([0, 0, 0, 2]); // 2 topics
        java.extend([0, 3]);
        java.extend(b"foo");
        java.extend([0, 3]);
        java.extend(b"bar");
        java.extend([0xff, 0xff, 0xff, 0xff]); // null user data
        let s = Subscription::decode(&Bytes::from(java)).unwrap();
        assert_eq!(s.topics, ["foo", "bar"]);
        assert_eq!(s.user_data, None);
        assert!(s.owned_partitions.is_empty());
        assert_eq!(s.generation, -1);
    }

    /// v3 adds owned partitions (v1), generation (v2) and rack (v3).
    #[test]
    fn v3_subscription_bytes_match_the_java_layout() {
        let s = Subscription {
            topics: vec!["t".into()],
            user_data: None,
            owned_partitions: vec![tp("t", 2), tp("t", 0)],
            generation: 7,
            rack_id: None,
        };
        let mut want = vec![0, 3]; // version 3
        want.extend([0, 0, 0, 1, 0, 1, b't']); // topics ["t"]
        want.extend([0xff, 0xff, 0xff, 0xff]); // null user data
        want.extend([0, 0, 0, 1]); // 1 owned topic
        want.extend([0, 1, b't']); // "t"
        want.extend([0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]); // partitions [0, 2]
        want.extend([0, 0, 0, 7]); // generation
        want.extend([0xff, 0xff]); // null rack
        assert_eq!(s.encode().as_ref(), &want[..]);
        let back = Subscription::decode(&s.encode()).unwrap();
        assert_eq!(back.owned_partitions, [tp("t", 0), tp("t", 2)]);
        assert_eq!(back.generation, 7);
    }

    /// Java's layout of ConsumerProtocolAssignment v1: version, [topic,
    /// [partition]], user data.
    #[test]
    fn assignment_bytes_match_the_java_layout_and_round_trip() {
        let a = Assignment {
            partitions: vec![tp("b", 1), tp("a", 0), tp("b", 0)],
            user_data: None,
        };
        let mut want = vec![0, 1];
        want.extend([0, 0, 0, 2]);
        want.extend([0, 1, b'a', 0, 0, 0, 1, 0, 0, 0, 0]);
        want.extend([0, 1, b'b', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend([0xff, 0xff, 0xff, 0xff]);
        assert_eq!(a.encode().as_ref(), &want[..]);
        let back = Assignment::decode(&a.encode()).unwrap();
        assert_eq!(back.partitions, [tp("a", 0), tp("b", 0), tp("b", 1)]);
    }

    #[test]
    fn newer_versions_are_clamped_and_garbage_is_an_error() {
        let mut bytes = Subscription {
            topics: vec!["x".into()],
            ..Default::default()
        }
        .encode()
        .to_vec();
        bytes[1] = 9; // version 9: read as 3, extra fields ignored (seed-free)
        bytes.extend([1, 2, 3]);
        assert_eq!(
            Subscription::decode(&Bytes::from(bytes)).unwrap().topics,
            ["x"]
        );
        assert!(Subscription::decode(&Bytes::from_static(&[0])).is_err());
        assert!(Subscription::decode(&Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
        assert!(Assignment::decode(&Bytes::from_static(&[0xff, 0xff])).is_err());
        assert_eq!(
            Assignment::decode(&Bytes::new()).unwrap(),
            Assignment::default()
        );
        // A huge claimed length is an error, not an allocation.
        assert!(
            Subscription::decode(&Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff])).is_err()
        );
    }

    /// Names longer than Kafka allows are refused: each partition carries
    /// its topic's name, so a peer's long names would multiply.
    #[test]
    fn topic_names_longer_than_kafka_allows_are_refused() {
        let with = |name: &str| Assignment {
            partitions: vec![tp(name, 0)],
            user_data: None,
        };
        let longest = "t".repeat(249);
        assert!(Assignment::decode(&with(&longest).encode()).is_ok());
        let e = Assignment::decode(&with(&"t".repeat(250)).encode()).expect_err("refused");
        assert!(e.to_string().contains("at most 249"), "{e}");
        let subscription = Subscription {
            topics: vec!["t".repeat(32_767)],
            ..Default::default()
        };
        assert!(Subscription::decode(&subscription.encode()).is_err());
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let seed = 42;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let valid = Subscription {
            topics: vec!["orders".into(), "payments".into()],
            owned_partitions: vec![tp("orders", 1)],
            generation: 3,
            rack_id: Some("r1".into()),
            ..Default::default()
        }
        .encode();
        for _ in 0..20_000 {
            let mut v = valid.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..v.len());
                v[at] = rng.random();
            }
            v.truncate(rng.random_range(0..=v.len()));
            let _ = Subscription::decode(&Bytes::from(v.clone()));
            let _ = Assignment::decode(&Bytes::from(v));
        }
    }
}
