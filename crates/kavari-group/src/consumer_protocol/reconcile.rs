//! Reconciliation under the consumer group protocol: from the partitions a
//! member owns to the assignment the broker gives it, revoking before
//! adding, with topics named by id.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use crate::TopicPartition;

/// The partitions a member owns, each with its topic's id.
pub(crate) type Owned = BTreeMap<TopicPartition, Uuid>;

/// What to do to reach an assignment: give up `revoke` first (the runtime
/// commits them), then take `add`. Partitions of topics whose id no
/// metadata named yet wait in `unknown`: they are not dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) revoke: Vec<TopicPartition>,
    pub(crate) add: Vec<(TopicPartition, Uuid)>,
    pub(crate) unknown: Vec<Uuid>,
}

/// The steps from `owned` to `target` (topic id, partitions), naming
/// topics through `names`.
pub(crate) fn plan(
    owned: &Owned,
    target: &[(Uuid, Vec<i32>)],
    names: &HashMap<Uuid, String>,
) -> Plan {
    let wanted: BTreeSet<(Uuid, i32)> = target
        .iter()
        .flat_map(|(id, ps)| ps.iter().map(move |p| (*id, *p)))
        .collect();
    let revoke = owned
        .iter()
        .filter(|(tp, id)| !wanted.contains(&(**id, tp.partition)))
        .map(|(tp, _)| tp.clone())
        .collect();
    let mut add = Vec::new();
    let mut unknown = BTreeSet::new();
    for (id, partition) in wanted {
        match names.get(&id) {
            Some(name) => {
                let tp = TopicPartition::new(name.clone(), partition);
                if owned.get(&tp) != Some(&id) {
                    add.push((tp, id));
                }
            }
            None => {
                unknown.insert(id);
            }
        }
    }
    Plan {
        revoke,
        add,
        unknown: unknown.into_iter().collect(),
    }
}

/// What a heartbeat reports as owned: partitions by topic id.
pub(crate) fn by_topic_id(owned: &Owned) -> Vec<(Uuid, Vec<i32>)> {
    let mut topics: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for (tp, id) in owned {
        topics.entry(*id).or_default().push(tp.partition);
    }
    topics.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn names() -> HashMap<Uuid, String> {
        HashMap::from([(id(1), "a".to_string()), (id(2), "b".to_string())])
    }

    fn owned(parts: &[(&str, i32, u8)]) -> Owned {
        parts
            .iter()
            .map(|(t, p, i)| (TopicPartition::new(*t, *p), id(*i)))
            .collect()
    }

    #[test]
    fn partitions_moved_away_are_revoked_and_new_ones_added() {
        let have = owned(&[("a", 0, 1), ("a", 1, 1), ("b", 0, 2)]);
        let p = plan(&have, &[(id(1), vec![1, 2]), (id(2), vec![0])], &names());
        assert_eq!(p.revoke, vec![TopicPartition::new("a", 0)]);
        assert_eq!(p.add, vec![(TopicPartition::new("a", 2), id(1))]);
        assert!(p.unknown.is_empty());
    }

    #[test]
    fn the_same_assignment_changes_nothing() {
        let have = owned(&[("a", 0, 1), ("b", 3, 2)]);
        let p = plan(&have, &[(id(2), vec![3]), (id(1), vec![0])], &names());
        assert_eq!(p, Plan::default());
    }

    /// A topic the member's metadata does not know yet is kept for later,
    /// not dropped; what is known goes ahead.
    #[test]
    fn partitions_of_an_unknown_topic_id_wait() {
        let p = plan(
            &Owned::new(),
            &[(id(9), vec![0, 1]), (id(1), vec![4])],
            &names(),
        );
        assert_eq!(p.add, vec![(TopicPartition::new("a", 4), id(1))]);
        assert_eq!(p.unknown, vec![id(9)]);
    }

    /// A topic deleted and created again under its name has a new id: the
    /// old partitions are revoked, the new ones added.
    #[test]
    fn a_recreated_topic_is_a_new_topic() {
        let have = owned(&[("a", 0, 7)]);
        let p = plan(&have, &[(id(1), vec![0])], &names());
        assert_eq!(p.revoke, vec![TopicPartition::new("a", 0)]);
        assert_eq!(p.add, vec![(TopicPartition::new("a", 0), id(1))]);
    }

    #[test]
    fn owned_partitions_are_reported_by_topic_id() {
        let have = owned(&[("a", 1, 1), ("a", 0, 1), ("b", 5, 2)]);
        assert_eq!(
            by_topic_id(&have),
            vec![(id(1), vec![0, 1]), (id(2), vec![5])]
        );
    }
}
