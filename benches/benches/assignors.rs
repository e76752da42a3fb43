//! Each assignor at 1,000 partitions (10 topics × 100) × 100 members; the
//! cooperative-sticky case also with every member reporting what it owns.

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use kavari_group::assignor::{
    Assignor, CooperativeStickyAssignor, MemberSubscription, RangeAssignor, RoundRobinAssignor,
};
use kavari_group::protocol::Subscription;

fn group(
    owned: Option<&BTreeMap<String, Vec<kavari_group::TopicPartition>>>,
) -> (Vec<MemberSubscription>, BTreeMap<String, i32>) {
    let topics: Vec<String> = (0..10).map(|t| format!("topic-{t}")).collect();
    let counts = topics.iter().map(|t| (t.clone(), 100)).collect();
    let members = (0..100)
        .map(|i| {
            let id = format!("member-{i:03}");
            MemberSubscription {
                subscription: Subscription {
                    topics: topics.clone(),
                    owned_partitions: owned.and_then(|o| o.get(&id)).cloned().unwrap_or_default(),
                    generation: 1,
                    ..Default::default()
                },
                member_id: id,
                group_instance_id: None,
            }
        })
        .collect();
    (members, counts)
}

fn assignors(c: &mut Criterion) {
    let (members, counts) = group(None);
    let mut g = c.benchmark_group("assign_1000_partitions_100_members");
    g.sample_size(20);
    g.bench_function("range", |b| {
        b.iter(|| RangeAssignor.assign(&members, &counts))
    });
    g.bench_function("roundrobin", |b| {
        b.iter(|| RoundRobinAssignor.assign(&members, &counts))
    });
    g.bench_function("cooperative-sticky/fresh", |b| {
        b.iter(|| CooperativeStickyAssignor.assign(&members, &counts))
    });
    // A member leaves a stable group: the others keep what they own.
    let previous = CooperativeStickyAssignor.assign(&members, &counts);
    let (mut members, counts) = group(Some(&previous));
    members.pop();
    g.bench_function("cooperative-sticky/member-left", |b| {
        b.iter(|| CooperativeStickyAssignor.assign(&members, &counts))
    });
    g.finish();
}

criterion_group!(benches, assignors);
criterion_main!(benches);
