//! The state machine driven by scripted coordinator answers, on a paused
//! clock: every error code DESIGN.md names, and what the member does next.

use super::join::withhold_moving_partitions;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kavari_wire::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::scripted::*;
use super::*;
use crate::assignor::CooperativeStickyAssignor;

#[tokio::test(start_paused = true)]
async fn member_id_required_then_the_leader_assigns_and_syncs() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join
            .push_back(join_error(ResponseError::MemberIdRequired, "m1"));
        s.join.push_back(joined("m1", 1, "m1", "range"));
        s.sync.push_back(assignment(&[0, 1]));
    }
    let mut h = start(api, |_| {});
    let (added, all, generation) = h.assigned().await;
    assert_eq!(
        (added.clone(), all, generation),
        (vec![tp(0), tp(1)], vec![tp(0), tp(1)], 1)
    );
    let joins = h.api.joins();
    assert!(matches!(&joins[0], Call::Join { member_id, .. } if member_id.is_empty()));
    assert!(matches!(&joins[1], Call::Join { member_id, .. } if member_id == "m1"));
    let sync = h
        .api
        .calls()
        .into_iter()
        .find(|c| matches!(c, Call::Sync { .. }))
        .unwrap();
    assert_eq!(
        sync,
        Call::Sync {
            generation: 1,
            assignments: vec![("m1".into(), vec![tp(0), tp(1)])]
        },
        "the leader ran range over the member's subscription"
    );
    let state = h.wait_phase(MemberPhase::Stable).await;
    assert_eq!(state.generation.unwrap().member_id, "m1");
    // Heartbeats run on their own timer.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let beats = h
        .api
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Heartbeat { generation: 1 }))
        .count();
    assert!(beats >= 3, "{beats} heartbeats in 10 s at a 3 s interval");
}

/// The leader looks the topics up every `metadata_max_age`; partitions
/// added since the assignment make it rebalance, and the next
/// assignment covers them. A follower does not look.
#[tokio::test(start_paused = true)]
async fn the_leader_rebalances_when_partitions_are_added() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m1", "range"));
        s.sync.push_back(assignment(&[0, 1]));
        s.join.push_back(joined("m1", 2, "m1", "range"));
        s.sync.push_back(assignment(&[0, 1, 2]));
    }
    let mut h = start(api, |c| c.metadata_max_age = Duration::from_secs(60));
    h.assigned().await;
    // Unchanged counts: no rebalance at the first look.
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert_eq!(h.api.joins().len(), 1);
    h.api.script().counts.insert("t".into(), 3);
    match h.event().await {
        GroupEvent::Revoking { ack, .. } => ack.done(),
        other => panic!("expected Revoking, got {other:?}"),
    }
    let (_, all, generation) = h.assigned().await;
    assert_eq!((all, generation), (vec![tp(0), tp(1), tp(2)], 2));
    let joins = h.api.joins();
    assert!(
        matches!(&joins[1], Call::Join { reason, .. } if reason.contains("partition counts changed")),
        "{joins:?}"
    );
    let syncs: Vec<_> = h
        .api
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Sync { assignments, .. } => Some(assignments),
            _ => None,
        })
        .collect();
    assert_eq!(
        syncs[1],
        vec![("m1".to_string(), vec![tp(0), tp(1), tp(2)])]
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_does_not_watch_the_topics() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m0", "range"));
        s.sync.push_back(assignment(&[0]));
    }
    let mut h = start(api, |c| c.metadata_max_age = Duration::from_secs(60));
    h.assigned().await;
    h.api.script().counts.insert("t".into(), 3);
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(
        h.api.joins().len(),
        1,
        "the leader's job, not this member's"
    );
}

/// A coordinator that stops answering (the request timeout, 30 s, is
/// longer than the session, 10 s): the member gives its partitions up
/// within the session timeout of its last good heartbeat, before the
/// coordinator can hand them to another member.
#[tokio::test(start_paused = true)]
async fn a_silent_coordinator_loses_the_partitions_within_the_session_timeout() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m1", "range"));
        s.sync.push_back(assignment(&[0, 1]));
    }
    let mut h = start(api, |_| {});
    h.assigned().await;
    let last_answer = Instant::now();
    h.api.script().silent = true;
    match h.event().await {
        GroupEvent::Lost { partitions } => assert_eq!(partitions, [tp(0), tp(1)]),
        other => panic!("expected Lost, got {other:?}"),
    }
    let after = last_answer.elapsed();
    assert!(after <= Duration::from_secs(10), "lost after {after:?}");
}

/// Cooperative-sticky: a commit sent under generation 1 is refused
/// (ILLEGAL_GENERATION) while the rebalance to generation 2 is under
/// way; its refusal reaches the member after generation 2 began and
/// must not start a third. A refusal of the current generation still
/// makes it rejoin.
#[tokio::test(start_paused = true)]
async fn a_stale_generation_commit_does_not_start_another_rebalance() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join
            .push_back(joined("m1", 1, "m1", "cooperative-sticky"));
        s.sync.push_back(assignment(&[0, 1]));
        s.heartbeat
            .push_back(Err(err(ResponseError::RebalanceInProgress)));
        s.join
            .push_back(joined("m1", 2, "m1", "cooperative-sticky"));
        s.sync.push_back(assignment(&[0, 1]));
        s.join
            .push_back(joined("m1", 3, "m1", "cooperative-sticky"));
        s.sync.push_back(assignment(&[0, 1]));
    }
    let mut h = start(api, |c| {
        c.assignors = vec![Arc::new(CooperativeStickyAssignor)]
    });
    assert_eq!(h.assigned().await.2, 1);
    assert_eq!(h.assigned().await.2, 2);
    h.commands
        .send(Command::CommitRefused {
            generation: 1,
            reason: "commit failed: illegal generation".into(),
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        h.api.joins().len(),
        2,
        "no rebalance for a replaced generation"
    );
    h.commands
        .send(Command::CommitRefused {
            generation: 2,
            reason: "commit failed: illegal generation".into(),
        })
        .unwrap();
    assert_eq!(
        h.assigned().await.2,
        3,
        "the current generation's refusal rejoins"
    );
}

#[tokio::test(start_paused = true)]
async fn rebalance_in_progress_revokes_everything_then_rejoins_eagerly() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m0", "range"));
        s.sync.push_back(assignment(&[0, 1]));
        s.heartbeat
            .push_back(Err(err(ResponseError::RebalanceInProgress)));
        s.join.push_back(joined("m1", 2, "m0", "range"));
        s.sync.push_back(assignment(&[1]));
    }
    let mut h = start(api, |_| {});
    h.assigned().await;
    match h.event().await {
        GroupEvent::Revoking { partitions, ack } => {
            assert_eq!(partitions, [tp(0), tp(1)], "eager: everything goes");
            // Not rejoined before the ack.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(h.api.joins().len(), 1);
            ack.done();
        }
        other => panic!("expected Revoking, got {other:?}"),
    }
    let (added, all, generation) = h.assigned().await;
    assert_eq!((added, all, generation), (vec![tp(1)], vec![tp(1)], 2));
    let joins = h.api.joins();
    assert!(matches!(&joins[1], Call::Join { member_id, reason, .. }
        if member_id == "m1" && reason == "rebalance in progress"));
}

#[tokio::test(start_paused = true)]
async fn unknown_member_id_loses_partitions_and_rejoins_as_new() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m0", "range"));
        s.sync.push_back(assignment(&[0]));
        s.heartbeat
            .push_back(Err(err(ResponseError::UnknownMemberId)));
    }
    let mut h = start(api, |_| {});
    h.assigned().await;
    match h.event().await {
        GroupEvent::Lost { partitions } => assert_eq!(partitions, [tp(0)]),
        other => panic!("expected Lost, got {other:?}"),
    }
    h.wait_phase(MemberPhase::Joining).await;
    let joins = h.api.joins();
    assert!(matches!(&joins[1], Call::Join { member_id, .. } if member_id.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn illegal_generation_loses_partitions_and_rejoins_with_the_same_id() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m0", "range"));
        s.sync.push_back(assignment(&[0]));
        s.heartbeat
            .push_back(Err(err(ResponseError::IllegalGeneration)));
    }
    let mut h = start(api, |_| {});
    h.assigned().await;
    assert!(matches!(h.event().await, GroupEvent::Lost { .. }));
    h.wait_phase(MemberPhase::Joining).await;
    assert!(matches!(&h.api.joins()[1], Call::Join { member_id, .. } if member_id == "m1"));
}

#[tokio::test(start_paused = true)]
async fn not_coordinator_finds_it_again_and_keeps_the_generation() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m0", "range"));
        s.sync.push_back(assignment(&[0]));
        s.heartbeat
            .push_back(Err(err(ResponseError::NotCoordinator)));
        s.find.push_back(Ok(()));
        s.find
            .push_back(Err(err(ResponseError::CoordinatorNotAvailable)));
    }
    let mut h = start(api, |_| {});
    h.assigned().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let calls = h.api.calls();
    let finds = calls.iter().filter(|c| **c == Call::Find).count();
    assert_eq!(
        finds, 3,
        "first find, then a failed and a good re-find: {calls:?}"
    );
    assert_eq!(
        h.api.joins().len(),
        1,
        "no rejoin: the generation is still good"
    );
    let last = calls.last().unwrap();
    assert_eq!(*last, Call::Heartbeat { generation: 1 });
    assert_eq!(h.state.borrow().phase, MemberPhase::Stable);
}

/// A join that finds the coordinator gone keeps its reason through the
/// lookups: once found, the member joins (it has no generation to resume).
#[tokio::test(start_paused = true)]
async fn a_join_that_loses_the_coordinator_joins_once_it_is_found_again() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(Err(err(ResponseError::NotCoordinator)));
        s.find.push_back(Ok(()));
        s.find
            .push_back(Err(err(ResponseError::CoordinatorNotAvailable)));
        s.join.push_back(joined("m1", 1, "m1", "range"));
        s.sync.push_back(assignment(&[0]));
    }
    let mut h = start(api, |_| {});
    h.assigned().await;
    let calls = h.api.calls();
    let kinds: Vec<&str> = calls
        .iter()
        .map(|c| match c {
            Call::Find => "find",
            Call::Join { .. } => "join",
            Call::Sync { .. } => "sync",
            Call::Heartbeat { .. } => "heartbeat",
            Call::Leave { .. } => "leave",
        })
        .collect();
    assert_eq!(
        kinds,
        ["find", "join", "find", "find", "join", "sync"],
        "{calls:?}"
    );
    assert!(
        h.api
            .joins()
            .iter()
            .all(|j| matches!(j, Call::Join { reason, .. } if reason == "first join")),
        "the reason is kept: {calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn coordinator_load_in_progress_backs_off_then_joins() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join
            .push_back(join_error(ResponseError::CoordinatorLoadInProgress, ""));
        s.join
            .push_back(join_error(ResponseError::CoordinatorLoadInProgress, ""));
        s.join.push_back(joined("m1", 1, "m1", "range"));
        s.sync.push_back(assignment(&[0, 1]));
    }
    let started = Instant::now();
    let mut h = start(api, |c| c.retry_backoff = Duration::from_secs(1));
    h.assigned().await;
    // Two backoffs: about 1 s and 2 s, each within ±20 %.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2400), "waited {waited:?}");
    assert_eq!(h.api.joins().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn fenced_instance_id_is_fatal_and_reported() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m0", "range"));
        s.sync.push_back(assignment(&[0]));
        s.heartbeat
            .push_back(Err(err(ResponseError::FencedInstanceId)));
    }
    let mut h = start(api, |c| c.group_instance_id = Some("pod-1".into()));
    h.assigned().await;
    assert!(matches!(h.event().await, GroupEvent::Lost { .. }));
    match h.event().await {
        GroupEvent::Failed(e) => {
            assert_eq!(e.response_error(), Some(ResponseError::FencedInstanceId))
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let state = h.state.borrow().clone();
    assert!(matches!(state.phase, MemberPhase::Failed(_)), "{state:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_coordinator_fails_the_member_after_give_up_after() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        for _ in 0..1_000 {
            s.find
                .push_back(Err(GroupError::Wire(kavari_wire::WireError::Connection {
                    address: "broker:9092".into(),
                    detail: "connection refused".into(),
                })));
        }
    }
    let started = Instant::now();
    let mut h = start(api, |c| c.give_up_after = Some(Duration::from_secs(30)));
    match h.event().await {
        GroupEvent::Failed(GroupError::Fatal(why)) => assert!(why.contains("gave up"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(45),
        "{waited:?}"
    );
    assert!(matches!(h.state.borrow().phase, MemberPhase::Failed(_)));
}

#[tokio::test(start_paused = true)]
async fn inconsistent_group_protocol_is_fatal() {
    let api = ScriptedApi::default();
    api.script()
        .join
        .push_back(join_error(ResponseError::InconsistentGroupProtocol, ""));
    let mut h = start(api, |_| {});
    match h.event().await {
        GroupEvent::Failed(e) => assert_eq!(
            e.response_error(),
            Some(ResponseError::InconsistentGroupProtocol)
        ),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn cooperative_revokes_only_what_moves_then_rejoins_for_the_second_round() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join
            .push_back(joined("m1", 1, "m0", "cooperative-sticky"));
        s.sync.push_back(assignment(&[0, 1]));
        s.heartbeat
            .push_back(Err(err(ResponseError::RebalanceInProgress)));
        s.join
            .push_back(joined("m1", 2, "m0", "cooperative-sticky"));
        s.sync.push_back(assignment(&[0]));
        s.join
            .push_back(joined("m1", 3, "m0", "cooperative-sticky"));
        s.sync.push_back(assignment(&[0]));
    }
    let mut h = start(api, |_| {});
    h.assigned().await;
    // No revocation before rejoining: the join carries what it owns.
    match h.event().await {
        GroupEvent::Revoking { partitions, ack } => {
            assert_eq!(partitions, [tp(1)], "only the moving partition");
            ack.done();
        }
        other => panic!("expected Revoking, got {other:?}"),
    }
    let (added, all, generation) = h.assigned().await;
    assert_eq!((added, all, generation), (vec![], vec![tp(0)], 2));
    let (_, all, generation) = h.assigned().await;
    assert_eq!(
        (all, generation),
        (vec![tp(0)], 3),
        "second round joined at once"
    );
    let joins = h.api.joins();
    assert!(matches!(&joins[1], Call::Join { owned, .. } if *owned == [tp(0), tp(1)]));
    assert!(matches!(&joins[2], Call::Join { owned, .. } if *owned == [tp(0)]));
}

#[tokio::test(start_paused = true)]
async fn a_silent_coordinator_expires_the_session_and_loses_partitions() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m0", "range"));
        s.sync.push_back(assignment(&[0]));
        for _ in 0..10 {
            s.heartbeat
                .push_back(Err(err(ResponseError::UnknownServerError)));
        }
    }
    let mut h = start(api, |c| c.session_timeout = Duration::from_secs(10));
    h.assigned().await;
    assert!(matches!(h.event().await, GroupEvent::Lost { .. }));
    h.wait_phase(MemberPhase::Joining).await;
}

#[tokio::test(start_paused = true)]
async fn leave_revokes_then_sends_leave_group_only_for_dynamic_members() {
    for instance in [None, Some("pod-1".to_string())] {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m0", "range"));
            s.sync.push_back(assignment(&[0]));
        }
        let is_static = instance.is_some();
        let mut h = start(api, |c| c.group_instance_id = instance);
        h.assigned().await;
        let (tx, rx) = oneshot::channel();
        h.commands.send(Command::Leave(tx)).unwrap();
        assert!(matches!(h.event().await, GroupEvent::Revoking { .. }));
        rx.await.unwrap();
        let left = h.api.calls().contains(&Call::Leave {
            member_id: "m1".into(),
        });
        assert_eq!(left, !is_static, "static={is_static}");
        h.wait_phase(MemberPhase::Closed).await;
    }
}

#[test]
fn withheld_partitions_are_those_changing_owner() {
    let sub = |owned: Vec<TopicPartition>| Subscription {
        topics: vec!["t".into()],
        owned_partitions: owned,
        generation: 1,
        ..Default::default()
    };
    let members = vec![
        MemberSubscription {
            member_id: "a".into(),
            group_instance_id: None,
            subscription: sub(vec![tp(0), tp(1)]),
        },
        MemberSubscription {
            member_id: "b".into(),
            group_instance_id: None,
            subscription: sub(vec![]),
        },
    ];
    let mut assignment = BTreeMap::from([
        ("a".to_string(), vec![tp(0)]),
        ("b".to_string(), vec![tp(1), tp(2)]),
    ]);
    withhold_moving_partitions(&members, &mut assignment);
    assert_eq!(assignment["a"], [tp(0)]);
    assert_eq!(assignment["b"], [tp(2)], "p1 waits for a to release it");
}

/// Stepping aside (a stuck handler): the partitions are lost at once (no
/// revocation to wait for), LeaveGroup tells the coordinator to move them,
/// and the member joins again as a new one.
#[tokio::test(start_paused = true)]
async fn stepping_aside_loses_the_partitions_leaves_and_rejoins_as_new() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        s.join.push_back(joined("m1", 1, "m1", "range"));
        s.sync.push_back(assignment(&[0, 1]));
        s.join.push_back(joined("m2", 3, "m2", "range"));
        s.sync.push_back(assignment(&[0, 1]));
    }
    let mut h = start(api, |_| {});
    h.assigned().await;
    h.commands
        .send(Command::StepAside("a handler is stuck".into()))
        .unwrap();
    match h.event().await {
        GroupEvent::Lost { partitions } => assert_eq!(partitions, [tp(0), tp(1)]),
        other => panic!("expected Lost, got {other:?}"),
    }
    let (_, all, generation) = h.assigned().await;
    assert_eq!((all, generation), (vec![tp(0), tp(1)], 3));
    let calls = h.api.calls();
    assert!(calls.contains(&Call::Leave {
        member_id: "m1".into()
    }));
    let joins = h.api.joins();
    assert!(
        matches!(&joins[1], Call::Join { member_id, reason, .. }
            if member_id.is_empty() && reason.contains("a handler is stuck")),
        "{joins:?}"
    );
}

/// A shutdown while JoinGroup is pending (the coordinator may hold it for
/// the rebalance timeout) is honoured at once: the join is abandoned and
/// the member leaves with the id the coordinator gave it.
#[tokio::test(start_paused = true)]
async fn a_leave_during_a_pending_join_is_honoured_at_once() {
    let api = ScriptedApi::default();
    api.script()
        .join
        .push_back(join_error(ResponseError::MemberIdRequired, "m1"));
    // The second JoinGroup gets no answer.
    let mut h = start(api, |_| {});
    h.wait_phase(MemberPhase::Joining).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.api.joins().len(), 2);
    let (tx, rx) = oneshot::channel();
    h.commands.send(Command::Leave(tx)).unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the leave is not held up by the pending join")
        .expect("done");
    assert!(h.api.calls().contains(&Call::Leave {
        member_id: "m1".into()
    }));
}

/// A coordinator that names a million partitions of a two-partition topic
/// (and some of a topic nobody subscribed) gets the two that exist: one
/// worker each, not a million.
#[tokio::test(start_paused = true)]
async fn an_assignment_is_cut_to_the_partitions_metadata_knows() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        // Another member leads: this one takes what SyncGroup says.
        s.join.push_back(joined("m1", 1, "m0", "range"));
        let mut partitions: Vec<TopicPartition> = (0..1_000_000).map(tp).collect();
        partitions.push(TopicPartition::new("other", 0));
        partitions.push(tp(-1));
        s.sync.push_back(Ok(Assignment {
            partitions,
            user_data: None,
        }
        .encode()));
    }
    let mut h = start(api, |_| {});
    let (added, all, _) = h.assigned().await;
    assert_eq!(added, [tp(0), tp(1)]);
    assert_eq!(all, [tp(0), tp(1)]);
}

/// A coordinator that answers every SyncGroup with bytes that are no
/// assignment: the member keeps trying, each time after a longer wait (it
/// rejoined every 100 ms, as finding the coordinator again reset the
/// backoff), and never reports an assignment.
#[tokio::test(start_paused = true)]
async fn garbage_assignments_do_not_make_a_rejoin_storm() {
    let api = ScriptedApi::default();
    {
        let mut s = api.script();
        for generation in 1..=200 {
            s.join.push_back(joined("m1", generation, "m0", "range"));
            s.sync
                .push_back(Ok(Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff])));
        }
    }
    let h = start(api, |_| {});
    tokio::time::sleep(Duration::from_secs(15)).await;
    let joins = h.api.joins().len();
    // 100 ms doubling (with jitter) to the 10 s cap: about 8 in 15 s.
    assert!((3..=12).contains(&joins), "{joins} joins in 15 s");
}
