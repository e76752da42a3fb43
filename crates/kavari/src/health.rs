//! [`Health`]: what a readiness probe and an operator need to see.

use std::time::SystemTime;

/// The manager's overall state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthState {
    /// `start()` has not been called (publishing works without it).
    NotStarted,
    /// Started; the group member has not contacted Kafka yet.
    Starting,
    /// Looking for the group coordinator (Kafka may be unreachable).
    Connecting,
    /// Joining the group for the first time.
    Joining,
    /// Joined and fetching: ready.
    Running,
    /// A rebalance is under way.
    Rebalancing,
    /// Lost the coordinator after having joined; reconnecting.
    Reconnecting,
    /// Shutting down.
    Stopping,
    /// Shut down.
    Stopped,
    /// Stopped for good; the reason says why.
    Failed(String),
}

/// One assigned partition's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionHealth {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The last committed offset (next to read), if any.
    pub committed: Option<i64>,
    /// The next offset to handle.
    pub position: Option<i64>,
    /// The partition's high watermark at the last fetch.
    pub high_watermark: Option<i64>,
    /// `high_watermark - position`.
    pub lag: Option<i64>,
    /// When a message of this partition was last handled.
    pub last_progress: Option<SystemTime>,
    /// Why the partition is stopped, if it is.
    pub error: Option<String>,
}

/// A snapshot for readiness probes and dashboards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The overall state.
    pub state: HealthState,
    /// Ready: joined and fetching (or not consuming at all).
    pub ready: bool,
    /// The group generation, when in one.
    pub generation: Option<i32>,
    /// Every assigned partition.
    pub partitions: Vec<PartitionHealth>,
}
