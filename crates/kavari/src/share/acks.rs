//! Acknowledgements of a share session: what became of each acquired
//! record, batched per partition into the ranges ShareFetch and
//! ShareAcknowledge carry.

use std::collections::BTreeMap;

use kavari_group::TopicPartition;

/// What becomes of an acquired record (the protocol's acknowledge types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ack {
    /// An offset the acquired range holds no record for (a transaction
    /// marker, a compacted record).
    Gap = 0,
    /// Handled: done with for good.
    Accept = 1,
    /// Given back: delivered again (to any member), counting a delivery.
    Release = 2,
    /// Not to be delivered again.
    Reject = 3,
}

/// An acknowledgement batch: offsets `first..=last`, all of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) ack: Ack,
}

/// Acknowledgements not sent yet, by partition and offset.
#[derive(Debug, Default)]
pub(crate) struct Pending(BTreeMap<TopicPartition, BTreeMap<i64, Ack>>);

impl Pending {
    pub(crate) fn add(&mut self, tp: TopicPartition, offset: i64, ack: Ack) {
        self.0.entry(tp).or_default().insert(offset, ack);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes everything, each partition's offsets as ranges of one type.
    pub(crate) fn take(&mut self) -> BTreeMap<TopicPartition, Vec<Batch>> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|(tp, offsets)| (tp, ranges(&offsets)))
            .collect()
    }
}

/// Consecutive offsets of one type joined into ranges.
fn ranges(offsets: &BTreeMap<i64, Ack>) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    for (&offset, &ack) in offsets {
        match out.last_mut() {
            Some(b) if b.ack == ack && b.last + 1 == offset => b.last = offset,
            _ => out.push(Batch {
                first: offset,
                last: offset,
                ack,
            }),
        }
    }
    out
}

/// The offsets of acquired ranges (`first..=last`) that `seen` holds no
/// record for: gaps, acknowledged as such.
pub(crate) fn gaps(acquired: &[(i64, i64)], seen: &std::collections::BTreeSet<i64>) -> Vec<i64> {
    acquired
        .iter()
        .flat_map(|&(first, last)| first..=last)
        .filter(|o| !seen.contains(o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_offsets_of_one_type_make_one_range() {
        let tp = TopicPartition::new("t", 0);
        let mut p = Pending::default();
        for o in [5, 3, 4, 6] {
            p.add(tp.clone(), o, Ack::Accept);
        }
        p.add(tp.clone(), 7, Ack::Release);
        p.add(tp.clone(), 9, Ack::Accept);
        let taken = p.take();
        assert_eq!(
            taken[&tp],
            vec![
                Batch {
                    first: 3,
                    last: 6,
                    ack: Ack::Accept
                },
                Batch {
                    first: 7,
                    last: 7,
                    ack: Ack::Release
                },
                Batch {
                    first: 9,
                    last: 9,
                    ack: Ack::Accept
                },
            ]
        );
        assert!(p.is_empty(), "taken once");
    }

    #[test]
    fn offsets_without_a_record_are_gaps() {
        let seen = [10, 12, 20].into_iter().collect();
        assert_eq!(gaps(&[(10, 13), (20, 20)], &seen), vec![11, 13]);
    }
}
