//! Where the partitions of one assignment start: one OffsetFetch for all of
//! them, one ListOffsets per leader for those without a committed offset,
//! then one subscription to the fetch engine, so that the first Fetch covers
//! every partition. (Started one by one, the first partition's Fetch went
//! out alone and the others waited it out: tens of milliseconds on a
//! partition with a backlog.)
//!
//! A partition this does not place (a lookup failed, or it has no committed
//! offset under `OffsetReset::Error`) starts on its own in its worker, which
//! retries and reports.

use std::collections::HashMap;

use kavari_group::TopicPartition;
use kavari_wire::fetcher::PartitionFeed;

use super::Shared;

/// Where a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// The group's committed offset, if it has one.
    pub(crate) committed: Option<i64>,
    /// The first offset to handle: the committed one, or the reset
    /// policy's.
    pub(crate) start: i64,
}

/// What a worker is handed when its assignment's lookup placed it.
pub(crate) struct Begin {
    pub(crate) position: Position,
    pub(crate) feed: PartitionFeed,
}

/// The positions of `partitions`, as far as two requests tell them.
pub(crate) async fn look_up(
    shared: &Shared,
    partitions: &[TopicPartition],
) -> HashMap<TopicPartition, Position> {
    let committed = match shared.member.committed(partitions).await {
        Ok(committed) => committed,
        Err(e) => {
            tracing::debug!(error = %e, "reading the assignment's committed offsets failed; each partition asks again");
            return HashMap::new();
        }
    };
    let mut found = HashMap::new();
    let mut unplaced = Vec::new();
    for tp in partitions {
        match committed.get(tp).copied().flatten() {
            Some(offset) => {
                found.insert(
                    tp.clone(),
                    Position {
                        committed: Some(offset),
                        start: offset,
                    },
                );
            }
            None => unplaced.push(tp.clone()),
        }
    }
    let Some(spec) = shared.config.auto_offset_reset.spec() else {
        return found;
    };
    if unplaced.is_empty() {
        return found;
    }
    for (tp, offset) in shared.fetcher.offsets_for(&unplaced, spec).await {
        match offset {
            Ok(start) => {
                found.insert(
                    tp,
                    Position {
                        committed: None,
                        start,
                    },
                );
            }
            Err(e) => {
                tracing::debug!(partition = %tp, error = %e, "looking up the reset offset failed; the partition asks again");
            }
        }
    }
    found
}
