//! [`Window`]: the records of one partition taken for concurrent handling
//! and not yet finished, in offset order, with which of them may run now.
//!
//! Under key order a record waits while an earlier record with the same key
//! runs (records without a key share one queue, so they keep their order
//! among themselves); unordered, every record runs at once. The window
//! holds at most its limit of records, counted from the oldest unfinished
//! one: a record that takes long holds the window (and with it the
//! partition's fetching) at most that far ahead, and a crash re-handles at
//! most that many records. The position, the offset a commit may carry,
//! moves only past a contiguous run of finished records.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use kavari_wire::record_batch::read::FetchedRecord;
use tokio::time::Instant;

pub(crate) use crate::consume::config::Overlap;

/// A record taken into the window.
#[derive(Debug)]
struct Slot {
    /// The offset the position moves to once this slot and every one
    /// before it are finished.
    next: i64,
    /// The leader epoch the position then carries (`None`: unchanged).
    epoch: Option<i32>,
    finished: bool,
    /// When it was taken.
    taken: Instant,
}

/// The records of a partition between the position and the last record
/// taken.
#[derive(Debug)]
pub(crate) struct Window {
    overlap: Overlap,
    limit: usize,
    /// Records taken, oldest first; the front is the oldest unfinished
    /// one (finished ones leave from the front).
    slots: VecDeque<Slot>,
    /// The offset of the front slot's record.
    front: i64,
    /// Per key with a running record: the records waiting for it, oldest
    /// first (key order only).
    waiting: HashMap<Option<Bytes>, VecDeque<FetchedRecord>>,
}

impl Window {
    /// An empty window whose position is `position`, holding at most
    /// `limit` records (at least one).
    pub(crate) fn new(overlap: Overlap, limit: usize, position: i64) -> Self {
        Self {
            overlap,
            limit: limit.max(1),
            slots: VecDeque::new(),
            front: position,
            waiting: HashMap::new(),
        }
    }

    /// No more records may be taken until one finishes.
    pub(crate) fn is_full(&self) -> bool {
        self.slots.len() >= self.limit
    }

    /// Nothing taken is unfinished.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Records taken and not finished (running or waiting for their key).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// When the oldest unfinished record was taken.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.slots.front().map(|s| s.taken)
    }

    /// Takes `record` into the window: it is handed back when it may run
    /// now, or kept until the record of its key before it finishes.
    /// Call only when the window is not full.
    pub(crate) fn take(&mut self, record: FetchedRecord, now: Instant) -> Option<FetchedRecord> {
        if self.slots.is_empty() {
            self.front = record.offset;
        }
        self.slots.push_back(Slot {
            next: record.offset + 1,
            epoch: (record.leader_epoch >= 0).then_some(record.leader_epoch),
            finished: false,
            taken: now,
        });
        if self.overlap == Overlap::Keys {
            match self.waiting.entry(record.key.clone()) {
                Entry::Occupied(mut queue) => {
                    queue.get_mut().push_back(record);
                    return None;
                }
                Entry::Vacant(slot) => {
                    slot.insert(VecDeque::new());
                }
            }
        }
        Some(record)
    }

    /// The log moved under the partition (a reset): once every record
    /// taken before is finished, the position is `to`.
    pub(crate) fn skip_to(&mut self, to: i64, now: Instant) {
        if self.slots.is_empty() {
            self.front = to;
        }
        self.slots.push_back(Slot {
            next: to,
            epoch: None,
            finished: true,
            taken: now,
        });
    }

    /// The record at `offset` with `key` finished: hands back the next
    /// record of its key, which may run now.
    pub(crate) fn finish(&mut self, offset: i64, key: &Option<Bytes>) -> Option<FetchedRecord> {
        if let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| !s.finished && s.next == offset + 1)
        {
            slot.finished = true;
        }
        if self.overlap == Overlap::Any {
            return None;
        }
        let queue = self.waiting.get_mut(key)?;
        match queue.pop_front() {
            Some(next) => Some(next),
            None => {
                self.waiting.remove(key);
                None
            }
        }
    }

    /// Moves the position past the finished records at the front: the new
    /// position and the leader epoch of the last record passed, or `None`
    /// when the front record is still unfinished.
    pub(crate) fn advance(&mut self) -> Option<(i64, Option<i32>)> {
        let mut moved = None;
        while self.slots.front().is_some_and(|s| s.finished) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            let epoch = moved.and_then(|(_, e)| e);
            moved = Some((slot.next, slot.epoch.or(epoch)));
            self.front = slot.next;
        }
        moved
    }

    /// Drops the records waiting for their key: the partition stops, and
    /// only what runs is let finish.
    pub(crate) fn drop_waiting(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use kavari_wire::record_batch::read::RecordHeaders;

    use super::*;

    fn record(offset: i64, key: Option<&'static str>) -> FetchedRecord {
        FetchedRecord {
            offset,
            timestamp_ms: 0,
            key: key.map(|k| Bytes::from_static(k.as_bytes())),
            value: None,
            headers: RecordHeaders::default(),
            leader_epoch: 3,
        }
    }

    fn key(k: Option<&'static str>) -> Option<Bytes> {
        k.map(|k| Bytes::from_static(k.as_bytes()))
    }

    /// Records of one key run one after the other in offset order, other
    /// keys beside them; records without a key queue among themselves.
    #[test]
    fn records_of_a_key_wait_for_the_one_before() {
        let now = Instant::now();
        let mut w = Window::new(Overlap::Keys, 10, 0);
        let started: Vec<Option<i64>> = [
            (0, Some("a")),
            (1, Some("b")),
            (2, Some("a")),
            (3, None),
            (4, None),
            (5, Some("a")),
        ]
        .into_iter()
        .map(|(o, k)| w.take(record(o, k), now).map(|r| r.offset))
        .collect();
        assert_eq!(started, [Some(0), Some(1), None, Some(3), None, None]);
        assert_eq!(w.len(), 6, "running and waiting records are in the window");
        // "b" finishes: nothing of its key waits.
        assert!(w.finish(1, &key(Some("b"))).is_none());
        assert_eq!(w.advance(), None, "offset 0 still runs");
        // "a" at 0 finishes: its next record (2) may run, not 5.
        assert_eq!(w.finish(0, &key(Some("a"))).map(|r| r.offset), Some(2));
        assert_eq!(w.advance(), Some((2, Some(3))), "0 and 1 are finished");
        assert_eq!(w.finish(3, &None).map(|r| r.offset), Some(4));
        assert_eq!(w.finish(2, &key(Some("a"))).map(|r| r.offset), Some(5));
        assert_eq!(w.advance(), Some((4, Some(3))));
        assert_eq!(w.finish(5, &key(Some("a"))).map(|r| r.offset), None);
        assert_eq!(w.advance(), None, "4 still runs");
        assert!(w.finish(4, &None).is_none());
        assert_eq!(w.advance(), Some((6, Some(3))));
        assert!(w.is_empty());
        // A key that finished is free again.
        assert!(w.take(record(6, Some("a")), now).is_some());
    }

    /// The window is full at its limit of records counted from the oldest
    /// unfinished one, however many after it finished.
    #[test]
    fn the_window_counts_from_the_oldest_unfinished_record() {
        let now = Instant::now();
        let mut w = Window::new(Overlap::Any, 3, 10);
        for o in 10..13 {
            assert!(
                w.take(record(o, Some("k")), now).is_some(),
                "unordered runs all"
            );
        }
        assert!(w.is_full());
        w.finish(11, &key(Some("k")));
        w.finish(12, &key(Some("k")));
        assert_eq!(w.advance(), None);
        assert!(w.is_full(), "10 still runs: nothing past 12 is taken");
        w.finish(10, &key(Some("k")));
        assert_eq!(w.advance(), Some((13, Some(3))));
        assert!(!w.is_full() && w.is_empty());
    }

    /// A reset moves the position once the records before it finished.
    #[test]
    fn a_reset_applies_after_the_records_taken_before_it() {
        let now = Instant::now();
        let mut w = Window::new(Overlap::Keys, 4, 0);
        assert!(w.take(record(0, Some("a")), now).is_some());
        w.skip_to(100, now);
        assert_eq!(w.advance(), None);
        w.finish(0, &key(Some("a")));
        assert_eq!(w.advance(), Some((100, Some(3))));
        // On an empty window a reset moves the position at once.
        w.skip_to(200, now);
        assert_eq!(w.advance(), Some((200, None)));
    }

    /// The oldest unfinished record's age is kept; at least one record
    /// fits in a window of limit 0.
    #[test]
    fn the_oldest_record_and_a_zero_limit() {
        let t0 = Instant::now();
        let mut w = Window::new(Overlap::Keys, 0, 0);
        assert!(!w.is_full());
        assert!(w.take(record(0, None), t0).is_some());
        assert!(w.is_full());
        assert_eq!(w.oldest(), Some(t0));
        assert_eq!(w.len(), 1);
    }
}
