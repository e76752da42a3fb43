//! What becomes of a record that cannot be handled: dead-lettered,
//! skipped, or waited at (blocked), by the failure policies.

use std::collections::BTreeMap;
use std::time::Duration;

use kavari_group::TopicPartition;
use tokio::sync::watch;

use super::config::FailurePolicy;
use super::runtime::{Disposition, Runtime, Undelivered};
use crate::codec::DecodeError;
use crate::stop::until_stopped;

/// What a dead letter is made of.
pub(super) struct Letter<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<&'a [u8]>,
    pub(super) value: &'a [u8],
    pub(super) headers: &'a BTreeMap<String, Vec<u8>>,
    /// The record's transaction, under exactly-once handling: the dead
    /// letter is written in it, and lands with the record's commit.
    pub(super) transaction: Option<&'a crate::transaction::Transaction>,
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
    Err(Undelivered::Stopping)
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
    if let Some(tx) = letter.transaction {
        // A write that fails breaks the transaction: its commit fails, and
        // the record is handled again.
        return match tx.session().publish(vec![message]).await {
            Ok(_) => {
                crate::metrics::dead_lettered(topic, "consume");
                Ok(())
            }
            Err(e) => {
                tracing::error!(topic, partition, offset, error = %e, "dead-letter write failed in the record's transaction; the record is handled again");
                Ok(())
            }
        };
    }
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
            Undelivered::Stopping
        })
}
