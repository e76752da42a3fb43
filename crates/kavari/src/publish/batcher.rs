//! A partition's queue of unsent batches, and the handle publishers append
//! through. Publishes append their record to the open batch under a short
//! lock and wait for that batch's [`BatchOutcome`]. The sink of the partition's
//! leader (`sink.rs`) is woken by a batch's first record (and by a full
//! batch, a flush or a close) and takes the batch ([`Queue::take`]) at most
//! `linger` after its first record, once it holds `max_batch_bytes`, when
//! flushed, or along with another partition's batch that is due.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari_wire::record_batch::write::{Headers, Record, RecordBatch};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ProduceError;
use super::config::ProducerConfig;
use super::expiry::Expiry;
use super::outcome::BatchOutcome;

/// Batches a partition keeps in flight at once, as the Java
/// producer's `max.in.flight.requests.per.connection` default: a batch fills
/// while the ones before it travel, so throughput is not bound by the round
/// trip. The broker answers a connection's requests in order.
pub(super) const MAX_IN_FLIGHT: usize = 5;

/// Counters shared by every partition of a publisher.
#[derive(Debug, Default)]
pub(crate) struct ProduceCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
    /// Records of batches sent again (idempotent publishing).
    pub(crate) retried_records: AtomicU64,
    /// Bytes of unsent records in every partition of the manager, bounded
    /// by `buffer_memory`.
    pub(crate) queued_bytes: AtomicUsize,
}

/// A batch being filled or waiting to be taken.
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
    pub(super) outcome: Arc<BatchOutcome>,
}

/// The list of partitions a sink should look at, and its wake-up.
#[derive(Debug, Default)]
pub(super) struct Signal {
    slots: Mutex<Vec<usize>>,
    notify: Notify,
}

impl Signal {
    /// Puts `slot` on the list and wakes the sink.
    fn raise(&self, slot: usize) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
        self.notify.notify_one();
    }

    /// The slots raised since the last call.
    pub(super) fn raised(&self) -> Vec<usize> {
        std::mem::take(&mut *self.slots.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves at the next raise (or at once if one came since the last
    /// wait).
    pub(super) async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// How a queue wakes the sink that drains it: its slot there and the
/// sink's signal. A slot is raised once until the sink looks at it (a
/// publish appending to a busy partition costs an atomic, not a lock).
#[derive(Debug, Clone)]
pub(super) struct Waker {
    signal: Arc<Signal>,
    slot: usize,
    raised: Arc<AtomicBool>,
}

impl Waker {
    pub(super) fn new(signal: Arc<Signal>, slot: usize) -> Self {
        Self {
            signal,
            slot,
            raised: Arc::default(),
        }
    }

    /// The flag the sink lowers as it takes the slot from the signal.
    pub(super) fn raised(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.raised)
    }

    /// A handle to raise the slot with, unless it is raised already.
    fn to_raise(&self) -> Option<Waker> {
        (!self.raised.swap(true, Ordering::AcqRel)).then(|| self.clone())
    }

    fn raise(self) {
        self.signal.raise(self.slot);
    }
}

#[derive(Debug, Default)]
struct State {
    /// Unsent batches, oldest first; publishes append to the last.
    batches: VecDeque<OpenBatch>,
    queued: usize,
    /// The unsent batches' bytes.
    queued_bytes: usize,
    /// Publishers' handles ([`Batcher`]s) open on the queue: at none it is
    /// closed, and its sink sends what is left.
    handles: usize,
    closed: bool,
    /// Lowered after the broker refused a batch as too large.
    max_batch_bytes: usize,
    /// The size of the last batch sent: new batches start with room for as
    /// much, so they rarely grow.
    last_batch_bytes: usize,
    /// The sink draining the queue; `None` while its leader is looked up.
    waker: Option<Waker>,
}

impl State {
    /// Whether the oldest batch goes without waiting out its linger:
    /// full, flushed, with another behind it, or the queue closed.
    fn pressing(&self) -> bool {
        self.closed
            || self.batches.len() > 1
            || self
                .batches
                .front()
                .is_some_and(|b| b.flush || b.records.size() >= self.max_batch_bytes)
    }
}

/// What [`Queue::take`] found.
#[derive(Debug)]
pub(super) enum Take {
    /// The oldest batch, and whether it was due by itself (not only taken
    /// along with another partition's).
    Batch(OpenBatch, bool),
    /// A batch lingering until then.
    Later(Instant),
    /// Nothing queued.
    Empty,
}

/// A partition's unsent batches.
#[derive(Debug)]
pub(super) struct Queue {
    pub(super) topic: String,
    pub(super) partition: i32,
    /// The manager's counters: the unsent bytes of all partitions.
    counters: Arc<ProduceCounters>,
    state: Mutex<State>,
    /// Wakes publishes waiting for room (backpressure).
    space: Notify,
}

impl Queue {
    pub(super) fn new(
        topic: String,
        partition: i32,
        config: &ProducerConfig,
        counters: Arc<ProduceCounters>,
    ) -> Self {
        Self {
            topic,
            partition,
            counters,
            state: Mutex::new(State {
                max_batch_bytes: config.max_batch_bytes,
                ..State::default()
            }),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes batches at `bytes` from now on (or sooner, if already lower):
    /// the broker refused a batch as too large.
    pub(super) fn limit_batch_bytes(&self, bytes: usize) {
        let mut st = self.lock();
        st.max_batch_bytes = st.max_batch_bytes.min(bytes).max(1);
    }

    /// Hands the queue to a sink (`Some`) or takes it away (`None`, while
    /// the leader is looked up).
    pub(super) fn set_waker(&self, waker: Option<Waker>) {
        self.lock().waker = waker;
    }

    /// Wakes the queue's sink, if it has one.
    pub(super) fn wake(&self) {
        let waker = self.lock().waker.as_ref().and_then(Waker::to_raise);
        if let Some(w) = waker {
            w.raise();
        }
    }

    /// Whether the oldest batch goes without waiting out its linger (full,
    /// flushed, with another behind it, or the queue closed).
    pub(super) fn pressing(&self) -> bool {
        self.lock().pressing()
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.lock().batches.is_empty()
    }

    /// Whether no publisher holds the queue and nothing is left in it.
    pub(super) fn is_done(&self) -> bool {
        let st = self.lock();
        st.closed && st.batches.is_empty()
    }

    /// Takes the oldest batch if it is due (full, lingered, flushed, with
    /// another behind it, or the queue closed) or if `along` (another
    /// partition's batch is due); a batch its publishes gave up (expired) is
    /// dropped, never sent.
    pub(super) fn take(&self, now: Instant, linger: Duration, along: bool) -> Take {
        loop {
            let mut st = self.lock();
            let Some(front) = st.batches.front() else {
                return Take::Empty;
            };
            let due_at = front.first_at + linger;
            let due = st.pressing() || now >= due_at;
            if !due && !along {
                return Take::Later(due_at);
            }
            let Some(b) = st.batches.pop_front() else {
                return Take::Empty;
            };
            st.queued -= b.records.len();
            st.queued_bytes = st.queued_bytes.saturating_sub(b.records.size());
            sub_saturating(&self.counters.queued_bytes, b.records.size());
            let taken = b.outcome.take();
            if taken {
                st.last_batch_bytes = b.records.size();
            }
            drop(st);
            self.space.notify_waiters();
            if taken {
                return Take::Batch(b, due);
            }
            // Its publishes gave it up: never sent.
        }
    }

    /// Opens a publisher's handle on the queue (reopening it if the last
    /// handle closed it and its sink has not finished it yet).
    fn open_handle(&self) {
        let mut st = self.lock();
        st.handles += 1;
        st.closed = false;
    }
}

/// The publishers' handle on a partition's queue. Dropping the last handle
/// closes the queue: the sink sends what is left.
#[derive(Debug)]
pub(crate) struct Batcher {
    queue: Arc<Queue>,
    config: Arc<ProducerConfig>,
    expiry: Expiry,
}

impl Drop for Batcher {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.queue.lock();
            st.handles = st.handles.saturating_sub(1);
            st.closed = st.handles == 0;
            st.waker.as_ref().and_then(Waker::to_raise)
        };
        if let Some(w) = waker {
            w.raise();
        }
    }
}

impl Batcher {
    /// A publishers' handle on a partition's queue.
    pub(super) fn new(queue: Arc<Queue>, config: Arc<ProducerConfig>, expiry: Expiry) -> Self {
        queue.open_handle();
        Self {
            queue,
            config,
            expiry,
        }
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
    ) -> Result<Option<(Arc<BatchOutcome>, usize)>, ProduceError> {
        let queue = &self.queue;
        let bound = record.bound();
        let timestamp = now_ms();
        let mut st = queue.lock();
        if st.closed {
            return Err(ProduceError::shutting_down());
        }
        // A record larger than the byte bounds still goes, alone (and a
        // partition with nothing queued always takes one record, so the
        // manager-wide bound never starves a partition: its own sends free
        // the room it waits for).
        let manager_bytes = queue.counters.queued_bytes.load(Ordering::Relaxed);
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
            let records = RecordBatch::with_capacity(capacity).within(max.max(bound));
            st.batches.push_back(OpenBatch {
                records,
                first_at: Instant::now(),
                flush: false,
                deadline: None,
                outcome: Arc::new(BatchOutcome::default()),
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
        queue
            .counters
            .queued_bytes
            .fetch_add(grown, Ordering::Relaxed);
        let waker = match wake {
            true => st.waker.as_ref().and_then(Waker::to_raise),
            false => None,
        };
        drop(st);
        if sooner {
            self.expiry.watch(deadline, &outcome);
        }
        if let Some(w) = waker {
            w.raise();
        }
        Ok(Some((outcome, index)))
    }

    /// Sends the open batch without waiting out the linger.
    pub(crate) fn flush(&self) {
        let queue = &self.queue;
        let waker = {
            let mut st = queue.lock();
            if let Some(open) = st.batches.back_mut() {
                open.flush = true;
            }
            st.waker.as_ref().and_then(Waker::to_raise)
        };
        if let Some(w) = waker {
            w.raise();
        }
    }
}

/// Milliseconds since the Unix epoch: the records' create time.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

    /// A batch holding `bytes` of value.
    fn batch_of(bytes: usize) -> OpenBatch {
        let mut records = RecordBatch::with_capacity(1024);
        let value = vec![7u8; bytes];
        let headers: &[(&str, &[u8])] = &[];
        records.push(
            &Record {
                key: None,
                value: &value,
                headers,
            },
            0,
        );
        OpenBatch {
            records,
            first_at: Instant::now(),
            flush: false,
            deadline: None,
            outcome: Arc::default(),
        }
    }

    /// Only a full, flushed or closing batch, or one with another behind
    /// it, skips its linger: a lingering one waits (and keeps filling)
    /// while its sink has a request unanswered.
    #[test]
    fn a_batch_presses_when_full_flushed_followed_or_closing() {
        let state = |batches: Vec<OpenBatch>, closed: bool| State {
            batches: batches.into(),
            closed,
            max_batch_bytes: 1000,
            ..State::default()
        };
        assert!(!state(vec![], false).pressing(), "nothing queued");
        assert!(!state(vec![batch_of(10)], false).pressing(), "lingering");
        assert!(state(vec![batch_of(1000)], false).pressing(), "full");
        let mut flushed = batch_of(10);
        flushed.flush = true;
        assert!(state(vec![flushed], false).pressing(), "flushed");
        assert!(
            state(vec![batch_of(10), batch_of(10)], false).pressing(),
            "another behind it"
        );
        assert!(state(vec![batch_of(10)], true).pressing(), "closing");
    }
}
