//! A partition's records handed to the handlers one at a time, in offset
//! order, the records of a batch subscription gathered into batches.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use kavari_wire::WireError;
use kavari_wire::backoff::Retrying;
use kavari_wire::fetch::batch_records;
use kavari_wire::fetcher::PartitionFeed;
use kavari_wire::record_batch::read::FetchedRecord;
use tokio::time::Instant;

use super::{RELEASE_EVERY, REPORT_EVERY, Turn, Worker};
use crate::batch::BatchLimits;
use crate::consume::batches::deliver_batch;
use crate::consume::config::ConsumerConfig;
use crate::consume::dispatch::deliver;
use crate::consume::runtime::{Disposition, HandlerClock, Undelivered};
use crate::context::MessageContext;
use crate::registry::TypeEntry;
use crate::stop::until_stopped;
use crate::transaction::{Transaction, TransactionError};

/// The wire error behind a transaction's failure, for the partition's
/// fault handling.
fn wire_error(e: TransactionError) -> WireError {
    match e {
        TransactionError::Failed(w) | TransactionError::Fenced { source: w, .. } => w,
        other => WireError::Malformed {
            what: "transaction",
            detail: other.to_string(),
        },
    }
}

/// When a partition next commits and reports, and how often it commits.
/// Kept as deadlines: a record checks them with a comparison each, not a
/// subtraction.
pub(super) struct Pace {
    /// When a commit is next due (never, as far as the clock goes, for an
    /// interval too long to add).
    commit_at: Instant,
    /// When a partition waiting on something commits next.
    tick_at: Instant,
    report_at: Instant,
    /// The position health shows; moving it stamps `last_progress`.
    pub(super) reported: i64,
    /// `commit_interval`; zero commits after every record.
    interval: Duration,
    every_message: bool,
    /// How often a partition waiting on something commits.
    pub(super) tick: Duration,
}

impl Pace {
    pub(super) fn new(config: &ConsumerConfig, start: i64) -> Self {
        let every_message = config.commit_interval.is_zero();
        let tick = if every_message {
            Duration::from_millis(500)
        } else {
            config.commit_interval
        };
        let now = Instant::now();
        Self {
            commit_at: later(now, config.commit_interval),
            tick_at: later(now, tick),
            report_at: later(now, REPORT_EVERY),
            reported: start,
            interval: config.commit_interval,
            every_message,
            tick,
        }
    }

    /// A commit is due after a record handled at `now`.
    pub(super) fn commit_due(&self, now: Instant) -> bool {
        self.every_message || now >= self.commit_at
    }

    /// Progress is due to be reported at `now`.
    pub(super) fn report_due(&self, now: Instant) -> bool {
        now >= self.report_at
    }

    /// When a partition waiting on a handler commits next.
    pub(super) fn tick_at(&self) -> Instant {
        self.tick_at
    }

    pub(super) fn committed(&mut self) {
        let now = Instant::now();
        self.commit_at = later(now, self.interval);
        self.tick_at = later(now, self.tick);
    }

    pub(super) fn reported_now(&mut self) {
        self.report_at = later(Instant::now(), REPORT_EVERY);
    }
}

/// `at` + `after`, or a century on when the clock cannot say that far (a
/// `commit_interval` of `Duration::MAX` means "not by time").
fn later(at: Instant, after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(after.min(CENTURY)).unwrap_or(at)
}

/// The records handled in a partition's open transaction, under
/// exactly-once handling.
#[derive(Debug, Default)]
struct OpenTransaction {
    records: usize,
    /// The offset after the last, and its leader epoch.
    next: i64,
    epoch: Option<i32>,
    /// Of its records, how many were dead-lettered and skipped: counted in
    /// health once it commits.
    dead_lettered: u64,
    skipped: u64,
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

impl Worker {
    /// Hands the records to the handlers one at a time, in offset order
    /// (the records of a batch subscription gathered into batches), until
    /// the partition stops; returns the position to commit.
    pub(super) async fn run_in_order(&mut self, start: i64, mut feed: PartitionFeed) -> i64 {
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
        // Under exactly-once handling: the records handled in the open
        // transaction (in `ctx`), and the records that get a transaction
        // each after a failure in a shared one.
        let mut open = OpenTransaction::default();
        let mut alone_until: Option<i64> = None;
        let per_transaction = self.shared.config.records_per_transaction;
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
            // A shared transaction was aborted: its records are fetched
            // again from its start (the position).
            let mut rewind = false;
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
                        // No transaction stays open through a pause.
                        if let Err(e) = self
                            .end_transaction(&mut ctx, &mut open, &mut position)
                            .await
                        {
                            fault = Some(e);
                            break 'batches;
                        }
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
                    // Under exactly-once handling, the record's transaction:
                    // the open one, or a new one.
                    if let Some(exactly_once) = &shared.exactly_once {
                        if ctx.transaction.is_none() {
                            match exactly_once.begin().await {
                                Ok(tx) => ctx.transaction = Some(tx),
                                Err(e) => {
                                    fault = Some(wire_error(e));
                                    break 'batches;
                                }
                            }
                        }
                        ctx.transaction_shared = open.records > 0;
                    }
                    let stop = self.stop.clone();
                    // Pinned where it is made: moving it would copy its
                    // whole size, once per record.
                    let delivered = {
                        let delivery = std::pin::pin!(deliver(
                            shared.as_ref(),
                            &topic,
                            self.tp.partition,
                            &mut ctx,
                            rec,
                            &stop,
                            &clock,
                        ));
                        self.drive(delivery, offset, position, &feed, &clock, &mut pace)
                            .await
                    };
                    match delivered {
                        Ok(d) if ctx.transaction.is_some() => {
                            open.records += 1;
                            open.next = offset + 1;
                            open.epoch = epoch;
                            d.count(&mut open.dead_lettered, &mut open.skipped);
                            let alone = alone_until.is_some_and(|o| offset <= o);
                            if alone_until.is_some_and(|o| offset >= o) {
                                alone_until = None;
                            }
                            if (alone || open.records >= per_transaction)
                                && let Err(e) = self
                                    .end_transaction(&mut ctx, &mut open, &mut position)
                                    .await
                            {
                                // Not committed: the records are handled
                                // again, in a new transaction, after a wait.
                                fault = Some(e);
                                break 'batches;
                            }
                            if d != Disposition::Handled {
                                tracing::debug!(partition = %self.tp, offset, ?d, "record not handled normally");
                            }
                        }
                        Ok(d) => {
                            position = offset + 1;
                            self.epoch = epoch;
                            if d != Disposition::Handled {
                                tracing::debug!(partition = %self.tp, offset, ?d, "record not handled normally");
                            }
                        }
                        Err(Undelivered::Rewind) => {
                            // The shared transaction was aborted: its
                            // records are handled again from its start,
                            // each in a transaction of its own up to this
                            // one.
                            tracing::debug!(partition = %self.tp, from = position, failed = offset, records = open.records, "an attempt failed in a shared transaction; handling its records again");
                            open = OpenTransaction::default();
                            alone_until = Some(offset);
                            rewind = true;
                            break 'batches;
                        }
                        Err(Undelivered::Stopping) => {
                            if let Some(tx) = ctx.transaction.take() {
                                let _ = tx.session().end(false).await;
                            }
                            open = OpenTransaction::default();
                            break 'partition;
                        }
                    }
                    self.handled(position, &feed, &mut pace).await;
                }
                feed.release(size - handed);
                released += size;
            }
            // The records handled so far commit: no transaction outlives
            // the records fetched together.
            if let Err(e) = self
                .end_transaction(&mut ctx, &mut open, &mut position)
                .await
            {
                fault = fault.or(Some(e));
            }
            if rewind && fault.is_none() && sought.is_none() {
                feed = self
                    .shared
                    .fetcher
                    .subscribe_at(self.tp.clone(), position, self.epoch);
                continue;
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
        // Handled before the stop: committed with their publishes.
        if let Err(e) = self
            .end_transaction(&mut ctx, &mut open, &mut position)
            .await
        {
            tracing::warn!(partition = %self.tp, error = %e, "the last transaction did not commit; its records are handled again by the partition's next owner");
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
        mut delivery: std::pin::Pin<&mut impl Future<Output = T>>,
        offset: i64,
        position: i64,
        feed: &PartitionFeed,
        clock: &HandlerClock,
        pace: &mut Pace,
    ) -> T {
        if let Some(outcome) = delivery.as_mut().now_or_never() {
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
                outcome = delivery.as_mut() => break outcome,
                _ = tokio::time::sleep_until(pace.tick_at()) => {
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
        // One clock read per record for both.
        let now = Instant::now();
        if pace.commit_due(now) {
            self.commit(position).await;
            pace.committed();
        }
        if pace.report_due(now) {
            self.report_progress(position, feed, &mut pace.reported);
            pace.reported_now();
        }
    }

    /// Under exactly-once handling, ends the open transaction in `ctx`:
    /// commits the offset after its records with them, and moves
    /// `position` there. Nothing when none is open.
    async fn end_transaction(
        &mut self,
        ctx: &mut MessageContext,
        open: &mut OpenTransaction,
        position: &mut i64,
    ) -> Result<(), WireError> {
        let Some(tx) = ctx.transaction.take() else {
            return Ok(());
        };
        let open = std::mem::take(open);
        if open.records == 0 {
            let _ = tx.session().end(false).await;
            return Ok(());
        }
        let started = std::time::Instant::now();
        let committed = self.commit_in(&tx, open.next, open.epoch).await;
        let took = started.elapsed();
        crate::metrics::committed(&self.shared.group_id, took, committed.is_ok());
        committed.map_err(wire_error)?;
        tracing::debug!(partition = %self.tp, records = open.records, took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX), "transaction committed");
        *position = open.next;
        self.epoch = open.epoch;
        if open.dead_lettered + open.skipped > 0 {
            self.update(|h| {
                h.dead_lettered += open.dead_lettered;
                h.skipped += open.skipped;
            });
        }
        Ok(())
    }

    /// Commits the offset after a record (`next`, with its leader epoch) in
    /// the records' transaction, then the transaction: its publishes and
    /// the offset land together.
    async fn commit_in(
        &mut self,
        tx: &Transaction,
        next: i64,
        epoch: Option<i32>,
    ) -> Result<(), TransactionError> {
        let offsets = std::collections::BTreeMap::from([(
            self.tp.clone(),
            kavari_group::CommitOffset {
                offset: next,
                leader_epoch: epoch,
            },
        )]);
        let session = tx.session();
        let committed = match session
            .commit_offsets(&self.shared.member, &self.shared.group_id, &offsets)
            .await
        {
            Ok(()) => session.end(true).await,
            Err(e) => {
                let _ = session.end(false).await;
                Err(e)
            }
        };
        if committed.is_ok() {
            self.committed = Some(next);
            self.update(|h| h.committed = Some(next));
        }
        committed
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
        let delivery = std::pin::pin!(deliver_batch(
            shared.as_ref(),
            &tp.topic,
            tp.partition,
            subscription,
            records,
            &stop,
            clock,
        ));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(commit_interval: Duration) -> Pace {
        let config = ConsumerConfig {
            commit_interval,
            ..ConsumerConfig::default()
        };
        Pace::new(&config, 0)
    }

    /// A commit falls due once the interval has passed since the last one,
    /// after every record with an interval of zero, and never by time with
    /// an interval too long for the clock (which once panicked).
    #[test]
    fn commits_fall_due_by_the_interval() {
        let p = pace(Duration::from_secs(5));
        let now = Instant::now();
        assert!(!p.commit_due(now));
        assert!(p.commit_due(now + Duration::from_secs(6)));
        assert!(p.tick_at() <= now + Duration::from_secs(6));

        assert!(pace(Duration::ZERO).commit_due(Instant::now()));

        let mut never = pace(Duration::MAX);
        never.committed();
        let year = Duration::from_secs(365 * 24 * 3600);
        assert!(!never.commit_due(Instant::now() + year));
        assert!(never.tick_at() > Instant::now() + year);
    }

    /// Progress is reported at most every `REPORT_EVERY`.
    #[test]
    fn reports_fall_due_every_report_interval() {
        let mut p = pace(Duration::from_secs(5));
        p.reported_now();
        let now = Instant::now();
        assert!(!p.report_due(now));
        assert!(p.report_due(now + REPORT_EVERY + Duration::from_millis(1)));
    }
}
