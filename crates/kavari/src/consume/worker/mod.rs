//! One task per assigned partition: start from the committed offset, take
//! records from the manager's fetch engine, handle them in offset order,
//! commit the contiguous watermark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kavari_group::{CommitOffset, TopicPartition};
use kavari_wire::WireError;
use kavari_wire::backoff::{Backoff, Retrying};
use kavari_wire::fetcher::{FetchEvent, PartitionFeed, ResetCause};
use kavari_wire::log_rate::LogRate;
use kavari_wire::record_batch::read::Batch;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::start::{Begin, Position};
use super::state::ConsumeState;
use crate::stop::until_stopped;

mod concurrent;
mod in_order;
mod steer;
mod window;

/// Records handled between two releases of their bytes to the engine.
const RELEASE_EVERY: usize = 1024;

/// How often health follows a partition while its records are handled.
pub(super) const REPORT_EVERY: Duration = Duration::from_millis(200);

/// The first wait before a partition stopped by a fault is fetched again,
/// and the longest.
const FAULT_RETRY_FIRST: Duration = Duration::from_secs(1);
const FAULT_RETRY_MAX: Duration = Duration::from_secs(60);

/// At most one "commit failed" line per partition and interval.
const COMMIT_FAILURES_EVERY: Duration = Duration::from_secs(10);

/// Runs the partition until `stop` turns true; commits what it handled.
/// It starts where `begin` says, or (the sender dropped: its assignment's
/// lookup did not place it) finds its start itself.
pub(crate) async fn run(
    shared: Arc<ConsumeState>,
    tp: TopicPartition,
    stop: watch::Receiver<bool>,
    begin: oneshot::Receiver<Begin>,
) {
    let mut worker = Worker {
        shared,
        tp,
        stop,
        committed: None,
        epoch: None,
        commit_failures: LogRate::new(COMMIT_FAILURES_EVERY),
    };
    worker.run(begin).await;
}

/// What a fetch event asks of a partition's worker.
pub(super) enum Turn {
    /// Records to hand to the handlers: the batches of one answer, read
    /// from `from`, holding `bytes` of the partition's buffer.
    Records {
        batches: Vec<Batch>,
        from: i64,
        bytes: usize,
    },
    /// The position moved to this offset (out of range, or truncated).
    Reset(i64),
    /// Fetching failed; the partition is fetched again after a wait.
    Fault(WireError),
    /// The log was truncated under the position: the partition stops.
    Halt(WireError),
    /// Nothing for the handlers.
    Nothing,
    /// The engine dropped the partition.
    End,
}

pub(super) struct Worker {
    pub(super) shared: Arc<ConsumeState>,
    pub(super) tp: TopicPartition,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) committed: Option<i64>,
    /// The leader epoch of the last record handled, committed with the
    /// offset after it (KIP-320).
    pub(super) epoch: Option<i32>,
    /// Failed commits are tried again every tick: one line per interval
    /// while the coordinator stays away, not one per tick.
    commit_failures: LogRate<()>,
}

impl Worker {
    pub(super) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut crate::health::PartitionHealth)) {
        self.shared.update_partition(&self.tp, f);
    }

    async fn run(&mut self, begin: oneshot::Receiver<Begin>) {
        // The engine fetches ahead into this partition's buffer, bounded in
        // bytes; released bytes let it fetch the partition again.
        let Some((start, feed)) = self.begin(begin).await else {
            return;
        };
        // A position from `auto_offset_reset` is committed at once, before
        // anything is handled (the assignment's lookup commits them all in
        // one request; this is for one it did not, and the first fetch is
        // under way meanwhile):
        // should the partition move first, its next owner starts here too,
        // not at a later log end past what was written meanwhile. (A failed
        // commit is tried again every tick.)
        if self.committed.is_none() {
            self.commit(start).await;
        }
        let position = match self.shared.config.order.window() {
            None => self.run_in_order(start, feed).await,
            Some((overlap, limit)) => self.run_concurrent(start, feed, overlap, limit).await,
        };
        self.commit(position).await;
    }

    /// What a fetch event asks of the partition; a reset is logged here.
    pub(super) fn turn(&self, event: Option<FetchEvent>) -> Turn {
        match event {
            Some(FetchEvent::Records {
                batches,
                from,
                bytes,
                ..
            }) => Turn::Records {
                batches,
                from,
                bytes,
            },
            Some(FetchEvent::Reset { from, to, cause }) => {
                match cause {
                    ResetCause::Truncated => {
                        tracing::warn!(partition = %self.tp, from, to, "the log was truncated under this partition's position (an unclean leader election?); going on from the new log")
                    }
                    _ => {
                        tracing::warn!(partition = %self.tp, from, to, "offset out of range (retention?); auto_offset_reset moved it")
                    }
                }
                Turn::Reset(to)
            }
            Some(FetchEvent::Failed(e @ WireError::LogTruncated { .. })) => Turn::Halt(e),
            Some(FetchEvent::Failed(e)) => Turn::Fault(e),
            Some(_) => Turn::Nothing,
            None => Turn::End,
        }
    }

    /// The log was truncated under `position`. No retry can fix it:
    /// fetching at the position again would read whatever the new log
    /// holds there as if nothing happened. The partition waits for its
    /// offset to be reset (`kavari group reset-offsets`), until it stops.
    pub(super) async fn halt(&self, position: i64, e: &WireError) {
        tracing::error!(partition = %self.tp, offset = position, error = %e, "the partition stops until its offset is reset");
        self.update(|h| h.error = Some(format!("{}: {e}", self.tp)));
        until_stopped(&mut self.stop.clone()).await;
    }

    /// Waits out a fault at `position` (see [`Self::wait_out_fault`]), then
    /// fetches the partition again from there. False when the partition
    /// stopped meanwhile.
    pub(super) async fn refetch(
        &self,
        position: i64,
        e: &WireError,
        faults: &mut Option<(i64, Retrying)>,
        feed: &mut PartitionFeed,
    ) -> bool {
        if !self.wait_out_fault(position, e, faults).await {
            return false;
        }
        *feed = self
            .shared
            .fetcher
            .subscribe_at(self.tp.clone(), position, self.epoch);
        true
    }

    /// Once the position is past the last fault, the partition is well
    /// again.
    pub(super) fn past_fault(&self, position: i64, faults: &mut Option<(i64, Retrying)>) {
        if faults.as_ref().is_some_and(|(at, _)| position > *at) {
            *faults = None;
            self.update(|h| h.error = None);
        }
    }

    /// A batch that cannot be read, or a refusal, at `position`: shown in
    /// health and logged, then waited out (1 s, doubling to a minute while
    /// the fault stays at the same offset) before the partition is fetched
    /// again from there, as a broker that answered badly may answer well
    /// next time. False when the partition stopped meanwhile.
    async fn wait_out_fault(
        &self,
        position: i64,
        e: &WireError,
        faults: &mut Option<(i64, Retrying)>,
    ) -> bool {
        let retrying = match faults {
            Some((at, retrying)) if *at == position => retrying,
            _ => {
                // Every fault is logged: the waits are long already.
                let fresh = Retrying::new(
                    Backoff::new(FAULT_RETRY_FIRST, FAULT_RETRY_MAX),
                    Duration::ZERO,
                );
                &mut faults.insert((position, fresh)).1
            }
        };
        let wait = retrying.failed().wait;
        let why = format!(
            "{}: {e}; fetching again from offset {position} in {wait:?}",
            self.tp
        );
        tracing::error!(partition = %self.tp, offset = position, error = %e, retry_in = ?wait, "the partition cannot go on; fetching it again after a wait");
        self.update(|h| h.error = Some(why));
        crate::stop::pause(wait, &mut self.stop.clone()).await && !self.stopping()
    }

    /// The start and the feed, from the assignment's lookup or else found
    /// here; `None` when stopped first (or `OffsetReset::Error` applies).
    async fn begin(&mut self, begin: oneshot::Receiver<Begin>) -> Option<(i64, PartitionFeed)> {
        let mut stop = self.stop.clone();
        let handed = tokio::select! {
            biased;
            _ = until_stopped(&mut stop) => return None,
            handed = begin => handed.ok(),
        };
        if let Some(Begin { position, feed }) = handed {
            self.started(position);
            return Some((position.start, feed));
        }
        let report = |e: String| self.update(|h| h.error = Some(e));
        let position = super::start::place(&self.shared, &self.tp, &self.stop, report).await?;
        self.started(position);
        Some((
            position.start,
            self.shared.fetcher.subscribe_at(
                self.tp.clone(),
                position.start,
                position.leader_epoch,
            ),
        ))
    }

    fn started(&mut self, position: Position) {
        let Position {
            committed,
            leader_epoch,
            start,
        } = position;
        self.committed = committed;
        self.epoch = leader_epoch;
        self.update(|h| {
            h.committed = committed;
            h.position = Some(start);
            h.error = None;
        });
        tracing::info!(partition = %self.tp, offset = start, committed = ?committed, "consuming");
    }

    /// A handler has run past `max_handler_time` at `offset`: the partition
    /// shows as stuck, and the member leaves the group so its partitions
    /// move to other members (its workers, this one included, are stopped
    /// without a commit past what was handled); it then joins again.
    pub(super) fn step_aside(&self, offset: i64, max: Duration) {
        let why = format!(
            "stuck at offset {offset}: a handler has run longer than max_handler_time ({max:?}); leaving the group so the partitions move"
        );
        tracing::error!(partition = %self.tp, offset, ?max, "a handler is stuck; leaving the group so the partitions move");
        self.update(|h| h.error = Some(why.clone()));
        self.shared.member.step_aside(why);
    }

    /// Shows `position`, the high watermark of the partition's latest fetch
    /// answer and the lag between them in health (and the lag in metrics),
    /// and stamps the progress when the position moved: called per fetched
    /// batch, every [`REPORT_EVERY`] while its records are handled and per
    /// commit tick while one record takes long. The high watermark is never
    /// shown older than the position.
    pub(super) fn report_progress(&self, position: i64, feed: &PartitionFeed, reported: &mut i64) {
        let latest = feed.high_watermark().map(|hw| hw.max(position));
        let now = (position != *reported).then(SystemTime::now);
        *reported = position;
        self.update(|h| {
            h.position = Some(position);
            if let Some(hw) = latest {
                h.high_watermark = Some(hw);
            }
            if let Some(hw) = h.high_watermark {
                h.high_watermark = Some(hw.max(position));
                h.lag = Some(hw.max(position) - position);
            }
            if now.is_some() {
                h.last_progress = now;
            }
        });
    }

    pub(super) async fn commit(&mut self, position: i64) {
        // Nothing new handled: nothing to commit. Under exactly-once
        // handling the records' transactions commit their offsets.
        if self.committed == Some(position) || self.shared.exactly_once.is_some() {
            return;
        }
        let at = CommitOffset {
            offset: position,
            leader_epoch: self.epoch,
        };
        let offsets = BTreeMap::from([(self.tp.clone(), at)]);
        // What is committed was handled: health shows the position at least
        // there before the broker can show it committed (its own report
        // follows the handling every REPORT_EVERY only).
        self.update(|h| {
            if h.position.is_none_or(|p| p < position) {
                h.position = Some(position);
                h.last_progress = Some(SystemTime::now());
                if let Some(hw) = h.high_watermark {
                    h.high_watermark = Some(hw.max(position));
                    h.lag = Some(hw.max(position) - position);
                }
            }
        });
        let started = Instant::now();
        let committed = self.shared.member.commit(&offsets).await;
        crate::metrics::committed(&self.shared.group_id, started.elapsed(), committed.is_ok());
        match committed {
            Ok(()) => {
                self.committed = Some(position);
                self.update(|h| h.committed = Some(position));
            }
            Err(e) => {
                // A stale generation makes the member rejoin; the partition
                // is about to be revoked or lost, and its next owner starts
                // from the last good commit.
                if let Some(failures) = self.commit_failures.admit(()) {
                    tracing::warn!(partition = %self.tp, offset = position, error = %e, failures, "commit failed");
                }
            }
        }
    }
}
