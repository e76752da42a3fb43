//! Dead letters of the publisher: where a record goes when every attempt
//! to publish it failed, and the consumer's dead letters, which are written
//! before their record's offset may be committed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kavari_wire::backoff::Backoff;
use tokio::sync::watch;
use tokio::time::Instant;

use super::publisher::{Failure, Publisher};
use super::{Delivery, ProduceError, ProduceErrorKind, PublishError};
use crate::codec::EncodedMessage;

/// The dead letter of a message every attempt to publish failed for, on
/// `<topic><suffix>`, saying `cause`.
pub(crate) fn letter_of(
    message: &EncodedMessage,
    suffix: &str,
    cause: &ProduceError,
) -> EncodedMessage {
    crate::dead_letter::letter(
        &message.topic,
        suffix,
        message.key.as_deref(),
        &message.value,
        &message.headers,
        &cause.to_string(),
        None,
    )
}

impl Publisher {
    /// Writes `message` to its dead-letter topic after `attempts` failed
    /// with `cause`, by `deadline`; hands it back when there is no
    /// dead-letter topic or writing there fails too.
    pub(super) async fn dead_letter(
        &self,
        message: EncodedMessage,
        cause: ProduceError,
        attempts: u32,
        deadline: Instant,
    ) -> Result<Delivery, PublishError> {
        // A cluster that refuses this client's TLS or credentials refuses
        // its dead letters alike: the record comes back at once.
        let refused = cause.kind() == ProduceErrorKind::Authentication;
        let Some(suffix) = self.config.dlq_suffix.as_ref().filter(|_| !refused) else {
            return Err(PublishError::Failed {
                cause,
                attempts,
                dlq_error: None,
                message: Box::new(message),
            });
        };
        let letter = letter_of(&message, suffix, &cause);
        // The dead-letter topic keeps what the main topic refused, so the
        // client-side size limit does not apply; the broker's still does.
        let mut written = self.attempt(&letter, false, deadline).await;
        if let Err(e) = &written
            && e.kind() == ProduceErrorKind::UnknownTopic
            && self
                .create_dead_letter_topic(&message.topic, &letter.topic)
                .await
        {
            written = self.attempt_while_new(&letter, deadline).await;
        }
        match written {
            Ok(dlq) => {
                self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.admit_log(&message.topic, &cause, Failure::DeadLettered) {
                    tracing::error!(
                        topic = %message.topic, dlq = %dlq.topic, offset = %dlq.offset, error = %cause,
                        records = n, "publish failed; message dead-lettered"
                    );
                }
                Err(PublishError::DeadLettered { dlq, cause })
            }
            Err(dlq_error) => {
                let dlq_error = if dlq_error.maybe_written() {
                    dlq_error.unconfirmed()
                } else {
                    dlq_error
                };
                if let Some(n) = self.admit_log(&message.topic, &cause, Failure::Returned) {
                    tracing::error!(
                        topic = %message.topic, error = %cause, %dlq_error, records = n,
                        "publish failed and the dead-letter write failed too; returning the record"
                    );
                }
                Err(PublishError::Failed {
                    cause,
                    attempts,
                    dlq_error: Some(dlq_error),
                    message: Box::new(message),
                })
            }
        }
    }

    /// Creates the dead-letter topic `dlq` of `source` (with `source`'s
    /// partition count) when configured to; true when it exists now.
    async fn create_dead_letter_topic(&self, source: &str, dlq: &str) -> bool {
        if !self.config.create_dead_letter_topics {
            return false;
        }
        let created = match self.topics.partition_count(source).await {
            Ok(partitions) => self.topics.create(dlq, partitions).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(created) => {
                if created {
                    tracing::info!(topic = dlq, source, "created the dead-letter topic");
                }
                self.topics.refresh_later(dlq);
                true
            }
            Err(e) => {
                if let Some(n) = self.admit_log(dlq, &e, Failure::DeadLetterNotCreated) {
                    tracing::warn!(topic = dlq, source, error = %e, failures = n, "cannot create the dead-letter topic");
                }
                false
            }
        }
    }

    /// Writes to a topic created a moment ago, whose leaders the cluster
    /// may not know yet: a few quick tries while the error is retriable
    /// and `deadline` is ahead.
    async fn attempt_while_new(
        &self,
        message: &EncodedMessage,
        deadline: Instant,
    ) -> Result<Delivery, ProduceError> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        let mut tries = 0;
        loop {
            match self.attempt(message, false, deadline).await {
                Err(e) if e.is_retriable() && tries < 10 && Instant::now() < deadline => {
                    self.topics.refresh_later(&message.topic);
                    tries += 1;
                    tokio::time::sleep(backoff.next()).await;
                }
                other => return other,
            }
        }
    }

    /// Produces `message` (a dead letter of the consumer for a record of
    /// `source`) until it is written or `stop` turns true: a record must not
    /// be committed before its dead letter exists. A missing dead-letter
    /// topic is created (when configured to); every failed attempt goes to
    /// `blocked` (the partition's health), and `None` once written after
    /// one.
    pub(crate) async fn produce_until_written(
        &self,
        message: EncodedMessage,
        source: &str,
        mut stop: watch::Receiver<bool>,
        blocked: &(dyn Fn(Option<&ProduceError>) + Send + Sync),
    ) -> Result<Delivery, ProduceError> {
        let mut failures = 0u32;
        loop {
            let deadline = Instant::now() + self.config.delivery_timeout;
            let mut written = self.attempt(&message, false, deadline).await;
            if let Err(e) = &written
                && e.kind() == ProduceErrorKind::UnknownTopic
            {
                self.topics.refresh_later(&message.topic);
                if self.create_dead_letter_topic(source, &message.topic).await {
                    written = self.attempt_while_new(&message, deadline).await;
                }
            }
            let err = match written {
                Ok(d) => {
                    self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    if failures > 0 {
                        blocked(None);
                    }
                    return Ok(d);
                }
                Err(e) => e,
            };
            failures += 1;
            blocked(Some(&err));
            let delay = self
                .retry
                .delay(failures)
                .unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(5));
            if let Some(n) = self.admit_log(&message.topic, &err, Failure::DeadLetterRetrying) {
                tracing::warn!(topic = %message.topic, attempt = failures, ?delay, error = %err, failures = n, "dead-letter write failed; the partition waits and retries");
            }
            if *stop.borrow() {
                return Err(err);
            }
            if !crate::stop::pause(delay, &mut stop).await {
                return Err(err);
            }
        }
    }
}
