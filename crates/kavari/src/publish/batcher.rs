//! One queue and one sender task per partition. Publishes append their record
//! to the open batch under a short lock and wait for that batch's outcome;
//! the sender wakes once per batch, waits at most `linger` after the batch's
//! first record (or until it holds `max_batch_bytes`), or until another
//! partition of its broker has a batch due (`rounds.rs`), and hands it to
//! the leader's connection, which writes the batches handed to it together
//! as one produce request. Up to [`MAX_IN_FLIGHT`] batches per partition
//! travel at once, written in order on one connection, which the broker
//! answers in order. Idempotent (the default), a failed batch is sent again before
//! anything after it (`sequenced.rs`); without idempotence its publishes
//! retry behind later ones, as with the Java producer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kavari_wire::cluster::Cluster;
use kavari_wire::connection::Connection;
use kavari_wire::produce::PartitionProduce;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::ProducerConfig;
use super::producer_ids::ProducerIds;
use super::{ProduceError, ProduceErrorKind};
use crate::retry::RetryPolicy;
use kavari_wire::record_batch::write::{Headers, Record, RecordBatch};

/// Produce requests a partition keeps in flight at once, as the Java
/// producer's `max.in.flight.requests.per.connection` default: a batch fills
/// while the ones before it travel, so throughput is not bound by the round
/// trip. The broker answers a connection's requests in order.
pub(super) const MAX_IN_FLIGHT: usize = 5;

/// How long a partition keeps its spare batch buffer once it has nothing to
/// send: a busy partition reuses it batch after batch; an idle one gives it
/// back, so a producer of many partitions holds no buffers for quiet ones.
const SPARE_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Counters shared by every batcher of a publisher.
#[derive(Debug, Default)]
pub(crate) struct ProduceCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
    /// Records of batches a sender sent again (idempotent publishing).
    pub(crate) retried_records: AtomicU64,
    /// Bytes of unsent records in every partition of the manager, bounded
    /// by `buffer_memory`.
    pub(crate) queued_bytes: AtomicUsize,
}

/// What became of one batch: its base offset, or the error every record
/// shares.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    result: OnceLock<Result<i64, ProduceError>>,
    done: Notify,
}

impl Outcome {
    fn finish(&self, result: Result<i64, ProduceError>) {
        let _ = self.result.set(result);
        self.done.notify_waiters();
    }

    /// The offset of the record at `index` once the batch is answered.
    pub(crate) async fn offset(&self, index: usize) -> Result<i64, ProduceError> {
        loop {
            // Registered before the check: a finish in between still wakes us.
            let done = self.done.notified();
            if let Some(result) = self.result.get() {
                return match result {
                    // A duplicate the broker had written already: it does
                    // not say where (-1).
                    Ok(base) if *base < 0 => Ok(-1),
                    // Records of a batch take consecutive offsets.
                    Ok(base) => Ok(base + i64::try_from(index).unwrap_or(i64::MAX)),
                    Err(e) => Err(e.clone()),
                };
            }
            done.await;
        }
    }
}

#[derive(Debug)]
pub(super) struct OpenBatch {
    records: RecordBatch,
    first_at: Instant,
    /// Sent without waiting out the linger: its publisher has nothing more
    /// to add (a `publish_batch` call appended all it had).
    flush: bool,
    outcome: Arc<Outcome>,
}

#[derive(Debug, Default)]
struct State {
    /// Unsent batches, oldest first; publishes append to the last.
    batches: VecDeque<OpenBatch>,
    queued: usize,
    /// The unsent batches' bytes.
    queued_bytes: usize,
    closed: bool,
    /// Lowered after the broker refused a batch as too large.
    max_batch_bytes: usize,
    /// The size of the last batch sent: new batches start with room for as
    /// much, so they rarely grow.
    last_batch_bytes: usize,
    /// The buffer of a batch already written, for the next batch.
    spare: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(super) struct Queue {
    pub(super) topic: String,
    pub(super) partition: i32,
    /// The manager's counters: the unsent bytes of all partitions.
    counters: Arc<ProduceCounters>,
    state: Mutex<State>,
    /// Wakes the sender: a first record, a full batch, a close.
    work: Notify,
    /// Wakes publishes waiting for room (backpressure).
    space: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The publishers' handle on a partition's queue. Dropping the last handle
/// closes the queue: the sender sends what is left, then ends.
#[derive(Debug)]
pub(crate) struct Batcher {
    queue: Arc<Queue>,
    config: Arc<ProducerConfig>,
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.work.notify_one();
    }
}

impl Batcher {
    pub(crate) fn spawn(
        topic: String,
        partition: i32,
        leader: Option<i32>,
        producing: Arc<Producing>,
    ) -> Self {
        let config = Arc::clone(&producing.config);
        let queue = Arc::new(Queue {
            topic,
            partition,
            counters: Arc::clone(&producing.counters),
            state: Mutex::new(State {
                max_batch_bytes: config.max_batch_bytes,
                ..State::default()
            }),
            work: Notify::new(),
            space: Notify::new(),
        });
        let sender = Sender {
            topic_name: TopicName(StrBytes::from_string(queue.topic.clone())),
            queue: Arc::clone(&queue),
            round: leader.map(|id| producing.rounds.of(id)),
            producing,
            leader_id: leader,
            leader: None,
        };
        tokio::spawn(sender.run());
        Self { queue, config }
    }

    /// Resolves when a full partition may have room again: created before
    /// a [`try_append`](Self::try_append) that found none, awaited after.
    pub(crate) fn room(&self) -> tokio::sync::futures::Notified<'_> {
        self.queue.space.notified()
    }

    /// Encodes `record` into the open batch; returns the batch's outcome
    /// and the record's index in it, or `None` when the partition already
    /// holds `queue_capacity` unsent records or `queue_capacity_bytes` of
    /// them (wait for [`room`](Self::room)).
    pub(crate) fn try_append<H: Headers + ?Sized>(
        &self,
        record: &Record<'_, H>,
    ) -> Result<Option<(Arc<Outcome>, usize)>, ProduceError> {
        let bound = record.bound();
        let timestamp = now_ms();
        let mut st = self.queue.lock();
        if st.closed {
            return Err(ProduceError::shutting_down());
        }
        // A record larger than the byte bounds still goes, alone (and a
        // partition with nothing queued always takes one record, so the
        // manager-wide bound never starves a partition: its own sends free
        // the room it waits for).
        let manager_bytes = self.queue.counters.queued_bytes.load(Ordering::Relaxed);
        let no_room_for_bytes = st.queued > 0
            && (st.queued_bytes + bound > self.config.queue_capacity_bytes
                || manager_bytes + bound > self.config.buffer_memory);
        if st.queued >= self.config.queue_capacity || no_room_for_bytes {
            return Ok(None);
        }
        let max = st.max_batch_bytes;
        let needs_new = st
            .batches
            .back()
            .is_none_or(|b| !b.records.is_empty() && b.records.size() + bound > max);
        if needs_new {
            let capacity = st.last_batch_bytes.clamp(bound, max.max(bound));
            let records = RecordBatch::in_buffer(st.spare.take().unwrap_or_default(), capacity);
            st.batches.push_back(OpenBatch {
                records,
                first_at: Instant::now(),
                flush: false,
                outcome: Arc::new(Outcome::default()),
            });
        }
        st.queued += 1;
        let many = st.batches.len() > 1;
        let Some(batch) = st.batches.back_mut() else {
            return Ok(None); // unreachable: pushed above
        };
        let before = if needs_new { 0 } else { batch.records.size() };
        let index = batch.records.push(record, timestamp);
        let grown = batch.records.size() - before;
        let wake = index == 0 || batch.records.size() >= max || many;
        let outcome = Arc::clone(&batch.outcome);
        st.queued_bytes += grown;
        self.queue
            .counters
            .queued_bytes
            .fetch_add(grown, Ordering::Relaxed);
        drop(st);
        if wake {
            self.queue.work.notify_one();
        }
        Ok(Some((outcome, index)))
    }
}

impl Batcher {
    /// Sends the open batch without waiting out the linger.
    pub(crate) fn flush(&self) {
        if let Some(open) = self.queue.lock().batches.back_mut() {
            open.flush = true;
        }
        self.queue.work.notify_one();
    }
}

/// Milliseconds since the Unix epoch: the records' create time.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the publisher and every partition's sender share.
#[derive(Debug)]
pub(crate) struct Producing {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) config: Arc<ProducerConfig>,
    pub(crate) counters: Arc<ProduceCounters>,
    /// Retries of failed batches, when the senders retry them (idempotent
    /// publishing); otherwise the publisher retries publishes.
    pub(crate) retry: Arc<dyn RetryPolicy>,
    /// The producer identity; `None` when idempotence is off.
    pub(crate) ids: Option<ProducerIds>,
    /// Turns true when shutdown begins: batches waiting to be sent again
    /// are given back at once.
    pub(crate) closing: tokio::sync::watch::Receiver<bool>,
    /// Each broker's produce round.
    pub(crate) rounds: super::rounds::Rounds,
}

/// Sends one partition's batches.
pub(super) struct Sender {
    pub(super) queue: Arc<Queue>,
    pub(super) topic_name: TopicName,
    pub(super) producing: Arc<Producing>,
    /// The partition's leader as last seen; `None` means ask the cluster.
    leader_id: Option<i32>,
    leader: Option<Arc<Connection>>,
    /// The produce round of the leader last seen.
    pub(super) round: Option<Arc<Notify>>,
}

impl Sender {
    async fn run(self) {
        if self.producing.ids.is_some() {
            self.run_idempotent().await;
        } else {
            self.run_at_least_once().await;
        }
    }

    /// Sends batches as they come, up to [`MAX_IN_FLIGHT`] at once; a failed
    /// batch's publishes retry (in new batches, behind later ones).
    async fn run_at_least_once(mut self) {
        let queue = Arc::clone(&self.queue);
        let linger = self.producing.config.linger;
        let mut in_flight = FuturesOrdered::new();
        loop {
            let round = self.round.clone();
            tokio::select! {
                // Answers first: they free room and settle publishes.
                biased;
                Some((sent, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(sent, result);
                }
                next = next_batch(&queue, linger, round.as_deref()), if in_flight.len() < MAX_IN_FLIGHT => {
                    let Some((batch, due)) = next else { break };
                    if due {
                        self.call_round();
                    }
                    if let Some(answer) = self.start(batch).await {
                        in_flight.push_back(answer);
                    }
                }
            }
        }
        while let Some((sent, result)) = in_flight.next().await {
            self.settle(sent, result);
        }
    }

    /// Writes `batch` as a produce request to the partition's leader and
    /// returns its answer to come; a batch that could not be written is
    /// settled at once.
    async fn start(&mut self, batch: OpenBatch) -> Option<InFlight> {
        let (sent, records) = match self.finish(batch) {
            Ok(finished) => finished,
            Err((sent, e)) => {
                self.settle(sent, Err(e));
                return None;
            }
        };
        let records = Bytes::from(records);
        let written = self.write(Bytes::clone(&records)).await;
        self.recycle(Vec::from(records));
        match written {
            Ok(answer) => Some(Box::pin(async move { (sent, answer.await) })),
            Err(e) => {
                self.settle(sent, Err(e));
                None
            }
        }
    }

    /// Writes `batch`'s header and compresses it.
    #[allow(clippy::result_large_err)]
    pub(super) fn finish(&self, batch: OpenBatch) -> Result<(Sent, Vec<u8>), (Sent, ProduceError)> {
        let sent = Sent {
            count: batch.records.len(),
            bytes: batch.records.size(),
            outcome: Arc::clone(&batch.outcome),
            first_at: batch.first_at,
        };
        tracing::trace!(partition = self.queue.partition, count = sent.count, bytes = sent.bytes, waited = ?batch.first_at.elapsed(), "sending batch");
        match batch.records.finish(self.producing.config.compression) {
            Ok(records) => Ok((sent, records)),
            Err(e) => {
                let e = ProduceError::new(
                    ProduceErrorKind::Broker,
                    false,
                    format!("cannot compress a batch for {}: {e}", self.queue.topic),
                );
                Err((sent, e))
            }
        }
    }

    /// Tells every other partition of the leader to send what it holds
    /// along with the batch due now.
    pub(super) fn call_round(&self) {
        if let Some(round) = &self.round {
            round.notify_waiters();
        }
    }

    /// Hands `records` to the partition's leader's connection, to be
    /// written in a produce request; returns the batch's answer to come:
    /// its base offset or its error.
    pub(super) async fn write(&mut self, records: Bytes) -> Result<Answer, ProduceError> {
        let counters = Arc::clone(&self.producing.counters);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let what = format!("producing to {}/{}", self.queue.topic, self.queue.partition);
        let conn = self.leader().await?;
        let timeout = self.producing.cluster.request_timeout();
        let produce = PartitionProduce {
            topic: self.topic_name.clone(),
            partition: self.queue.partition,
            acks: -1,
            timeout_ms: i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
            records,
        };
        let answer = conn
            .send_produce(produce)
            .await
            .map_err(|e| ProduceError::from_wire(&what, &e))?;
        if answer.first_in_request() {
            counters.requests.fetch_add(1, Ordering::Relaxed);
        }
        let (topic, partition) = (self.topic_name.clone(), self.queue.partition);
        Ok(Box::pin(async move {
            match answer.await {
                Ok(resp) => base_offset(&resp, &topic, partition, &what),
                Err(e) => Err(ProduceError::from_wire(&what, &e)),
            }
        }))
    }

    /// Keeps the record batch's buffer for the next batch, once it is
    /// written: fresh memory for every batch costs page faults.
    pub(super) fn recycle(&self, records: Vec<u8>) {
        self.queue.lock().spare = Some(records);
    }

    /// Counts a failed produce request and forgets the leader unless the
    /// batch itself was at fault: it may have moved, or its connection died.
    pub(super) fn failed(&mut self, e: &ProduceError) {
        self.producing
            .counters
            .failed_requests
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(topic = %self.queue.topic, partition = self.queue.partition, error = %e, "produce failed");
        if e.kind() != ProduceErrorKind::MessageTooLarge {
            self.leader = None;
            self.leader_id = None;
            self.round = None;
        }
    }

    /// Hands a batch's result to its publishes, and adapts to the failure
    /// (counted with [`failed`](Self::failed) already when `counted`).
    pub(super) fn settle(&mut self, sent: Sent, result: Result<i64, ProduceError>) {
        self.settle_counted(sent, result, false);
    }

    pub(super) fn settle_counted(
        &mut self,
        sent: Sent,
        result: Result<i64, ProduceError>,
        counted: bool,
    ) {
        let Sent {
            count,
            bytes,
            outcome,
            ..
        } = sent;
        match &result {
            Ok(_) => {
                self.producing
                    .counters
                    .records
                    .fetch_add(count as u64, Ordering::Relaxed);
            }
            Err(e) => {
                if !counted {
                    self.failed(e);
                }
                if e.kind() == ProduceErrorKind::MessageTooLarge && count > 1 {
                    // The batch, not necessarily each record, was too large:
                    // send batches of half its size; the publishes retry.
                    // Relative to the batch, so the batches in flight with it
                    // that fail alike halve the limit once, not each again.
                    let mut st = self.queue.lock();
                    st.max_batch_bytes = st.max_batch_bytes.min(bytes / 2).max(1);
                    drop(st);
                    outcome.finish(Err(ProduceError::new(
                        ProduceErrorKind::Broker,
                        true,
                        format!("{e} (a batch of {count}; retrying in smaller batches)"),
                    )));
                    return;
                }
            }
        }
        outcome.finish(result);
    }

    /// The connection to the partition's leader, asking the cluster who
    /// leads it when that is not known.
    async fn leader(&mut self) -> Result<Arc<Connection>, ProduceError> {
        if let Some(c) = &self.leader
            && !c.is_broken()
        {
            return Ok(Arc::clone(c));
        }
        let (topic, partition) = (&self.queue.topic, self.queue.partition);
        let id = match self.leader_id {
            Some(id) => id,
            None => {
                let what = format!("finding the leader of {topic}/{partition}");
                let meta = self
                    .producing
                    .cluster
                    .topic(topic)
                    .await
                    .map_err(|e| ProduceError::from_wire(&what, &e))?;
                let p = meta
                    .as_ref()
                    .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
                    .ok_or_else(|| {
                        ProduceError::new(
                            ProduceErrorKind::UnknownTopic,
                            true,
                            format!("{what}: the cluster does not know the partition"),
                        )
                    })?;
                match (p.leader, p.error) {
                    (Some(id), _) => id,
                    (None, e) => {
                        return Err(ProduceError::from_code(
                            &what,
                            e.unwrap_or(kavari_wire::ResponseError::LeaderNotAvailable),
                            None,
                        ));
                    }
                }
            }
        };
        let conn = self.producing.cluster.broker(id).await.map_err(|e| {
            ProduceError::from_wire(
                &format!("connecting to the leader of {topic}/{partition}"),
                &e,
            )
        })?;
        if self.leader_id != Some(id) || self.round.is_none() {
            self.round = Some(self.producing.rounds.of(id));
        }
        self.leader_id = Some(id);
        self.leader = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

/// A produce request's answer to come: the batch's base offset or error.
pub(super) type Answer = Pin<Box<dyn Future<Output = Result<i64, ProduceError>> + Send>>;

/// A batch written and waiting for its answer.
type InFlight = Pin<Box<dyn Future<Output = (Sent, Result<i64, ProduceError>)> + Send>>;

/// What settling a sent batch needs.
pub(super) struct Sent {
    pub(super) count: usize,
    bytes: usize,
    outcome: Arc<Outcome>,
    /// When its first record came: `delivery_timeout` counts from here.
    pub(super) first_at: Instant,
}

/// The next batch to send: the oldest, once it is full, its linger is over,
/// another batch waits behind it, or the queue is closing (then it is due,
/// and the second of the pair is true), or once `round` calls for it
/// (another partition of its broker has a batch due). `None` once the queue
/// is closed and empty. Cancel-safe: it takes a batch only as it returns.
pub(super) async fn next_batch(
    queue: &Queue,
    linger: std::time::Duration,
    round: Option<&Notify>,
) -> Option<(OpenBatch, bool)> {
    let mut called = false;
    loop {
        let work = queue.work.notified();
        // Registered before the check: a round called in between counts.
        let mut next_round = std::pin::pin!(round.map(Notify::notified));
        if let Some(n) = next_round.as_mut().as_pin_mut() {
            n.enable();
        }
        let spare;
        let deadline = {
            let mut st = queue.lock();
            spare = st.spare.is_some();
            let closed = st.closed;
            let max = st.max_batch_bytes;
            let many = st.batches.len() > 1;
            match st.batches.front() {
                None if closed => return None,
                None => None,
                Some(front) => {
                    let due_at = front.first_at + linger;
                    let due = many
                        || closed
                        || front.flush
                        || front.records.size() >= max
                        || Instant::now() >= due_at;
                    if due || called {
                        if let Some(b) = st.batches.pop_front() {
                            st.queued -= b.records.len();
                            st.queued_bytes = st.queued_bytes.saturating_sub(b.records.size());
                            sub_saturating(&queue.counters.queued_bytes, b.records.size());
                            st.last_batch_bytes = b.records.size();
                            drop(st);
                            queue.space.notify_waiters();
                            return Some((b, due));
                        }
                        None
                    } else {
                        Some(due_at)
                    }
                }
            }
        };
        match deadline {
            Some(due) => {
                tokio::select! {
                    _ = work => {}
                    _ = tokio::time::sleep_until(due) => {}
                    () = async {
                        match next_round.as_mut().as_pin_mut() {
                            Some(n) => n.await,
                            None => std::future::pending().await,
                        }
                    } => called = true,
                }
            }
            None if spare => {
                if tokio::time::timeout(SPARE_IDLE, work).await.is_err() {
                    queue.lock().spare = None;
                }
            }
            None => work.await,
        }
    }
}

/// The offset the broker gave the batch's first record, or its error.
fn base_offset(
    resp: &ProduceResponse,
    topic: &TopicName,
    partition: i32,
    what: &str,
) -> Result<i64, ProduceError> {
    let answer = resp
        .responses
        .iter()
        .filter(|t| t.name == *topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == partition)
        .ok_or_else(|| {
            ProduceError::new(
                ProduceErrorKind::Broker,
                true,
                format!("{what}: the answer does not name the partition"),
            )
        })?;
    if let Some(e) = answer.error_code.err() {
        return Err(ProduceError::from_code(
            what,
            e,
            answer.error_message.as_ref().map(|m| m.as_str()),
        ));
    }
    Ok(answer.base_offset)
}

/// Takes `n` from `counter`, stopping at zero.
fn sub_saturating(counter: &AtomicUsize, n: usize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition with nothing to send keeps its spare buffer for a
    /// moment (the next batch reuses it) and then gives it back.
    #[tokio::test(start_paused = true)]
    async fn an_idle_partition_gives_its_spare_buffer_back() {
        let queue = Arc::new(Queue {
            counters: Arc::default(),
            topic: "t".into(),
            partition: 0,
            state: Mutex::new(State {
                spare: Some(Vec::with_capacity(512 * 1024)),
                ..State::default()
            }),
            work: Notify::new(),
            space: Notify::new(),
        });
        let q = Arc::clone(&queue);
        let sender = tokio::spawn(async move {
            next_batch(&q, std::time::Duration::from_millis(5), None)
                .await
                .is_none()
        });
        tokio::time::sleep(SPARE_IDLE / 2).await;
        assert!(queue.lock().spare.is_some(), "kept while briefly idle");
        tokio::time::sleep(SPARE_IDLE).await;
        assert!(queue.lock().spare.is_none(), "given back once idle");
        queue.lock().closed = true;
        queue.work.notify_one();
        assert!(sender.await.expect("sender"), "a closed, empty queue ends");
    }
}
