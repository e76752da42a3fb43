//! Kafka consumer-group membership for rskafka users: the classic group
//! protocol (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup),
//! the `range`, `roundrobin` and `cooperative-sticky` assignors, static
//! membership, and an offset store over OffsetCommit/OffsetFetch.
//!
//! Underneath is a small wire layer that Kavari's producer uses too:
//! [`connection::Connection`] (framing, version negotiation, pipelined
//! requests, timeouts) and [`cluster::Cluster`] (metadata and one connection
//! per broker).
//!
//! Kavari groups are ordinary Kafka `consumer` groups: offsets live in
//! `__consumer_offsets`, visible to any Kafka tooling, and a group may mix
//! Kavari with Java or librdkafka members.

mod api;
pub mod assignor;
mod backoff;
pub mod cluster;
mod config;
pub mod connection;
mod coordinator;
mod error;
mod events;
mod member;
pub mod offsets;
pub mod produce;
pub mod protocol;

use std::fmt;

pub use config::GroupConfig;
pub use error::GroupError;
pub use events::{Generation, GroupEvent, MemberPhase, MemberState, RevokeAck};
pub use kafka_protocol::ResponseError;
pub use member::GroupMember;
pub use offsets::{KafkaOffsetStore, MemoryOffsetStore, OffsetStore};

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
