//! One queue per partition, and the handle publishers append through.
//! Publishes append their record to the open batch under a short lock and
//! wait for that batch's outcome; the partition's sender (`sender.rs`)
//! wakes once per batch and takes it ([`next_batch`]) at most `linger`
//! after its first record, once it holds `max_batch_bytes`, or when another
//! partition of its broker has a batch due (`rounds.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kavari_wire::record_batch::write::{Headers, Record, RecordBatch};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ProduceError;
use super::config::ProducerConfig;
use super::expiry::Expiry;

/// Batches a partition keeps in flight at once, as the Java
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
/// shares; and how far it got, so a publish whose time ran out knows
/// whether its batch can still be stopped.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    result: OnceLock<Result<i64, ProduceError>>,
    done: Notify,
    /// [`QUEUED`], [`TAKEN`] or [`EXPIRED`].
    stage: AtomicU8,
}

/// In its partition's queue: a publish whose time ran out may expire it.
const QUEUED: u8 = 0;
/// Taken by its sender to be written: its outcome comes from the broker.
const TAKEN: u8 = 1;
/// Expired in the queue: never sent, its sender drops it.
const EXPIRED: u8 = 2;

impl Outcome {
    pub(super) fn finish(&self, result: Result<i64, ProduceError>) {
        let _ = self.result.set(result);
        self.done.notify_waiters();
    }

    /// Ends the batch with `error` unless its sender took it already: true
    /// when it will never be sent.
    pub(crate) fn expire(&self, error: ProduceError) -> bool {
        let expired = self
            .stage
            .compare_exchange(QUEUED, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if expired {
            self.finish(Err(error));
        }
        expired
    }

    /// Claims the batch for sending: false when it expired first.
    pub(super) fn take(&self) -> bool {
        self.stage
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn is_expired(&self) -> bool {
        self.stage.load(Ordering::Acquire) == EXPIRED
    }

    /// Whether the batch's publishes have their answer.
    pub(super) fn is_finished(&self) -> bool {
        self.result.get().is_some()
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
    pub(super) records: RecordBatch,
    pub(super) first_at: Instant,
    /// Sent without waiting out the linger: its publisher has nothing more
    /// to add (a `publish_batch` call appended all it had).
    flush: bool,
    /// The earliest delivery deadline of its records (`None` while it has
    /// none).
    deadline: Option<Instant>,
    pub(super) outcome: Arc<Outcome>,
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

    /// Keeps the record batch buffer of a batch written, for the next
    /// batch: fresh memory for every batch costs page faults.
    pub(super) fn keep_spare(&self, records: Vec<u8>) {
        self.lock().spare = Some(records);
    }

    /// Closes batches at `bytes` from now on (or sooner, if already lower):
    /// the broker refused a batch as too large.
    pub(super) fn limit_batch_bytes(&self, bytes: usize) {
        let mut st = self.lock();
        st.max_batch_bytes = st.max_batch_bytes.min(bytes).max(1);
    }
}

/// The publishers' handle on a partition's queue. Dropping the last handle
/// closes the queue: the sender sends what is left, then ends.
#[derive(Debug)]
pub(crate) struct Batcher {
    queue: Arc<Queue>,
    config: Arc<ProducerConfig>,
    expiry: Expiry,
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.work.notify_one();
    }
}

impl Batcher {
    /// A partition's queue and its publishers' handle; its sender
    /// (`sender.rs`) drains the queue.
    pub(super) fn new(
        topic: String,
        partition: i32,
        config: Arc<ProducerConfig>,
        counters: Arc<ProduceCounters>,
        expiry: Expiry,
    ) -> (Self, Arc<Queue>) {
        let queue = Arc::new(Queue {
            topic,
            partition,
            counters,
            state: Mutex::new(State {
                max_batch_bytes: config.max_batch_bytes,
                ..State::default()
            }),
            work: Notify::new(),
            space: Notify::new(),
        });
        (
            Self {
                queue: Arc::clone(&queue),
                config,
                expiry,
            },
            queue,
        )
    }

    /// Resolves when a full partition may have room again: created before
    /// a [`try_append`](Self::try_append) that found none, awaited after.
    pub(crate) fn room(&self) -> tokio::sync::futures::Notified<'_> {
        self.queue.space.notified()
    }

    /// Encodes `record`, due by `deadline`, into the open batch; returns
    /// the batch's outcome and the record's index in it, or `None` when the
    /// partition already holds `queue_capacity` unsent records or
    /// `queue_capacity_bytes` of them (wait for [`room`](Self::room)).
    pub(crate) fn try_append<H: Headers + ?Sized>(
        &self,
        record: &Record<'_, H>,
        deadline: Instant,
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
        let needs_new = st.batches.back().is_none_or(|b| {
            b.outcome.is_expired() || !b.records.is_empty() && b.records.size() + bound > max
        });
        if needs_new {
            let capacity = st.last_batch_bytes.clamp(bound, max.max(bound));
            let records = RecordBatch::in_buffer(st.spare.take().unwrap_or_default(), capacity);
            st.batches.push_back(OpenBatch {
                records,
                first_at: Instant::now(),
                flush: false,
                deadline: None,
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
        // A batch is watched for the earliest deadline of its records (a
        // publish that waited for room may be due before the batch's first).
        let sooner = batch.deadline.is_none_or(|d| deadline < d);
        if sooner {
            batch.deadline = Some(deadline);
        }
        st.queued_bytes += grown;
        self.queue
            .counters
            .queued_bytes
            .fetch_add(grown, Ordering::Relaxed);
        drop(st);
        if sooner {
            self.expiry.watch(deadline, &outcome);
        }
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
                            if !b.outcome.take() {
                                // Its publishes gave it up: never sent.
                                drop(st);
                                drop(b);
                                queue.space.notify_waiters();
                                continue;
                            }
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
