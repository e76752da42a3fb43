//! Produce requests. Each partition's sender hands its record batch to
//! [`Connection::send_produce`](crate::connection::Connection::send_produce);
//! batches handed to one connection while its writer is busy, or in the same
//! turn of the runtime, travel together in one request that names every
//! partition, as the Java producer and librdkafka send one request per
//! broker rather than one per partition (`gather.rs`). A request is framed
//! around its batches, which are written from the producers' own buffers in
//! one vectored write (`frame.rs`).

mod frame;
mod gather;

pub(crate) use frame::frame;
pub(crate) use gather::{Gather, SharedAnswer, Waiting, Written};

use bytes::Bytes;
use kafka_protocol::messages::TopicName;

/// One partition's records for
/// [`Connection::send_produce`](crate::connection::Connection::send_produce).
#[derive(Debug, Clone)]
pub struct PartitionProduce {
    /// The topic's name.
    pub topic: TopicName,
    /// The partition.
    pub partition: i32,
    /// Acknowledgements required: -1 (all in-sync replicas), 1 or 0.
    pub acks: i16,
    /// How long the broker may wait for the acknowledgements.
    pub timeout_ms: i32,
    /// One encoded record batch (message format v2).
    pub records: Bytes,
}

impl PartitionProduce {
    /// Whether `other` may share a request with this one: the request
    /// carries one `acks` and one timeout, and a partition once.
    fn joins(&self, other: &Self) -> bool {
        self.acks == other.acks && self.timeout_ms == other.timeout_ms
    }

    /// The partition, as a key.
    fn key(&self) -> (TopicName, i32) {
        (self.topic.clone(), self.partition)
    }
}

/// The most record bytes a request gathers (the Java producer's
/// `max.request.size` default); a single larger batch still goes, alone.
pub(crate) const MAX_GATHERED_BYTES: usize = 1024 * 1024;
