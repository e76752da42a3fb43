//! [`CommitOffset`]: what a commit records for one partition.

/// An offset to commit: the next one to read, and the leader epoch of the
/// record before it (KIP-320), so a consumer that starts there later can
/// tell whether the log was truncated under it. `From<i64>`: no epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOffset {
    /// The next offset to read (last handled + 1).
    pub offset: i64,
    /// The leader epoch of the last record handled, when known.
    pub leader_epoch: Option<i32>,
}

impl From<i64> for CommitOffset {
    fn from(offset: i64) -> Self {
        Self {
            offset,
            leader_epoch: None,
        }
    }
}
