//! Everything in Kavari that talks to Kafka brokers: pipelined
//! [`connection::Connection`]s (framing, version negotiation, timeouts), the
//! [`cluster::Cluster`]'s metadata and one connection per broker, record
//! batches written and read with every codec in pure Rust
//! ([`record_batch`], [`compression`]), produce, fetch and the fetch engine,
//! list-offsets, topic creation ([`admin`]),
//! one [`backoff::Backoff`], one [`log_rate::LogRate`] and one [`WireError`] with one classification
//! of broker error codes.
//!
//! The group protocol (kavari-group) and the typed library (kavari) build
//! on it; it knows neither.

pub mod admin;
mod answers;
pub mod backoff;
pub mod cluster;
pub mod compression;
pub mod connection;
pub mod coordinator;
mod error;
pub mod fetch;
pub mod fetcher;
pub mod leader_epoch;
pub mod list_offsets;
pub mod log_rate;
mod metrics;
pub mod produce;
pub mod producer_id;
pub mod reader;
pub mod record_batch;
pub mod response_shape;
pub mod sasl;
pub mod security;
mod segments;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transaction;

use std::fmt;

/// A topic's name as the protocol's messages carry it.
pub fn topic_name(topic: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        topic.to_string(),
    ))
}

pub use compression::Compression;
pub use error::{WireError, is_retriable_code, needs_metadata_refresh};
pub use kafka_protocol::ResponseError;
pub use security::Security;

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
