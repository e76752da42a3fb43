//! ListOffsets: where a partition begins or ends, for a consumer with no
//! committed offset or one whose offset fell out of the log.

use std::collections::{BTreeMap, HashMap};

use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};

use crate::answers::part_of;
use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::fetch::Isolation;
use crate::topic_name;
use crate::{TopicPartition, WireError};

/// Which end of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The oldest record kept (log start).
    Earliest,
    /// The offset after the last record (the high watermark, or the last
    /// stable offset under `ReadCommitted`).
    Latest,
    /// The first record whose timestamp (milliseconds since the epoch) is
    /// at or after this; the broker answers -1 when no record is that late.
    Time(i64),
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            Self::Earliest => -2,
            Self::Latest => -1,
            Self::Time(ms) => ms.max(0),
        }
    }
}

/// The offset `spec` names in `partition`, asked of its leader behind `conn`.
pub async fn list_offset(
    conn: &Connection,
    partition: &TopicPartition,
    spec: OffsetSpec,
    isolation: Isolation,
) -> Result<i64, WireError> {
    list_offsets(conn, std::slice::from_ref(partition), spec, isolation)
        .await?
        .pop()
        .map_or_else(
            || {
                Err(WireError::Malformed {
                    what: "ListOffsets response",
                    detail: format!("no answer for {partition}"),
                })
            },
            |(_, offset)| offset,
        )
}

/// The offset `spec` names in each of `partitions`, all led by the broker
/// behind `conn`, in one request. Each partition gets its own answer (a
/// partition the broker refused or left out is an `Err` of its own); a
/// request that failed as a whole is the outer `Err`.
pub async fn list_offsets(
    conn: &Connection,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
    isolation: Isolation,
) -> Result<Vec<(TopicPartition, Result<i64, WireError>)>, WireError> {
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for tp in partitions {
        topics.entry(&tp.topic).or_default().push(
            ListOffsetsPartition::default()
                .with_partition_index(tp.partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(spec.timestamp()),
        );
    }
    let req = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(match isolation {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        })
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    ListOffsetsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let resp = conn.send(&req).await?;
    let answer = |tp: &TopicPartition| {
        let topics = resp
            .topics
            .iter()
            .map(|t| (t.name.0.as_str(), t.partitions.as_slice()));
        part_of(
            "ListOffsets",
            topics,
            tp,
            |p| p.partition_index,
            |p| p.error_code,
        )
        .map(|p| p.offset)
    };
    Ok(partitions
        .iter()
        .map(|tp| (tp.clone(), answer(tp)))
        .collect())
}

/// The offset `spec` names in each of `partitions`: one ListOffsets per
/// leader, asked at once. Each partition has its own answer (one without a
/// leader, or whose leader could not be asked, is an `Err`).
pub async fn by_leader(
    cluster: &Cluster,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
    isolation: Isolation,
) -> HashMap<TopicPartition, Result<i64, WireError>> {
    let mut topics: Vec<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let metadata = match cluster.topics(&topics).await {
        Ok(m) => m,
        Err(e) => {
            return partitions
                .iter()
                .map(|tp| (tp.clone(), Err(e.clone())))
                .collect();
        }
    };
    let leader_of = |tp: &TopicPartition| {
        metadata
            .iter()
            .filter(|t| t.name == tp.topic)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition == tp.partition)
            .and_then(|p| p.leader)
    };
    let mut answers = HashMap::new();
    let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
    for tp in partitions {
        match leader_of(tp) {
            Some(leader) => by_leader.entry(leader).or_default().push(tp.clone()),
            None => {
                answers.insert(tp.clone(), Err(no_leader(tp)));
            }
        }
    }
    let asked = by_leader.into_iter().map(|(leader, tps)| async move {
        let answer = async {
            let conn = cluster.broker(leader).await?;
            list_offsets(&conn, &tps, spec, isolation).await
        }
        .await;
        match answer {
            Ok(each) => each,
            Err(e) => tps.into_iter().map(|tp| (tp, Err(e.clone()))).collect(),
        }
    });
    answers.extend(join_all(asked).await.into_iter().flatten());
    answers
}

/// A partition the metadata names no leader for.
pub(crate) fn no_leader(partition: &TopicPartition) -> WireError {
    WireError::broker(
        "Metadata",
        ResponseError::LeaderNotAvailable,
        Some(format!("no leader for {partition}")),
    )
}
