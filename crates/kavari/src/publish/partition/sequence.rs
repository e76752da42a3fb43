//! Idempotent publishing's half of a partition's state (KIP-98): batches
//! numbered under the producer identity, their answers, and sending the
//! failed ones again in order (see the parent module's docs).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use kavari_wire::ResponseError;
use kavari_wire::producer_id::ProducerIdentity;
use kavari_wire::record_batch::write::stamp;
use tokio::time::Instant;

use super::{Flow, Partition, Recovery, Sent, Step, pause};
use crate::publish::producer_ids::PartitionSequence;
use crate::publish::producing::Producing;
use crate::publish::{ProduceError, ProduceErrorKind};

impl Partition {
    /// Numbers a new batch under `identity` and says to write it
    /// (idempotent publishing).
    pub(super) fn number_new(
        &self,
        ctx: &Producing,
        flow: &mut Flow,
        sent: Sent,
        records: Vec<u8>,
        identity: &Result<Option<ProducerIdentity>, ProduceError>,
        due: bool,
    ) -> Step {
        let id = self.push(flow, sent, records, false);
        match identity {
            Ok(current) if *current == flow.sequence.identity => {}
            // The first batch, or another partition started a new epoch:
            // with nothing else unacknowledged, count from 0 under it.
            Ok(current) if flow.unacked.len() == 1 => {
                flow.sequence = PartitionSequence {
                    identity: *current,
                    acknowledged: 0,
                };
            }
            // Batches under the old identity are still out: they fail
            // (the epoch is fenced) or land; then all go again under the
            // new one.
            Ok(_) => {
                let e =
                    ProduceError::new(ProduceErrorKind::Broker, true, "the producer epoch changed");
                self.attempt_failed(ctx, flow, id, e, true);
                return pause(flow);
            }
            Err(e) => {
                self.attempt_failed(ctx, flow, id, e.clone(), false);
                if !e.is_retriable() {
                    self.give_up_unwritten(ctx, flow);
                }
                return pause(flow);
            }
        }
        let base = match flow.unacked.iter().rev().nth(1) {
            Some(before) => after(before.base_sequence, before.sent.count),
            None => flow.sequence.acknowledged,
        };
        let identity = flow.sequence.identity;
        let Some(p) = flow.unacked.back_mut() else {
            return Step::Idle; // unreachable: pushed above
        };
        p.base_sequence = base;
        if let Some(identity) = identity {
            stamp(&mut p.records, identity.id, identity.epoch, base);
        }
        p.attempts = 1;
        p.in_flight = true;
        let records = Bytes::from(std::mem::take(&mut p.records));
        flow.in_flight += 1;
        Step::Write { id, records, due }
    }

    pub(super) fn answered_idempotent(
        &self,
        ctx: &Producing,
        flow: &mut Flow,
        at: usize,
        id: u64,
        result: Result<i64, ProduceError>,
    ) {
        let e = match result {
            Ok(offset) => return self.acknowledged(ctx, flow, at, offset),
            // Written before: the broker does not say where (-1).
            Err(e) if e.code() == Some(ResponseError::DuplicateSequenceNumber) => {
                return self.acknowledged(ctx, flow, at, -1);
            }
            Err(e) => e,
        };
        match e.code() {
            // The broker lost this producer's sequence (its state expired,
            // or a log was truncated): unless an earlier batch of this round
            // failed first (then this is its consequence), start again
            // under a new epoch.
            Some(ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId) => {
                let new_epoch = flow.recovery.is_none();
                self.attempt_failed(ctx, flow, id, e, new_epoch);
            }
            Some(ResponseError::InvalidProducerEpoch | ResponseError::ProducerFenced) => {
                let ours = ctx
                    .ids
                    .as_ref()
                    .is_some_and(|ids| ids.is_current(flow.sequence.identity));
                if ours {
                    // Fenced by the broker under the epoch in use: final.
                    if let Some(ids) = &ctx.ids {
                        ids.fence(e.to_string());
                    }
                    self.attempt_failed(ctx, flow, id, e, false);
                    self.give_up_unwritten(ctx, flow);
                } else {
                    // Stamped before another partition bumped the epoch.
                    self.attempt_failed(ctx, flow, id, e, true);
                }
            }
            _ if e.is_retriable() => self.attempt_failed(ctx, flow, id, e, false),
            // Refused for good: it was not written; the batches after it
            // are numbered again without it.
            _ => {
                if let Some(p) = flow.unacked.remove(at) {
                    let attempts = p.attempts;
                    self.settle(ctx, p.sent, Err(e.after_attempts(attempts)));
                }
                recover(flow, false, Duration::ZERO);
            }
        }
    }

    /// Batch `at` is in the log at `offset` (-1: a duplicate, where the
    /// broker does not say).
    pub(super) fn acknowledged(&self, ctx: &Producing, flow: &mut Flow, at: usize, offset: i64) {
        let Some(p) = flow.unacked.remove(at) else {
            return;
        };
        flow.sequence.acknowledged = after(p.base_sequence, p.sent.count);
        if p.attempts > 1 {
            tracing::debug!(partition = %self.name(), attempts = p.attempts, "batch written after retries");
        }
        self.settle(ctx, p.sent, Ok(offset));
    }

    /// Notes that batch `id`'s attempt failed with `e`: sending stops until
    /// every batch in flight has answered, then resumes after the retry
    /// policy's delay.
    pub(super) fn attempt_failed(
        &self,
        ctx: &Producing,
        flow: &mut Flow,
        id: u64,
        e: ProduceError,
        new_epoch: bool,
    ) {
        let Some(p) = flow.unacked.iter_mut().find(|p| p.id == id) else {
            return;
        };
        if p.attempts <= 1 && p.error.is_none() {
            ctx.counters
                .retried_records
                .fetch_add(p.sent.count as u64, Ordering::Relaxed);
        }
        let delay = ctx.retry.delay(p.attempts.max(1)).unwrap_or(Duration::ZERO);
        p.maybe_written |= e.maybe_written();
        p.error = Some(e);
        recover(flow, new_epoch, delay);
    }

    /// The first half of sending the failed batches again, once every
    /// batch in flight answered and the retry delay passed: gives up the
    /// batches whose retries or delivery time are spent. Returns whether
    /// the sequence must start under a new identity, and the one in use;
    /// `None` when there is nothing to send again.
    pub(in crate::publish) fn resend_begin(
        &self,
        ctx: &Producing,
    ) -> Option<(bool, Option<ProducerIdentity>)> {
        let mut flow = self.lock();
        let recovery = flow.recovery.take()?;
        let mut new_epoch = recovery.new_epoch;
        let timeout = ctx.config.delivery_timeout;
        let mut kept = VecDeque::with_capacity(flow.unacked.len());
        while let Some(p) = flow.unacked.pop_front() {
            let spent = !p.in_flight
                && p.error.is_some()
                && (ctx.retry.delay(p.attempts.max(1)).is_none()
                    || p.sent.first_at.elapsed() >= timeout);
            if !spent {
                kept.push_back(p);
                continue;
            }
            // Whether it was written is unknown: the sequence starts again.
            new_epoch = true;
            self.give_up(ctx, p);
        }
        flow.unacked = kept;
        Some((new_epoch, flow.sequence.identity))
    }

    /// The identity the sink got for a new sequence: `false` when the
    /// batches cannot be sent again now (retried later, or given up).
    pub(in crate::publish) fn resend_identity(
        &self,
        ctx: &Producing,
        identity: Result<Option<ProducerIdentity>, ProduceError>,
    ) -> bool {
        let mut flow = self.lock();
        match identity {
            Ok(identity) => {
                flow.sequence = PartitionSequence {
                    identity,
                    acknowledged: 0,
                };
                true
            }
            Err(e) if e.is_retriable() => {
                let delay = ctx.retry.delay(1).unwrap_or(Duration::ZERO);
                recover(&mut flow, true, delay);
                false
            }
            Err(e) => {
                for p in &mut flow.unacked {
                    p.error = Some(e.clone());
                }
                self.give_up_unwritten(ctx, &mut flow);
                false
            }
        }
    }

    /// Numbers the unacknowledged batches from the sequence the broker
    /// expects and stamps them with the identity (unstamped where the
    /// cluster cannot do idempotence); [`step`](Self::step) then writes
    /// them in order.
    pub(in crate::publish) fn renumber(&self) {
        let mut flow = self.lock();
        let identity = flow.sequence.identity;
        let mut next = flow.sequence.acknowledged;
        for p in &mut flow.unacked {
            p.base_sequence = next;
            if let Some(identity) = identity {
                stamp(&mut p.records, identity.id, identity.epoch, next);
            }
            next = after(next, p.sent.count);
        }
    }
}

/// Stops sending until `delay` from now (the latest of the failures so
/// far), starting a new epoch first if `new_epoch`.
pub(super) fn recover(flow: &mut Flow, new_epoch: bool, delay: Duration) {
    let at = Instant::now() + delay;
    let r = flow.recovery.get_or_insert(Recovery { at, new_epoch });
    r.at = r.at.max(at);
    r.new_epoch |= new_epoch;
}

/// The sequence after `count` records from `base`: it wraps from
/// `i32::MAX` to 0, as the protocol says.
pub(super) fn after(base: i32, count: usize) -> i32 {
    let next = i64::from(base) + i64::try_from(count).unwrap_or(0);
    i32::try_from(next % (i64::from(i32::MAX) + 1)).unwrap_or(0)
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
