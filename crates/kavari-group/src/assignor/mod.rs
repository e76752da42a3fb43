//! Partition assignors, with the names and results of the Java client's, so a
//! group may mix Kavari, Java and librdkafka members.

mod cooperative_sticky;
mod range;
mod roundrobin;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

pub use cooperative_sticky::CooperativeStickyAssignor;
pub use range::RangeAssignor;
pub use roundrobin::RoundRobinAssignor;

use crate::TopicPartition;
use crate::protocol::Subscription;

/// How partitions change hands in a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Every member gives up everything before rejoining.
    Eager,
    /// Members keep what they own; only moving partitions are revoked, and a
    /// second rebalance hands them to their new owner.
    Cooperative,
}

/// One member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its static instance id, if any.
    pub group_instance_id: Option<String>,
    /// What it subscribed to and owns.
    pub subscription: Subscription,
}

impl MemberSubscription {
    /// The order the Java client sorts members in: static members by instance
    /// id first, then dynamic members by member id.
    pub(crate) fn sort_key(&self) -> (u8, &str) {
        match &self.group_instance_id {
            Some(id) => (0, id.as_str()),
            None => (1, self.member_id.as_str()),
        }
    }
}

/// The leader's decision: member id → partitions.
pub type GroupAssignment = BTreeMap<String, Vec<TopicPartition>>;

/// A partition assignment strategy.
pub trait Assignor: Debug + Send + Sync {
    /// The protocol name in JoinGroup (`range`, `roundrobin`, `cooperative-sticky`).
    fn name(&self) -> &'static str;

    /// Eager or cooperative.
    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// Assigns `partition_counts` (topic → number of partitions) to `members`.
    /// Every member appears in the result, possibly with nothing.
    fn assign(
        &self,
        members: &[MemberSubscription],
        partition_counts: &BTreeMap<String, i32>,
    ) -> GroupAssignment;
}

/// Members sorted as the Java client sorts them, with every member present in
/// an empty assignment.
pub(crate) fn sorted_members(
    members: &[MemberSubscription],
) -> (Vec<&MemberSubscription>, GroupAssignment) {
    let mut sorted: Vec<_> = members.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let empty = members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    (sorted, empty)
}

/// Every partition of every subscribed topic that exists, sorted.
pub(crate) fn all_partitions(
    members: &[MemberSubscription],
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeSet<TopicPartition> {
    // Each topic once, however many members subscribe to it (thousands of
    // members made each topic's partitions thousands of times over).
    let topics: BTreeSet<&String> = members
        .iter()
        .flat_map(|m| m.subscription.topics.iter())
        .collect();
    topics
        .into_iter()
        .filter_map(|t| partition_counts.get(t).map(|n| (t, *n)))
        .flat_map(|(t, n)| (0..n.max(0)).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Generated groups and the invariants every assignor must keep.

    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    pub(crate) fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_string(),
            group_instance_id: None,
            subscription: Subscription {
                topics: topics.iter().map(|t| t.to_string()).collect(),
                generation: -1,
                ..Default::default()
            },
        }
    }

    pub(crate) fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    /// A random group: 1-12 members over 1-4 topics of 1-24 partitions,
    /// some members subscribing to a subset.
    pub(crate) fn random_group(
        rng: &mut StdRng,
        same_subscriptions: bool,
    ) -> (Vec<MemberSubscription>, BTreeMap<String, i32>) {
        let topics: Vec<String> = (0..rng.random_range(1..=4))
            .map(|i| format!("t{i}"))
            .collect();
        let counts = topics
            .iter()
            .map(|t| (t.clone(), rng.random_range(1..=24)))
            .collect();
        let members = (0..rng.random_range(1..=12))
            .map(|i| {
                let subscribed: Vec<String> = if same_subscriptions {
                    topics.clone()
                } else {
                    let s: Vec<String> = topics
                        .iter()
                        .filter(|_| rng.random_bool(0.7))
                        .cloned()
                        .collect();
                    if s.is_empty() {
                        vec![topics[0].clone()]
                    } else {
                        s
                    }
                };
                MemberSubscription {
                    member_id: format!("m-{i:02}-{}", rng.random::<u16>()),
                    group_instance_id: None,
                    subscription: Subscription {
                        topics: subscribed,
                        generation: -1,
                        ..Default::default()
                    },
                }
            })
            .collect();
        (members, counts)
    }

    /// Each partition of a subscribed topic assigned exactly once, only to a
    /// member subscribed to its topic.
    pub(crate) fn assert_valid(
        members: &[MemberSubscription],
        counts: &BTreeMap<String, i32>,
        a: &GroupAssignment,
        ctx: &str,
    ) {
        assert_eq!(a.len(), members.len(), "{ctx}: every member has an entry");
        let mut seen = BTreeSet::new();
        for (id, parts) in a {
            let m = members
                .iter()
                .find(|m| &m.member_id == id)
                .unwrap_or_else(|| panic!("{ctx}: unknown member {id}"));
            for tp in parts {
                assert!(
                    m.subscription.topics.contains(&tp.topic),
                    "{ctx}: {id} got {tp:?} without subscribing"
                );
                assert!(seen.insert(tp.clone()), "{ctx}: {tp:?} assigned twice");
            }
        }
        assert_eq!(seen, all_partitions(members, counts), "{ctx}: all assigned");
    }

    /// With equal subscriptions, counts differ by at most one.
    pub(crate) fn assert_balanced(a: &GroupAssignment, ctx: &str) {
        let sizes: Vec<usize> = a.values().map(Vec::len).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        if let (Some(min), Some(max)) = (min, max) {
            assert!(max - min <= 1, "{ctx}: unbalanced {sizes:?}");
        }
    }

    pub(crate) fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    pub(crate) fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    /// 300 seeded groups: every assignment valid, and balanced within one
    /// when all members subscribe to the same topics.
    pub(crate) fn assert_generated_groups_valid_and_balanced(assignor: &dyn Assignor) {
        for seed in 0..300 {
            let mut rng = rng(seed);
            let same = seed % 2 == 0;
            let (members, counts) = random_group(&mut rng, same);
            let a = assignor.assign(&members, &counts);
            let ctx = format!("{} seed={seed}", assignor.name());
            assert_valid(&members, &counts, &a, &ctx);
            if same {
                assert_balanced(&a, &ctx);
            }
        }
    }
}
