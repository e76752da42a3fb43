//! A partition's records handled side by side (a concurrent
//! [`ProcessingOrder`](crate::ProcessingOrder)): records are taken into a
//! [`Window`] as it has room, those it lets run are delivered
//! concurrently on the partition's task, and the position moves over the
//! contiguous run of finished records.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kavari_wire::backoff::Retrying;
use kavari_wire::fetch::batch_records;
use kavari_wire::fetcher::PartitionFeed;
use kavari_wire::record_batch::read::FetchedRecord;
use tokio::sync::watch;
use tokio::time::Instant;

use super::in_order::Pace;
use super::window::Window;
use super::{Turn, Worker};
use crate::consume::config::Overlap;
use crate::consume::dispatch::deliver;
use crate::consume::runtime::{Disposition, HandlerClock, Undelivered};
use crate::consume::state::ConsumeState;
use crate::consume::steering::orders;
use crate::context::MessageContext;
use crate::stop::until_stopped;

/// A record's delivery, finished.
struct Done {
    offset: i64,
    key: Option<Bytes>,
    outcome: Result<Disposition, Undelivered>,
}

/// Delivers `record` with a context of its own; its clock tells how long
/// its handler has run.
async fn delivery(
    shared: Arc<ConsumeState>,
    topic: Arc<str>,
    partition: i32,
    record: FetchedRecord,
    stop: watch::Receiver<bool>,
    clock: Arc<HandlerClock>,
) -> Done {
    let (offset, key) = (record.offset, record.key.clone());
    let mut ctx = MessageContext::new(&*topic, partition, offset);
    let outcome = deliver(
        shared.as_ref(),
        &topic,
        partition,
        &mut ctx,
        record,
        &stop,
        &clock,
    )
    .await;
    Done {
        offset,
        key,
        outcome,
    }
}

impl Worker {
    /// Hands the records to the handlers side by side, as many as the
    /// window of `limit` records lets run, until the partition stops;
    /// returns the position to commit: the records after it that had
    /// finished are handled again by the partition's next owner.
    pub(super) async fn run_concurrent(
        &mut self,
        start: i64,
        mut feed: PartitionFeed,
        overlap: Overlap,
        limit: usize,
    ) -> i64 {
        let topic: Arc<str> = Arc::from(self.tp.topic.as_str());
        let partition = self.tp.partition;
        let mut window = Window::new(overlap, limit, start);
        let mut running = FuturesUnordered::new();
        let mut clocks: HashMap<i64, Arc<HandlerClock>> = HashMap::new();
        let (shared, stop) = (Arc::clone(&self.shared), self.stop.clone());
        let launch = |record: FetchedRecord,
                      running: &mut FuturesUnordered<_>,
                      clocks: &mut HashMap<i64, Arc<HandlerClock>>| {
            let clock = Arc::new(HandlerClock::default());
            clocks.insert(record.offset, Arc::clone(&clock));
            running.push(delivery(
                Arc::clone(&shared),
                Arc::clone(&topic),
                partition,
                record,
                stop.clone(),
                clock,
            ));
        };
        // Records fetched and not yet taken into the window, and the bytes
        // of the answers they came in, given back once all are taken.
        let mut pending: VecDeque<FetchedRecord> = VecDeque::new();
        let mut unreleased = 0;
        let mut position = start;
        // A fault met while fetching or reading: acted on once every record
        // before it is finished.
        let mut fault: Option<Turn> = None;
        let mut faults: Option<(i64, Retrying)> = None;
        let mut pace = Pace::new(&self.shared.config, start);
        let max_batch_bytes = self.shared.fetcher.max_batch_bytes();
        let mut stepped_aside = false;
        // Pause and seek. A seek waits for the records running to finish;
        // records a finished one frees while paused wait in `held`.
        let mut steer = self.shared.steering.subscribe();
        let first = orders(&self.shared.steering, &mut steer, &self.tp);
        let (mut paused, mut sought) = (first.paused, first.seek);
        let mut held: Vec<FetchedRecord> = Vec::new();
        loop {
            if let Some(to) = sought
                && running.is_empty()
            {
                sought = None;
                pending.clear();
                if unreleased > 0 {
                    feed.release(unreleased);
                    unreleased = 0;
                }
                fault = None;
                window = Window::new(overlap, limit, to);
                self.move_to(to, &mut position, &mut feed);
                continue;
            }
            let taking = !paused && sought.is_none();
            while taking && !window.is_full() && !self.stopping() {
                let Some(record) = pending.pop_front() else {
                    break;
                };
                if let Some(record) = window.take(record, Instant::now()) {
                    launch(record, &mut running, &mut clocks);
                }
            }
            if pending.is_empty() && unreleased > 0 {
                feed.release(unreleased);
                unreleased = 0;
            }
            if window.is_empty() && pending.is_empty() {
                match fault.take() {
                    Some(Turn::Halt(e)) => {
                        self.halt(position, &e).await;
                        break;
                    }
                    Some(Turn::Fault(e)) => {
                        if !self.refetch(position, &e, &mut faults, &mut feed).await {
                            break;
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            let more = taking && pending.is_empty() && fault.is_none() && !window.is_full();
            let mut stop = self.stop.clone();
            tokio::select! {
                biased;
                _ = until_stopped(&mut stop) => break,
                Ok(()) = steer.changed() => {
                    let now = orders(&self.shared.steering, &mut steer, &self.tp);
                    if now.paused != paused {
                        tracing::info!(partition = %self.tp, offset = position, paused = now.paused, "{}", if now.paused { "paused" } else { "resumed" });
                    }
                    paused = now.paused;
                    if now.seek.is_some() {
                        sought = now.seek;
                        // Records waiting for their key are dropped: the
                        // seek decides what comes next.
                        window.drop_waiting();
                        held.clear();
                    }
                    if !paused {
                        for record in held.drain(..) {
                            launch(record, &mut running, &mut clocks);
                        }
                    }
                }
                Some(done) = running.next(), if !running.is_empty() => {
                    clocks.remove(&done.offset);
                    match done.outcome {
                        Ok(Disposition::Handled) => {}
                        Ok(d) => tracing::debug!(partition = %self.tp, offset = done.offset, ?d, "record not handled normally"),
                        Err(_) => break,
                    }
                    if let Some(next) = window.finish(done.offset, &done.key) {
                        if paused {
                            held.push(next);
                        } else {
                            launch(next, &mut running, &mut clocks);
                        }
                    }
                    if let Some((to, epoch)) = window.advance()
                        && sought.is_none()
                    {
                        position = to;
                        self.epoch = epoch.or(self.epoch);
                        self.past_fault(position, &mut faults);
                    }
                    let now = Instant::now();
                    if pace.commit_due(now) {
                        self.commit(position).await;
                        pace.committed();
                    }
                    if pace.report_due(now) {
                        self.report_window(position, &feed, &mut pace, &window);
                    }
                }
                event = feed.recv(), if more => match self.turn(event) {
                    Turn::Records { batches, from, bytes } => {
                        unreleased += bytes;
                        for batch in &batches {
                            let read = batch_records(batch, from, max_batch_bytes)
                                .and_then(|records| {
                                    for record in records {
                                        pending.push_back(record?);
                                    }
                                    Ok(())
                                });
                            if let Err(e) = read {
                                fault = Some(Turn::Fault(e));
                                break;
                            }
                        }
                        self.report_window(position, &feed, &mut pace, &window);
                    }
                    Turn::Reset(to) => {
                        window.skip_to(to, Instant::now());
                        if let Some((to, _)) = window.advance() {
                            position = to;
                            self.update(|h| h.position = Some(to));
                        }
                    }
                    f @ (Turn::Fault(_) | Turn::Halt(_)) => fault = Some(f),
                    Turn::Nothing => {}
                    Turn::End => break,
                },
                _ = tokio::time::sleep_until(pace.tick_at()) => {
                    self.commit(position).await;
                    pace.committed();
                    self.report_window(position, &feed, &mut pace, &window);
                    let max = self.shared.config.max_handler_time;
                    let stuck = clocks
                        .iter()
                        .filter(|(_, c)| c.running_for().is_some_and(|t| t >= max))
                        .map(|(offset, _)| *offset)
                        .min();
                    if let Some(offset) = stuck && !stepped_aside {
                        stepped_aside = true;
                        self.step_aside(offset, max);
                    }
                }
            }
        }
        // Stopping: what runs finishes (the shutdown bounds the wait),
        // nothing new starts, and the position covers what finished in
        // order.
        window.drop_waiting();
        while let Some(done) = running.next().await {
            if done.outcome.is_ok() {
                window.finish(done.offset, &done.key);
                if let Some((to, epoch)) = window.advance() {
                    position = to;
                    self.epoch = epoch.or(self.epoch);
                }
            }
        }
        self.update(|h| {
            h.in_flight = 0;
            h.in_flight_since = None;
        });
        position
    }

    /// [`Worker::report_progress`], with the window's records in flight.
    fn report_window(&self, position: i64, feed: &PartitionFeed, pace: &mut Pace, window: &Window) {
        self.report_progress(position, feed, &mut pace.reported);
        pace.reported_now();
        let since = window
            .oldest()
            .and_then(|t| SystemTime::now().checked_sub(t.elapsed()));
        let in_flight = window.len();
        self.update(|h| {
            h.in_flight = in_flight;
            h.in_flight_since = since;
        });
    }
}
