//! Kafka consumer-group membership for rskafka users: the classic group
//! protocol (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup),
//! the `range`, `roundrobin` and `cooperative-sticky` assignors, static
//! membership, and an offset store over OffsetCommit/OffsetFetch.
//!
//! Kavari groups are ordinary Kafka `consumer` groups: offsets live in
//! `__consumer_offsets`, visible to any Kafka tooling, and a group may mix
//! Kavari with Java or librdkafka members.

pub mod assignor;
pub mod protocol;

use std::fmt;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic and partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}
