//! OffsetForLeaderEpoch (KIP-320): where a leader epoch ends in a
//! partition's log as its leader holds it now. A consumer asks after the
//! leader changed, with the epoch of the last record it read: an end
//! before its position means the log was truncated under it (an unclean
//! leader election), and where the new log diverges.

use std::collections::BTreeMap;

use kafka_protocol::messages::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};

use crate::answers::part_of;
use crate::connection::Connection;
use crate::topic_name;
use crate::{TopicPartition, WireError};

/// A position to check: the epoch of the last record read, asked under
/// the leader epoch the consumer knows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochCheck {
    /// The partition.
    pub partition: TopicPartition,
    /// The leader epoch the consumer knows (the leader fences an older one).
    pub current_leader_epoch: i32,
    /// The leader epoch of the last record read.
    pub leader_epoch: i32,
}

/// Where an epoch ends in the leader's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch at or below the one asked that the log holds (-1:
    /// none).
    pub leader_epoch: i32,
    /// The offset after that epoch's last record (-1: unknown).
    pub end_offset: i64,
}

/// Asks the leader behind `conn` where each check's epoch ends, in one
/// request. Each partition has its own answer (one the broker refused or
/// left out is an `Err` of its own); a request that failed as a whole is
/// the outer `Err`.
pub async fn epoch_ends(
    conn: &Connection,
    checks: &[EpochCheck],
) -> Result<Vec<(TopicPartition, Result<EpochEnd, WireError>)>, WireError> {
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    for c in checks {
        topics.entry(&c.partition.topic).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(c.partition.partition)
                .with_current_leader_epoch(c.current_leader_epoch)
                .with_leader_epoch(c.leader_epoch),
        );
    }
    let req = OffsetForLeaderEpochRequest::default()
        // A consumer's request, not a follower's.
        .with_replica_id((-1).into())
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(topic_name(topic))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let resp = conn.send(&req).await?;
    let answer = |tp: &TopicPartition| {
        let topics = resp
            .topics
            .iter()
            .map(|t| (t.topic.0.as_str(), t.partitions.as_slice()));
        let p = part_of(
            "OffsetForLeaderEpoch",
            topics,
            tp,
            |p| p.partition,
            |p| p.error_code,
        )?;
        Ok(EpochEnd {
            leader_epoch: p.leader_epoch,
            end_offset: p.end_offset,
        })
    };
    Ok(checks
        .iter()
        .map(|c| (c.partition.clone(), answer(&c.partition)))
        .collect())
}
