//! Kafka consumer-group membership: the classic group protocol
//! (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup) with the
//! `range`, `roundrobin` and `cooperative-sticky` assignors, the consumer
//! group protocol of KIP-848 (ConsumerGroupHeartbeat, the broker
//! assigning), static membership, and an offset store over
//! OffsetCommit/OffsetFetch, on kavari-wire's connections.
//!
//! Kavari groups are ordinary Kafka `consumer` groups: offsets live in
//! `__consumer_offsets`, visible to any Kafka tooling, and a group may mix
//! Kavari with Java or librdkafka members.

pub mod admin;
mod api;
pub mod assignor;
mod commit_offset;
mod config;
mod consumer_protocol;
mod coordinator;
mod error;
mod events;
mod member;
mod member_task;
pub mod offsets;
pub mod protocol;
pub mod share;

pub use commit_offset::CommitOffset;
pub use config::{GroupConfig, GroupProtocol};
pub use error::GroupError;
pub use events::{Generation, GroupEvent, MemberPhase, MemberState, RevokeAck};
pub use kavari_wire::{ResponseError, TopicPartition};
pub use member::GroupMember;
pub use offsets::{KafkaOffsetStore, OffsetStore};
