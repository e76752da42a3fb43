//! Idempotent sending (KIP-98): each batch carries the manager's producer
//! id and epoch and the partition's sequence number of its first record,
//! so the broker writes a batch sent twice once. A batch that fails is
//! sent again, the same bytes under the same sequence, before anything
//! after it: the sender waits for every batch in flight, then sends the
//! failed ones again in order. Only a batch given up (its retries or
//! `delivery_timeout` spent) reaches its publishes as an error.
//!
//! The sequence numbers count on from the last batch the broker
//! acknowledged. A batch refused for good (too large, not authorized) was
//! not written, so the ones after it are numbered again without it. A batch
//! given up after a failure that hides whether it was written (a timeout, a
//! broken connection), or a broker that lost this producer's state
//! (`OUT_OF_ORDER_SEQUENCE_NUMBER`, `UNKNOWN_PRODUCER_ID`), starts the
//! sequence again under a new epoch.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kavari_wire::ResponseError;
use kavari_wire::producer_id::ProducerIdentity;
use kavari_wire::record_batch::write::stamp;
use tokio::time::Instant;

use super::ProduceError;
use super::batcher::{MAX_IN_FLIGHT, next_batch};
use super::producer_ids::PartitionSequence;
use super::sender::{Sender, Sent};

/// A batch written (or to be written again) and not yet acknowledged.
struct Pending {
    /// Names the batch's answers (a batch sent twice has one in flight at
    /// a time).
    id: u64,
    sent: Sent,
    records: Vec<u8>,
    base_sequence: i32,
    /// Times written.
    attempts: u32,
    /// Why its last attempt failed; `None` while it has not failed.
    error: Option<ProduceError>,
    /// Whether an attempt was sent and not answered: if it is given up, it
    /// may be in the log.
    maybe_written: bool,
}

/// A batch's answer.
type Answer = Pin<Box<dyn Future<Output = (u64, Result<i64, ProduceError>)> + Send>>;

/// Sending again after a failure: when, and whether the sequence must
/// start again under a new epoch first.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    at: Instant,
    new_epoch: bool,
}

/// The sender's state across its loop.
struct Flow {
    unacked: VecDeque<Pending>,
    in_flight: FuturesOrdered<Answer>,
    sequence: PartitionSequence,
    recovery: Option<Recovery>,
    next_id: u64,
}

impl Sender {
    /// Sends batches in order, each at most once into the log.
    pub(super) async fn run_idempotent(mut self) {
        let queue = std::sync::Arc::clone(&self.queue);
        let linger = self.producing.config.linger;
        // Go on where an earlier sender of this partition stopped, once it
        // has (a forgotten topic's sender may still be finishing).
        let mut slot = match self.identity() {
            Some(ids) => Some(
                ids.sequence(&queue.topic, queue.partition)
                    .lock_owned()
                    .await,
            ),
            None => None,
        };
        let mut flow = Flow {
            unacked: VecDeque::new(),
            in_flight: FuturesOrdered::new(),
            sequence: slot.as_deref().copied().unwrap_or_default(),
            recovery: None,
            next_id: 0,
        };
        let mut closed = false;
        let mut closing = self.producing.closing.clone();
        loop {
            if closed && flow.unacked.is_empty() && flow.in_flight.is_empty() {
                if let Some(slot) = slot.as_deref_mut() {
                    *slot = flow.sequence;
                }
                break;
            }
            let take = !closed && flow.recovery.is_none() && flow.in_flight.len() < MAX_IN_FLIGHT;
            let round = self.round.clone();
            let resend_at = flow
                .recovery
                .filter(|_| flow.in_flight.is_empty())
                .map(|r| r.at);
            tokio::select! {
                biased;
                Some((id, result)) = flow.in_flight.next(), if !flow.in_flight.is_empty() => {
                    self.answered(&mut flow, id, result).await;
                }
                _ = until(resend_at), if resend_at.is_some() => {
                    self.send_again(&mut flow).await;
                }
                // Shutting down: what waits to be sent again goes back to
                // its publishes now, not after the retries.
                () = crate::stop::until_stopped(&mut closing), if flow.recovery.is_some() => {
                    self.give_up_all(&mut flow).await;
                }
                next = next_batch(&queue, linger, round.as_deref()), if take => match next {
                    None => closed = true,
                    Some((batch, due)) => {
                        if due {
                            self.call_round();
                        }
                        let (sent, records) = match self.finish(batch) {
                            Ok(finished) => finished,
                            Err((sent, e)) => {
                                self.settle(sent, Err(e.after_attempts(0)));
                                continue;
                            }
                        };
                        self.send_new(&mut flow, sent, records).await;
                    }
                },
            }
        }
    }

    /// Numbers a new batch and writes it.
    async fn send_new(&mut self, flow: &mut Flow, sent: Sent, records: Vec<u8>) {
        let id = flow.next_id;
        flow.next_id += 1;
        flow.unacked.push_back(Pending {
            id,
            sent,
            records,
            base_sequence: 0,
            attempts: 0,
            error: None,
            maybe_written: false,
        });
        let current = match self.identity() {
            Some(ids) => ids.current().await,
            None => Ok(None),
        };
        match current {
            Ok(current) if current == flow.sequence.identity => {}
            // The first batch, or another partition started a new epoch:
            // with nothing else unacknowledged, count from 0 under it.
            Ok(current) if flow.unacked.len() == 1 => {
                flow.sequence = PartitionSequence {
                    identity: current,
                    acknowledged: 0,
                };
            }
            // Batches under the old identity are still out: they fail
            // (the epoch is fenced) or land; then all go again under the
            // new one.
            Ok(_) => {
                let e = ProduceError::new(
                    super::ProduceErrorKind::Broker,
                    true,
                    "the producer epoch changed",
                );
                self.attempt_failed(flow, id, e, true);
                return;
            }
            Err(e) => {
                let retriable = e.is_retriable();
                self.attempt_failed(flow, id, e, false);
                if !retriable {
                    self.give_up_all(flow).await;
                }
                return;
            }
        }
        let base = match flow.unacked.iter().rev().nth(1) {
            Some(before) => after(before.base_sequence, before.sent.count),
            None => flow.sequence.acknowledged,
        };
        if let Some(p) = flow.unacked.back_mut() {
            p.base_sequence = base;
            if let Some(identity) = flow.sequence.identity {
                stamp(&mut p.records, identity.id, identity.epoch, base);
            }
        }
        self.write_pending(flow, id).await;
    }

    /// Writes the unacknowledged batch `id`; a failed write is a failed
    /// attempt.
    async fn write_pending(&mut self, flow: &mut Flow, id: u64) {
        let Some(p) = flow.unacked.iter_mut().find(|p| p.id == id) else {
            return;
        };
        p.attempts += 1;
        p.error = None;
        let records = bytes::Bytes::from(std::mem::take(&mut p.records));
        let written = self.write(bytes::Bytes::clone(&records)).await;
        if let Some(p) = flow.unacked.iter_mut().find(|p| p.id == id) {
            // The connection holds none once written: the buffer comes back
            // without a copy.
            p.records = Vec::from(records);
        }
        match written {
            Ok(answer) => flow
                .in_flight
                .push_back(Box::pin(async move { (id, answer.await) })),
            Err(e) => {
                self.failed(&e);
                self.attempt_failed(flow, id, e, false);
            }
        }
    }

    /// Handles the answer to batch `id`.
    async fn answered(&mut self, flow: &mut Flow, id: u64, result: Result<i64, ProduceError>) {
        let Some(at) = flow.unacked.iter().position(|p| p.id == id) else {
            return;
        };
        let duplicate =
            matches!(&result, Err(e) if e.code() == Some(ResponseError::DuplicateSequenceNumber));
        let e = match result {
            Ok(offset) => return self.acknowledged(flow, at, offset),
            Err(_) if duplicate => return self.acknowledged(flow, at, -1),
            Err(e) => e,
        };
        self.failed(&e);
        match e.code() {
            // The broker lost this producer's sequence (its state expired,
            // or a log was truncated): unless an earlier batch of this round
            // failed first (then this is its consequence), start again
            // under a new epoch.
            Some(ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId) => {
                let new_epoch = flow.recovery.is_none();
                self.attempt_failed(flow, id, e, new_epoch);
            }
            Some(ResponseError::InvalidProducerEpoch | ResponseError::ProducerFenced) => {
                let ours =
                    self.identity().is_some() && self.is_current(flow.sequence.identity).await;
                if ours {
                    // Fenced by the broker under the epoch in use: final.
                    if let Some(ids) = self.identity() {
                        let why = e.to_string();
                        ids.fence(why).await;
                    }
                    self.attempt_failed(flow, id, e, false);
                    self.give_up_all(flow).await;
                } else {
                    // Stamped before another partition bumped the epoch.
                    self.attempt_failed(flow, id, e, true);
                }
            }
            _ if e.is_retriable() => self.attempt_failed(flow, id, e, false),
            // Refused for good: it was not written; the batches after it
            // are numbered again without it.
            _ => {
                if let Some(p) = flow.unacked.remove(at) {
                    let attempts = p.attempts;
                    self.recycle(p.records);
                    self.settle_counted(p.sent, Err(e.after_attempts(attempts)), true);
                }
                self.recover(flow, false, Duration::ZERO);
            }
        }
    }

    /// Batch `at` is in the log at `offset` (-1: a duplicate, where the
    /// broker does not say).
    fn acknowledged(&mut self, flow: &mut Flow, at: usize, offset: i64) {
        let Some(p) = flow.unacked.remove(at) else {
            return;
        };
        flow.sequence.acknowledged = after(p.base_sequence, p.sent.count);
        if p.attempts > 1 {
            tracing::debug!(topic = %self.queue.topic, partition = self.queue.partition, attempts = p.attempts, "batch written after retries");
        }
        self.recycle(p.records);
        self.settle(p.sent, Ok(offset));
    }

    /// Notes that batch `id`'s attempt failed with `e`: sending stops until
    /// every batch in flight has answered, then resumes after the retry
    /// policy's delay.
    fn attempt_failed(&mut self, flow: &mut Flow, id: u64, e: ProduceError, new_epoch: bool) {
        let Some(p) = flow.unacked.iter_mut().find(|p| p.id == id) else {
            return;
        };
        if p.attempts == 1 && p.error.is_none() {
            self.producing
                .counters
                .retried_records
                .fetch_add(p.sent.count as u64, Ordering::Relaxed);
        }
        let delay = self
            .producing
            .retry
            .delay(p.attempts.max(1))
            .unwrap_or(Duration::ZERO);
        p.maybe_written |= e.maybe_written();
        p.error = Some(e);
        self.recover(flow, new_epoch, delay);
    }

    fn recover(&self, flow: &mut Flow, new_epoch: bool, delay: Duration) {
        let at = Instant::now() + delay;
        let r = flow.recovery.get_or_insert(Recovery { at, new_epoch });
        r.at = r.at.max(at);
        r.new_epoch |= new_epoch;
    }

    /// Every batch in flight has answered: gives up the failed batches whose
    /// retries or delivery time are spent, starts a new epoch if needed,
    /// numbers what is left from the last acknowledged sequence, and sends
    /// it again in order.
    async fn send_again(&mut self, flow: &mut Flow) {
        let Some(recovery) = flow.recovery.take() else {
            return;
        };
        let mut new_epoch = recovery.new_epoch;
        let timeout = self.producing.config.delivery_timeout;
        let mut kept = VecDeque::with_capacity(flow.unacked.len());
        while let Some(p) = flow.unacked.pop_front() {
            let spent = p.error.is_some()
                && (self.producing.retry.delay(p.attempts.max(1)).is_none()
                    || p.sent.first_at.elapsed() >= timeout);
            if !spent {
                kept.push_back(p);
                continue;
            }
            // Whether it was written is unknown: the sequence starts again.
            new_epoch = true;
            let attempts = p.attempts;
            let e = p.error.unwrap_or_else(|| {
                ProduceError::new(
                    super::ProduceErrorKind::Timeout,
                    true,
                    "delivery_timeout ran out",
                )
            });
            tracing::debug!(topic = %self.queue.topic, partition = self.queue.partition, attempts, error = %e, "batch given up");
            self.recycle(p.records);
            let e = e
                .with_maybe_written(p.maybe_written)
                .after_attempts(attempts);
            self.settle_counted(p.sent, Err(e), true);
        }
        flow.unacked = kept;
        if new_epoch || !self.is_current(flow.sequence.identity).await {
            let replaced = match self.identity() {
                Some(ids) => ids.replace(flow.sequence.identity).await,
                None => Ok(None),
            };
            match replaced {
                Ok(identity) => {
                    flow.sequence = PartitionSequence {
                        identity,
                        acknowledged: 0,
                    };
                }
                Err(e) if e.is_retriable() => {
                    let delay = self.producing.retry.delay(1).unwrap_or(Duration::ZERO);
                    self.recover(flow, true, delay);
                    return;
                }
                Err(e) => {
                    for p in &mut flow.unacked {
                        p.error = Some(e.clone());
                    }
                    self.give_up_all(flow).await;
                    return;
                }
            }
        }
        number(flow);
        let ids: Vec<u64> = flow.unacked.iter().map(|p| p.id).collect();
        for id in ids {
            self.write_pending(flow, id).await;
            if flow.recovery.is_some() {
                // A write failed: the rest wait for the next round.
                break;
            }
        }
    }

    /// Fails every unacknowledged batch with its error (the producer is
    /// fenced or cannot get an identity).
    async fn give_up_all(&mut self, flow: &mut Flow) {
        // Answers still in flight: what landed is acknowledged.
        while let Some((id, result)) = flow.in_flight.next().await {
            let Some(at) = flow.unacked.iter().position(|p| p.id == id) else {
                continue;
            };
            match result {
                Ok(offset) => self.acknowledged(flow, at, offset),
                Err(e) => {
                    if let Some(p) = flow.unacked.get_mut(at) {
                        p.maybe_written |= e.maybe_written();
                    }
                }
            }
        }
        flow.recovery = None;
        while let Some(p) = flow.unacked.pop_front() {
            let e = p.error.unwrap_or_else(|| {
                ProduceError::new(
                    super::ProduceErrorKind::Broker,
                    false,
                    "the producer stopped",
                )
            });
            self.recycle(p.records);
            let e = e
                .with_maybe_written(p.maybe_written)
                .after_attempts(p.attempts);
            self.settle_counted(p.sent, Err(e), true);
        }
    }

    fn identity(&self) -> Option<&super::producer_ids::ProducerIds> {
        self.producing.ids.as_ref()
    }

    async fn is_current(&self, identity: Option<ProducerIdentity>) -> bool {
        match self.identity() {
            Some(ids) => ids.is_current(identity).await,
            None => true,
        }
    }
}

/// Numbers the unacknowledged batches from the sequence the broker expects
/// and stamps them with the identity (unstamped where the cluster cannot
/// do idempotence).
fn number(flow: &mut Flow) {
    let mut next = flow.sequence.acknowledged;
    for p in &mut flow.unacked {
        p.base_sequence = next;
        if let Some(identity) = flow.sequence.identity {
            stamp(&mut p.records, identity.id, identity.epoch, next);
        }
        next = after(next, p.sent.count);
    }
}

/// The sequence after `count` records from `base`: it wraps from
/// `i32::MAX` to 0, as the protocol says.
fn after(base: i32, count: usize) -> i32 {
    let next = i64::from(base) + i64::try_from(count).unwrap_or(0);
    i32::try_from(next % (i64::from(i32::MAX) + 1)).unwrap_or(0)
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::after;

    #[test]
    fn sequences_wrap_to_zero_after_the_largest_int32() {
        assert_eq!(after(0, 5), 5);
        assert_eq!(after(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(after(i32::MAX, 1), 0);
        assert_eq!(after(i32::MAX - 2, 5), 2);
    }
}
