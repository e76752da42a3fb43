//! The publisher: each publish is admitted (refused once shutdown began),
//! placed and appended to its partition's batch (`append.rs`), awaits its
//! batch's answer, and on failure is retried by the retry policy, then
//! written to the dead-letter topic (`dead_letter.rs`) or handed back.
//! A typed publish, an encoded one and each message of a bulk call take
//! these same steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kavari_wire::cluster::Cluster;
use kavari_wire::log_rate::LogRate;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::append::{Appender, Bulk, Enqueued, Source, Typed, Unencodable};
use super::batcher::ProduceCounters;
use super::config::ProducerConfig;
use super::producing::Producing;
use super::stats::PublishStats;
use super::topics::Topics;
use super::{Delivery, Offset, ProduceError, ProduceErrorKind, PublishError};
use crate::codec::EncodedMessage;
use crate::message::KafkaMessage;
use crate::partitioner::RoundRobin;
use crate::retry::RetryPolicy;
use crate::trace_context::TraceHeaders;

#[derive(Debug)]
pub(crate) struct Publisher {
    pub(super) topics: Arc<Topics>,
    pub(super) config: Arc<ProducerConfig>,
    pub(super) retry: Arc<dyn RetryPolicy>,
    pub(super) counters: Arc<ProduceCounters>,
    pub(super) round_robin: RoundRobin,
    /// Turns true when shutdown begins: refuses new publishes, cuts
    /// retry waits short, and tells the partitions to give up retries.
    pub(super) closing: watch::Sender<bool>,
    pub(super) in_flight: AtomicUsize,
    pub(super) idle: Notify,
    pub(super) retries: AtomicUsize,
    pub(super) dead_lettered: AtomicUsize,
    /// How long a dead letter may take past a publish's `delivery_timeout`:
    /// the request timeout.
    pub(super) grace: Duration,
    /// One warning per topic, cause and interval, not one per record.
    pub(super) log: LogRate<(String, ProduceErrorKind, Failure)>,
}

/// How often a failure of one topic and cause is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a logged publish failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Failure {
    Retrying,
    DeadLettered,
    Returned,
    DeadLetterRetrying,
    DeadLetterNotCreated,
    Unconfirmed,
}

/// A publish refused before any attempt (the publisher is shutting down).
fn refused(cause: ProduceError, message: EncodedMessage) -> PublishError {
    PublishError::Failed {
        cause,
        attempts: 0,
        dlq_error: None,
        message: Box::new(message),
    }
}

/// Counts a publish as in flight until dropped.
struct Admitted<'a>(&'a Publisher);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Publisher {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        config: ProducerConfig,
        retry: Arc<dyn RetryPolicy>,
    ) -> Self {
        let config = Arc::new(config);
        let counters = Arc::new(ProduceCounters::default());
        let (closing, closing_rx) = watch::channel(false);
        let grace = cluster.request_timeout();
        let topics = Arc::new(Topics::new(Arc::new(Producing::new(
            cluster,
            Arc::clone(&config),
            Arc::clone(&counters),
            Arc::clone(&retry),
            closing_rx,
        ))));
        Topics::sweep_idle(Arc::downgrade(&topics), config.metadata_max_idle / 2);
        Self {
            topics,
            config,
            retry,
            counters,
            round_robin: RoundRobin::default(),
            closing,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            retries: AtomicUsize::new(0),
            dead_lettered: AtomicUsize::new(0),
            grace,
            log: LogRate::new(LOG_EVERY),
        }
    }

    pub(crate) fn stats(&self) -> PublishStats {
        PublishStats {
            produce_requests: self.counters.requests.load(Ordering::Relaxed),
            batches_sent: self.counters.batches.load(Ordering::Relaxed),
            records_acknowledged: self.counters.records.load(Ordering::Relaxed),
            failed_requests: self.counters.failed_requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed) as u64
                + self.counters.retried_records.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed) as u64,
            queued_bytes: self.counters.queued_bytes.load(Ordering::Relaxed) as u64,
            topics: self.topics.cached_topics() as u64,
        }
    }

    /// Refuses a publish once shutdown began; otherwise counts it in flight
    /// until the guard drops.
    fn admit(&self) -> Result<Admitted<'_>, ProduceError> {
        if *self.closing.borrow() {
            return Err(ProduceError::shutting_down());
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted(self))
    }

    /// Publishes one encoded message.
    pub(crate) fn publish(
        &self,
        message: EncodedMessage,
    ) -> impl Future<Output = Result<Delivery, PublishError>> + Send + '_ {
        // Not an async fn around `publish_one`: its future would hold the
        // message twice over.
        self.publish_one(message)
    }

    /// Publishes a typed message (see [`Typed`] for why it allocates
    /// nothing in the common case).
    pub(crate) fn publish_typed<'a, M: KafkaMessage>(
        &'a self,
        msg: &'a M,
        trace: &'a TraceHeaders,
    ) -> impl Future<Output = Result<Delivery, PublishError>> + Send + 'a {
        self.publish_one(Typed { msg, trace })
    }

    /// A publish: admitted, appended, awaited; on failure the retries, the
    /// dead-letter topic, or the record back.
    async fn publish_one<S: Source>(&self, source: S) -> Result<Delivery, PublishError> {
        let _guard = match self.admit() {
            Ok(guard) => guard,
            Err(cause) => return Err(refused(cause, source.encoded(&self.config)?)),
        };
        let deadline = self.deadline(Instant::now());
        let err = match self.first_attempt(&source, deadline).await {
            Ok(Ok((partition, offset))) => {
                return Ok(Delivery {
                    topic: source.topic(&self.config),
                    partition,
                    offset,
                });
            }
            Ok(Err(err)) => err,
            Err(e) => return Err(e.into_error()),
        };
        self.after_first(source.encoded(&self.config)?, err, deadline)
            .await
    }

    /// [`after_failure`](Self::after_failure), boxed: the rare path should
    /// not size every publish in flight.
    fn after_first(
        &self,
        message: EncodedMessage,
        err: ProduceError,
        deadline: Instant,
    ) -> futures::future::BoxFuture<'_, Result<Delivery, PublishError>> {
        Box::pin(self.after_failure(message, err, deadline))
    }

    /// A publish's first attempt: appended, then its batch's answer (the
    /// outer error: the record cannot be encoded).
    async fn first_attempt<S: Source>(
        &self,
        source: &S,
        deadline: Instant,
    ) -> Result<Result<(i32, Offset), ProduceError>, S::Error> {
        let enqueued = match self.appender().append(source, true, None, deadline).await? {
            Ok(enqueued) => enqueued,
            Err(err) => return Ok(Err(err)),
        };
        Ok(enqueued.landed().await)
    }

    /// Publishes many messages from one task: each is appended as it
    /// comes, and only then are answers awaited, so they share batches
    /// without a future and a wake-up per message; the partitions touched
    /// are sent at once, not after the linger. Messages whose first attempt
    /// failed go on as single publishes (retries, dead letter, hand-back),
    /// together. Results are in the messages' order.
    pub(crate) async fn publish_all<M: KafkaMessage>(
        &self,
        msgs: &[M],
        trace: &TraceHeaders,
    ) -> Vec<Result<Delivery, PublishError>> {
        /// How far each message got before answers are awaited.
        enum Step {
            Done(Result<Delivery, PublishError>),
            Appended(Enqueued),
            Failed(ProduceError),
        }
        let guard = self.admit();
        let deadline = self.deadline(Instant::now());
        let topic = self.config.topic_names.topic_of::<M>();
        let mut bulk = Bulk::default();
        let mut steps = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let source = Typed { msg, trace };
            steps.push(match &guard {
                Err(cause) => Step::Done(match source.encoded(&self.config) {
                    Ok(m) => Err(refused(cause.clone(), m)),
                    Err(e) => Err(e.into()),
                }),
                Ok(_) => match self
                    .appender()
                    .append(&source, true, Some(&mut bulk), deadline)
                    .await
                {
                    Ok(Ok(e)) => Step::Appended(e),
                    Ok(Err(err)) => Step::Failed(err),
                    Err(e) => Step::Done(Err(e.into())),
                },
            });
        }
        // Nothing more is coming from this call: no partition waits out its
        // linger for it.
        bulk.flush();
        // `None` only for the failed ones, until their retries return below.
        let mut results: Vec<Option<Result<Delivery, PublishError>>> =
            Vec::with_capacity(msgs.len());
        let mut failed = Vec::new();
        for (i, (step, msg)) in steps.into_iter().zip(msgs).enumerate() {
            let first = match step {
                Step::Done(r) => {
                    results.push(Some(r));
                    continue;
                }
                Step::Appended(e) => e.landed().await,
                Step::Failed(err) => Err(err),
            };
            match first {
                Ok((partition, offset)) => results.push(Some(Ok(Delivery {
                    topic: topic.clone(),
                    partition,
                    offset,
                }))),
                Err(err) => {
                    failed.push((i, msg, err));
                    results.push(None);
                }
            }
        }
        let retried = failed.into_iter().map(|(i, msg, err)| async move {
            let result = match (Typed { msg, trace }).encoded(&self.config) {
                Ok(m) => self.after_failure(m, err, deadline).await,
                Err(e) => Err(e.into()),
            };
            (i, result)
        });
        for (i, r) in futures::future::join_all(retried).await {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
        let results: Vec<_> = results.into_iter().flatten().collect();
        debug_assert_eq!(results.len(), msgs.len(), "a result for every message");
        results
    }

    /// The rest of a publish due by `deadline` whose first attempt failed
    /// with `err`: more attempts by the retry policy while
    /// `delivery_timeout` lasts, then the dead-letter path, or the record
    /// back as unconfirmed when an attempt may have written it.
    async fn after_failure(
        &self,
        message: EncodedMessage,
        mut err: ProduceError,
        deadline: Instant,
    ) -> Result<Delivery, PublishError> {
        let mut attempts = 1u32;
        let mut maybe_written = false;
        let cause = loop {
            maybe_written |= err.maybe_written();
            if err.kind() == ProduceErrorKind::UnknownTopic {
                self.topics.refresh_later(&message.topic);
            }
            // Its partition retried the batch already (idempotent
            // publishing): another attempt would be a new record.
            if let Some(n) = err.batch_attempts() {
                attempts += n.saturating_sub(1);
                break err;
            }
            if !err.is_retriable() {
                break err;
            }
            let Some(delay) = self.retry.delay(attempts) else {
                break err;
            };
            if Instant::now() + delay >= deadline {
                tracing::debug!(topic = %message.topic, attempts, "delivery_timeout ran out");
                break err;
            }
            if attempts == 1 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(n) = self.admit_log(&message.topic, &err, Failure::Retrying) {
                tracing::warn!(
                    topic = %message.topic, attempt = attempts, ?delay, error = %err,
                    failures = n, "publish failed; retrying"
                );
            }
            if !self.wait_to_retry(delay).await {
                break err;
            }
            attempts += 1;
            match self.attempt(&message, true, deadline).await {
                Ok(delivery) => return Ok(delivery),
                // The deadline cut this attempt short before it was sent:
                // the cause to report is what failed before.
                Err(e)
                    if e.kind() == ProduceErrorKind::Timeout
                        && !e.maybe_written()
                        && err.kind() != ProduceErrorKind::Timeout
                        && Instant::now() >= deadline =>
                {
                    break err.then_out_of_time();
                }
                Err(e) => err = e,
            }
        };
        if maybe_written {
            let cause = cause.unconfirmed();
            if let Some(n) = self.admit_log(&message.topic, &cause, Failure::Unconfirmed) {
                tracing::error!(
                    topic = %message.topic, attempts, error = %cause, records = n,
                    "publish unconfirmed; returning the record"
                );
            }
            return Err(PublishError::Unconfirmed {
                cause,
                attempts,
                message: Box::new(message),
            });
        }
        self.dead_letter(message, cause, attempts, deadline + self.grace)
            .await
    }

    /// When a publish begun at `started` runs out of time to be sent:
    /// `delivery_timeout` later. (An answer to what was sent by then may
    /// take the request timeout more.)
    fn deadline(&self, started: Instant) -> Instant {
        started + self.config.delivery_timeout
    }

    /// The dead-letter suffix; `None` when dead letters are off.
    pub(crate) fn dlq_suffix(&self) -> Option<&str> {
        self.config.dlq_suffix.as_deref()
    }

    /// How this publisher names each message type's topic.
    pub(crate) fn topic_names(&self) -> &crate::topic_names::TopicNames {
        &self.config.topic_names
    }

    /// Counts a failure of `topic` for the log: `Some(n)` when a line is
    /// due, for `n` failures of the same topic, cause and outcome.
    pub(super) fn admit_log(&self, topic: &str, err: &ProduceError, what: Failure) -> Option<u64> {
        self.log.admit((topic.to_string(), err.kind(), what))
    }

    /// Waits `delay` before another attempt; false when the publisher
    /// began to shut down meanwhile: the message goes to the dead-letter
    /// path or back to the caller now.
    async fn wait_to_retry(&self, delay: Duration) -> bool {
        crate::stop::pause(delay, &mut self.closing.subscribe()).await
    }

    /// One produce attempt of `message`, ended at `deadline` if not sent
    /// by then (and the request timeout later if sent and not answered).
    pub(super) async fn attempt(
        &self,
        message: &EncodedMessage,
        enforce_size: bool,
        deadline: Instant,
    ) -> Result<Delivery, ProduceError> {
        // Two statements: the append's future is gone before the answer is
        // awaited.
        let appended = self
            .appender()
            .append(message, enforce_size, None, deadline)
            .await;
        let enqueued = match appended {
            Ok(appended) => appended?,
            Err(never) => match never {},
        };
        let (partition, offset) = enqueued.landed().await?;
        Ok(Delivery {
            topic: message.topic.clone(),
            partition,
            offset,
        })
    }

    /// What placing and appending a record needs.
    fn appender(&self) -> Appender<'_> {
        Appender {
            topics: &self.topics,
            config: &self.config,
            round_robin: &self.round_robin,
        }
    }

    /// Refuses new publishes, cuts retry waits short, and waits (at most
    /// `timeout`) until every publish in flight has returned. Returns how
    /// many were still in flight when the timeout ran out.
    pub(crate) async fn close(&self, timeout: Duration) -> usize {
        self.closing.send_replace(true);
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let left = match tokio::time::timeout(timeout, wait).await {
            Ok(()) => 0,
            Err(_) => self.in_flight.load(Ordering::Acquire),
        };
        self.topics.close();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "t")]
    struct Small(u8);

    /// Every publish in flight holds its future: keep it small. A spawned
    /// publish per request is the common use, and a task of 1 KiB or more
    /// leaves glibc's small bins: each such allocation consolidates the fast
    /// bins first (`malloc_consolidate`, 4.7 % of a task-per-publish
    /// benchmark's samples when the future was 584 bytes).
    #[tokio::test]
    async fn a_publish_in_flight_is_small() {
        let cluster = Arc::new(Cluster::new(
            vec!["127.0.0.1:1".into()],
            "kavari".into(),
            Duration::from_secs(1),
        ));
        let p = Publisher::new(
            cluster,
            ProducerConfig::default(),
            Arc::new(crate::retry::NoRetry),
        );
        let m = EncodedMessage {
            topic: "".into(),
            key: None,
            value: vec![],
            headers: Default::default(),
        };
        let now = Instant::now();
        eprintln!(
            "attempt {} append {} route {}",
            std::mem::size_of_val(&p.attempt(&m, true, now)),
            std::mem::size_of_val(&p.appender().append(&m, true, None, now)),
            std::mem::size_of_val(&p.topics.route_by("x", now))
        );

        let size = std::mem::size_of_val(&p.publish(m));
        eprintln!("publish future: {size} bytes");

        assert!(size <= 512, "publish future of {size} bytes");
        let trace = TraceHeaders::default();
        let typed = std::mem::size_of_val(&p.publish_typed(&Small(1), &trace));
        eprintln!("typed publish future: {typed} bytes");
        assert!(typed <= 320, "typed publish future of {typed} bytes");

        // What a caller holds: the manager's publish, untraced path and
        // all (the in-memory kit's manager has the same future type): 336
        // bytes, 360 with the opentelemetry feature (on in the workspace's
        // test build); it was 424 with the span on the untraced path.
        let manager = crate::testing::InMemoryBroker::new()
            .manager(crate::Kavari::builder("kafka:9092"))
            .expect("manager");
        let outer = std::mem::size_of_val(&manager.publish(&Small(1)));
        eprintln!("manager publish future: {outer} bytes");
        assert!(outer <= 384, "manager publish future of {outer} bytes");
    }
}
