//! Delivering one record: route, run every handler with retries, and
//! dispose of what cannot be handled.

use std::time::Duration;

use futures::FutureExt;
use kavari_group::TopicPartition;
use kavari_wire::backoff::{Backoff, Retrying};
use kavari_wire::record_batch::read::FetchedRecord;
use tokio::sync::watch;
use tracing::Instrument;

use super::disposal::{BLOCKED_RETRY_MAX, Letter, block, give_up, poison, report_blocked};
use super::runtime::{Disposition, HandlerClock, Runtime, Undelivered};
use crate::context::MessageContext;
use crate::handler_error::HandlerError;
use crate::registry::{Outcome, Route};

/// Where a record came from, for its dead letter.
struct Source<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    value: &'a [u8],
}

impl Source<'_> {
    fn letter<'b>(&'b self, ctx: &'b MessageContext) -> Letter<'b> {
        Letter {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            value: self.value,
            headers: &ctx.headers,
            transaction: ctx.transaction.as_ref(),
        }
    }
}

/// Routes and handles one record, and counts it in health when it was
/// dead-lettered or skipped (outside a transaction). `ctx` is the
/// partition's context, reused from record to record (see
/// [`MessageContext::refill`]). The rare paths (dead letters, retries,
/// batches of one) are boxed: the future of the common one stays small, as
/// it is made and moved once per record.
pub(crate) async fn deliver<R: Runtime>(
    shared: &R,
    topic: &str,
    partition: i32,
    ctx: &mut MessageContext,
    record: FetchedRecord,
    stop: &watch::Receiver<bool>,
    clock: &HandlerClock,
) -> Result<Disposition, Undelivered> {
    ctx.refill(&record);
    let FetchedRecord {
        offset,
        ref key,
        value: ref record_value,
        ..
    } = record;
    let value = record_value.as_deref().unwrap_or_default();
    let key = key.as_deref();
    let source = Source {
        topic,
        partition,
        offset,
        key,
        value,
    };
    let entry = match shared
        .registry()
        .route(topic, &ctx.headers, record_value.as_deref())
    {
        Route::Handlers(entry) => entry,
        Route::Poison(reason) => {
            let letter = source.letter(ctx);
            let d = Box::pin(poison(shared, &letter, &reason, stop)).await?;
            return Ok(counted(shared, topic, partition, ctx, d));
        }
    };
    if let Some(subscription) = entry.batch() {
        // A record of a batch subscription met one at a time: a batch of
        // one (its dispositions are counted there).
        let batch = vec![record.clone()];
        let batch = super::batches::deliver_batch(
            shared,
            topic,
            partition,
            subscription,
            batch,
            stop,
            clock,
        );
        Box::pin(batch).await?;
        return Ok(Disposition::Handled);
    }
    let mut disposition = Disposition::Handled;
    for (i, handler) in entry.handlers().enumerate() {
        let mut attempt = 1;
        // Set while the partition waits at this record (`Block`).
        let mut blocked: Option<Retrying> = None;
        loop {
            ctx.attempt = attempt;
            // Handlers usually finish within their first poll: the clock is
            // set only for one that does not.
            let span = if crate::telemetry::enabled() {
                let span = crate::telemetry::process_span(
                    topic,
                    partition,
                    offset,
                    ctx.key.as_deref(),
                    shared.group_id(),
                    handler.name(),
                );
                crate::trace_context::continue_trace(&span, &ctx.headers);
                span
            } else {
                tracing::Span::none()
            };
            let started = crate::metrics::clock();
            let mut call = handler.call(value, ctx);
            if !span.is_none() {
                // Boxed again only when traced: the untraced call pays
                // for no span.
                call = Box::pin(call.instrument(span));
            }
            let outcome = match (&mut call).now_or_never() {
                Some(outcome) => outcome,
                None => {
                    clock.set(Some(tokio::time::Instant::now()));
                    let outcome = (&mut call).await;
                    clock.set(None);
                    outcome
                }
            };
            drop(call);
            let ok = matches!(outcome, Outcome::Ok);
            crate::metrics::handler_ran(topic, handler.name(), started, ok);
            let error = match outcome {
                Outcome::Ok => break,
                Outcome::Undecodable(reason) if i == 0 => {
                    // Every handler of the type would fail alike: poison.
                    let letter = source.letter(ctx);
                    let d = Box::pin(poison(shared, &letter, &reason, stop)).await?;
                    return Ok(counted(shared, topic, partition, ctx, d));
                }
                Outcome::Undecodable(reason) => HandlerError::permanent(reason.to_string()),
                Outcome::Failed(e) => e,
                // A panic is an error of this message; the runtime lives on.
                Outcome::Panicked(m) => HandlerError::new(m),
            };
            // Under exactly-once handling, the failed attempt's publishes
            // are aborted: they never land, whatever comes next.
            Box::pin(shared.restart_transaction(ctx)).await?;
            let delay = if error.is_retriable() && blocked.is_none() {
                shared.config().delivery_retry.delay(attempt)
            } else {
                None
            };
            if let Some(d) = delay {
                tracing::warn!(
                    topic, partition, offset, handler = handler.name(),
                    attempt, error = %format_args!("{error:#}"), "handler failed; retrying"
                );
                Box::pin(tokio::time::sleep(d)).await;
                attempt += 1;
                continue;
            }
            let why = format!("{}: {error:#}", handler.name());
            let failed = source.letter(ctx);
            let given_up = Box::pin(give_up(
                shared,
                &failed,
                handler.name(),
                &why,
                attempt,
                stop,
            ));
            if let Some(d) = given_up.await? {
                disposition = d;
                break;
            }
            // Block: the partition waits at the record.
            let letter = source.letter(ctx);
            let reason = format!("handler {why}");
            if !error.is_retriable() {
                // No retry can fix it: wait for the partition to move.
                let d = Box::pin(block(shared, &letter, &reason, stop)).await?;
                return Ok(counted(shared, topic, partition, ctx, d));
            }
            // Every try is logged: a blocked partition is news.
            let retrying = blocked.get_or_insert_with(|| {
                Retrying::new(
                    Backoff::new(Duration::from_millis(100), BLOCKED_RETRY_MAX),
                    Duration::ZERO,
                )
            });
            let wait = retrying.failed().wait;
            report_blocked(shared, &letter, Some(&reason));
            tracing::warn!(
                topic, partition, offset, handler = handler.name(),
                attempt, retry_in = ?wait, error = %why, "handler failed; the partition waits at the record (on_handler_failure is Block)"
            );
            if !Box::pin(crate::stop::pause(wait, &mut stop.clone())).await {
                return Err(Undelivered::Stopping);
            }
            attempt += 1;
        }
        if blocked.is_some() {
            report_blocked(shared, &source.letter(ctx), None);
        }
    }
    Ok(counted(shared, topic, partition, ctx, disposition))
}

/// `disposition`, counted in health when the record was dead-lettered or
/// skipped outside a transaction (in one, it counts once the transaction
/// commits).
fn counted<R: Runtime>(
    shared: &R,
    topic: &str,
    partition: i32,
    ctx: &MessageContext,
    disposition: Disposition,
) -> Disposition {
    if disposition != Disposition::Handled && ctx.transaction.is_none() {
        shared.count_unhandled(&TopicPartition::new(topic, partition), disposition);
    }
    disposition
}
