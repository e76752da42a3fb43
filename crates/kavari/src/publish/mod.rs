//! Publishing: encode, pick a partition, batch, retry by policy, and write a
//! dead letter when every attempt failed.

mod batcher;
mod config;
mod dead_letter;
mod error;
mod expiry;
mod outcome;
mod partition;
mod producer_ids;
mod producing;
mod sink;
mod sinks;
mod topics;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

pub(crate) use config::ProducerConfig;
pub use error::{Delivery, ProduceError, ProduceErrorKind, PublishError};
pub use kavari_wire::Compression;
pub(crate) use producer_ids::Idempotence;

use crate::KafkaMessage;
use crate::codec::{self, EncodedMessage};
use crate::partitioner::RoundRobin;
use crate::retry::RetryPolicy;
use crate::trace_context::TraceHeaders;
use batcher::ProduceCounters;
use kavari_wire::cluster::Cluster;
use kavari_wire::log_rate::LogRate;
use kavari_wire::record_batch::write::Record;
use producing::Producing;
use topics::Topics;

#[cfg(feature = "testing")]
pub(crate) use dead_letter::letter_of;

/// Counters of the publisher, for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Produce requests sent. A request carries one batch for each
    /// partition it names: the batches of every partition a broker leads
    /// that were ready together.
    pub produce_requests: u64,
    /// Record batches sent (one partition's records each).
    pub batches_sent: u64,
    /// Records the broker acknowledged.
    pub records_acknowledged: u64,
    /// Produce requests that failed.
    pub failed_requests: u64,
    /// Publishes that were retried at least once.
    pub retries: u64,
    /// Messages written to a dead-letter topic.
    pub dead_lettered: u64,
    /// Bytes of records waiting to be sent now, all partitions together
    /// (bounded by `buffer_memory`).
    pub queued_bytes: u64,
    /// Topics with a route (partition batchers) now; one not published to
    /// for `metadata_max_idle` is forgotten.
    pub topics: u64,
}

#[derive(Debug)]
pub(crate) struct Publisher {
    topics: Arc<Topics>,
    config: Arc<ProducerConfig>,
    retry: Arc<dyn RetryPolicy>,
    counters: Arc<ProduceCounters>,
    round_robin: RoundRobin,
    /// Set when shutdown begins: refuses new publishes (checked on every
    /// publish, so an atomic rather than the watch below).
    closed: AtomicBool,
    /// Turns true when shutdown begins: cuts retry waits short.
    closing: watch::Sender<bool>,
    in_flight: AtomicUsize,
    idle: Notify,
    retries: AtomicUsize,
    dead_lettered: AtomicUsize,
    /// How long a dead letter may take past a publish's `delivery_timeout`:
    /// the request timeout.
    grace: Duration,
    /// One warning per topic, cause and interval, not one per record.
    log: LogRate<(String, ProduceErrorKind, Failure)>,
}

/// How often a failure of one topic and cause is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a logged publish failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Failure {
    Retrying,
    DeadLettered,
    Returned,
    DeadLetterRetrying,
    DeadLetterNotCreated,
    Unconfirmed,
}

/// What one bulk call remembers between its messages.
#[derive(Default)]
struct Bulk {
    /// The last topic's route: a bulk call is usually of one topic.
    last_route: Option<(Cow<'static, str>, Arc<topics::Route>)>,
    /// The partitions appended to, to flush at the end.
    touched: Vec<Arc<batcher::Batcher>>,
}

impl Bulk {
    fn route(&self, topic: &str) -> Option<Arc<topics::Route>> {
        match &self.last_route {
            Some((t, route)) if t == topic && !route.is_stale() => Some(Arc::clone(route)),
            _ => None,
        }
    }

    /// Remembers `batcher` to flush at the end of the call.
    fn touch(&mut self, batcher: &Arc<batcher::Batcher>) {
        if !self.touched.iter().any(|t| Arc::ptr_eq(t, batcher)) {
            self.touched.push(Arc::clone(batcher));
        }
    }
}

/// A record appended to a batch, waiting for the batch's answer.
struct Enqueued {
    partition: i32,
    outcome: Arc<outcome::Outcome>,
    index: usize,
}

impl Enqueued {
    /// Where the record landed, once its batch is answered. (The topic is
    /// the caller's: this future is in every publish in flight, so it holds
    /// no more than it must.) The batch is answered by its deadline
    /// (`expiry.rs`).
    async fn landed(self) -> Result<(i32, i64), ProduceError> {
        let offset = self.outcome.offset(self.index).await?;
        Ok((self.partition, offset))
    }
}

/// How far a typed publish got without waiting for anything.
enum FastPath<'r> {
    /// Appended to the batch of this partition's batcher.
    Enqueued(Enqueued, &'r Arc<batcher::Batcher>),
    /// Its first attempt failed already (too large, shutting down).
    Failed(ProduceError),
    /// It must wait (for metadata or for room): the general path.
    Slow,
}

impl EncodedMessage {
    /// The record as a batch writes it.
    pub(crate) fn record(&self) -> Record<'_, BTreeMap<String, Vec<u8>>> {
        Record {
            key: self.key.as_deref(),
            value: &self.value,
            headers: &self.headers,
        }
    }
}

/// Appends `message` to `placed` (its partition and batcher) if that has
/// room now.
fn append_now(
    message: &EncodedMessage,
    (partition, batcher): (i32, &Arc<batcher::Batcher>),
    bulk: Option<&mut Bulk>,
    deadline: Instant,
) -> Result<Option<Enqueued>, ProduceError> {
    let Some((outcome, index)) = batcher.try_append(&message.record(), deadline)? else {
        return Ok(None);
    };
    if let Some(b) = bulk {
        b.touch(batcher);
    }
    Ok(Some(Enqueued {
        partition,
        outcome,
        index,
    }))
}

/// A publish whose `delivery_timeout` ran out before its record found its
/// partition's leader or room in its queue: it was not sent.
fn not_enqueued(topic: &str) -> ProduceError {
    ProduceError::new(
        ProduceErrorKind::Timeout,
        true,
        format!(
            "delivery_timeout ran out before {topic} had a leader known or room for the record"
        ),
    )
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
struct InFlight<'a>(&'a Publisher);

impl Drop for InFlight<'_> {
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
            closed: AtomicBool::new(false),
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
    fn admit(&self) -> Result<InFlight<'_>, ProduceError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ProduceError::shutting_down());
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlight(self))
    }

    /// Publishes one encoded message: attempts by the retry policy, then the
    /// dead-letter topic, then hands the record back.
    pub(crate) async fn publish(&self, message: EncodedMessage) -> Result<Delivery, PublishError> {
        let _guard = match self.admit() {
            Ok(guard) => guard,
            Err(cause) => return Err(refused(cause, message)),
        };
        let deadline = self.deadline(Instant::now());
        match self.attempt(&message, true, deadline).await {
            Ok(delivery) => Ok(delivery),
            // Boxed: the rare path should not size every publish in flight.
            Err(err) => Box::pin(self.after_failure(message, err, deadline)).await,
        }
    }

    /// Publishes a typed message. The common case allocates nothing: the
    /// value is encoded into a per-thread scratch buffer and copied straight
    /// into its partition's batch, and the envelope headers are constants.
    /// Only when it must wait (no metadata yet, a full partition) or when
    /// its first attempt fails is an [`EncodedMessage`] built, for the
    /// general path (retries, dead letter, hand-back).
    pub(crate) async fn publish_typed<M: KafkaMessage>(
        &self,
        msg: &M,
        trace: &TraceHeaders,
    ) -> Result<Delivery, PublishError> {
        let _guard = match self.admit() {
            Ok(guard) => guard,
            Err(cause) => return Err(refused(cause, self.encode(msg, trace)?)),
        };
        let deadline = self.deadline(Instant::now());
        // The topic is not held while the answer is awaited: every publish
        // in flight holds this future, so it stays small.
        let route;
        let fast = {
            let topic = self.topic_of::<M>();
            route = match self.topics.fresh(&topic) {
                Some(route) => route,
                None => return Box::pin(self.publish(self.encode(msg, trace)?)).await,
            };
            self.try_enqueue(msg, &route, &topic, trace, deadline)?
        };
        let first = match fast {
            FastPath::Enqueued(e, _) => e.landed().await.map(|(partition, offset)| Delivery {
                topic: self.topic_of::<M>(),
                partition,
                offset,
            }),
            FastPath::Failed(err) => Err(err),
            FastPath::Slow => return Box::pin(self.publish(self.encode(msg, trace)?)).await,
        };
        match first {
            Ok(delivery) => Ok(delivery),
            Err(err) => Box::pin(self.after_failure(self.encode(msg, trace)?, err, deadline)).await,
        }
    }

    /// Appends a typed message to its partition's batch if that needs no
    /// waiting.
    fn try_enqueue<'r, M: KafkaMessage>(
        &self,
        msg: &M,
        route: &'r topics::Route,
        topic: &str,
        trace: &TraceHeaders,
        deadline: Instant,
    ) -> Result<FastPath<'r>, codec::EncodeError> {
        let envelope = codec::envelope_headers::<M>();
        // The envelope's names sort before the trace context's.
        let traced: Vec<(&str, &[u8])>;
        let headers: &[(&str, &[u8])] = if trace.is_empty() {
            &envelope
        } else {
            traced = envelope.into_iter().chain(trace.pairs()).collect();
            &traced
        };
        codec::with_record(msg, |key, value| {
            let record = Record {
                key,
                value,
                headers,
            };
            let placed = self
                .check_size(record.size(), true)
                .and_then(|()| self.place(route, topic, record.key));
            let (partition, batcher) = match placed {
                Ok(placed) => placed,
                Err(e) => return FastPath::Failed(e),
            };
            match batcher.try_append(&record, deadline) {
                Ok(Some((outcome, index))) => FastPath::Enqueued(
                    Enqueued {
                        partition,
                        outcome,
                        index,
                    },
                    batcher,
                ),
                Ok(None) => FastPath::Slow,
                Err(e) => FastPath::Failed(e),
            }
        })
    }

    /// Publishes many messages from one task: each is encoded and appended
    /// as it comes, as [`publish_typed`](Self::publish_typed) does, and only
    /// then are answers awaited, so they share batches without a future and
    /// a wake-up per message; the partitions touched are sent at once, not
    /// after the linger. Messages whose first attempt failed go on as
    /// single publishes (retries, dead letter, hand-back), together.
    /// Results are in the messages' order.
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
        let topic = self.topic_of::<M>();
        let mut bulk = Bulk::default();
        let mut steps = Vec::with_capacity(msgs.len());
        for msg in msgs {
            steps.push(match &guard {
                Err(cause) => Step::Done(match self.encode(msg, trace) {
                    Ok(m) => Err(refused(cause.clone(), m)),
                    Err(e) => Err(e.into()),
                }),
                Ok(_) => match self
                    .append_typed(msg, &topic, &mut bulk, trace, deadline)
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
        for batcher in &bulk.touched {
            batcher.flush();
        }
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
            let result = match self.encode(msg, trace) {
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

    /// Appends a typed message of a bulk call: on the typed path when its
    /// topic is known and its partition has room, otherwise as an encoded
    /// message (which waits). The inner error is the first attempt's.
    async fn append_typed<M: KafkaMessage>(
        &self,
        msg: &M,
        topic: &str,
        bulk: &mut Bulk,
        trace: &TraceHeaders,
        deadline: Instant,
    ) -> Result<Result<Enqueued, ProduceError>, codec::EncodeError> {
        if let Some(route) = bulk.route(topic) {
            match self.try_enqueue(msg, &route, topic, trace, deadline)? {
                FastPath::Enqueued(e, batcher) => {
                    bulk.touch(batcher);
                    return Ok(Ok(e));
                }
                FastPath::Failed(err) => return Ok(Err(err)),
                FastPath::Slow => {}
            }
        }
        let message = self.encode(msg, trace)?;
        Ok(self.enqueue(&message, true, Some(bulk), deadline).await)
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
            if self.wait_to_retry(delay).await.is_err() {
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

    /// `M`'s topic as this manager maps it.
    pub(crate) fn topic_of<M: KafkaMessage>(&self) -> Cow<'static, str> {
        self.config.topic_names.topic_of::<M>()
    }

    /// Encodes `msg` for its mapped topic, with the trace context.
    fn encode<M: KafkaMessage>(
        &self,
        msg: &M,
        trace: &TraceHeaders,
    ) -> Result<EncodedMessage, codec::EncodeError> {
        let mut message = codec::encode(msg)?;
        message.topic = self.topic_of::<M>();
        trace.write_into(&mut message.headers);
        Ok(message)
    }

    /// Counts a failure of `topic` for the log: `Some(n)` when a line is
    /// due, for `n` failures of the same topic, cause and outcome.
    fn admit_log(&self, topic: &str, err: &ProduceError, what: Failure) -> Option<u64> {
        self.log.admit((topic.to_string(), err.kind(), what))
    }

    /// Waits `delay` before another attempt; `Err` when the publisher began
    /// to shut down meanwhile: the message goes to the dead-letter path or
    /// back to the caller now.
    async fn wait_to_retry(&self, delay: Duration) -> Result<(), ()> {
        let mut closing = self.closing.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = crate::stop::until_stopped(&mut closing) => Err(()),
        }
    }

    /// One produce attempt through the partition's batcher, ended at
    /// `deadline` if not sent by then (and the request timeout later if
    /// sent and not answered).
    async fn attempt(
        &self,
        message: &EncodedMessage,
        enforce_size: bool,
        deadline: Instant,
    ) -> Result<Delivery, ProduceError> {
        // Two statements: the append's future is gone before the answer is
        // awaited (a temporary would live to the end of one statement).
        let enqueued = self.enqueue(message, enforce_size, None, deadline).await?;
        let (partition, offset) = enqueued.landed().await?;
        Ok(Delivery {
            topic: message.topic.clone(),
            partition,
            offset,
        })
    }

    /// Appends `message` to its partition's open batch, unless finding its
    /// partition or room there takes until `deadline`. In a bulk call,
    /// `bulk` keeps the last route and the batchers touched.
    async fn enqueue(
        &self,
        message: &EncodedMessage,
        enforce_size: bool,
        mut bulk: Option<&mut Bulk>,
        deadline: Instant,
    ) -> Result<Enqueued, ProduceError> {
        self.check_size(message.size(), enforce_size)?;
        let cached = match bulk.as_deref_mut() {
            Some(b) => b.route(&message.topic),
            None => self.topics.fresh(&message.topic),
        };
        if let Some(route) = cached {
            let placed = self.place(&route, &message.topic, message.key.as_deref())?;
            if let Some(enqueued) = append_now(message, placed, bulk.as_deref_mut(), deadline)? {
                return Ok(enqueued);
            }
        }
        // Boxed: the common case does not wait, and every publish in
        // flight holds this future.
        Box::pin(self.enqueue_waiting(message, bulk, deadline)).await
    }

    /// Appends `message` once its topic's partitions are known and its
    /// partition has room, or fails at `deadline`.
    async fn enqueue_waiting(
        &self,
        message: &EncodedMessage,
        mut bulk: Option<&mut Bulk>,
        deadline: Instant,
    ) -> Result<Enqueued, ProduceError> {
        let lookup = tokio::time::timeout_at(deadline, self.topics.route(&message.topic));
        let route = lookup.await.map_err(|_| not_enqueued(&message.topic))??;
        if let Some(b) = bulk.as_deref_mut() {
            b.last_route = Some((message.topic.clone(), Arc::clone(&route)));
        }
        let placed = self.place(&route, &message.topic, message.key.as_deref())?;
        loop {
            let room = placed.1.room();
            if let Some(enqueued) = append_now(message, placed, bulk.as_deref_mut(), deadline)? {
                return Ok(enqueued);
            }
            tokio::time::timeout_at(deadline, room)
                .await
                .map_err(|_| not_enqueued(&message.topic))?;
        }
    }

    /// Refuses a message over `max_message_bytes` (when `enforce`).
    fn check_size(&self, size: usize, enforce: bool) -> Result<(), ProduceError> {
        self.config.check_size(size, enforce)
    }

    /// The partition for `key` (`Partitioner::choose`) and its batcher.
    fn place<'r>(
        &self,
        route: &'r topics::Route,
        topic: &str,
        key: Option<&[u8]>,
    ) -> Result<(i32, &'r Arc<batcher::Batcher>), ProduceError> {
        let partitions = route.partitions();
        let partition = self
            .config
            .partitioner
            .choose(key, partitions, &self.round_robin);
        let batcher = route.batcher(partition).ok_or_else(|| {
            ProduceError::new(
                ProduceErrorKind::UnknownTopic,
                true,
                format!("partition {partition} of {topic} is not known"),
            )
        })?;
        Ok((partition, batcher))
    }

    /// Refuses new publishes, cuts retry waits short, and waits (at most
    /// `timeout`) until every publish in flight has returned. Returns how
    /// many were still in flight when the timeout ran out.
    pub(crate) async fn close(&self, timeout: Duration) -> usize {
        self.closed.store(true, Ordering::Release);
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
        let p = Publisher::new(cluster, ProducerConfig::default(), Arc::new(crate::NoRetry));
        let m = EncodedMessage {
            topic: "".into(),
            key: None,
            value: vec![],
            headers: Default::default(),
        };
        let now = Instant::now();
        eprintln!(
            "attempt {} enqueue {} route {}",
            std::mem::size_of_val(&p.attempt(&m, true, now)),
            std::mem::size_of_val(&p.enqueue(&m, true, None, now)),
            std::mem::size_of_val(&p.topics.route("x"))
        );
        let size = std::mem::size_of_val(&p.publish(m));
        eprintln!("publish future: {size} bytes");
        assert!(size <= 512, "publish future of {size} bytes");
        let trace = TraceHeaders::default();
        let typed = std::mem::size_of_val(&p.publish_typed(&Small(1), &trace));
        eprintln!("typed publish future: {typed} bytes");
        assert!(typed <= 320, "typed publish future of {typed} bytes");
    }
}
