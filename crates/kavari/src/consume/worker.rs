//! One task per assigned partition: start from the committed offset, take
//! records from the manager's fetch engine, handle them in offset order,
//! commit the contiguous watermark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use kavari_group::{CommitOffset, TopicPartition};
use kavari_wire::WireError;
use kavari_wire::backoff::{Backoff, Retrying};
use kavari_wire::fetch::batch_records;
use kavari_wire::fetcher::{FetchEvent, PartitionFeed, ResetCause};
use kavari_wire::log_rate::LogRate;
use kavari_wire::record_batch::read::{Batch, FetchedRecord};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::batches::deliver_batch;
use super::dispatch::{Disposition, HandlerClock, deliver};
use super::start::{Begin, Position};
use super::state::ConsumeState;
use crate::batch::BatchLimits;
use crate::handler::MessageContext;
use crate::registry::TypeEntry;
use crate::stop::until_stopped;

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

/// When a partition in order last committed and reported, and how often
/// it commits.
pub(super) struct Pace {
    pub(super) last_commit: Instant,
    pub(super) last_report: Instant,
    /// The position health shows; moving it stamps `last_progress`.
    pub(super) reported: i64,
    /// `commit_interval`; zero commits after every record.
    interval: Duration,
    every_message: bool,
    /// How often a partition waiting on something commits.
    pub(super) tick: Duration,
}

impl Pace {
    pub(super) fn new(config: &super::config::ConsumerConfig, start: i64) -> Self {
        let every_message = config.commit_interval.is_zero();
        Self {
            last_commit: Instant::now(),
            last_report: Instant::now(),
            reported: start,
            interval: config.commit_interval,
            every_message,
            tick: if every_message {
                Duration::from_millis(500)
            } else {
                config.commit_interval
            },
        }
    }

    /// A commit is due after a record handled.
    pub(super) fn commit_due(&self) -> bool {
        self.every_message || self.last_commit.elapsed() >= self.interval
    }

    pub(super) fn committed(&mut self) {
        self.last_commit = Instant::now();
    }

    pub(super) fn reported_now(&mut self) {
        self.last_report = Instant::now();
    }
}

/// Records of one batch subscription waiting for their batch to fill.
struct Gathered<'a> {
    entry: &'a TypeEntry,
    records: Vec<FetchedRecord>,
    since: Instant,
}

impl<'a> Gathered<'a> {
    fn new(entry: &'a TypeEntry) -> Self {
        Self {
            entry,
            records: Vec::new(),
            since: Instant::now(),
        }
    }

    fn is(&self, entry: &TypeEntry) -> bool {
        std::ptr::eq(self.entry, entry)
    }

    fn limits(&self) -> Option<BatchLimits> {
        self.entry.batch().map(|b| b.limits)
    }

    fn is_full(&self) -> bool {
        self.limits()
            .is_none_or(|l| self.records.len() >= l.max_records)
    }

    /// When it goes to its handler however full.
    fn due(&self) -> Instant {
        self.since + self.limits().map_or(Duration::ZERO, |l| l.max_wait)
    }
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
    committed: Option<i64>,
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
        // anything is handled (the first fetch is under way meanwhile):
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

    /// Hands the records to the handlers one at a time, in offset order
    /// (the records of a batch subscription gathered into batches), until
    /// the partition stops; returns the position to commit.
    async fn run_in_order(&mut self, start: i64, mut feed: PartitionFeed) -> i64 {
        let mut position = start;
        // One context for the partition's records, refilled for each.
        let mut ctx = MessageContext::new(self.tp.topic.clone(), self.tp.partition, start);
        // Owned apart from `self`, which commits while a record is delivered.
        let shared = Arc::clone(&self.shared);
        let topic = self.tp.topic.clone();
        // When the running handler began, for `max_handler_time`.
        let clock = HandlerClock::default();
        let mut pace = Pace::new(&self.shared.config, start);
        let tick = pace.tick;
        let max_batch_bytes = self.shared.fetcher.max_batch_bytes();
        // Records of a batch subscription waiting for their batch to fill.
        let batching = shared.registry.has_batches();
        let mut gathered: Option<Gathered<'_>> = None;
        // The offset of the last fault that stopped fetching, and the
        // retries from it; cleared once past it.
        let mut faults: Option<(i64, Retrying)> = None;
        // Pause and seek; a pause kept through a rebalance holds at once.
        let mut steer = self.shared.steering.subscribe();
        self.steer(&mut steer, &mut position, &mut feed, tick).await;
        'partition: loop {
            let mut stop = self.stop.clone();
            let batch_due = gathered.as_ref().map_or_else(Instant::now, Gathered::due);
            let next = tokio::select! {
                biased;
                _ = until_stopped(&mut stop) => break,
                Ok(()) = steer.changed() => {
                    self.steer(&mut steer, &mut position, &mut feed, tick).await;
                    continue;
                }
                r = feed.recv() => r,
                _ = tokio::time::sleep_until(batch_due), if gathered.is_some() => {
                    let batch = gathered.take();
                    if !self.flush(batch, &mut position, &feed, &clock, &mut pace).await {
                        break;
                    }
                    continue;
                }
                _ = tokio::time::sleep(tick) => {
                    self.commit(position).await;
                    pace.committed();
                    continue;
                }
            };
            let turn = self.turn(next);
            if matches!(turn, Turn::Reset(_) | Turn::Fault(_)) {
                // What was gathered was read well: handled before the
                // position moves or the partition is fetched again.
                let batch = gathered.take();
                if !self
                    .flush(batch, &mut position, &feed, &clock, &mut pace)
                    .await
                {
                    break;
                }
            }
            let (batches, from, bytes) = match turn {
                Turn::Records {
                    batches,
                    from,
                    bytes,
                } => (batches, from, bytes),
                Turn::Reset(to) => {
                    position = to;
                    self.update(|h| h.position = Some(to));
                    continue;
                }
                Turn::Halt(e) => {
                    self.halt(position, &e).await;
                    break;
                }
                Turn::Fault(e) => {
                    if !self.refetch(position, &e, &mut faults, &mut feed).await {
                        break;
                    }
                    continue;
                }
                Turn::Nothing => continue,
                Turn::End => break,
            };
            // The backlog these records belong to shows before they are
            // handled, not after.
            self.report_progress(position, &feed, &mut pace.reported);
            pace.reported_now();
            // Each batch is decoded as its turn comes, and its bytes go back
            // to the engine as it is worked through, so the partition's next
            // records are fetched while the last of these are handled.
            let mut released = 0;
            let mut fault = None;
            // A seek asked while these records are handled: the rest of
            // them is dropped.
            let mut sought = None;
            'batches: for batch in batches {
                let records = match batch_records(&batch, from, max_batch_bytes) {
                    Ok(records) => records,
                    Err(e) => {
                        fault = Some(e);
                        break 'batches;
                    }
                };
                let (size, count) = (batch.wire_len(), batch.len().max(1));
                let mut handed = 0;
                for (i, rec) in records.enumerate() {
                    if self.stopping() {
                        break 'partition; // the rest is not handled, nor committed
                    }
                    if steer.has_changed().unwrap_or(false) {
                        sought = self.obey(&mut steer, position, tick).await;
                        if sought.is_some() {
                            break 'batches;
                        }
                        if self.stopping() {
                            break 'partition;
                        }
                    }
                    let rec = match rec {
                        Ok(rec) => rec,
                        Err(e) => {
                            fault = Some(e);
                            break 'batches;
                        }
                    };
                    if i % RELEASE_EVERY == RELEASE_EVERY - 1 {
                        let due = (size * (i + 1) / count).max(handed);
                        feed.release(due - handed);
                        handed = due;
                        // Handlers that finish at once never give the
                        // thread back: let the group's heartbeats and the
                        // other partitions run between runs of records.
                        tokio::task::yield_now().await;
                    }
                    if batching {
                        let of = shared.registry.batch_of(&topic, &rec);
                        // A record of another kind closes the batch before it.
                        if gathered
                            .as_ref()
                            .is_some_and(|g| !of.is_some_and(|e| g.is(e)))
                        {
                            let batch = gathered.take();
                            if !self
                                .flush(batch, &mut position, &feed, &clock, &mut pace)
                                .await
                            {
                                break 'partition;
                            }
                        }
                        if let Some(entry) = of {
                            let g = gathered.get_or_insert_with(|| Gathered::new(entry));
                            g.records.push(rec);
                            if g.is_full() {
                                let batch = gathered.take();
                                if !self
                                    .flush(batch, &mut position, &feed, &clock, &mut pace)
                                    .await
                                {
                                    break 'partition;
                                }
                            }
                            continue;
                        }
                    }
                    // A handler runs to its end even when a stop arrives
                    // meanwhile: the shutdown waits for it (bounded), commits it.
                    let offset = rec.offset;
                    let epoch = (rec.leader_epoch >= 0).then_some(rec.leader_epoch);
                    let stop = self.stop.clone();
                    let delivery = deliver(
                        shared.as_ref(),
                        &topic,
                        self.tp.partition,
                        &mut ctx,
                        rec,
                        &stop,
                        &clock,
                    );
                    match self
                        .drive(delivery, offset, position, &feed, &clock, &mut pace)
                        .await
                    {
                        Ok(d) => {
                            position = offset + 1;
                            self.epoch = epoch;
                            if d != Disposition::Handled {
                                tracing::debug!(partition = %self.tp, offset, ?d, "record not handled normally");
                            }
                        }
                        Err(_undelivered) => break 'partition,
                    }
                    self.handled(position, &feed, &mut pace).await;
                }
                feed.release(size - handed);
                released += size;
            }
            if let Some(to) = sought {
                gathered = None;
                self.move_to(to, &mut position, &mut feed);
                self.steer(&mut steer, &mut position, &mut feed, tick).await;
                continue;
            }
            if let Some(e) = fault {
                // What was handled stays committed (and what was gathered
                // is handled); the rest is fetched again from the
                // position, after a wait.
                let batch = gathered.take();
                if !self
                    .flush(batch, &mut position, &feed, &clock, &mut pace)
                    .await
                    || !self.refetch(position, &e, &mut faults, &mut feed).await
                {
                    break;
                }
                continue;
            }
            feed.release(bytes.saturating_sub(released));
            self.past_fault(position, &mut faults);
            self.report_progress(position, &feed, &mut pace.reported);
        }
        position
    }

    /// Awaits a delivery of the records from `offset` on. Usually it is
    /// ready at once; one that takes longer (a slow handler, retries, a dead
    /// letter that cannot be written yet) must not hold back the commit of
    /// what came before: `position` is committed and the progress followed
    /// every tick meanwhile, and a handler running past `max_handler_time`
    /// makes the member step aside (once), so the partitions move. (Polled
    /// once first: no timer is set up for the common case.)
    async fn drive<T>(
        &mut self,
        delivery: impl Future<Output = T>,
        offset: i64,
        position: i64,
        feed: &PartitionFeed,
        clock: &HandlerClock,
        pace: &mut Pace,
    ) -> T {
        let mut delivery = std::pin::pin!(delivery);
        if let Some(outcome) = (&mut delivery).now_or_never() {
            return outcome;
        }
        let mut stepped_aside = false;
        // Health shows the record in flight from the first tick it
        // outlasts.
        let taken = SystemTime::now();
        let mut shown = false;
        let outcome = loop {
            tokio::select! {
                biased;
                outcome = &mut delivery => break outcome,
                _ = tokio::time::sleep_until(pace.last_commit + pace.tick) => {
                    self.commit(position).await;
                    pace.committed();
                    self.report_progress(position, feed, &mut pace.reported);
                    pace.reported_now();
                    if !shown {
                        shown = true;
                        self.update(|h| {
                            h.in_flight = 1;
                            h.in_flight_since = Some(taken);
                        });
                    }
                    let max = self.shared.config.max_handler_time;
                    if !stepped_aside && clock.running_for().is_some_and(|t| t >= max) {
                        stepped_aside = true;
                        self.step_aside(offset, max);
                    }
                }
            }
        };
        if shown {
            self.update(|h| {
                h.in_flight = 0;
                h.in_flight_since = None;
            });
        }
        outcome
    }

    /// After a record or batch was handled up to `position`: commits when
    /// due, and follows the progress every [`REPORT_EVERY`].
    async fn handled(&mut self, position: i64, feed: &PartitionFeed, pace: &mut Pace) {
        if pace.commit_due() {
            self.commit(position).await;
            pace.committed();
        }
        if pace.last_report.elapsed() >= REPORT_EVERY {
            self.report_progress(position, feed, &mut pace.reported);
            pace.reported_now();
        }
    }

    /// Hands a gathered batch (if any) to its batch handler; false when the
    /// partition stops before it is done (it is not committed).
    async fn flush(
        &mut self,
        gathered: Option<Gathered<'_>>,
        position: &mut i64,
        feed: &PartitionFeed,
        clock: &HandlerClock,
        pace: &mut Pace,
    ) -> bool {
        let Some(Gathered { entry, records, .. }) = gathered else {
            return true;
        };
        let Some(subscription) = entry.batch() else {
            return true;
        };
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return true;
        };
        let (offset, next) = (first.offset, last.offset + 1);
        let epoch = (last.leader_epoch >= 0).then_some(last.leader_epoch);
        let shared = Arc::clone(&self.shared);
        let (stop, tp) = (self.stop.clone(), self.tp.clone());
        let delivery = deliver_batch(
            shared.as_ref(),
            &tp.topic,
            tp.partition,
            subscription,
            records,
            &stop,
            clock,
        );
        match self
            .drive(delivery, offset, *position, feed, clock, pace)
            .await
        {
            Ok(()) => {
                *position = next;
                self.epoch = epoch.or(self.epoch);
                self.handled(*position, feed, pace).await;
                true
            }
            Err(_undelivered) => false,
        }
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
        // Nothing new handled: nothing to commit.
        if self.committed == Some(position) {
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
