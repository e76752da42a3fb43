//! The publisher's counters.

/// Counters of the publisher, for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Produce requests sent. A request carries one batch for each
    /// partition it names: the batches of every partition a broker leads
    /// that were ready together.
    pub produce_requests: u64,
    /// Record batches sent (one partition's records each).
    pub batches_sent: u64,
    /// Records the broker acknowledged.
    pub records_acknowledged: u64,
    /// Produce requests that failed.
    pub failed_requests: u64,
    /// Publishes that were retried at least once.
    pub retries: u64,
    /// Messages written to a dead-letter topic.
    pub dead_lettered: u64,
    /// Bytes of records waiting to be sent now, all partitions together
    /// (bounded by `buffer_memory`).
    pub queued_bytes: u64,
    /// Topics with a route (partition batchers) now; one not published to
    /// for `metadata_max_idle` is forgotten.
    pub topics: u64,
}
