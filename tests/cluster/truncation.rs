//! A log truncated under a consumer (KIP-320). A partition of two copies
//! whose follower was stopped takes records on its leader alone; a
//! consumer reads them; the leader dies and the follower, behind, is
//! elected leader uncleanly: the records past its log are gone, and new
//! ones take their offsets. The fetch engine checks its position with the
//! new leader (OffsetForLeaderEpoch) before fetching again: it goes on
//! where the new log diverges, so the new records are read and nothing of
//! the new log is skipped or read twice; under `auto_offset_reset` Error
//! the partition stops and says why. Without the check it would fetch at
//! an offset the new log may already hold, and read other records there
//! (or, out of range, start over by the reset policy). Shown on the fetch
//! engine and on two consumer groups (`Earliest`, `Error`). The lenient
//! group's coordinator is kept off the node that dies: a member losing its
//! coordinator loses its partition, and records it handled but could not
//! commit yet are handled again (at least once, as promised; not what
//! this test looks at).

use std::sync::Arc;
use std::time::Duration;

use kavari::{KafkaMessage, OffsetReset};
use kavari_testcontainers::{KafkaBroker, unique_name};
use kavari_tests::{consumer, eventually, init_tracing, started, write_records};
use kavari_wire::admin::{Election, NewTopic};
use kavari_wire::cluster::Cluster;
use kavari_wire::coordinator::{CoordinatorOf, coordinator_address};
use kavari_wire::fetch::{FetchLimits, Isolation, batch_records};
use kavari_wire::fetcher::{FetchEvent, Fetcher, FetcherConfig, PartitionFeed, ResetCause};
use kavari_wire::list_offsets::OffsetSpec;
use kavari_wire::{TopicPartition, WireError};

use crate::{Seen, Ticket};

const WAIT: Duration = Duration::from_secs(60);

fn engine(broker: &KafkaBroker, reset: Option<OffsetSpec>) -> Fetcher {
    let cluster = Arc::new(Cluster::new(broker.bootstrap_list(), "t".into(), WAIT));
    Fetcher::new(
        cluster,
        FetcherConfig {
            limits: FetchLimits {
                max_wait: Duration::from_millis(100),
                min_bytes: 1,
                max_bytes: 1 << 20,
                partition_max_bytes: 1 << 20,
                isolation: Isolation::ReadUncommitted,
            },
            reset,
            partition_buffer_bytes: 1 << 20,
            total_buffer_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
        },
    )
}

/// Writes the tickets `seqs` to partition 0 with rskafka (acks all), as
/// Kavari encodes them.
async fn write(broker: &KafkaBroker, topic: &str, seqs: &[u64]) {
    let records = seqs
        .iter()
        .map(|seq| {
            let m = kavari::codec::encode(&Ticket {
                key: format!("k{seq}"),
                seq: *seq,
            })
            .expect("encode");
            rskafka::record::Record {
                key: m.key,
                value: Some(m.value),
                headers: m.headers,
                timestamp: chrono::Utc::now(),
            }
        })
        .collect();
    write_records(broker, topic, 0, records).await;
}

/// The next event of `feed` that is not an empty answer.
async fn next(feed: &mut PartitionFeed) -> FetchEvent {
    loop {
        let event = tokio::time::timeout(WAIT, feed.recv())
            .await
            .expect("an event in time")
            .expect("the feed open");
        match event {
            FetchEvent::Records { ref batches, .. } if batches.is_empty() => {}
            other => return other,
        }
    }
}

/// Reads `n` records from `feed`: (offset, ticket seq).
async fn read(feed: &mut PartitionFeed, n: usize) -> Vec<(i64, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        match next(feed).await {
            FetchEvent::Records {
                batches,
                from,
                bytes,
                ..
            } => {
                for b in &batches {
                    for r in batch_records(b, from, 1 << 20).expect("records") {
                        let r = r.expect("a record");
                        let t: Ticket = kavari::codec::decode_value(&r.value.expect("a value"))
                            .expect("a ticket");
                        got.push((r.offset, t.seq));
                    }
                }
                feed.release(bytes);
            }
            other => panic!("records expected, got {other:?}"),
        }
    }
    got
}

/// A new group name of `prefix` whose coordinator is not on node `node`
/// (at `address`).
async fn group_away_from(admin: &Cluster, prefix: &str, node: i32, address: &str) -> String {
    for _ in 0..100 {
        let group = unique_name(prefix);
        // (Retried: a fresh cluster makes its offsets topic on first use.)
        match coordinator_address(admin, CoordinatorOf::Group, &group).await {
            Ok(coordinator) if coordinator != address => return group,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("no group of {prefix} found a coordinator off node {node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_truncated_under_the_consumer_is_found_and_fetching_goes_on_where_it_diverges() {
    init_tracing();
    let broker = KafkaBroker::from(
        KafkaBroker::builder()
            .start_cluster()
            .await
            .expect("a Kafka cluster"),
    );
    let cluster = broker.kafka().expect("Kafka");
    let prefix = format!("{}.", unique_name("truncated"));
    let topic = format!("{prefix}{}", Ticket::TOPIC);
    let admin = Cluster::new(broker.bootstrap_list(), "t".into(), WAIT);
    // Two copies, one in sync enough, unclean elections allowed.
    kavari_wire::admin::create_topic(
        &admin,
        &NewTopic {
            name: &topic,
            partitions: 1,
            replication_factor: 2,
            configs: &[
                ("min.insync.replicas", "1"),
                ("unclean.leader.election.enable", "true"),
            ],
        },
    )
    .await
    .expect("the topic");
    let leader = cluster
        .wait_for_leader(&topic, 0, None, WAIT)
        .await
        .expect("a leader");
    let replicas = admin
        .topic(&topic)
        .await
        .expect("metadata")
        .expect("the topic")
        .partitions[0]
        .replicas
        .clone();
    let follower = *replicas
        .iter()
        .find(|r| **r != leader)
        .expect("a second copy");
    write(&broker, &topic, &[0, 1, 2]).await;
    // The strict group starts from offset 0, committed from outside: under
    // `Error` a partition needs a committed offset to start.
    let strict_group = unique_name("strict");
    // (Retried: a fresh cluster makes its offsets topic on first use.)
    let start = std::collections::BTreeMap::from([(TopicPartition::new(&topic, 0), 0.into())]);
    let mut committed = Err(None);
    for _ in 0..100 {
        committed = kavari_group::admin::commit(&admin, &strict_group, &start)
            .await
            .map_err(Some);
        if committed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    committed.expect("a committed start");

    // The follower stops; the leader alone takes three more.
    cluster.stop_node(follower).expect("follower stopped");
    write(&broker, &topic, &[3, 4, 5]).await;

    // Two engines and two groups read all six: one of each may go on, one
    // may not.
    let (going_on, strict) = (
        engine(&broker, Some(OffsetSpec::Earliest)),
        engine(&broker, None),
    );
    let tp = TopicPartition::new(&topic, 0);
    let mut feed = going_on.subscribe(tp.clone(), 0);
    let mut strict_feed = strict.subscribe(tp.clone(), 0);
    let all: Vec<(i64, u64)> = (0..6).map(|i| (i, i as u64)).collect();
    assert_eq!(read(&mut feed, 6).await, all);
    assert_eq!(read(&mut strict_feed, 6).await, all);
    let (lenient_seen, strict_seen) = (Seen::default(), Seen::default());
    let member = |group: &str, reset: OffsetReset, seen: &Seen| {
        started::<Ticket, _>(
            consumer(&broker, group)
                .topic_prefix(&prefix)
                .auto_offset_reset(reset),
            seen.clone(),
        )
    };
    let leader_address = cluster.node_address(leader).expect("the leader's address");
    let lenient_group = group_away_from(&admin, "lenient", leader, leader_address).await;
    let lenient = member(&lenient_group, OffsetReset::Earliest, &lenient_seen).await;
    let strict_member = member(&strict_group, OffsetReset::Error, &strict_seen).await;
    let seqs = |seen: &Seen| {
        seen.all()
            .iter()
            .map(|h| (h.offset, h.seq))
            .collect::<Vec<_>>()
    };
    eventually(WAIT, "both groups handled the six", || {
        seqs(&lenient_seen) == all && seqs(&strict_seen) == all
    })
    .await;
    // Committed with the epoch of the sixth record.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The leader dies; the follower comes back behind it and is elected
    // uncleanly: offsets 3 to 5 are gone, and new records take them.
    cluster.kill_node(leader).expect("leader killed");
    cluster.restart_node(follower).await.expect("follower back");
    let mut elected = false;
    for _ in 0..200 {
        let _ = cluster.elect_leaders(Election::Unclean, &topic, &[0]).await;
        if cluster.leader(&topic, 0).await.ok().flatten() == Some(follower) {
            elected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(elected, "node {follower} elected leader of {topic}/0");
    write(&broker, &topic, &[10, 11]).await;
    let new: Vec<(i64, u64)> = vec![(3, 10), (4, 11)];

    match next(&mut feed).await {
        FetchEvent::Reset {
            from: 6,
            to: 3,
            cause: ResetCause::Truncated,
        } => {}
        other => panic!("the truncation found, from 6 to 3: {other:?}"),
    }
    assert_eq!(
        read(&mut feed, 2).await,
        new,
        "the new log from where it diverges"
    );
    match next(&mut strict_feed).await {
        FetchEvent::Failed(WireError::LogTruncated {
            offset: 6,
            diverged_at: Some(3),
            ..
        }) => {}
        other => panic!("the strict consumer stops, saying why: {other:?}"),
    }

    // The lenient group goes on with the new log's records, once; the
    // strict one stops its partition and says why.
    eventually(WAIT, "the lenient group handled the new records", || {
        seqs(&lenient_seen).len() >= 8
    })
    .await;
    let mut want = all.clone();
    want.extend(new.iter().copied());
    assert_eq!(
        seqs(&lenient_seen),
        want,
        "nothing skipped or handled twice"
    );
    eventually(WAIT, "the strict group says its log was truncated", || {
        strict_member
            .health()
            .partitions
            .iter()
            .any(|p| p.error.as_deref().is_some_and(|e| e.contains("truncated")))
    })
    .await;
    assert!(
        !strict_member.health().ready,
        "a stopped partition is not ready"
    );
    assert_eq!(seqs(&strict_seen), all, "nothing of the new log handled");
    lenient.shutdown().await.expect("shutdown");
    let _ = strict_member.shutdown().await;
}
