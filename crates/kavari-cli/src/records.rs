//! Reading a topic's partitions from chosen offsets, one Fetch per leader
//! per round.

use std::collections::BTreeMap;
use std::time::Duration;

use kavari_wire::TopicPartition;
use kavari_wire::cluster::Cluster;
use kavari_wire::fetch::{FetchLimits, FetchPosition, Isolation, fetch};
use kavari_wire::list_offsets::{OffsetSpec, list_offset};
use kavari_wire::record_batch::read::FetchedRecord;

use crate::Failure;

/// Where reading a partition stands.
#[derive(Debug, Clone)]
pub(crate) struct Position {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    leader: i32,
    leader_epoch: i32,
}

/// The partitions of `topic` (or only `partition`), each at its earliest
/// offset or its end.
pub(crate) async fn start(
    cluster: &Cluster,
    topic: &str,
    partition: Option<i32>,
    from_beginning: bool,
    isolation: Isolation,
) -> Result<Vec<Position>, Failure> {
    let meta = cluster
        .topic(topic)
        .await?
        .ok_or_else(|| Failure(format!("topic {topic} does not exist")))?;
    let spec = if from_beginning {
        OffsetSpec::Earliest
    } else {
        OffsetSpec::Latest
    };
    let mut out = Vec::new();
    for p in meta
        .partitions
        .iter()
        .filter(|p| partition.is_none_or(|n| n == p.partition))
    {
        let leader = p
            .leader
            .ok_or_else(|| Failure(format!("{topic}/{} has no leader", p.partition)))?;
        let conn = cluster.broker(leader).await?;
        let tp = TopicPartition::new(topic, p.partition);
        let offset = list_offset(&conn, &tp, spec, isolation).await?;
        out.push(Position {
            partition: p.partition,
            offset,
            leader,
            leader_epoch: p.leader_epoch,
        });
    }
    if out.is_empty() {
        return Err(Failure(format!(
            "{topic} has no partition {}",
            partition.unwrap_or_default()
        )));
    }
    Ok(out)
}

/// The last offset + 1 of each partition at `positions` now.
pub(crate) async fn ends(
    cluster: &Cluster,
    topic: &str,
    positions: &[Position],
) -> Result<BTreeMap<i32, i64>, Failure> {
    let mut ends = BTreeMap::new();
    for p in positions {
        let conn = cluster.broker(p.leader).await?;
        let tp = TopicPartition::new(topic, p.partition);
        let end = list_offset(&conn, &tp, OffsetSpec::Latest, Isolation::ReadCommitted).await?;
        ends.insert(p.partition, end);
    }
    Ok(ends)
}

/// One round: the records after each position (waiting up to `wait` when
/// there are none) as `isolation` shows them, positions moved past them.
pub(crate) async fn poll(
    cluster: &Cluster,
    topic: &str,
    positions: &mut [Position],
    wait: Duration,
    isolation: Isolation,
) -> Result<Vec<(i32, FetchedRecord)>, Failure> {
    let limits = FetchLimits {
        max_wait: wait,
        min_bytes: 1,
        max_bytes: 16 << 20,
        partition_max_bytes: 4 << 20,
        isolation,
    };
    let mut by_leader: BTreeMap<i32, Vec<FetchPosition>> = BTreeMap::new();
    for p in positions.iter() {
        by_leader.entry(p.leader).or_default().push(FetchPosition {
            partition: TopicPartition::new(topic, p.partition),
            offset: p.offset,
            leader_epoch: p.leader_epoch,
        });
    }
    let mut out = Vec::new();
    for (leader, asked) in by_leader {
        let conn = cluster.broker(leader).await?;
        for answer in fetch(&conn, &asked, &limits).await? {
            let Some(position) = positions
                .iter_mut()
                .find(|p| p.partition == answer.partition.partition)
            else {
                continue;
            };
            if let Some(e) = answer.error {
                return Err(Failure(format!("fetching {}: {e:?}", answer.partition)));
            }
            let extracted = answer.extract(position.offset, isolation)?;
            position.offset = extracted.next_offset;
            out.extend(
                extracted
                    .records(64 << 20)?
                    .into_iter()
                    .map(|r| (position.partition, r)),
            );
        }
    }
    Ok(out)
}
