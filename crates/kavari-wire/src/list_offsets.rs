//! ListOffsets: where a partition begins or ends, for a consumer with no
//! committed offset or one whose offset fell out of the log.

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::connection::Connection;
use crate::fetch::Isolation;
use crate::{TopicPartition, WireError};

/// Which end of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The oldest record kept (log start).
    Earliest,
    /// The offset after the last record (the high watermark, or the last
    /// stable offset under `ReadCommitted`).
    Latest,
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            Self::Earliest => -2,
            Self::Latest => -1,
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
    let req = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(match isolation {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        })
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(partition.topic.clone())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition.partition)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(spec.timestamp()),
                ]),
        ]);
    let resp = conn.send(&req).await?;
    let answer = resp
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == partition.topic)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == partition.partition)
        .ok_or_else(|| WireError::Malformed {
            what: "ListOffsets response",
            detail: format!("no answer for {partition}"),
        })?;
    if let Some(e) = answer.error_code.err() {
        return Err(WireError::broker(
            "ListOffsets",
            e,
            Some(format!("{partition}")),
        ));
    }
    Ok(answer.offset)
}
