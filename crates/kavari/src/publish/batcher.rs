//! One queue and one sender task per partition. Publishes append their record
//! to the open batch under a short lock and wait for that batch's outcome;
//! the sender wakes once per batch, waits at most `linger` after the batch's
//! first record (or until it holds `max_batch_bytes`), and sends it as one
//! produce request. One request per partition is in flight at a time, so
//! records keep their order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::ProducerConfig;
use super::{ProduceError, ProduceErrorKind};
use crate::client::ClientHandle;

/// Bytes a record costs in a record batch beyond its key, value and headers
/// (lengths, attributes, deltas as varints): a bound, so batches stay under
/// the broker's `message.max.bytes`.
pub(crate) const RECORD_OVERHEAD: usize = 48;

/// rskafka (0.6) leaves Nagle's algorithm on and writes a request's 4-byte
/// length apart from its body whenever the request exceeds its 8 KiB write
/// buffer; the body then waits for the broker's delayed ACK. Measured on
/// loopback: a produce request of 9 to 64 KiB took 44 ms, of 8 KiB or of
/// 66 KiB and more 0.1 to 0.6 ms. A batch whose request would fall in that
/// range is sent as consecutive requests below it.
const NAGLE_SAFE_REQUEST: usize = 7 * 1024;
const NAGLE_DEAD_ZONE_END: usize = 66 * 1024;

/// Counters shared by every batcher of a publisher.
#[derive(Debug, Default)]
pub(crate) struct ProduceCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
}

/// What became of one batch: its offsets, or the error every record shares.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    result: OnceLock<Result<Vec<i64>, ProduceError>>,
    done: Notify,
}

impl Outcome {
    fn finish(&self, result: Result<Vec<i64>, ProduceError>) {
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
                    Ok(offsets) => offsets.get(index).copied().ok_or_else(|| {
                        ProduceError::new(
                            ProduceErrorKind::Broker,
                            true,
                            format!(
                                "the broker answered {} offsets; record {index} has none",
                                offsets.len()
                            ),
                        )
                    }),
                    Err(e) => Err(e.clone()),
                };
            }
            done.await;
        }
    }
}

#[derive(Debug)]
struct OpenBatch {
    records: Vec<Record>,
    bytes: usize,
    first_at: Instant,
    outcome: Arc<Outcome>,
}

#[derive(Debug, Default)]
struct State {
    /// Unsent batches, oldest first; publishes append to the last.
    batches: VecDeque<OpenBatch>,
    queued: usize,
    closed: bool,
    /// Lowered after the broker refused a batch as too large.
    max_batch_bytes: usize,
}

#[derive(Debug)]
struct Queue {
    topic: String,
    partition: i32,
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
        client: Arc<ClientHandle>,
        config: Arc<ProducerConfig>,
        counters: Arc<ProduceCounters>,
    ) -> Self {
        let queue = Arc::new(Queue {
            topic,
            partition,
            state: Mutex::new(State {
                max_batch_bytes: config.max_batch_bytes,
                ..State::default()
            }),
            work: Notify::new(),
            space: Notify::new(),
        });
        let sender = Sender {
            queue: Arc::clone(&queue),
            client,
            config: Arc::clone(&config),
            counters,
            partition_client: None,
        };
        tokio::spawn(sender.run());
        Self { queue, config }
    }

    /// Appends `record` to the open batch; returns the batch's outcome and
    /// the record's index in it. Waits while the partition already holds
    /// `queue_capacity` unsent records.
    pub(crate) async fn append(
        &self,
        record: Record,
        size: usize,
    ) -> Result<(Arc<Outcome>, usize), ProduceError> {
        let size = size + RECORD_OVERHEAD;
        let mut record = Some(record);
        loop {
            let space = self.queue.space.notified();
            {
                let mut st = self.queue.lock();
                if st.closed {
                    return Err(ProduceError::shutting_down());
                }
                if st.queued < self.config.queue_capacity {
                    let max = st.max_batch_bytes;
                    let needs_new = st
                        .batches
                        .back()
                        .is_none_or(|b| !b.records.is_empty() && b.bytes + size > max);
                    if needs_new {
                        st.batches.push_back(OpenBatch {
                            records: Vec::new(),
                            bytes: 0,
                            first_at: Instant::now(),
                            outcome: Arc::new(Outcome::default()),
                        });
                    }
                    st.queued += 1;
                    let many = st.batches.len() > 1;
                    let Some(batch) = st.batches.back_mut() else {
                        continue; // unreachable: pushed above
                    };
                    let index = batch.records.len();
                    if let Some(r) = record.take() {
                        batch.records.push(r);
                    }
                    batch.bytes += size;
                    let wake = index == 0 || batch.bytes >= max || many;
                    let outcome = Arc::clone(&batch.outcome);
                    drop(st);
                    if wake {
                        self.queue.work.notify_one();
                    }
                    return Ok((outcome, index));
                }
            }
            space.await;
        }
    }
}

struct Sender {
    queue: Arc<Queue>,
    client: Arc<ClientHandle>,
    config: Arc<ProducerConfig>,
    counters: Arc<ProduceCounters>,
    partition_client: Option<Arc<PartitionClient>>,
}

impl Sender {
    async fn run(mut self) {
        loop {
            let batch = loop {
                let work = self.queue.work.notified();
                let deadline = {
                    let mut st = self.queue.lock();
                    let closed = st.closed;
                    let max = st.max_batch_bytes;
                    let many = st.batches.len() > 1;
                    match st.batches.front() {
                        None if closed => return,
                        None => None,
                        Some(front) => {
                            let due = front.first_at + self.config.linger;
                            if many || closed || front.bytes >= max || Instant::now() >= due {
                                if let Some(b) = st.batches.pop_front() {
                                    st.queued -= b.records.len();
                                    drop(st);
                                    self.queue.space.notify_waiters();
                                    break b;
                                }
                                None
                            } else {
                                Some(due)
                            }
                        }
                    }
                };
                match deadline {
                    Some(due) => {
                        tokio::select! {
                            _ = work => {}
                            _ = tokio::time::sleep_until(due) => {}
                        }
                    }
                    None => work.await,
                }
            };
            self.send(batch).await;
        }
    }

    async fn send(&mut self, batch: OpenBatch) {
        let count = batch.records.len();
        tracing::trace!(partition = self.queue.partition, count, bytes = batch.bytes, waited = ?batch.first_at.elapsed(), "sending batch");
        let result = if batch.bytes > NAGLE_SAFE_REQUEST && batch.bytes < NAGLE_DEAD_ZONE_END {
            self.produce_in_chunks(batch.records).await
        } else {
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.produce(batch.records).await
        };
        match &result {
            Ok(offsets) if offsets.len() == count => {
                self.counters
                    .records
                    .fetch_add(count as u64, Ordering::Relaxed);
            }
            Ok(_) => {
                self.counters
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(topic = %self.queue.topic, partition = self.queue.partition, error = %e, "produce failed");
                if e.kind() == ProduceErrorKind::MessageTooLarge && count > 1 {
                    // The batch, not necessarily each record, was too large:
                    // send smaller batches; the publishes retry.
                    let mut st = self.queue.lock();
                    st.max_batch_bytes = (st.max_batch_bytes / 2).max(1);
                    drop(st);
                    batch.outcome.finish(Err(ProduceError::new(
                        ProduceErrorKind::Broker,
                        true,
                        format!("{e} (a batch of {count}; retrying in smaller batches)"),
                    )));
                    return;
                }
                if e.kind() != ProduceErrorKind::MessageTooLarge {
                    // The leader may have moved or the connection died.
                    self.partition_client = None;
                }
            }
        }
        batch.outcome.finish(result);
    }

    /// Sends `records` as consecutive requests of at most
    /// [`NAGLE_SAFE_REQUEST`] bytes each, in order; stops at the first error.
    async fn produce_in_chunks(&mut self, records: Vec<Record>) -> Result<Vec<i64>, ProduceError> {
        let mut offsets = Vec::with_capacity(records.len());
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let total = records.len();
        for (i, record) in records.into_iter().enumerate() {
            let size = record.approximate_size() + RECORD_OVERHEAD;
            if !chunk.is_empty() && bytes + size > NAGLE_SAFE_REQUEST {
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                offsets.extend(self.produce(std::mem::take(&mut chunk)).await?);
                bytes = 0;
            }
            bytes += size;
            chunk.push(record);
            if i + 1 == total {
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                offsets.extend(self.produce(std::mem::take(&mut chunk)).await?);
            }
        }
        Ok(offsets)
    }

    async fn produce(&mut self, records: Vec<Record>) -> Result<Vec<i64>, ProduceError> {
        let timeout = self.client.request_timeout();
        let pc = self.partition_client().await?;
        let what = format!("producing to {}/{}", self.queue.topic, self.queue.partition);
        match tokio::time::timeout(timeout, pc.produce(records, self.config.compression.into()))
            .await
        {
            Ok(Ok(offsets)) => Ok(offsets),
            Ok(Err(e)) => Err(ProduceError::from_rskafka(&what, &e)),
            Err(_) => Err(ProduceError::timeout(&what, timeout)),
        }
    }

    async fn partition_client(&mut self) -> Result<Arc<PartitionClient>, ProduceError> {
        if let Some(pc) = &self.partition_client {
            return Ok(Arc::clone(pc));
        }
        let client = self.client.get().await?;
        let (topic, partition) = (self.queue.topic.clone(), self.queue.partition);
        let what = format!("finding the leader of {topic}/{partition}");
        let timeout = self.client.request_timeout();
        let pc = match tokio::time::timeout(
            timeout,
            client.partition_client(topic, partition, UnknownTopicHandling::Error),
        )
        .await
        {
            Ok(Ok(pc)) => Arc::new(pc),
            Ok(Err(e)) => {
                let err = ProduceError::from_rskafka(&what, &e);
                if err.kind() == ProduceErrorKind::Connection {
                    self.client
                        .invalidate(&client, "partition leader unreachable")
                        .await;
                }
                return Err(err);
            }
            Err(_) => {
                self.client
                    .invalidate(&client, "partition leader lookup timed out")
                    .await;
                return Err(ProduceError::timeout(&what, timeout));
            }
        };
        self.partition_client = Some(Arc::clone(&pc));
        Ok(pc)
    }
}
