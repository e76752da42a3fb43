//! A partition's produce state: its queue of unsent batches (`batcher.rs`),
//! its leader, and the batches taken from the queue and not yet
//! acknowledged. It does nothing by itself: the sink of its leader
//! (`sink.rs`) takes its batches to write ([`Partition::step`]) and hands it
//! the answers ([`Partition::answered`]); while its leader is looked up
//! (`sinks.rs`) nothing is written. Up to [`MAX_IN_FLIGHT`] batches of a
//! partition travel at once.
//!
//! Idempotent (the default, KIP-98), each batch carries the manager's
//! producer id and epoch and the partition's sequence number of its first
//! record, so the broker writes a batch sent twice once. A batch that fails
//! is sent again, the same bytes under the same sequence, before anything
//! after it: the partition waits for every batch in flight, then sends the
//! failed ones again in order. Only a batch given up (its retries or
//! `delivery_timeout` spent) reaches its publishes as an error. The sequence
//! numbers count on from the last batch the broker acknowledged. A batch
//! refused for good (too large, not authorized) was not written, so the
//! ones after it are numbered again without it. A batch given up after a
//! failure that hides whether it was written (a timeout, a broken
//! connection), or a broker that lost this producer's state
//! (`OUT_OF_ORDER_SEQUENCE_NUMBER`, `UNKNOWN_PRODUCER_ID`), starts the
//! sequence again under a new epoch.
//!
//! Without idempotence a failed batch's publishes retry (in new batches,
//! behind later ones), as with the Java producer.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::TopicName;
use kavari_wire::ResponseError;
use kavari_wire::producer_id::ProducerIdentity;
use tokio::time::Instant;

mod sequence;

use sequence::recover;

use super::batcher::{MAX_IN_FLIGHT, OpenBatch, Queue, Take};
use super::outcome::BatchOutcome;
use super::producer_ids::PartitionSequence;
use super::producing::Producing;
use super::{ProduceError, ProduceErrorKind};

/// Where a partition's batches go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leader {
    /// Being looked up: nothing is written meanwhile.
    Unknown,
    /// Broker `id` leads it; its sink holds the partition in `slot`.
    Broker { id: i32, slot: usize },
}

/// One partition's produce state.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(super) queue: Arc<Queue>,
    pub(super) topic_name: TopicName,
    flow: Mutex<Flow>,
}

/// What settling a batch needs.
#[derive(Debug)]
struct Sent {
    count: usize,
    bytes: usize,
    outcome: Arc<BatchOutcome>,
    /// When its first record came: `delivery_timeout` counts from here.
    first_at: Instant,
}

/// A batch taken from the queue and not yet acknowledged.
#[derive(Debug)]
struct Pending {
    /// Names the batch's answers (a batch sent twice has one in flight at
    /// a time).
    id: u64,
    sent: Sent,
    /// Its bytes while it may be sent again (idempotent publishing).
    records: Vec<u8>,
    base_sequence: i32,
    /// Times written (or tried to be).
    attempts: u32,
    /// Why its last attempt failed; `None` while it has not failed.
    error: Option<ProduceError>,
    /// Whether an attempt was sent and not answered: if it is given up, it
    /// may be in the log.
    maybe_written: bool,
    /// Written and not answered yet.
    in_flight: bool,
}

/// Sending again after a failure: when, and whether the sequence must
/// start again under a new epoch first.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    at: Instant,
    new_epoch: bool,
}

#[derive(Debug)]
struct Flow {
    leader: Leader,
    /// Taken from the queue and not acknowledged, oldest first.
    unacked: VecDeque<Pending>,
    /// How many of them are in flight.
    in_flight: usize,
    /// Idempotent publishing: the sequence under the identity in use.
    sequence: PartitionSequence,
    recovery: Option<Recovery>,
    next_id: u64,
}

/// What a sink does with a partition after [`Partition::step`].
#[derive(Debug)]
pub(super) enum Step {
    /// Write this batch (id and bytes) now; `due` when it was due by itself
    /// (then the other partitions of the broker send what they hold too).
    Write { id: u64, records: Bytes, due: bool },
    /// Look again then.
    Wait(Instant),
    /// The failed batches are due to be sent again: renumber them first
    /// ([`Partition::resend_begin`]).
    Resend,
    /// Nothing to do until it is woken (a record, an answer).
    Idle,
    /// No publisher holds it and nothing is left: its state ends.
    Done,
}

impl Partition {
    /// A partition's state, its sequence going on from `sequence`.
    pub(super) fn new(queue: Arc<Queue>, sequence: PartitionSequence) -> Self {
        let topic_name = kavari_wire::topic_name(&queue.topic);
        Self {
            queue,
            topic_name,
            flow: Mutex::new(Flow {
                leader: Leader::Unknown,
                unacked: VecDeque::new(),
                in_flight: 0,
                sequence,
                recovery: None,
                next_id: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `topic/partition`, for logs and errors.
    pub(super) fn name(&self) -> String {
        format!("{}/{}", self.queue.topic, self.queue.partition)
    }

    pub(super) fn leader(&self) -> Leader {
        self.lock().leader
    }

    pub(super) fn set_leader(&self, leader: Leader) {
        self.lock().leader = leader;
    }

    /// The sequence to keep when the partition's state ends.
    pub(super) fn sequence(&self) -> PartitionSequence {
        self.lock().sequence
    }

    /// Whether no publisher holds the partition and nothing is left to
    /// send or to hear about.
    pub(super) fn is_finished(&self) -> bool {
        self.queue.is_done() && self.lock().unacked.is_empty()
    }

    /// Whether nothing is queued or unacknowledged.
    pub(super) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.lock().unacked.is_empty()
    }

    /// What the sink should do with the partition now: write its next
    /// batch (one that failed and is renumbered, or the queue's oldest if
    /// due, or if `along`), wait, or nothing. `identity` is the producer
    /// identity of idempotent publishing as the sink found it for this pass.
    pub(super) fn step(
        &self,
        ctx: &Producing,
        now: Instant,
        along: bool,
        identity: &Result<Option<ProducerIdentity>, ProduceError>,
    ) -> Step {
        let mut flow = self.lock();
        if flow.recovery.is_some() {
            if ctx.is_closing() {
                // Shutting down: what waits to be sent again goes back to
                // its publishes now, not after the retries.
                self.give_up_unwritten(ctx, &mut flow);
            } else {
                return pause(&flow);
            }
        }
        if let Some(p) = flow.unacked.iter_mut().find(|p| !p.in_flight) {
            p.attempts += 1;
            p.error = None;
            p.in_flight = true;
            let (id, records) = (p.id, Bytes::from(std::mem::take(&mut p.records)));
            flow.in_flight += 1;
            return Step::Write {
                id,
                records,
                due: true,
            };
        }
        if flow.in_flight >= MAX_IN_FLIGHT {
            return Step::Idle;
        }
        loop {
            let (batch, due) = match self.queue.take(now, ctx.config.linger, along) {
                Take::Batch(batch, due) => (batch, due),
                Take::Later(at) => return Step::Wait(at),
                Take::Empty if self.queue.is_done() && flow.unacked.is_empty() => {
                    return Step::Done;
                }
                Take::Empty => return Step::Idle,
            };
            let (sent, records) = match self.finish(ctx, batch) {
                Ok(finished) => finished,
                Err((sent, e)) => {
                    let e = if ctx.ids.is_some() {
                        e.after_attempts(0)
                    } else {
                        e
                    };
                    self.settle(ctx, sent, Err(e));
                    continue;
                }
            };
            return match ctx.ids.is_some() {
                true => self.number_new(ctx, &mut flow, sent, records, identity, due),
                false => {
                    let id = self.push(&mut flow, sent, Vec::new(), true);
                    Step::Write {
                        id,
                        records: Bytes::from(records),
                        due,
                    }
                }
            };
        }
    }

    /// Adds a batch taken from the queue to the unacknowledged ones.
    fn push(&self, flow: &mut Flow, sent: Sent, records: Vec<u8>, in_flight: bool) -> u64 {
        let id = flow.next_id;
        flow.next_id += 1;
        flow.unacked.push_back(Pending {
            id,
            sent,
            records,
            base_sequence: 0,
            attempts: u32::from(in_flight),
            error: None,
            maybe_written: false,
            in_flight,
        });
        if in_flight {
            flow.in_flight += 1;
        }
        id
    }

    /// Batch `id` was written: its buffer comes back (without a copy, the
    /// connection holds none once written), kept to send again if it must
    /// (without idempotence nothing is sent again as it was: it goes).
    pub(super) fn written(&self, ctx: &Producing, id: u64, records: Bytes) {
        if ctx.ids.is_none() {
            return;
        }
        let records = Vec::from(records);
        let mut flow = self.lock();
        if let Some(p) = flow.unacked.iter_mut().find(|p| p.id == id) {
            p.records = records;
        }
    }

    /// Handles the answer to batch `id` from the sink of broker `broker`:
    /// true when the partition must find its leader again (it may have
    /// moved, or its connection died).
    pub(super) fn answered(
        &self,
        ctx: &Producing,
        broker: i32,
        id: u64,
        result: Result<i64, ProduceError>,
    ) -> bool {
        let relocate = {
            let mut flow = self.lock();
            let Some(at) = flow.unacked.iter().position(|p| p.id == id) else {
                return false;
            };
            if let Some(p) = flow.unacked.get_mut(at)
                && p.in_flight
            {
                p.in_flight = false;
                flow.in_flight -= 1;
            }
            let forget = matches!(&result, Err(e) if e.kind() != ProduceErrorKind::MessageTooLarge
                && e.code() != Some(ResponseError::DuplicateSequenceNumber));
            if let Err(e) = &result {
                ctx.counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(partition = %self.name(), error = %e, "produce failed");
            }
            if ctx.ids.is_some() {
                self.answered_idempotent(ctx, &mut flow, at, id, result);
            } else if let Some(p) = flow.unacked.remove(at) {
                self.settle(ctx, p.sent, result);
            }
            let relocate =
                forget && matches!(flow.leader, Leader::Broker { id, .. } if id == broker);
            if relocate {
                flow.leader = Leader::Unknown;
            }
            relocate
        };
        // Whichever sink leads it now may have something to do.
        self.queue.wake();
        relocate
    }

    /// Its leader could not be found (`e`): the batches that would have
    /// been written now fail as a write would have. Returns how long to wait
    /// before looking again.
    pub(super) fn unplaced(&self, ctx: &Producing, e: &ProduceError) -> Duration {
        let now = Instant::now();
        let linger = ctx.config.linger;
        let mut flow = self.lock();
        if ctx.ids.is_none() {
            while let Take::Batch(batch, _) = self.queue.take(now, linger, true) {
                ctx.counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                let sent = sent_of(&batch);
                self.settle(ctx, sent, Err(e.clone()));
            }
            return Duration::ZERO;
        }
        while flow.unacked.len() < MAX_IN_FLIGHT {
            let Take::Batch(batch, _) = self.queue.take(now, linger, true) else {
                break;
            };
            match self.finish(ctx, batch) {
                Ok((sent, records)) => {
                    self.push(&mut flow, sent, records, false);
                }
                Err((sent, e)) => self.settle(ctx, sent, Err(e.after_attempts(0))),
            }
        }
        let unwritten: Vec<u64> = flow
            .unacked
            .iter_mut()
            .filter(|p| !p.in_flight)
            .map(|p| {
                p.attempts += 1;
                p.id
            })
            .collect();
        if unwritten.is_empty() {
            return Duration::ZERO;
        }
        ctx.counters
            .failed_requests
            .fetch_add(unwritten.len() as u64, Ordering::Relaxed);
        for id in unwritten {
            self.attempt_failed(ctx, &mut flow, id, e.clone(), false);
        }
        let wait = flow
            .recovery
            .map_or(Duration::ZERO, |r| r.at.saturating_duration_since(now));
        drop(flow);
        // Given up now if their retries are spent (or shutdown began); the
        // rest wait for the leader with their recovery.
        if let Some((new_epoch, _)) = self.resend_begin(ctx) {
            let mut flow = self.lock();
            recover(&mut flow, new_epoch, wait);
            if ctx.is_closing() {
                self.give_up_unwritten(ctx, &mut flow);
            }
        }
        wait
    }

    /// Fails every batch not in flight with its error (the producer is
    /// fenced, cannot get an identity, or shuts down); the ones in flight
    /// hear their answers.
    fn give_up_unwritten(&self, ctx: &Producing, flow: &mut Flow) {
        flow.recovery = None;
        let mut kept = VecDeque::with_capacity(flow.unacked.len());
        while let Some(p) = flow.unacked.pop_front() {
            if p.in_flight {
                kept.push_back(p);
            } else {
                self.give_up(ctx, p);
            }
        }
        flow.unacked = kept;
    }

    /// Ends `p`'s publishes with its last error.
    fn give_up(&self, ctx: &Producing, p: Pending) {
        let attempts = p.attempts;
        let e = p.error.unwrap_or_else(|| {
            ProduceError::new(ProduceErrorKind::Broker, false, "the producer stopped")
        });
        tracing::debug!(partition = %self.name(), attempts, error = %e, "batch given up");
        let e = e
            .with_maybe_written(p.maybe_written)
            .after_attempts(attempts);
        self.settle(ctx, p.sent, Err(e));
    }

    /// Writes `batch`'s header and compresses it.
    #[allow(clippy::result_large_err)]
    fn finish(
        &self,
        ctx: &Producing,
        batch: OpenBatch,
    ) -> Result<(Sent, Vec<u8>), (Sent, ProduceError)> {
        let sent = sent_of(&batch);
        tracing::trace!(partition = %self.name(), count = sent.count, bytes = sent.bytes, waited = ?batch.first_at.elapsed(), "sending batch");
        match batch.records.finish(ctx.config.compression) {
            Ok(records) => Ok((sent, records)),
            Err(e) => {
                let e = ProduceError::new(
                    ProduceErrorKind::Broker,
                    false,
                    format!("cannot compress a batch for {}: {e}", self.queue.topic),
                );
                Err((sent, e))
            }
        }
    }

    /// Hands a batch's result to its publishes.
    fn settle(&self, ctx: &Producing, sent: Sent, result: Result<i64, ProduceError>) {
        let Sent {
            count,
            bytes,
            outcome,
            ..
        } = sent;
        match &result {
            Ok(_) => {
                ctx.counters
                    .records
                    .fetch_add(count as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == ProduceErrorKind::MessageTooLarge && count > 1 => {
                // The batch, not necessarily each record, was too large:
                // send batches of half its size; the publishes retry.
                // Relative to the batch, so the batches in flight with it
                // that fail alike halve the limit once, not each again.
                self.queue.limit_batch_bytes(bytes / 2);
                outcome.finish(Err(ProduceError::new(
                    ProduceErrorKind::Broker,
                    true,
                    format!("{e} (a batch of {count}; retrying in smaller batches)"),
                )));
                return;
            }
            Err(_) => {}
        }
        outcome.finish(result);
    }
}

/// What settling `batch` needs.
fn sent_of(batch: &OpenBatch) -> Sent {
    Sent {
        count: batch.records.len(),
        bytes: batch.records.size(),
        outcome: Arc::clone(&batch.outcome),
        first_at: batch.first_at,
    }
}

/// What a partition in recovery waits for: its answers in flight, or the
/// retry delay.
fn pause(flow: &Flow) -> Step {
    match flow.recovery {
        Some(_) if flow.in_flight > 0 => Step::Idle,
        Some(r) => match r.at > Instant::now() {
            true => Step::Wait(r.at),
            false => Step::Resend,
        },
        None => Step::Idle,
    }
}
