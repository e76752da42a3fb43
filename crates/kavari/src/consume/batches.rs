//! Delivering a batch of records to a batch handler: the records that fail
//! are retried in a batch of their own, then dead-lettered (or skipped, or
//! blocked on) one by one; poison never reaches the handler.

use std::time::Duration;

use kavari_group::TopicPartition;
use kavari_wire::backoff::{Backoff, Retrying};
use kavari_wire::record_batch::read::FetchedRecord;
use tokio::sync::watch;

use super::disposal::{BLOCKED_RETRY_MAX, Letter, block, give_up, poison, report_blocked};
use super::runtime::{Disposition, HandlerClock, Runtime, Undelivered};
use crate::context::MessageContext;
use crate::handler_error::HandlerError;
use crate::registry::{BatchSubscription, ItemOutcome};

/// Hands `records` (of one partition, in offset order) to the batch
/// handler; returns once each was handled, dead-lettered or skipped, or
/// [`Undelivered`] when the partition stops first (nothing of the batch
/// may be committed then).
pub(crate) async fn deliver_batch<R: Runtime>(
    shared: &R,
    topic: &str,
    partition: i32,
    subscription: &BatchSubscription,
    records: Vec<FetchedRecord>,
    stop: &watch::Receiver<bool>,
    clock: &HandlerClock,
) -> Result<(), Undelivered> {
    let handler = subscription.handler.as_ref();
    let tp = TopicPartition::new(topic, partition);
    let contexts: Vec<MessageContext> = records
        .iter()
        .map(|r| {
            let mut ctx = MessageContext::new(topic, partition, r.offset);
            ctx.refill(r);
            ctx
        })
        .collect();
    let letter = |i: usize| Letter {
        topic,
        partition,
        offset: records[i].offset,
        key: records[i].key.as_deref(),
        value: records[i].value.as_deref().unwrap_or_default(),
        headers: &contexts[i].headers,
        // Batches are not handled exactly once.
        transaction: None,
    };
    // The records still to handle, by index.
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut attempt = 1;
    // Set while the partition waits at failing records (`Block`).
    let mut blocked: Option<Retrying> = None;
    loop {
        let items = pending
            .iter()
            .map(|&i| {
                let mut ctx = contexts[i].clone();
                ctx.attempt = attempt;
                (records[i].value.as_deref().unwrap_or_default(), ctx)
            })
            .collect();
        let started = crate::metrics::clock();
        clock.set(Some(tokio::time::Instant::now()));
        let outcomes = handler.call(items).await;
        clock.set(None);
        let mut failed: Vec<(usize, HandlerError)> = Vec::new();
        for (&i, outcome) in pending.iter().zip(outcomes) {
            match outcome {
                ItemOutcome::Ok => {}
                ItemOutcome::Undecodable(reason) => {
                    let d = poison(shared, &letter(i), &reason, stop).await?;
                    if d != Disposition::Handled {
                        shared.count_unhandled(&tp, d);
                    }
                }
                ItemOutcome::Failed(e) => failed.push((i, e)),
            }
        }
        crate::metrics::handler_ran(topic, handler.name(), started, failed.is_empty());
        if failed.is_empty() {
            if blocked.is_some()
                && let Some(&i) = pending.first()
            {
                report_blocked(shared, &letter(i), None);
            }
            return Ok(());
        }
        let delay = if blocked.is_none() {
            shared.config().delivery_retry.delay(attempt)
        } else {
            None
        };
        let mut again = Vec::new();
        for (i, error) in failed {
            let offset = records[i].offset;
            if error.is_retriable()
                && let Some(d) = delay
            {
                tracing::warn!(
                    topic, partition, offset, handler = handler.name(), attempt,
                    retry_in = ?d, error = %format_args!("{error:#}"), "batch handler failed for a record; retrying it"
                );
                again.push(i);
                continue;
            }
            let why = format!("{}: {error:#}", handler.name());
            let failed = letter(i);
            if let Some(d) = give_up(shared, &failed, handler.name(), &why, attempt, stop).await? {
                shared.count_unhandled(&tp, d);
            } else if error.is_retriable() {
                // Block: the partition waits at the record.
                report_blocked(shared, &letter(i), Some(&format!("handler {why}")));
                again.push(i);
            } else {
                // No retry can fix it: wait for the partition to move.
                return block(shared, &letter(i), &format!("handler {why}"), stop)
                    .await
                    .map(drop);
            }
        }
        if again.is_empty() {
            return Ok(());
        }
        let wait = match delay {
            Some(d) => d,
            None => {
                blocked
                    .get_or_insert_with(|| {
                        Retrying::new(
                            Backoff::new(Duration::from_millis(100), BLOCKED_RETRY_MAX),
                            Duration::ZERO,
                        )
                    })
                    .failed()
                    .wait
            }
        };
        if !crate::stop::pause(wait, &mut stop.clone()).await {
            return Err(Undelivered::Stopping);
        }
        attempt += 1;
        pending = again;
    }
}
