//! `roundrobin`: all partitions, sorted, dealt to the sorted members in turn,
//! skipping members not subscribed to the partition's topic (Java's
//! `RoundRobinAssignor`).

use std::collections::BTreeMap;

use super::{Assignor, GroupAssignment, MemberSubscription, all_partitions, sorted_members};

/// The `roundrobin` assignor.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        members: &[MemberSubscription],
        partition_counts: &BTreeMap<String, i32>,
    ) -> GroupAssignment {
        let (sorted, mut out) = sorted_members(members);
        if sorted.is_empty() {
            return out;
        }
        let mut next = 0usize;
        for tp in all_partitions(members, partition_counts) {
            // Some member subscribes to this topic, or it would not be listed.
            for step in 0..sorted.len() {
                let m = sorted[(next + step) % sorted.len()];
                if m.subscription.topics.contains(&tp.topic) {
                    next = (next + step + 1) % sorted.len();
                    if let Some(parts) = out.get_mut(&m.member_id) {
                        parts.push(tp);
                    }
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    /// The Java `RoundRobinAssignor` docs: C0 gets t0p0, t0p2, t1p1; C1 gets
    /// t0p1, t1p0, t1p2.
    #[test]
    fn java_doc_example() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let a = RoundRobinAssignor.assign(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(a["C0"], [tp("t0", 0), tp("t0", 2), tp("t1", 1)]);
        assert_eq!(a["C1"], [tp("t0", 1), tp("t1", 0), tp("t1", 2)]);
    }

    /// The docs' unequal example: C0 [t0], C1 [t0, t1], C2 [t0, t1, t2] over
    /// 1, 2 and 3 partitions.
    #[test]
    fn java_doc_unequal_example() {
        let members = [
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1", "t2"]),
        ];
        let a = RoundRobinAssignor.assign(&members, &counts(&[("t0", 1), ("t1", 2), ("t2", 3)]));
        assert_eq!(a["C0"], [tp("t0", 0)]);
        assert_eq!(a["C1"], [tp("t1", 0)]);
        assert_eq!(
            a["C2"],
            [tp("t1", 1), tp("t2", 0), tp("t2", 1), tp("t2", 2)]
        );
    }

    #[test]
    fn generated_groups_are_valid_and_balanced() {
        assert_generated_groups_valid_and_balanced(&RoundRobinAssignor);
    }
}
