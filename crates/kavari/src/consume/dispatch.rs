//! Delivering one record: route, run every handler with retries, and
//! dead-letter what cannot be handled.

use std::collections::BTreeMap;

use std::time::Duration;

use futures::FutureExt;
use kavari_group::TopicPartition;
use kavari_wire::backoff::{Backoff, Retrying};
use kavari_wire::log_rate::LogRate;
use kavari_wire::record_batch::read::{FetchedRecord, RecordHeaders};
use tokio::sync::watch;
use tracing::Instrument;

use super::config::{ConsumerConfig, FailurePolicy};
use super::state::ConsumeState;
use crate::codec::{DecodeError, EncodedMessage};
use crate::handler::HandlerError;
use crate::handler::MessageContext;
use crate::publish::ProduceError;
use crate::registry::{Outcome, Registry, Route};
use crate::stop::until_stopped;

/// What delivering a record needs from the runtime around it: the
/// consumer's, over Kafka, or the in-memory test kit's. Routing, retries,
/// dead letters and the failure policies are the same for both.
pub(crate) trait Runtime: Send + Sync {
    /// The subscribed handlers.
    fn registry(&self) -> &Registry;
    /// The consumer's settings: retry and failure policies.
    fn config(&self) -> &ConsumerConfig;
    /// The consumer group, written into dead letters.
    fn group_id(&self) -> &str;
    /// The dead-letter suffix; `None` when dead letters are off.
    fn dlq_suffix(&self) -> Option<&str>;
    /// Shows the partition as blocked with `error` (`None`: not any more).
    fn report_blocked(&self, tp: &TopicPartition, error: Option<String>);
    /// Counts a record of the partition that was dead-lettered or skipped
    /// instead of handled.
    fn count_unhandled(&self, tp: &TopicPartition, disposition: Disposition);
    /// How often poison records are logged: once per partition and
    /// [`POISON_LOG_EVERY`], with how many the line stands for.
    fn poison_log(&self) -> &LogRate<TopicPartition>;
    /// Writes a dead letter of a record of `source`, retrying until it is
    /// written or `stop` turns true; every failed attempt goes to
    /// `blocked`, and `None` once written after one.
    fn write_dead_letter(
        &self,
        message: EncodedMessage,
        source: &str,
        stop: watch::Receiver<bool>,
        blocked: &(dyn Fn(Option<&ProduceError>) + Send + Sync),
    ) -> impl Future<Output = Result<(), ProduceError>> + Send;
}

impl Runtime for ConsumeState {
    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    fn group_id(&self) -> &str {
        &self.group_id
    }

    fn dlq_suffix(&self) -> Option<&str> {
        self.dead_letters.suffix()
    }

    fn report_blocked(&self, tp: &TopicPartition, error: Option<String>) {
        self.update_partition(tp, |h| h.error = error);
    }

    fn poison_log(&self) -> &LogRate<TopicPartition> {
        &self.poison_log
    }

    fn count_unhandled(&self, tp: &TopicPartition, disposition: Disposition) {
        self.update_partition(tp, |h| match disposition {
            Disposition::DeadLettered => h.dead_lettered += 1,
            Disposition::Skipped => h.skipped += 1,
            Disposition::Handled => {}
        });
    }

    async fn write_dead_letter(
        &self,
        message: EncodedMessage,
        source: &str,
        stop: watch::Receiver<bool>,
        blocked: &(dyn Fn(Option<&ProduceError>) + Send + Sync),
    ) -> Result<(), ProduceError> {
        self.dead_letters
            .write_until_written(message, source, stop, blocked)
            .await
            .map(drop)
    }
}

/// How a record was disposed of; every case may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    Handled,
    DeadLettered,
    Skipped,
}

/// The dead-letter write failed and the partition is stopping: the record
/// must not be committed; its next owner gets it again.
#[derive(Debug)]
pub(crate) struct Undelivered;

/// When the handler now running began: a worker reads it to tell a stuck
/// handler (past `max_handler_time`) from a record that waits for another
/// reason (retry delays, a dead letter, a `Block` policy).
#[derive(Debug, Default)]
pub(crate) struct HandlerClock(std::sync::Mutex<Option<tokio::time::Instant>>);

impl HandlerClock {
    pub(super) fn set(&self, started: Option<tokio::time::Instant>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = started;
    }

    /// How long the running handler has run; `None` between handlers.
    pub(crate) fn running_for(&self) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }
}

/// What a dead letter is made of.
pub(super) struct Letter<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<&'a [u8]>,
    pub(super) value: &'a [u8],
    pub(super) headers: &'a BTreeMap<String, Vec<u8>>,
}

/// Routes and handles one record, and counts it in health when it was
/// dead-lettered or skipped. `ctx` is the partition's context, reused from
/// record to record (see [`refill`]).
pub(crate) async fn deliver<R: Runtime>(
    shared: &R,
    topic: &str,
    partition: i32,
    ctx: &mut MessageContext,
    record: FetchedRecord,
    stop: &watch::Receiver<bool>,
    clock: &HandlerClock,
) -> Result<Disposition, Undelivered> {
    let disposition = route_and_handle(shared, topic, partition, ctx, record, stop, clock).await?;
    if disposition != Disposition::Handled {
        shared.count_unhandled(&TopicPartition::new(topic, partition), disposition);
    }
    Ok(disposition)
}

/// [`deliver`] without the counting.
async fn route_and_handle<R: Runtime>(
    shared: &R,
    topic: &str,
    partition: i32,
    ctx: &mut MessageContext,
    record: FetchedRecord,
    stop: &watch::Receiver<bool>,
    clock: &HandlerClock,
) -> Result<Disposition, Undelivered> {
    let FetchedRecord {
        offset,
        timestamp_ms,
        ref key,
        value: ref record_value,
        ref headers,
        ..
    } = record;
    refill(ctx, offset, timestamp_ms, key.as_deref(), headers);
    let value = record_value.as_deref().unwrap_or_default();
    let key = key.as_deref();
    let letter = |headers| Letter {
        topic,
        partition,
        offset,
        key,
        value,
        headers,
    };
    let entry = match shared
        .registry()
        .route(topic, &ctx.headers, record_value.as_deref())
    {
        Route::Handlers(entry) => entry,
        Route::Poison(reason) => {
            let letter = letter(&ctx.headers);
            return poison(shared, &letter, &reason, stop).await;
        }
    };
    if let Some(subscription) = entry.batch() {
        // A record of a batch subscription met one at a time: a batch of
        // one (its dispositions are counted there).
        let batch = vec![record.clone()];
        super::batches::deliver_batch(shared, topic, partition, subscription, batch, stop, clock)
            .await?;
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
            let mut call = handler.call(value, ctx).instrument(span);
            let outcome = match (&mut call).now_or_never() {
                Some(outcome) => outcome,
                None => {
                    clock.set(Some(tokio::time::Instant::now()));
                    let outcome = call.await;
                    clock.set(None);
                    outcome
                }
            };
            let ok = matches!(outcome, Outcome::Ok);
            crate::metrics::handler_ran(topic, handler.name(), started, ok);
            let error = match outcome {
                Outcome::Ok => break,
                Outcome::Undecodable(reason) if i == 0 => {
                    // Every handler of the type would fail alike: poison.
                    let letter = letter(&ctx.headers);
                    return poison(shared, &letter, &reason, stop).await;
                }
                Outcome::Undecodable(reason) => HandlerError::permanent(reason.to_string()),
                Outcome::Failed(e) => e,
                // A panic is an error of this message; the runtime lives on.
                Outcome::Panicked(m) => HandlerError::new(m),
            };
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
                tokio::time::sleep(d).await;
                attempt += 1;
                continue;
            }
            let why = format!("{}: {error:#}", handler.name());
            let failed = letter(&ctx.headers);
            let given_up = give_up(shared, &failed, handler.name(), &why, attempt, stop);
            if let Some(d) = given_up.await? {
                disposition = d;
                break;
            }
            // Block: the partition waits at the record.
            let letter = letter(&ctx.headers);
            let reason = format!("handler {why}");
            if !error.is_retriable() {
                // No retry can fix it: wait for the partition to move.
                return block(shared, &letter, &reason, stop).await;
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
            if !crate::stop::pause(wait, &mut stop.clone()).await {
                return Err(Undelivered);
            }
            attempt += 1;
        }
        if blocked.is_some() {
            report_blocked(shared, &letter(&ctx.headers), None);
        }
    }
    Ok(disposition)
}

/// A record a handler failed for good (`why`, after `attempts`), by
/// `on_handler_failure`: dead-lettered or skipped; `None` under `Block`,
/// where the caller waits at the record.
pub(super) async fn give_up<R: Runtime>(
    shared: &R,
    letter: &Letter<'_>,
    handler: &str,
    why: &str,
    attempts: u32,
    stop: &watch::Receiver<bool>,
) -> Result<Option<Disposition>, Undelivered> {
    let (topic, partition, offset) = (letter.topic, letter.partition, letter.offset);
    match shared.config().on_handler_failure {
        FailurePolicy::DeadLetter => {
            tracing::error!(
                topic, partition, offset, handler, attempts, error = %why,
                "handler failed for good; dead-lettering"
            );
            dead_letter(shared, letter, why, attempts, stop).await?;
            Ok(Some(Disposition::DeadLettered))
        }
        FailurePolicy::Skip => {
            tracing::error!(
                topic, partition, offset, handler, attempts, error = %why,
                "handler failed for good; skipped (on_handler_failure is Skip)"
            );
            crate::metrics::skipped(topic, "handler_failure");
            Ok(Some(Disposition::Skipped))
        }
        FailurePolicy::Block => Ok(None),
    }
}

/// At most one "record cannot be handled" line per partition and this
/// interval: a batch of a million poison records is one line, not a
/// million.
pub(crate) const POISON_LOG_EVERY: Duration = Duration::from_secs(10);

/// The longest wait between two tries of a blocked record's handler.
pub(super) const BLOCKED_RETRY_MAX: Duration = Duration::from_secs(10);

/// Shows the partition as blocked at `letter`'s record with `reason`, or
/// not blocked any more (`None`).
pub(super) fn report_blocked<R: Runtime>(shared: &R, letter: &Letter<'_>, reason: Option<&str>) {
    let tp = TopicPartition::new(letter.topic, letter.partition);
    let error = reason.map(|r| format!("blocked at offset {}: {r}", letter.offset));
    shared.report_blocked(&tp, error);
}

/// Waits at a record no retry can move past, until the partition stops:
/// it is not committed, and its next owner meets it again.
pub(super) async fn block<R: Runtime>(
    shared: &R,
    letter: &Letter<'_>,
    reason: &str,
    stop: &watch::Receiver<bool>,
) -> Result<Disposition, Undelivered> {
    tracing::error!(
        topic = letter.topic,
        partition = letter.partition,
        offset = letter.offset,
        reason,
        "the partition waits at this record until it is reassigned or the service restarts"
    );
    report_blocked(shared, letter, Some(reason));
    let mut stop = stop.clone();
    until_stopped(&mut stop).await;
    Err(Undelivered)
}

/// Fills a partition's reusable context with a record's fields, reusing its
/// allocations: the key's string, and the header map with its names and
/// value buffers when the record's header names are the map's, in the same
/// (sorted) order, as Kavari writes them. Otherwise the map is built anew.
pub(crate) fn refill(
    ctx: &mut MessageContext,
    offset: i64,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    headers: &RecordHeaders,
) {
    ctx.offset = offset;
    ctx.attempt = 1;
    ctx.timestamp = chrono::DateTime::from_timestamp_millis(timestamp_ms).unwrap_or_default();
    match key.and_then(|k| std::str::from_utf8(k).ok()) {
        Some(k) => {
            let s = ctx.key.get_or_insert_with(String::new);
            s.clear();
            s.push_str(k);
        }
        None => ctx.key = None,
    }
    let same_names = ctx.headers.len() == headers.len()
        && headers
            .iter()
            .zip(ctx.headers.keys())
            .all(|((name, _), known)| name == known.as_bytes());
    if same_names {
        for ((_, value), slot) in headers.iter().zip(ctx.headers.values_mut()) {
            slot.clear();
            slot.extend_from_slice(value.unwrap_or_default());
        }
    } else {
        // By name; the last of a repeated name wins.
        ctx.headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    v.unwrap_or_default().to_vec(),
                )
            })
            .collect();
    }
}

/// A record that cannot be handled (poison), by `on_poison`.
pub(super) async fn poison<R: Runtime>(
    shared: &R,
    letter: &Letter<'_>,
    reason: &DecodeError,
    stop: &watch::Receiver<bool>,
) -> Result<Disposition, Undelivered> {
    let policy = shared.config().on_poison;
    let tp = TopicPartition::new(letter.topic, letter.partition);
    if let Some(records) = shared.poison_log().admit(tp) {
        tracing::warn!(
            topic = letter.topic, partition = letter.partition, offset = letter.offset,
            error = %reason, ?policy, records, "record cannot be handled"
        );
    }
    match policy {
        FailurePolicy::DeadLetter => {
            dead_letter(shared, letter, &reason.to_string(), 0, stop).await?;
            Ok(Disposition::DeadLettered)
        }
        FailurePolicy::Skip => {
            crate::metrics::skipped(letter.topic, "poison");
            Ok(Disposition::Skipped)
        }
        FailurePolicy::Block => block(shared, letter, &format!("poison: {reason}"), stop).await,
    }
}

/// Writes the record to `<topic><suffix>` with its provenance, retrying
/// until it is written or the partition stops; the partition shows as
/// blocked while the write fails.
pub(super) async fn dead_letter<R: Runtime>(
    shared: &R,
    letter: &Letter<'_>,
    error: &str,
    attempts: u32,
    stop: &watch::Receiver<bool>,
) -> Result<(), Undelivered> {
    let (topic, partition, offset) = (letter.topic, letter.partition, letter.offset);
    let Some(suffix) = shared.dlq_suffix() else {
        // The builder refuses DeadLetter without a suffix; never skip.
        block(
            shared,
            letter,
            "dead letters are off (no dead-letter suffix)",
            stop,
        )
        .await?;
        return Ok(());
    };
    let message = crate::dead_letter::letter(
        topic,
        suffix,
        letter.key,
        letter.value,
        letter.headers,
        error,
        Some(crate::dead_letter::Origin {
            partition,
            offset,
            attempts,
            group_id: shared.group_id(),
        }),
    );
    let dlq = message.topic.to_string();
    let blocked = |e: Option<&crate::publish::ProduceError>| {
        let reason = e.map(|e| format!("the dead-letter write to {dlq} fails: {e}"));
        report_blocked(shared, letter, reason.as_deref());
    };
    shared
        .write_dead_letter(message, topic, stop.clone(), &blocked)
        .await
        .map(|()| crate::metrics::dead_lettered(topic, "consume"))
        .map_err(|e| {
            tracing::error!(topic, partition, offset, error = %e, "dead-letter write abandoned: the partition is stopping; the record stays uncommitted");
            Undelivered
        })
}

#[cfg(test)]
mod tests {
    use kavari_wire::Compression;
    use kavari_wire::record_batch::read::batches;
    use kavari_wire::record_batch::write::{Record, RecordBatch};

    use super::*;

    /// A record's key and headers.
    type Spec<'a> = (Option<&'a [u8]>, Vec<(&'a str, &'a [u8])>);

    /// Records with the given (key, headers), read back as the fetcher
    /// hands them over.
    fn fetched(records: &[Spec<'_>]) -> Vec<FetchedRecord> {
        let mut batch = RecordBatch::with_capacity(0);
        for (key, headers) in records {
            batch.push(
                &Record {
                    key: *key,
                    value: b"v",
                    headers: &headers[..],
                },
                1_700_000_000_000,
            );
        }
        let bytes = bytes::Bytes::from(batch.finish(Compression::None).expect("finish"));
        batches(bytes)
            .flat_map(|b| b.expect("batch").records(1 << 20).expect("records"))
            .collect()
    }

    fn fill(ctx: &mut MessageContext, r: &FetchedRecord) {
        refill(ctx, r.offset, r.timestamp_ms, r.key.as_deref(), &r.headers);
    }

    /// A reused context shows each record exactly as a fresh one would:
    /// same names reuse the map, other names or orders rebuild it, a
    /// repeated name keeps its last value, a key that is absent or not
    /// UTF-8 is `None`.
    #[test]
    fn a_refilled_context_shows_exactly_the_current_record() {
        let records = fetched(&[
            (
                Some(b"k1"),
                vec![("content-type", b"a"), ("msg_type", b"T")],
            ),
            (
                Some(b"k2"),
                vec![("content-type", b"b"), ("msg_type", b"U")],
            ),
            (None, vec![("msg_type", b"V"), ("content-type", b"c")]),
            (Some(&[0xff]), vec![("x", b"1"), ("x", b"2")]),
            (Some(b"k5"), vec![]),
        ]);
        let mut ctx = MessageContext::new("t", 0, 0);
        let mut seen = Vec::new();
        for r in &records {
            fill(&mut ctx, r);
            ctx.attempt = 3; // a handler's retries must not leak into the next record
            let headers: Vec<(String, String)> = ctx
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            seen.push((ctx.offset, ctx.key.clone(), headers));
        }
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            seen,
            [
                (
                    0,
                    Some("k1".into()),
                    h(&[("content-type", "a"), ("msg_type", "T")])
                ),
                (
                    1,
                    Some("k2".into()),
                    h(&[("content-type", "b"), ("msg_type", "U")])
                ),
                (2, None, h(&[("content-type", "c"), ("msg_type", "V")])),
                (3, None, h(&[("x", "2")])),
                (4, Some("k5".into()), h(&[])),
            ]
        );
        fill(&mut ctx, &records[0]);
        assert_eq!(ctx.attempt, 1);
    }
}
