//! kavari-group against a real broker: membership, rebalances, crashes,
//! static members and the offset store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kavari_group::{
    CommitOffset, GroupConfig, GroupEvent, GroupMember, MemberPhase, MemberState, TopicPartition,
};
use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{RdkafkaMember, init_tracing};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);

fn config(broker: &KafkaBroker, group: &str, topic: &str) -> GroupConfig {
    let mut c = GroupConfig::new(broker.bootstrap_list(), group, [topic]);
    c.session_timeout = Duration::from_secs(6);
    c.heartbeat_interval = Duration::from_millis(500);
    c.rebalance_timeout = Duration::from_secs(10);
    c.request_timeout = Duration::from_secs(10);
    c
}

/// Starts a member whose events are drained (revocations acknowledged at
/// once), as a consumer runtime would.
fn start(config: GroupConfig) -> GroupMember {
    let (member, events) = GroupMember::start(config).expect("start member");
    tokio::spawn(drain(events));
    member
}

async fn drain(mut events: mpsc::UnboundedReceiver<GroupEvent>) {
    while let Some(e) = events.recv().await {
        if let GroupEvent::Revoking { ack, .. } = e {
            ack.done();
        }
    }
}

fn stable(s: &MemberState) -> bool {
    s.phase == MemberPhase::Stable
}

/// Waits until every member is stable in one generation and together they
/// own every partition exactly once; returns each one's assignment.
async fn settled(
    members: &[&GroupMember],
    topic: &str,
    partitions: i32,
) -> Vec<Vec<TopicPartition>> {
    let want: BTreeSet<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let states: Vec<MemberState> = members.iter().map(|m| m.state()).collect();
        let generations: BTreeSet<_> = states
            .iter()
            .map(|s| s.generation.as_ref().map(|g| g.generation_id))
            .collect();
        let all: Vec<_> = states.iter().flat_map(|s| s.assignment.clone()).collect();
        let unique: BTreeSet<_> = all.iter().cloned().collect();
        if states.iter().all(stable)
            && generations.len() == 1
            && all.len() == unique.len()
            && unique == want
        {
            return states.into_iter().map(|s| s.assignment).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "group did not settle: {states:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn three_members_split_then_one_leaves() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("group");
    let group = unique_name("g");
    broker.create_topic(&topic, 6).await.expect("topic");

    let a = start(config(broker, &group, &topic));
    let b = start(config(broker, &group, &topic));
    let c = start(config(broker, &group, &topic));
    let split = settled(&[&a, &b, &c], &topic, 6).await;
    for s in &split {
        assert_eq!(
            s.len(),
            2,
            "range over 6 partitions and 3 members: {split:?}"
        );
    }

    c.close().await;
    assert_eq!(c.state().phase, MemberPhase::Closed);
    let split = settled(&[&a, &b], &topic, 6).await;
    assert_eq!(split[0].len() + split[1].len(), 6);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn crashed_member_partitions_move_after_the_session_timeout() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("crash");
    let group = unique_name("g");
    broker.create_topic(&topic, 4).await.expect("topic");

    let a = start(config(broker, &group, &topic));
    let b = start(config(broker, &group, &topic));
    settled(&[&a, &b], &topic, 4).await;

    // No LeaveGroup: the coordinator only notices when the session expires.
    let crashed_at = std::time::Instant::now();
    b.abort();
    let split = settled(&[&a], &topic, 4).await;
    assert_eq!(split[0].len(), 4);
    let moved_after = crashed_at.elapsed();
    assert!(
        moved_after >= Duration::from_secs(3),
        "moved after {moved_after:?}: before the session timeout, so not via session expiry"
    );
    a.close().await;
}

#[tokio::test]
async fn offsets_commit_and_fetch_round_trip() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("offsets");
    let group = unique_name("g");
    broker.create_topic(&topic, 2).await.expect("topic");

    let a = start(config(broker, &group, &topic));
    settled(&[&a], &topic, 2).await;
    let p0 = TopicPartition::new(&topic, 0);
    let p1 = TopicPartition::new(&topic, 1);
    let before = a
        .committed(&[p0.clone(), p1.clone()])
        .await
        .expect("committed");
    assert_eq!(
        before[&p0], None,
        "nothing committed yet: apply auto_offset_reset"
    );

    a.commit(&BTreeMap::from([(p0.clone(), 42.into())]))
        .await
        .expect("commit");
    let after = a
        .committed(&[p0.clone(), p1.clone()])
        .await
        .expect("committed");
    assert_eq!(after[&p0], Some(42.into()));
    assert_eq!(after[&p1], None);
    a.close().await;

    // A new member of the group reads what the old one committed.
    let b = start(config(broker, &group, &topic));
    settled(&[&b], &topic, 2).await;
    assert_eq!(
        b.committed(std::slice::from_ref(&p0))
            .await
            .expect("committed")[&p0],
        Some(42.into())
    );
    b.close().await;
}

#[tokio::test]
async fn static_member_restart_gets_its_partitions_back_without_a_rebalance() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("static");
    let group = unique_name("g");
    broker.create_topic(&topic, 4).await.expect("topic");

    let mut sa = config(broker, &group, &topic);
    sa.group_instance_id = Some("pod-a".into());
    let mut sb = config(broker, &group, &topic);
    sb.group_instance_id = Some("pod-b".into());
    let a = start(sa.clone());
    let b = start(sb);
    let before = settled(&[&a, &b], &topic, 4).await;
    let b_generation = b.state().generation.expect("generation").generation_id;
    let b_joins = b.state().joins;

    // A static member closes without LeaveGroup and comes back within the
    // session timeout.
    a.close().await;
    let a2 = start(sa);
    let after = settled(&[&a2, &b], &topic, 4).await;
    assert_eq!(
        after[0], before[0],
        "the restarted member got its partitions back"
    );
    assert_eq!(after[1], before[1]);
    assert_eq!(
        b.state().joins,
        b_joins,
        "the other member did not rebalance"
    );
    assert_eq!(
        b.state().generation.expect("generation").generation_id,
        b_generation
    );
    a2.close().await;
    b.close().await;
}

#[tokio::test]
async fn cooperative_sticky_members_keep_their_partitions_when_one_joins() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("coop");
    let group = unique_name("g");
    broker.create_topic(&topic, 6).await.expect("topic");
    let coop = |broker| {
        let mut c = config(broker, &group, &topic);
        c.assignors = vec![
            std::sync::Arc::new(kavari_group::assignor::CooperativeStickyAssignor),
            std::sync::Arc::new(kavari_group::assignor::RangeAssignor),
        ];
        c
    };
    let a = start(coop(broker));
    let b = start(coop(broker));
    let before = settled(&[&a, &b], &topic, 6).await;

    let c = start(coop(broker));
    let after = settled(&[&a, &b, &c], &topic, 6).await;
    for (i, name) in ["a", "b"].iter().enumerate() {
        let kept = after[i].iter().filter(|tp| before[i].contains(tp)).count();
        assert_eq!(
            kept,
            after[i].len(),
            "{name} only lost partitions: {before:?} -> {after:?}"
        );
        assert_eq!(after[i].len(), 2);
    }
    assert_eq!(after[2].len(), 2, "the newcomer got the moved partitions");
    for m in [&a, &b, &c] {
        m.close().await;
    }
}

/// A group of one Kavari member and one librdkafka member (confluent-kafka
/// 2.16, `range`): they split the partitions, and what Kavari commits is what
/// librdkafka reads for the group.
///
/// nisshi quirk: it fixes the group's protocol to the first joiner's first
/// assignor and refuses a later member without it (Kafka would choose one all
/// members support), so both sides list `range` first.
#[tokio::test]
async fn interop_with_a_librdkafka_member() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("interop");
    let group = unique_name("g");
    broker.create_topic(&topic, 4).await.expect("topic");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/rdkafka_member.py");
    let peer_available = std::process::Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        peer_available,
        "the librdkafka peer is missing: run `bash testcontainers/setup.sh` (pip install confluent-kafka==2.16.1)"
    );

    let kavari = start(config(broker, &group, &topic));
    kavari
        .wait_for(WAIT, stable)
        .await
        .expect("the Kavari member joined first");

    let peer = RdkafkaMember::spawn(&broker.bootstrap_servers(), &group, &topic, &[]);

    let deadline = tokio::time::Instant::now() + WAIT;
    let (mine, theirs) = loop {
        let mine: BTreeSet<i32> = kavari
            .state()
            .assignment
            .iter()
            .map(|tp| tp.partition)
            .collect();
        let theirs: BTreeSet<i32> = peer.assignment().into_iter().collect();
        if kavari.state().phase == MemberPhase::Stable
            && !mine.is_empty()
            && !theirs.is_empty()
            && mine.is_disjoint(&theirs)
            && mine.len() + theirs.len() == 4
        {
            break (mine, theirs);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no split: kavari {mine:?}, librdkafka {theirs:?}, state {:?}",
            kavari.state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        mine.len(),
        2,
        "range gives each member two of four: {mine:?} {theirs:?}"
    );

    // Kavari commits; librdkafka reads the same offsets for the group.
    let offsets: BTreeMap<TopicPartition, CommitOffset> = mine
        .iter()
        .map(|p| {
            let at = CommitOffset {
                offset: 100 + i64::from(*p),
                leader_epoch: Some(7 + *p),
            };
            (TopicPartition::new(&topic, *p), at)
        })
        .collect();
    kavari.commit(&offsets).await.expect("commit");
    peer.leave().await;
    kavari.close().await;

    let out = tokio::process::Command::new("python3")
        .args([
            script,
            "committed",
            &broker.bootstrap_servers(),
            &group,
            &topic,
            "4",
        ])
        .output()
        .await
        .expect("run the librdkafka committed query");
    let text = String::from_utf8_lossy(&out.stdout);
    // partition → (offset, leader epoch or "None").
    let read: BTreeMap<i32, (i64, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("COMMITTED "))
        .filter_map(|l| {
            let mut fields = l.split(' ');
            let p = fields.next()?.parse().ok()?;
            let o = fields.next()?.parse().ok()?;
            Some((p, (o, fields.next()?.to_string())))
        })
        .collect();
    for p in 0..4 {
        let (offset, epoch) = read.get(&p).cloned().unwrap_or_default();
        if mine.contains(&p) {
            assert_eq!(offset, 100 + i64::from(p), "partition {p}: {text}");
            // Committed with a leader epoch (KIP-320): Kafka keeps it; the
            // test broker takes it but keeps none (librdkafka's own
            // commits' epochs read back as None there too).
            assert!(
                epoch == (7 + p).to_string() || epoch == "None",
                "partition {p}: {text}"
            );
        } else {
            assert_eq!(
                (offset, epoch.as_str()),
                (-1001, "None"),
                "partition {p}: {text}"
            );
        }
    }
}

// The consumer group protocol (KIP-848).

/// A consumer-protocol member of `group` on `topic`.
fn consumer_protocol(broker: &KafkaBroker, group: &str, topic: &str) -> GroupConfig {
    let mut c = config(broker, group, topic);
    c.protocol = kavari_group::GroupProtocol::Consumer;
    c
}

/// Starts a member whose events are kept (revocations acknowledged at
/// once) for the test to read.
fn start_watched(
    config: GroupConfig,
) -> (GroupMember, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (member, mut events) = GroupMember::start(config).expect("start member");
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let log = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let line = match e {
                GroupEvent::Assigned { added, .. } => format!("assigned {}", added.len()),
                GroupEvent::Revoking { partitions, ack } => {
                    ack.done();
                    format!("revoked {}", partitions.len())
                }
                GroupEvent::Lost { partitions } => format!("lost {}", partitions.len()),
                GroupEvent::Failed(e) => format!("failed {e}"),
                _ => "other".into(),
            };
            log.lock().unwrap().push(line);
        }
    });
    (member, seen)
}

/// Each error the coordinator may answer a heartbeat with, injected by the
/// proxy into a real answer, does what KIP-848 asks: a fenced or unknown
/// member loses its partitions (no commit) and joins again at epoch 0
/// with the same member id; a commit refused for a stale epoch heartbeats
/// and lands on the retry; a group that cannot take the member fails it
/// with the reason.
#[tokio::test]
async fn injected_consumer_protocol_errors_do_what_the_protocol_asks() {
    use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
    init_tracing();
    let topic = unique_name("kip848-errors");
    let broker = kavari_tests::own_broker(KafkaBroker::builder().behind_proxy(), &topic, 2).await;
    let proxy = broker.proxy().expect("proxy");
    proxy.keep_requests(68);
    let group = unique_name("g");
    let (m, events) = start_watched(consumer_protocol(&broker, &group, &topic));
    let owns_both = |m: &GroupMember| m.state().assignment.len() == 2 && stable(&m.state());
    let joins = || -> Vec<String> {
        proxy
            .kept_requests(68)
            .iter()
            .map(|f| kavari_tests::kept_request::<ConsumerGroupHeartbeatRequest>(f))
            .filter(|r| r.member_epoch == 0)
            .map(|r| r.member_id.to_string())
            .collect()
    };
    assert!(
        m.wait_for(WAIT, |s| s.assignment.len() == 2 && stable(s))
            .await
            .is_some()
    );
    for (code, name) in [(110, "FENCED_MEMBER_EPOCH"), (25, "UNKNOWN_MEMBER_ID")] {
        let before = joins().len();
        events.lock().unwrap().clear();
        proxy.answer_with(68, code, 1);
        let deadline = tokio::time::Instant::now() + WAIT;
        while !(joins().len() > before && owns_both(&m)) {
            assert!(tokio::time::Instant::now() < deadline, "{name}: no rejoin");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ids: BTreeSet<String> = joins().into_iter().collect();
        assert_eq!(ids.len(), 1, "{name}: rejoined with the same member id");
        let seen = events.lock().unwrap().clone();
        assert!(
            seen.first().is_some_and(|e| e == "lost 2")
                && seen.iter().any(|e| e == "assigned 2")
                && !seen.iter().any(|e| e.starts_with("revoked")),
            "{name}: lost, not revoked, then assigned again: {seen:?}"
        );
    }

    // A commit refused for a stale member epoch: a heartbeat, and the
    // retry lands.
    let p0 = TopicPartition::new(&topic, 0);
    proxy.answer_with(8, 113, 1);
    m.commit(&BTreeMap::from([(p0.clone(), CommitOffset::from(7))]))
        .await
        .expect("committed on the retry");
    assert_eq!(
        m.committed(std::slice::from_ref(&p0))
            .await
            .expect("committed")[&p0],
        Some(7.into())
    );

    // A group that cannot take the member: it fails, saying why.
    proxy.answer_with(68, 81, 1); // GROUP_MAX_SIZE_REACHED
    let failed = m
        .wait_for(WAIT, |s| matches!(s.phase, MemberPhase::Failed(_)))
        .await
        .expect("the member failed");
    let MemberPhase::Failed(why) = failed.phase else {
        unreachable!()
    };
    assert!(why.contains("GroupMaxSizeReached"), "{why}");
    assert!(
        events.lock().unwrap().iter().any(|e| e == "lost 2"),
        "its partitions were given up"
    );
}

/// A regex subscription: a topic created after the member joined, and
/// matching, is assigned to it; one that does not match is not.
#[tokio::test]
async fn a_topic_created_later_and_matching_the_regex_is_assigned() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let prefix = unique_name("kip848-regex");
    let group = unique_name("g");
    let mut c = consumer_protocol(broker, &group, "unused");
    c.topics = Vec::new();
    c.topic_regex = Some(format!("{prefix}\\..*"));
    let (m, _events) = start_watched(c);
    assert!(
        m.wait_for(WAIT, |s| !matches!(
            s.phase,
            MemberPhase::Unjoined | MemberPhase::Reconnecting
        ))
        .await
        .is_some()
    );
    let (matching, other) = (format!("{prefix}.orders"), format!("{prefix}-other"));
    broker.create_topic(&matching, 3).await.expect("topic");
    broker.create_topic(&other, 2).await.expect("topic");
    let got = m
        .wait_for(WAIT, |s| s.assignment.len() == 3)
        .await
        .expect("the new topic assigned");
    assert!(
        got.assignment.iter().all(|tp| tp.topic == matching),
        "{got:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        m.state().assignment.len(),
        3,
        "the other topic is not assigned"
    );
    m.close().await;
}

// Share groups (KIP-932).

/// Share members of one group split a topic's partitions among them, each
/// partition to as many members as there are to share it: with more
/// members than partitions, every member gets one.
#[tokio::test]
async fn share_members_are_each_given_partitions() {
    use kavari_group::share::{ShareConfig, ShareMember};
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("share");
    broker.create_topic(&topic, 2).await.expect("topic");
    let group = unique_name("g");
    let cluster = std::sync::Arc::new(kavari_wire::cluster::Cluster::new(
        broker.bootstrap_list(),
        "t".into(),
        Duration::from_secs(10),
    ));
    let members: Vec<ShareMember> = (0..3)
        .map(|_| {
            ShareMember::start_on(ShareConfig::new(&group, [&topic]), cluster.clone())
                .expect("start")
        })
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let states: Vec<_> = members.iter().map(|m| m.watch().borrow().clone()).collect();
        if states.iter().all(|s| !s.assignment.is_empty()) {
            let all: BTreeSet<_> = states
                .iter()
                .flat_map(|s| s.assignment.keys().cloned())
                .collect();
            assert_eq!(all.len(), 2, "{states:?}");
            break;
        }
        assert!(states.iter().all(|s| s.failed.is_none()), "{states:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all assigned: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for m in &members {
        m.close().await;
    }
}
