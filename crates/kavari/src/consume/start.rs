//! Where the partitions of one assignment start: one OffsetFetch for all of
//! them, one ListOffsets per leader for those without a committed offset
//! and one OffsetCommit of where those start, then one subscription to the
//! fetch engine, so that the first Fetch covers
//! every partition. (Started one by one, the first partition's Fetch went
//! out alone and the others waited it out: tens of milliseconds on a
//! partition with a backlog.)
//!
//! A partition this does not place (a lookup failed, or it has no committed
//! offset under `OffsetReset::Error`) is placed on its own by [`place`],
//! which its worker calls: it retries with a backoff and reports why.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kavari_group::{CommitOffset, TopicPartition};
use kavari_wire::backoff::{Backoff, Retrying};
use kavari_wire::fetcher::PartitionFeed;
use tokio::sync::watch;

use super::state::ConsumeState;

/// Where a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// The group's committed offset, if it has one.
    pub(crate) committed: Option<i64>,
    /// The leader epoch committed with it, when known: the fetcher checks
    /// the position with the leader before fetching (KIP-320).
    pub(crate) leader_epoch: Option<i32>,
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
    shared: &ConsumeState,
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
            Some(c) => {
                found.insert(
                    tp.clone(),
                    Position {
                        committed: Some(c.offset),
                        leader_epoch: c.leader_epoch,
                        start: c.offset,
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
    let mut reset = BTreeMap::new();
    for (tp, offset) in shared.fetcher.offsets_for(&unplaced, spec).await {
        match offset {
            Ok(start) => {
                reset.insert(
                    tp,
                    CommitOffset {
                        offset: start,
                        leader_epoch: None,
                    },
                );
            }
            Err(e) => {
                tracing::debug!(partition = %tp, error = %e, "looking up the reset offset failed; the partition asks again");
            }
        }
    }
    // A position from the reset policy is committed before anything is
    // handled (see the worker's `run`): all of them in one request here,
    // not one per partition from each worker. Those commits go one after
    // another through the coordinator, and 64 new partitions started
    // 2-3 ms apart on a replicating cluster. Under exactly-once handling
    // the transactions commit offsets; if this commit fails, each worker
    // commits its own. Counted in the commit metrics as a worker's commit
    // is.
    let committed = shared.exactly_once.is_none() && !reset.is_empty() && {
        let started = std::time::Instant::now();
        let done = shared.member.commit(&reset).await.is_ok();
        crate::metrics::committed(&shared.group_id, started.elapsed(), done);
        done
    };
    for (tp, at) in reset {
        found.insert(
            tp,
            Position {
                committed: committed.then_some(at.offset),
                leader_epoch: None,
                start: at.offset,
            },
        );
    }
    found
}

/// The position of `tp` alone, retried with a backoff until it is found or
/// `stop` turns true; every failure goes to `report` (and to the log: the
/// first, then every 30 s). `None` when stopped first, or when `tp` has no
/// committed offset and `OffsetReset::Error` applies (reported and logged).
pub(crate) async fn place(
    shared: &ConsumeState,
    tp: &TopicPartition,
    stop: &watch::Receiver<bool>,
    report: impl Fn(String),
) -> Option<Position> {
    let mut retrying = Retrying::new(
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        Duration::from_secs(30),
    );
    loop {
        if *stop.borrow() {
            return None;
        }
        match position_of(shared, tp).await {
            Ok(Some(position)) => return Some(position),
            Ok(None) => {
                let why = format!("{tp} has no committed offset and auto_offset_reset is Error");
                tracing::error!(partition = %tp, "{why}");
                report(why);
                return None;
            }
            Err(e) => {
                let failed = retrying.failed();
                if failed.log.is_some() {
                    tracing::warn!(partition = %tp, error = %e, attempts = failed.failures, retry_in = ?failed.wait, "cannot start the partition yet; retrying");
                }
                report(e);
                if !crate::stop::pause(failed.wait, &mut stop.clone()).await {
                    return None;
                }
            }
        }
    }
}

/// The position of `tp`: its committed offset, else the reset policy's
/// (`None` under `OffsetReset::Error`); `Err` says which lookup failed.
async fn position_of(
    shared: &ConsumeState,
    tp: &TopicPartition,
) -> Result<Option<Position>, String> {
    let committed = shared
        .member
        .committed(std::slice::from_ref(tp))
        .await
        .map_err(|e| format!("reading the committed offset: {e}"))?
        .get(tp)
        .copied()
        .flatten();
    if let Some(c) = committed {
        return Ok(Some(Position {
            committed: Some(c.offset),
            leader_epoch: c.leader_epoch,
            start: c.offset,
        }));
    }
    let Some(spec) = shared.config.auto_offset_reset.spec() else {
        return Ok(None);
    };
    let start = shared
        .fetcher
        .offset_for(tp, spec)
        .await
        .map_err(|e| format!("looking up the {spec:?} offset of {tp}: {e}"))?;
    Ok(Some(Position {
        committed: None,
        leader_epoch: None,
        start,
    }))
}
