//! The owner of one broker's produce path, as the Java producer's sender:
//! one task per broker drains the queues of the partitions that broker
//! leads into one request (one batch a partition, each numbered by its
//! partition's state), writes it, and hands each partition its answer.
//! When one partition's batch is due (full, its linger over, flushed), the
//! other partitions send the batch they are filling along, so a broker gets
//! a request per linger, not one per partition per linger. A partition whose
//! batch fails in a way that may mean its leader moved leaves the sink and
//! looks its leader up again (`sinks.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{ProduceResponse, TopicName};
use kavari_wire::WireError;
use kavari_wire::connection::Connection;
use kavari_wire::produce::{MAX_REQUEST_BYTES, PartitionBatch, Produce};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ProduceError;
use super::ProduceErrorKind;
use super::batcher::{Signal, Waker};
use super::partition::{Leader, Partition, Step};
use super::producing::Producing;

/// Produce requests a sink keeps unanswered on its connection, as the Java
/// producer's `max.in.flight.requests.per.connection`. The broker reads a
/// connection's next request only once it answered the one before, so more
/// would only wait in its socket; held back here, the partitions' batches
/// keep filling and the next request carries them all. Past the first, a
/// request goes only for a batch that is full (or flushed, or closing):
/// see [`Sink::send`].
const MAX_REQUESTS_IN_FLIGHT: usize = 5;

/// What a sink asks of whoever places partitions (`sinks.rs`).
pub(super) trait Placement: Send + Sync + std::fmt::Debug {
    /// Ends `p`'s state if nothing is left of it (no publisher's handle,
    /// nothing unsent or unanswered); false when it goes on.
    fn retire(&self, p: &Arc<Partition>) -> bool;

    /// Looks `p`'s leader up again (it left its sink).
    fn relocate(self: Arc<Self>, p: Arc<Partition>);

    /// Ends the sink of broker `id` unless a partition came in meanwhile
    /// (then returns it, and the sink goes on).
    fn sink_ends(
        &self,
        id: i32,
        inbox: &mut mpsc::UnboundedReceiver<Arc<Partition>>,
    ) -> Result<(), Arc<Partition>>;
}

/// Starts the sink of broker `id`; partitions come through `inbox`.
pub(super) fn spawn(
    ctx: Arc<Producing>,
    placement: Arc<dyn Placement>,
    broker: i32,
    inbox: mpsc::UnboundedReceiver<Arc<Partition>>,
) {
    let sink = Sink {
        broker,
        ctx,
        placement,
        signal: Arc::new(Signal::default()),
        slots: Vec::new(),
        free: Vec::new(),
        held: 0,
        raised: Vec::new(),
        active: Vec::new(),
        marked: Vec::new(),
        inbox,
        answers: FuturesOrdered::new(),
        conn: None,
    };
    tokio::spawn(sink.run());
}

/// A request's answer, with the batches it carried.
struct Answered {
    batches: Vec<(Arc<Partition>, u64)>,
    result: Result<ProduceResponse, WireError>,
    /// When the request was written.
    written: Instant,
}

/// A batch taken to be written.
type Taken = (Arc<Partition>, u64, Bytes);

struct Sink {
    broker: i32,
    ctx: Arc<Producing>,
    placement: Arc<dyn Placement>,
    /// Raised by the partitions' queues (a record, a close) and answers.
    signal: Arc<Signal>,
    /// The partitions the broker leads; a partition's slot is its place.
    slots: Vec<Option<Arc<Partition>>>,
    free: Vec<usize>,
    /// How many slots hold a partition.
    held: usize,
    /// Each slot's raised flag, lowered as the sink takes the slot.
    raised: Vec<Arc<AtomicBool>>,
    /// The slots to look at in the next pass, once each.
    active: Vec<usize>,
    marked: Vec<bool>,
    inbox: mpsc::UnboundedReceiver<Arc<Partition>>,
    /// Requests written, in order (the broker answers in order).
    answers: FuturesOrdered<BoxFuture<'static, Answered>>,
    conn: Option<Arc<Connection>>,
}

impl Sink {
    async fn run(mut self) {
        let mut closing = self.ctx.closing.clone();
        let mut closing_seen = false;
        loop {
            while let Ok(p) = self.inbox.try_recv() {
                self.register(p);
            }
            for slot in self.signal.raised() {
                if let Some(raised) = self.raised.get(slot) {
                    raised.store(false, Ordering::Release);
                }
                self.mark(slot);
            }
            let next = self.send().await;
            if self.held == 0 && self.answers.is_empty() {
                match self.placement.sink_ends(self.broker, &mut self.inbox) {
                    Ok(()) => return,
                    Err(p) => {
                        self.register(p);
                        continue;
                    }
                }
            }
            tokio::select! {
                biased;
                Some(answered) = self.answers.next(), if !self.answers.is_empty() => {
                    self.answered(answered);
                }
                () = self.signal.wait() => {}
                Some(p) = self.inbox.recv() => self.register(p),
                () = sleep_until(next), if next.is_some() => {}
                () = crate::stop::until_stopped(&mut closing), if !closing_seen => {
                    // Partitions waiting to send again give up now.
                    closing_seen = true;
                    for slot in 0..self.slots.len() {
                        self.mark(slot);
                    }
                }
            }
        }
    }

    /// Takes `p` in: its queue now wakes this sink.
    fn register(&mut self, p: Arc<Partition>) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.marked.push(false);
                self.raised.push(Arc::default());
                self.slots.len() - 1
            }
        };
        p.set_leader(Leader::Broker {
            id: self.broker,
            slot,
        });
        let waker = Waker::new(Arc::clone(&self.signal), slot);
        self.raised[slot] = waker.raised();
        p.queue.set_waker(Some(waker));
        self.slots[slot] = Some(p);
        self.held += 1;
        self.mark(slot);
    }

    /// Lets go of the partition in `slot`.
    fn release(&mut self, slot: usize) -> Option<Arc<Partition>> {
        let p = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.held -= 1;
        Some(p)
    }

    fn mark(&mut self, slot: usize) {
        if let Some(marked) = self.marked.get_mut(slot)
            && !*marked
        {
            *marked = true;
            self.active.push(slot);
        }
    }

    /// Writes what the partitions have to send, pass after pass, until a
    /// pass finds nothing; returns when to look again.
    ///
    /// While a request is unanswered, the next one waits for its answer
    /// unless a batch is pressing (full, flushed, or its queue closing):
    /// lingered batches keep filling meanwhile, so a broker that answers
    /// slowly gets fewer and larger batches, and one that answers at once
    /// gets them at their linger. On the Kafka cluster, 100,000 records of
    /// 100 bytes over 64 partitions went from about 2,500 batches in 120
    /// requests to about 1,300 in 64, and from 175k to 215-235k records/s
    /// (kavari-load).
    async fn send(&mut self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        while !self.active.is_empty() && self.answers.len() < MAX_REQUESTS_IN_FLIGHT {
            if !self.answers.is_empty() && !self.any_pressing() {
                break;
            }
            let identity = match &self.ctx.ids {
                Some(ids) => ids.current().await,
                None => Ok(None),
            };
            let now = Instant::now();
            let active = std::mem::take(&mut self.active);
            let mut taken: Vec<Taken> = Vec::new();
            let mut lingering = Vec::new();
            let mut resend = Vec::new();
            let mut round = false;
            for &slot in &active {
                if let Some(m) = self.marked.get_mut(slot) {
                    *m = false;
                }
            }
            for slot in active {
                let Some(p) = self.slots.get(slot).cloned().flatten() else {
                    continue;
                };
                match p.step(&self.ctx, now, false, &identity) {
                    Step::Write { id, records, due } => {
                        round |= due;
                        taken.push((p, id, records));
                        self.mark(slot);
                    }
                    Step::Wait(at) => {
                        next = Some(next.map_or(at, |n| n.min(at)));
                        lingering.push((slot, p));
                    }
                    Step::Resend => {
                        resend.push(p);
                        self.mark(slot);
                    }
                    Step::Idle => {}
                    Step::Done => {
                        if self.placement.retire(&p) {
                            p.queue.set_waker(None);
                            self.release(slot);
                        } else {
                            self.mark(slot);
                        }
                    }
                }
            }
            if round {
                // A batch is due: the others go along.
                for (slot, p) in lingering {
                    if let Step::Write { id, records, .. } = p.step(&self.ctx, now, true, &identity)
                    {
                        taken.push((p, id, records));
                    }
                    self.mark(slot);
                }
            } else {
                // Looked at again when their time comes.
                for (slot, _) in lingering {
                    self.mark(slot);
                }
            }
            for p in &resend {
                renumber(&self.ctx, p).await;
            }
            if taken.is_empty() && resend.is_empty() {
                break;
            }
            self.write(taken).await;
        }
        next
    }

    /// Whether a partition to look at has a pressing batch.
    fn any_pressing(&self) -> bool {
        self.active.iter().any(|&slot| {
            self.slots
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|p| p.queue.pressing())
        })
    }

    /// Writes `taken` as requests of at most [`MAX_REQUEST_BYTES`] of
    /// records (a larger batch alone).
    async fn write(&mut self, taken: Vec<Taken>) {
        for request in requests(taken, |t| t.2.len(), MAX_REQUEST_BYTES) {
            self.write_request(request).await;
        }
    }

    async fn write_request(&mut self, taken: Vec<Taken>) {
        let timeout = self.ctx.cluster.request_timeout();
        let mut batches = Vec::with_capacity(taken.len());
        let mut request = Produce {
            transactional_id: None,
            acks: -1,
            timeout_ms: i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
            batches: Vec::with_capacity(taken.len()),
        };
        for (p, id, records) in taken {
            request.batches.push(PartitionBatch {
                topic: p.topic_name.clone(),
                partition: p.queue.partition,
                records,
            });
            batches.push((p, id));
        }
        tracing::trace!(
            broker = self.broker,
            batches = batches.len(),
            "writing a produce request"
        );
        let sent = match self.connection().await {
            Ok(conn) => conn.send_produce(&request).await.map_err(|e| (e, false)),
            Err(e) => Err((e, true)),
        };
        for (b, (p, id)) in request.batches.into_iter().zip(&batches) {
            p.written(&self.ctx, *id, b.records);
        }
        match sent {
            Ok(answer) => {
                let written = Instant::now();
                let counters = &self.ctx.counters;
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters
                    .batches
                    .fetch_add(batches.len() as u64, Ordering::Relaxed);
                self.answers.push_back(Box::pin(async move {
                    Answered {
                        batches,
                        result: answer.await,
                        written,
                    }
                }));
            }
            Err((e, connecting)) => {
                self.conn = None;
                for (p, id) in batches {
                    let what = match connecting {
                        true => format!("connecting to the leader of {}", p.name()),
                        false => format!("producing to {}", p.name()),
                    };
                    let e = ProduceError::from_wire(&what, &e);
                    self.settle(&p, id, Err(e));
                }
            }
        }
    }

    /// Hands each batch of an answered request its result.
    fn answered(&mut self, answered: Answered) {
        let Answered {
            batches,
            result,
            written,
        } = answered;
        tracing::debug!(
            broker = self.broker,
            batches = batches.len(),
            ms = written.elapsed().as_secs_f64() * 1e3,
            ok = result.is_ok(),
            "produce request answered"
        );
        for (p, id) in batches {
            let what = format!("producing to {}", p.name());
            let r = match &result {
                Ok(resp) => base_offset(resp, &p.topic_name, p.queue.partition, &what),
                Err(e) => Err(ProduceError::from_answer(&what, e)),
            };
            if result.is_err() {
                self.conn = None;
            }
            self.settle(&p, id, r);
        }
    }

    /// Hands `p` the result of its batch `id`; it leaves the sink if the
    /// failure may mean its leader moved.
    fn settle(&mut self, p: &Arc<Partition>, id: u64, result: Result<i64, ProduceError>) {
        let slot = match p.leader() {
            Leader::Broker { id, slot } if id == self.broker => slot,
            _ => {
                p.answered(&self.ctx, self.broker, id, result);
                return;
            }
        };
        if !p.answered(&self.ctx, self.broker, id, result) {
            self.mark(slot);
            return;
        }
        let ours = self
            .slots
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|held| Arc::ptr_eq(held, p));
        if ours && let Some(p) = self.release(slot) {
            Arc::clone(&self.placement).relocate(p);
        }
    }

    /// The connection to the broker, made again if it broke.
    async fn connection(&mut self) -> Result<Arc<Connection>, WireError> {
        if let Some(c) = &self.conn
            && !c.is_broken()
        {
            return Ok(Arc::clone(c));
        }
        let conn = self.ctx.cluster.broker(self.broker).await?;
        self.conn = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

/// Numbers `p`'s failed batches again, under a new producer identity
/// if their sequence must start again.
async fn renumber(ctx: &Producing, p: &Partition) {
    let Some((new_epoch, stale)) = p.resend_begin(ctx) else {
        return;
    };
    if let Some(ids) = &ctx.ids
        && (new_epoch || !ids.is_current(stale))
    {
        let identity = ids.replace(stale).await;
        if !p.resend_identity(ctx, identity) {
            return;
        }
    }
    p.renumber();
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
        // The broker's own timeout (replication took too long): the
        // leader may have written the batch.
        let maybe = matches!(
            e,
            kavari_wire::ResponseError::RequestTimedOut
                | kavari_wire::ResponseError::NetworkException
        );
        return Err(ProduceError::from_code(
            what,
            e,
            answer.error_message.as_ref().map(|m| m.as_str()),
        )
        .with_maybe_written(maybe));
    }
    Ok(answer.base_offset)
}

/// `batches` in order, cut into requests of at most `max` bytes each (as
/// `len` counts them); a batch larger than that goes alone.
fn requests<T>(batches: Vec<T>, len: impl Fn(&T) -> usize, max: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for b in batches {
        let n = len(&b);
        match out.last_mut() {
            Some(last) if !last.is_empty() && bytes + n <= max => {
                bytes += n;
                last.push(b);
            }
            _ => {
                bytes = n;
                out.push(vec![b]);
            }
        }
    }
    out
}

/// Resolves at `at`, or never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::requests;

    /// Batches fill a request up to the bound in order; one larger than the
    /// bound still goes, in a request of its own.
    #[test]
    fn requests_hold_at_most_the_bound_and_an_oversized_batch_alone() {
        let cut = |sizes: Vec<usize>| requests(sizes, |n| *n, 100);
        assert_eq!(cut(vec![60, 30, 10, 5]), [vec![60, 30, 10], vec![5]]);
        assert_eq!(cut(vec![10, 500, 10]), [vec![10], vec![500], vec![10]]);
        assert_eq!(cut(vec![100, 1]), [vec![100], vec![1]]);
        assert!(cut(vec![]).is_empty());
    }
}
