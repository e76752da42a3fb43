//! Produce requests. The producer's owner of a broker (in the `kavari`
//! crate) drains the batches of every partition that broker leads into one
//! request, one batch a partition, as the Java producer's sender and
//! librdkafka send one request per broker rather than one per partition,
//! and hands it to
//! [`Connection::send_produce`](crate::connection::Connection::send_produce).
//! A request is framed around its batches, which are written from the
//! producers' own buffers in one vectored write (`frame.rs`).

mod frame;

pub(crate) use frame::frame;

use bytes::Bytes;
use kafka_protocol::messages::TopicName;

/// One produce request: a record batch for each partition it names.
#[derive(Debug, Clone)]
pub struct Produce {
    /// The transactional id, for a transaction's batches; `None` otherwise.
    pub transactional_id: Option<String>,
    /// Acknowledgements required: -1 (all in-sync replicas), 1 or 0.
    pub acks: i16,
    /// How long the broker may wait for the acknowledgements.
    pub timeout_ms: i32,
    /// The batches, one a partition.
    pub batches: Vec<PartitionBatch>,
}

/// One partition's record batch in a [`Produce`] request.
#[derive(Debug, Clone)]
pub struct PartitionBatch {
    /// The topic's name.
    pub topic: TopicName,
    /// The partition.
    pub partition: i32,
    /// One encoded record batch (message format v2).
    pub records: Bytes,
}

/// The most record bytes a request should carry (the Java producer's
/// `max.request.size` default); a single larger batch still goes, alone.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
