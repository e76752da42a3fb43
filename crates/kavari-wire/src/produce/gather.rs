//! Batches waiting for a connection's writer. Whoever holds the writer
//! next takes every waiting batch that may share its request: the oldest,
//! and after it those with the same `acks` and timeout, one per partition,
//! up to [`MAX_GATHERED_BYTES`](super::MAX_GATHERED_BYTES). A partition's
//! later batch never passes an earlier one: it waits for the next request,
//! which the broker handles after this one.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use kafka_protocol::messages::{ProduceResponse, TopicName};
use tokio::sync::oneshot;

use super::PartitionProduce;
use crate::WireError;

/// The answer of a written request, shared by every batch it carried.
pub(crate) type SharedAnswer = Shared<BoxFuture<'static, Result<Arc<ProduceResponse>, WireError>>>;

/// A batch's request, once written.
#[derive(Clone)]
pub(crate) struct Written {
    /// The request's answer to come.
    pub(crate) answer: SharedAnswer,
    /// Whether the batch was the first of its request (one per request
    /// counts it).
    pub(crate) first: bool,
}

/// A batch waiting to be written, and where to say that it was.
pub(crate) struct Waiting {
    id: u64,
    pub(crate) produce: PartitionProduce,
    written: oneshot::Sender<Result<Written, WireError>>,
}

impl Waiting {
    /// Tells the batch's sender that its request was written (or not).
    pub(crate) fn written(self, result: Result<Written, WireError>) {
        // The sender may have given up waiting; the request went anyway.
        let _ = self.written.send(result);
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("id", &self.id)
            .field("topic", &self.produce.topic.0.as_str())
            .field("partition", &self.produce.partition)
            .field("bytes", &self.produce.records.len())
            .finish()
    }
}

/// The batches waiting for one connection's writer, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    next_id: u64,
    waiting: VecDeque<Waiting>,
}

impl Gather {
    /// Queues `produce`; `written` hears when its request is written.
    /// Returns the batch's id.
    pub(crate) fn push(
        &mut self,
        produce: PartitionProduce,
        written: oneshot::Sender<Result<Written, WireError>>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back(Waiting {
            id,
            produce,
            written,
        });
        id
    }

    /// Whether batch `id` still waits (no writer took it yet).
    pub(crate) fn is_waiting(&self, id: u64) -> bool {
        self.waiting.iter().any(|w| w.id == id)
    }

    /// Takes batch `id` back, unwritten (its sender gave up).
    pub(crate) fn remove(&mut self, id: u64) {
        self.waiting.retain(|w| w.id != id);
    }

    /// Drops every waiting batch: their senders hear that the connection
    /// broke.
    pub(crate) fn clear(&mut self) {
        self.waiting.clear();
    }

    /// Takes the batches of the next request (see the module's docs);
    /// empty when nothing waits.
    pub(crate) fn take(&mut self, max_bytes: usize) -> Vec<Waiting> {
        let Some(first) = self.waiting.pop_front() else {
            return Vec::new();
        };
        let mut bytes = first.produce.records.len();
        // Partitions with a batch taken or left waiting: a later batch of
        // theirs waits too.
        let mut seen: HashSet<(TopicName, i32)> = HashSet::new();
        seen.insert(first.produce.key());
        let mut taken = vec![first];
        let mut at = 0;
        while at < self.waiting.len() {
            let p = &self.waiting[at].produce;
            let first_of_its_partition = seen.insert(p.key());
            let fits = bytes + p.records.len() <= max_bytes;
            if first_of_its_partition && fits && taken[0].produce.joins(p) {
                bytes += p.records.len();
                if let Some(w) = self.waiting.remove(at) {
                    taken.push(w);
                }
            } else {
                at += 1;
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn batch(topic: &str, partition: i32, bytes: usize, acks: i16) -> PartitionProduce {
        PartitionProduce {
            topic: TopicName(StrBytes::from_string(topic.to_string())),
            partition,
            acks,
            timeout_ms: 30_000,
            records: Bytes::from(vec![0u8; bytes]),
        }
    }

    fn names(taken: &[Waiting]) -> Vec<(String, i32)> {
        taken
            .iter()
            .map(|w| (w.produce.topic.0.to_string(), w.produce.partition))
            .collect()
    }

    fn gather(
        batches: Vec<PartitionProduce>,
    ) -> (Gather, Vec<oneshot::Receiver<Result<Written, WireError>>>) {
        let mut g = Gather::default();
        let rx = batches
            .into_iter()
            .map(|b| {
                let (tx, rx) = oneshot::channel();
                g.push(b, tx);
                rx
            })
            .collect();
        (g, rx)
    }

    #[test]
    fn a_request_takes_one_batch_of_each_partition_in_order() {
        let (mut g, _rx) = gather(vec![
            batch("a", 0, 10, -1),
            batch("b", 0, 10, -1),
            batch("a", 0, 10, -1), // a/0 again: the next request
            batch("a", 1, 10, -1),
        ]);
        assert_eq!(
            names(&g.take(1 << 20)),
            [("a".into(), 0), ("b".into(), 0), ("a".into(), 1)]
        );
        assert_eq!(names(&g.take(1 << 20)), [("a".into(), 0)]);
        assert!(g.take(1 << 20).is_empty());
    }

    /// A batch left out for room holds its partition's later batches back:
    /// they must not reach the log before it.
    #[test]
    fn a_batch_left_out_holds_its_partition_back() {
        let (mut g, _rx) = gather(vec![
            batch("a", 0, 60, -1),
            batch("a", 1, 60, -1), // no room
            batch("a", 1, 10, -1), // room, but behind a/1's first
            batch("a", 2, 30, -1),
        ]);
        assert_eq!(names(&g.take(100)), [("a".into(), 0), ("a".into(), 2)]);
        assert_eq!(names(&g.take(100)), [("a".into(), 1)]);
        assert_eq!(names(&g.take(100)), [("a".into(), 1)]);
        assert!(g.take(100).is_empty());
    }

    /// A batch larger than the bound still goes, alone; one asking other
    /// acknowledgements waits for a request of its own.
    #[test]
    fn oversized_and_unlike_batches_go_in_requests_of_their_own() {
        let (mut g, _rx) = gather(vec![
            batch("a", 0, 500, -1),
            batch("a", 1, 10, 1),
            batch("a", 2, 10, -1),
        ]);
        assert_eq!(names(&g.take(100)), [("a".into(), 0)]);
        assert_eq!(names(&g.take(100)), [("a".into(), 1)]);
        assert_eq!(names(&g.take(100)), [("a".into(), 2)]);
    }

    #[test]
    fn a_removed_batch_is_not_written_and_a_cleared_one_hears_so() {
        let (mut g, mut rx) = gather(vec![batch("a", 0, 1, -1), batch("a", 1, 1, -1)]);
        assert!(g.is_waiting(0));
        g.remove(0);
        assert!(!g.is_waiting(0));
        g.clear();
        assert!(!g.is_waiting(1));
        assert!(rx[1].try_recv().is_err(), "its sender is gone");
        assert!(g.take(100).is_empty());
    }
}
