//! Consumer settings.

use std::sync::Arc;
use std::time::Duration;

use kavari_group::assignor::Assignor;

use crate::retry::FibonacciRetryPolicy;
use crate::retry::RetryPolicy;

/// Where a partition with no committed offset starts (Kafka's
/// `auto.offset.reset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// The oldest record still kept (the default).
    #[default]
    Earliest,
    /// Only records written after the member got the partition.
    Latest,
    /// Do not guess: the partition stops with an error in `health()`.
    Error,
}

impl OffsetReset {
    /// The end of the log this policy starts from; `None` for `Error`.
    pub(crate) fn spec(self) -> Option<kavari_wire::list_offsets::OffsetSpec> {
        use kavari_wire::list_offsets::OffsetSpec;
        match self {
            Self::Earliest => Some(OffsetSpec::Earliest),
            Self::Latest => Some(OffsetSpec::Latest),
            Self::Error => None,
        }
    }
}

/// What happens to a record that cannot be handled: one a handler failed
/// for good (its retries spent, or a permanent error), or poison input (no
/// `msg_type`, an unsubscribed type, a value that does not decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Write it to `<topic><suffix>` (`dead_letter_suffix`) with its
    /// provenance, then move on. A missing dead-letter topic is created;
    /// while the dead letter cannot be written the partition waits at the
    /// record (blocked in `health()`), and nothing is lost.
    DeadLetter,
    /// Stop at the record: a handler that failed is tried again (backing
    /// off to 10 s) until it succeeds; poison, which no retry fixes, waits
    /// for a rebalance or a restart with code that can read it. The
    /// partition shows as blocked in `health()` meanwhile (the manager is
    /// not ready), and what came before it is committed.
    Block,
    /// Log it, count it (`health()`, `kavari_skipped_total`) and move on
    /// without it: the record is lost to this group. For poison this is
    /// the Python library's relaxed mode.
    Skip,
}

/// How the records of one partition are handed to the handlers. Whatever
/// the order, a partition's commit covers only a contiguous run of
/// finished records, and retries, dead letters, `max_handler_time` and the
/// failure policies apply to each record as they do one at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessingOrder {
    /// One record at a time, in offset order (the default): what a Kafka
    /// consumer loop does.
    #[default]
    Partition,
    /// Records with the same key one at a time in offset order; records
    /// with different keys side by side. Records without a key keep their
    /// offset order among themselves. At most `max_in_flight` records of a
    /// partition, counted from the oldest unfinished one, are taken at a
    /// time (running, or waiting for an earlier record of their key): a
    /// partition whose window is full is not fetched further, and a crash
    /// handles at most that many records of it again.
    Key {
        /// Records of one partition taken and not finished, at most.
        max_in_flight: usize,
    },
    /// Any records of a partition side by side, in no order, at most
    /// `max_in_flight` of them counted from the oldest unfinished one.
    Unordered {
        /// Records of one partition taken and not finished, at most.
        max_in_flight: usize,
    },
}

impl ProcessingOrder {
    /// The concurrent window this order asks for: which records may
    /// overlap and how many are taken at most; `None` for one at a time.
    /// How many records run side by side at most.
    pub(crate) fn max_in_flight(self) -> usize {
        self.window().map_or(1, |(_, n)| n.max(1))
    }

    pub(crate) fn window(self) -> Option<(Overlap, usize)> {
        match self {
            Self::Partition => None,
            Self::Key { max_in_flight } => Some((Overlap::Keys, max_in_flight)),
            Self::Unordered { max_in_flight } => Some((Overlap::Any, max_in_flight)),
        }
    }
}

/// Which records of a window may run side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// Records with different keys.
    Keys,
    /// Any two records.
    Any,
}

#[derive(Debug, Clone)]
pub(crate) struct ConsumerConfig {
    pub(crate) group_id: Option<String>,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) session_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) assignors: Option<Vec<Arc<dyn Assignor>>>,
    pub(crate) auto_offset_reset: OffsetReset,
    pub(crate) on_handler_failure: FailurePolicy,
    pub(crate) on_poison: FailurePolicy,
    pub(crate) commit_interval: Duration,
    pub(crate) queued_max_bytes: usize,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) max_partition_fetch_bytes: i32,
    pub(crate) fetch_min_bytes: i32,
    pub(crate) isolation: kavari_wire::fetch::Isolation,
    pub(crate) fetch_max_wait: Duration,
    pub(crate) delivery_retry: Arc<dyn RetryPolicy>,
    pub(crate) give_up_after: Option<Duration>,
    pub(crate) metadata_max_age: Duration,
    pub(crate) max_handler_time: Duration,
    pub(crate) order: ProcessingOrder,
    /// The transactional id prefix of exactly-once handling, when on.
    pub(crate) exactly_once: Option<String>,
    /// Under exactly-once handling, at most this many records of a
    /// partition share a transaction.
    pub(crate) records_per_transaction: usize,
    pub(crate) group_protocol: kavari_group::GroupProtocol,
    pub(crate) remote_assignor: Option<String>,
    /// The member's rack (`client.rack`), told to the group's coordinator.
    pub(crate) client_rack: Option<String>,
    /// The share group the subscriptions belong to, when they are shared.
    pub(crate) share_group: Option<String>,
    /// The broker's `group.share.delivery.count.limit`: a record failing
    /// on its last delivery is given up (dead-lettered) by the member.
    pub(crate) share_delivery_limit: u16,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group_id: None,
            group_instance_id: None,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            rebalance_timeout: Duration::from_secs(60),
            assignors: None,
            auto_offset_reset: OffsetReset::Earliest,
            on_handler_failure: FailurePolicy::DeadLetter,
            on_poison: FailurePolicy::DeadLetter,
            commit_interval: Duration::from_secs(1),
            queued_max_bytes: 64 * 1024 * 1024,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            fetch_min_bytes: 1,
            isolation: kavari_wire::fetch::Isolation::ReadCommitted,
            fetch_max_wait: Duration::from_millis(500),
            delivery_retry: Arc::new(FibonacciRetryPolicy::new(3)),
            give_up_after: None,
            metadata_max_age: Duration::from_secs(300),
            max_handler_time: Duration::from_secs(300),
            order: ProcessingOrder::Partition,
            exactly_once: None,
            records_per_transaction: 100,
            group_protocol: kavari_group::GroupProtocol::Classic,
            remote_assignor: None,
            client_rack: None,
            share_group: None,
            share_delivery_limit: 5,
        }
    }
}
