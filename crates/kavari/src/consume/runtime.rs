//! [`Runtime`]: what delivering records needs from the runtime around it
//! (the consumer's over Kafka, or the test kit's), and what a delivery
//! ends in.

use std::time::Duration;

use kavari_group::TopicPartition;
use kavari_wire::log_rate::LogRate;
use tokio::sync::watch;

use super::config::ConsumerConfig;
use super::state::ConsumeState;
use crate::codec::EncodedMessage;
use crate::context::MessageContext;
use crate::publish::ProduceError;
use crate::registry::Registry;

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
    /// Under exactly-once handling, aborts the transaction of `ctx`'s
    /// attempt (nothing it published lands) and opens the next one in
    /// `ctx`; nothing otherwise. `Err` when no transaction can be opened
    /// (the record stays uncommitted), and [`Undelivered::Rewind`] when
    /// the aborted transaction also held earlier records.
    fn restart_transaction(
        &self,
        ctx: &mut MessageContext,
    ) -> impl Future<Output = Result<(), Undelivered>> + Send {
        let _ = ctx;
        std::future::ready(Ok(()))
    }

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
        self.update_partition(tp, |h| {
            disposition.count(&mut h.dead_lettered, &mut h.skipped)
        });
    }

    async fn restart_transaction(&self, ctx: &mut MessageContext) -> Result<(), Undelivered> {
        let (Some(exactly_once), Some(attempt)) = (&self.exactly_once, ctx.transaction.take())
        else {
            return Ok(());
        };
        // Aborted: its outcome is not this record's any more.
        let _ = attempt.session().end(false).await;
        if std::mem::take(&mut ctx.transaction_shared) {
            // The earlier records' publishes went with it.
            return Err(Undelivered::Rewind);
        }
        match exactly_once.begin().await {
            Ok(next) => {
                ctx.transaction = Some(next);
                Ok(())
            }
            Err(e) => {
                tracing::error!(topic = %ctx.topic, partition = ctx.partition, offset = ctx.offset, error = %e, "no transaction for the record's next attempt; it stays uncommitted");
                Err(Undelivered::Stopping)
            }
        }
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

impl Disposition {
    /// Adds the record to the partition's count of its kind: records
    /// dead-lettered or skipped (a handled one counts nowhere).
    pub(crate) fn count(self, dead_lettered: &mut u64, skipped: &mut u64) {
        match self {
            Self::DeadLettered => *dead_lettered += 1,
            Self::Skipped => *skipped += 1,
            Self::Handled => {}
        }
    }
}

/// Why a record was not disposed of: it must not be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undelivered {
    /// The partition is stopping (a dead letter could not be written
    /// before, or no transaction could be opened): its next owner gets the
    /// record again.
    Stopping,
    /// Under exactly-once handling, an attempt failed in a transaction
    /// that also holds earlier records of the partition: it was aborted
    /// with their publishes, and they are handled again from the
    /// transaction's start.
    Rewind,
}

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

/// At most one "record cannot be handled" line per partition and this
/// interval: a batch of a million poison records is one line, not a
/// million.
pub(crate) const POISON_LOG_EVERY: Duration = Duration::from_secs(10);
