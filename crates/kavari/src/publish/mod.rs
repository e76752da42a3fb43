//! Publishing: encode, pick a partition, batch, retry by policy, and write a
//! dead letter when every attempt failed.
//!
//! A record's way, in the order it takes it:
//!
//! - `publisher.rs`: the publisher's steps of every publish (admit,
//!   append, await, retry, dead letter or hand-back);
//! - `append.rs`: placing a record (`topics.rs`: each topic's partitions,
//!   `lookup.rs`: the one lookup of a topic its waiting publishes share,
//!   and `partitioner.rs`) and appending it to its partition's open batch;
//! - `batcher.rs`: a partition's queue of unsent batches, and the handle
//!   publishers append through; `outcome.rs`: what became of a batch;
//! - `sink.rs`: one task per broker drains the queues of the partitions it
//!   leads into produce requests and hands each partition its answers;
//!   `sinks.rs`: which sink leads a partition, and finding a lost leader;
//! - `partition.rs`: a partition's batches in flight, their sequence
//!   numbers and retries (`producer_ids.rs`: the producer identity);
//! - `expiry.rs`: every batch ends by its delivery deadline;
//! - `dead_letter.rs`: where a record goes when every attempt failed.

mod append;
mod batcher;
mod config;
mod dead_letter;
mod error;
mod expiry;
mod lookup;
mod outcome;
mod partition;
mod producer_ids;
mod producing;
mod publisher;
mod sink;
mod sinks;
mod stats;
mod topics;

pub(crate) use config::ProducerConfig;
pub use error::{Delivery, Offset, ProduceError, ProduceErrorKind, PublishError};
pub use kavari_wire::Compression;
pub(crate) use producer_ids::Idempotence;
pub(crate) use publisher::Publisher;
pub use stats::PublishStats;

#[cfg(feature = "testing")]
pub(crate) use dead_letter::letter_of;
