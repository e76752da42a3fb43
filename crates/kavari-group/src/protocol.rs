//! The embedded "consumer" protocol: what members put in JoinGroup metadata
//! (subscription) and what the leader sends in SyncGroup (assignment).
//!
//! Both are an int16 version followed by the versioned body. A newer version
//! than we know is read as the newest we know, as the Java client does: later
//! versions only append fields.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    consumer_protocol_assignment, consumer_protocol_subscription,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

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

fn read_version(buf: &mut Bytes, what: &'static str) -> Result<i16, ProtocolError> {
    if buf.remaining() < 2 {
        return Err(malformed(what, "shorter than its version prefix"));
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(malformed(what, format!("negative version {version}")));
    }
    Ok(version.min(HIGHEST))
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
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
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
        let mut r = Reader::new(bytes, what);
        let version = r.version()?;
        let topics = r.array(|r| r.string())?;
        let user_data = r.nullable_bytes()?;
        let owned_partitions = if version >= 1 {
            r.topic_partitions()?
        } else {
            Vec::new()
        };
        let generation = if version >= 2 { r.i32()? } else { -1 };
        let rack_id = if version >= 3 {
            r.nullable_string()?
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
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
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
        let mut r = Reader::new(bytes, "assignment");
        r.version()?;
        let partitions = r.topic_partitions()?;
        let user_data = r.nullable_bytes()?;
        Ok(Self {
            partitions,
            user_data,
        })
    }
}

/// A bounds-checked reader for the consumer protocol. kafka-protocol's
/// decoders reserve a vector of the length the bytes claim, so a corrupt
/// length aborts the process on allocation; this reader checks every length
/// against the bytes left first.
struct Reader {
    buf: Bytes,
    what: &'static str,
}

impl Reader {
    fn new(bytes: &Bytes, what: &'static str) -> Self {
        Self {
            buf: bytes.clone(),
            what,
        }
    }

    fn need(&self, n: usize) -> Result<(), ProtocolError> {
        if self.buf.remaining() < n {
            return Err(malformed(
                self.what,
                format!("needs {n} more bytes, {} left", self.buf.remaining()),
            ));
        }
        Ok(())
    }

    fn version(&mut self) -> Result<i16, ProtocolError> {
        read_version(&mut self.buf, self.what)
    }

    fn i16(&mut self) -> Result<i16, ProtocolError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    fn i32(&mut self) -> Result<i32, ProtocolError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    /// An int32 count of elements of at least `min_size` bytes each; -1 is null.
    fn count(&mut self, min_size: usize) -> Result<Option<usize>, ProtocolError> {
        let n = self.i32()?;
        if n == -1 {
            return Ok(None);
        }
        let n =
            usize::try_from(n).map_err(|_| malformed(self.what, format!("negative length {n}")))?;
        self.need(n.saturating_mul(min_size))?;
        Ok(Some(n))
    }

    fn array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, ProtocolError>,
    ) -> Result<Vec<T>, ProtocolError> {
        let n = self.count(1)?.unwrap_or(0);
        (0..n).map(|_| item(self)).collect()
    }

    fn nullable_string(&mut self) -> Result<Option<String>, ProtocolError> {
        let n = self.i16()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n)
            .map_err(|_| malformed(self.what, format!("negative string length {n}")))?;
        self.need(n)?;
        let raw = self.buf.split_to(n);
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| malformed(self.what, "a string is not UTF-8"))
    }

    fn string(&mut self) -> Result<String, ProtocolError> {
        self.nullable_string()?
            .ok_or_else(|| malformed(self.what, "null where a string is required"))
    }

    fn nullable_bytes(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        match self.count(1)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.buf.split_to(n))),
        }
    }

    fn topic_partitions(&mut self) -> Result<Vec<TopicPartition>, ProtocolError> {
        let topics = self.array(|r| {
            let topic = r.string()?;
            let n = r.count(4)?.unwrap_or(0);
            let partitions = (0..n).map(|_| r.i32()).collect::<Result<Vec<_>, _>>()?;
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
