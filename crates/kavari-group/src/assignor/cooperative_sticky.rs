//! `cooperative-sticky`: members keep what they own as far as balance allows,
//! and only the partitions that must move do (incremental cooperative
//! rebalancing, KIP-429).
//!
//! The algorithm: start from each member's valid owned partitions (a partition
//! claimed by two members goes to the claim of the newer generation, or to
//! neither on a tie); give every unowned partition to the least-loaded member
//! subscribed to its topic; then, while some member has at least two more
//! partitions than another member that could take one of them, move one.
//! With equal subscriptions this ends balanced within one, and no member both
//! gains and loses partitions.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::{
    Assignor, GroupAssignment, MemberSubscription, RebalanceProtocol, all_partitions,
    sorted_members,
};
use crate::TopicPartition;

/// The newest claim on a partition: its generation and member, and whether
/// another member claims it in the same generation (then nobody keeps it).
#[derive(Debug, Clone, Copy)]
struct Claim {
    generation: i32,
    member: usize,
    tied: bool,
}

/// The `cooperative-sticky` assignor.
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        members: &[MemberSubscription],
        partition_counts: &BTreeMap<String, i32>,
    ) -> GroupAssignment {
        let (sorted, _) = sorted_members(members);
        let all = all_partitions(members, partition_counts);
        let subscribes =
            |i: usize, tp: &TopicPartition| sorted[i].subscription.topics.contains(&tp.topic);

        // 1. Valid owned partitions, conflicts resolved by generation. Each
        // partition keeps only its newest claim (and whether another member
        // ties it): a claim per member and partition would be members times
        // partitions, gigabytes for a group that claims it owns everything.
        let mut claims: BTreeMap<&TopicPartition, Claim> = BTreeMap::new();
        for (i, m) in sorted.iter().enumerate() {
            let generation = m.subscription.generation;
            for tp in &m.subscription.owned_partitions {
                if !(all.contains(tp) && subscribes(i, tp)) {
                    continue;
                }
                let claim = claims.entry(tp).or_insert(Claim {
                    generation,
                    member: i,
                    tied: false,
                });
                if generation > claim.generation {
                    *claim = Claim {
                        generation,
                        member: i,
                        tied: false,
                    };
                } else if generation == claim.generation && claim.member != i {
                    claim.tied = true;
                }
            }
        }
        let mut sets: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); sorted.len()];
        for (tp, claim) in claims {
            if !claim.tied {
                sets[claim.member].insert(tp.clone());
            }
        }

        // 2. Unowned partitions to the least-loaded eligible member.
        let owned: BTreeSet<&TopicPartition> = sets.iter().flatten().collect();
        let unowned: Vec<TopicPartition> = all
            .iter()
            .filter(|tp| !owned.contains(tp))
            .cloned()
            .collect();
        // Per topic (they come in topic order), a heap of the members that
        // subscribe to it by load: asking every member for every partition
        // was members times partitions (27 s in a debug build for 2,002
        // members and 100,000 partitions).
        let mut topic: Option<String> = None;
        let mut lightest: BinaryHeap<Reverse<(usize, usize)>> = BinaryHeap::new();
        for tp in unowned {
            if topic.as_deref() != Some(tp.topic.as_str()) {
                lightest = (0..sorted.len())
                    .filter(|&i| subscribes(i, &tp))
                    .map(|i| Reverse((sets[i].len(), i)))
                    .collect();
                topic = Some(tp.topic.clone());
            }
            if let Some(Reverse((_, i))) = lightest.pop() {
                sets[i].insert(tp);
                lightest.push(Reverse((sets[i].len(), i)));
            }
        }

        // 3. Balance: move one partition at a time from a member to an
        // eligible member with at least two fewer.
        loop {
            let mut order: Vec<usize> = (0..sorted.len()).collect();
            order.sort_by_key(|&i| (std::cmp::Reverse(sets[i].len()), i));
            let least = order.last().map_or(0, |&i| sets[i].len());
            // A member at most one above the least loaded has nothing to
            // give, nor has any after it: stop there rather than ask every
            // member about every partition.
            let mv = order
                .iter()
                .take_while(|&&from| sets[from].len() > least + 1)
                .find_map(|&from| {
                    sets[from].iter().rev().find_map(|tp| {
                        (0..sorted.len())
                            .filter(|&to| {
                                subscribes(to, tp) && sets[to].len() + 1 < sets[from].len()
                            })
                            .min_by_key(|&to| (sets[to].len(), to))
                            .map(|to| (from, to, tp.clone()))
                    })
                });
            match mv {
                Some((from, to, tp)) => {
                    sets[from].remove(&tp);
                    sets[to].insert(tp);
                }
                None => break,
            }
        }

        sorted
            .iter()
            .zip(sets)
            .map(|(m, s)| (m.member_id.clone(), s.into_iter().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use rand::Rng;

    fn with_owned(
        mut m: MemberSubscription,
        owned: &[TopicPartition],
        generation: i32,
    ) -> MemberSubscription {
        m.subscription.owned_partitions = owned.to_vec();
        m.subscription.generation = generation;
        m
    }

    #[test]
    fn generated_groups_are_valid_and_balanced() {
        assert_generated_groups_valid_and_balanced(&CooperativeStickyAssignor);
    }

    /// A member joins, one leaves, one restarts with nothing: each time the
    /// result is balanced, nobody both gains and loses, and everyone keeps as
    /// much as its new share allows (so the fewest partitions move).
    #[test]
    fn membership_changes_move_the_minimum() {
        for seed in 0..200 {
            let mut rng = rng(1_000 + seed);
            let (mut members, counts) = random_group(&mut rng, true);
            let ctx = format!("seed={seed}");
            let mut previous = CooperativeStickyAssignor.assign(&members, &counts);
            for round in 0..4 {
                // The next generation: members report what they own.
                members = members
                    .into_iter()
                    .map(|m| {
                        let owned = previous.get(&m.member_id).cloned().unwrap_or_default();
                        with_owned(m, &owned, round + 1)
                    })
                    .collect();
                match rng.random_range(0..3) {
                    0 => {
                        let topics: Vec<&str> = counts.keys().map(String::as_str).collect();
                        members.push(member(&format!("new-{round}"), &topics));
                    }
                    1 if members.len() > 1 => {
                        let gone = rng.random_range(0..members.len());
                        members.remove(gone);
                    }
                    _ => {
                        let reset = rng.random_range(0..members.len());
                        members[reset].subscription.owned_partitions.clear();
                    }
                }
                let next = CooperativeStickyAssignor.assign(&members, &counts);
                let ctx = format!("{ctx} round={round}");
                assert_valid(&members, &counts, &next, &ctx);
                assert_balanced(&next, &ctx);
                for m in &members {
                    let owned: BTreeSet<_> = m.subscription.owned_partitions.iter().collect();
                    let now: BTreeSet<_> = next[&m.member_id].iter().collect();
                    let kept = owned.intersection(&now).count();
                    assert_eq!(
                        kept,
                        owned.len().min(now.len()),
                        "{ctx}: {} kept {kept} of {} owned with {} now",
                        m.member_id,
                        owned.len(),
                        now.len()
                    );
                }
                previous = next;
            }
        }
    }

    #[test]
    fn conflicting_claims_go_to_the_newer_generation() {
        let tp = |p| TopicPartition::new("t", p);
        let members = [
            with_owned(member("a", &["t"]), &[tp(0), tp(1)], 5),
            with_owned(member("b", &["t"]), &[tp(1)], 4),
        ];
        let a = CooperativeStickyAssignor.assign(&members, &counts(&[("t", 2)]));
        assert_eq!(a["a"], [tp(0)]);
        assert_eq!(a["b"], [tp(1)], "b takes p1 for balance");
        // a's newer claim on p1 won the conflict; balance then moved it: a
        // kept p0, which it owned, rather than p1.
    }

    #[test]
    fn partitions_of_deleted_topics_and_unsubscribed_topics_are_dropped() {
        let members = [with_owned(
            member("a", &["t"]),
            &[TopicPartition::new("gone", 0), TopicPartition::new("t", 9)],
            1,
        )];
        let a = CooperativeStickyAssignor.assign(&members, &counts(&[("t", 1)]));
        assert_eq!(a["a"], [TopicPartition::new("t", 0)]);
    }
}
