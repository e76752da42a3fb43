//! `range`: per topic, consecutive ranges of partitions to the sorted members
//! subscribed to it (Java's `RangeAssignor`, the default).

use std::collections::BTreeMap;

use super::{Assignor, GroupAssignment, MemberSubscription, sorted_members};
use crate::TopicPartition;

/// The `range` assignor.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        members: &[MemberSubscription],
        partition_counts: &BTreeMap<String, i32>,
    ) -> GroupAssignment {
        let (sorted, mut out) = sorted_members(members);
        for (topic, &count) in partition_counts {
            let consumers: Vec<_> = sorted
                .iter()
                .filter(|m| m.subscription.topics.contains(topic))
                .collect();
            if consumers.is_empty() || count <= 0 {
                continue;
            }
            let n = consumers.len() as i32;
            let (per, extra) = (count / n, count % n);
            for (i, m) in consumers.iter().enumerate() {
                let i = i as i32;
                let start = per * i + i.min(extra);
                let len = per + i32::from(i < extra);
                if let Some(parts) = out.get_mut(&m.member_id) {
                    parts.extend(
                        (start..start + len).map(|p| TopicPartition::new(topic.clone(), p)),
                    );
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

    /// The example from the Java `RangeAssignor` docs: C0 gets t0p0, t0p1,
    /// t1p0, t1p1; C1 gets t0p2, t1p2.
    #[test]
    fn java_doc_example() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let a = RangeAssignor.assign(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(
            a["C0"],
            [tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)]
        );
        assert_eq!(a["C1"], [tp("t0", 2), tp("t1", 2)]);
    }

    #[test]
    fn static_members_sort_by_instance_id() {
        let mut b = member("a-dynamic", &["t"]);
        b.group_instance_id = Some("z-static".into());
        let members = [member("b-dynamic", &["t"]), b];
        let a = RangeAssignor.assign(&members, &counts(&[("t", 2)]));
        assert_eq!(a["a-dynamic"], [tp("t", 0)], "static members come first");
        assert_eq!(a["b-dynamic"], [tp("t", 1)]);
    }

    #[test]
    fn generated_groups_are_valid_and_balanced_per_topic() {
        for seed in 0..300 {
            let mut rng = rng(seed);
            let (members, counts) = random_group(&mut rng, seed % 2 == 0);
            let a = RangeAssignor.assign(&members, &counts);
            let ctx = format!("seed={seed}");
            assert_valid(&members, &counts, &a, &ctx);
            for topic in counts.keys() {
                let sizes: Vec<usize> = members
                    .iter()
                    .filter(|m| m.subscription.topics.contains(topic))
                    .map(|m| {
                        a[&m.member_id]
                            .iter()
                            .filter(|tp| &tp.topic == topic)
                            .count()
                    })
                    .collect();
                if let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max()) {
                    assert!(max - min <= 1, "{ctx}: topic {topic} {sizes:?}");
                }
            }
        }
    }
}
