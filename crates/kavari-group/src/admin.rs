//! Consumer groups worked on from outside, as tools do (`kavari group
//! list`, `describe` and `reset-offsets`, `kavari dlq replay`): the groups
//! a cluster has; a group's state, protocol, members with their
//! assignments; its committed offsets read and set.

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{
    DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetFetchRequest, offset_fetch_request,
};
use kafka_protocol::protocol::StrBytes;
use kavari_wire::cluster::Cluster;

use std::collections::BTreeMap;

use crate::api::{
    commit_refused, commit_request, committed_offsets, committed_with_metadata, coordinator_address,
};
use crate::protocol::{Assignment, Subscription};
use crate::{CommitOffset, Generation};
use crate::{GroupError, TopicPartition};

/// A consumer group's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty` or
    /// `Dead`, as the coordinator says.
    pub state: String,
    /// The protocol type (`consumer` for Kafka consumers, `share` for a
    /// share group).
    pub protocol_type: String,
    /// The assignor the members chose (`range`, `cooperative-sticky`…),
    /// or the broker's under the consumer protocol (`uniform`, `range`).
    pub assignor: String,
    /// Under the consumer group protocol (KIP-848), the group's epoch and
    /// the epoch of its target assignment; `None` for a classic group.
    pub epochs: Option<(i32, i32)>,
    /// The members.
    pub members: Vec<GroupMemberDescription>,
    /// Committed offsets, every partition with one; for a share group,
    /// each share partition's start offset (the first record not yet done
    /// with).
    pub committed: Vec<(TopicPartition, CommitOffset)>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberDescription {
    /// The member id.
    pub member_id: String,
    /// Its static membership id, if any.
    pub group_instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// The host it connects from.
    pub client_host: String,
    /// Its rack (`client.rack`), if it said one.
    pub rack: Option<String>,
    /// Its partitions (for consumer groups).
    pub assignment: Vec<TopicPartition>,
    /// Under the consumer group protocol: the member's epoch, and the
    /// partitions the broker means it to have once it reconciled.
    pub target: Option<(i32, Vec<TopicPartition>)>,
}

/// A group as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub group_id: String,
    /// `consumer` for consumer groups (empty for a group that only keeps
    /// offsets, as `kavari dlq replay`'s).
    pub protocol_type: String,
    /// `Stable`, `Empty`, … (empty from a broker too old to say).
    pub state: String,
}

/// Every group of the cluster, by id: each broker lists the groups it
/// coordinates.
pub async fn list_groups(cluster: &Cluster) -> Result<Vec<ListedGroup>, GroupError> {
    let mut groups = Vec::new();
    for id in cluster.broker_ids().await? {
        let conn = cluster.broker(id).await?;
        let resp = conn.send(&ListGroupsRequest::default()).await?;
        if let Some(e) = resp.error_code.err() {
            return Err(GroupError::Wire(kavari_wire::WireError::broker(
                "ListGroups",
                e,
                Some(format!("broker {id}")),
            )));
        }
        groups.extend(resp.groups.into_iter().map(|g| ListedGroup {
            group_id: g.group_id.0.to_string(),
            protocol_type: g.protocol_type.to_string(),
            state: g.group_state.to_string(),
        }));
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    groups.dedup_by(|a, b| a.group_id == b.group_id);
    Ok(groups)
}

/// Describes `group_id` through its coordinator: a group of the consumer
/// protocol with ConsumerGroupDescribe, a classic one with DescribeGroups.
pub async fn describe_group(
    cluster: &Cluster,
    group_id: &str,
) -> Result<GroupDescription, GroupError> {
    let address = coordinator_address(cluster, group_id).await?;
    let conn = cluster.connect(&address).await?;
    if let Some(mut d) = describe_consumer_group(&conn, group_id).await? {
        d.committed = fetch_committed(&conn, group_id)
            .await?
            .into_iter()
            .collect();
        return Ok(d);
    }
    if let Some(d) = describe_share_group(&conn, group_id).await? {
        return Ok(d);
    }
    let group = GroupId(StrBytes::from_string(group_id.to_string()));
    let resp = conn
        .send(&DescribeGroupsRequest::default().with_groups(vec![group.clone()]))
        .await?;
    let described = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| GroupError::malformed("DescribeGroups", "no group in the answer"))?;
    if let Some(e) = described.error_code.err() {
        return Err(GroupError::Wire(kavari_wire::WireError::broker(
            "DescribeGroups",
            e,
            Some(group_id.to_string()),
        )));
    }
    let consumer = described.protocol_type.as_str() == "consumer";
    let members = described
        .members
        .into_iter()
        .map(|m| GroupMemberDescription {
            member_id: m.member_id.to_string(),
            group_instance_id: m.group_instance_id.map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            client_host: m.client_host.to_string(),
            rack: if consumer {
                Subscription::decode(&m.member_metadata)
                    .ok()
                    .and_then(|s| s.rack_id)
            } else {
                None
            },
            assignment: if consumer {
                Assignment::decode(&m.member_assignment)
                    .map(|a| a.partitions)
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
            target: None,
        })
        .collect();
    let committed = fetch_committed(&conn, group_id)
        .await?
        .into_iter()
        .collect();
    Ok(GroupDescription {
        group_id: group_id.to_string(),
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        assignor: described.protocol_data.to_string(),
        epochs: None,
        members,
        committed,
    })
}

/// Describes share group `group_id` (KIP-932) with ShareGroupDescribe,
/// and its share partitions' start offsets with
/// DescribeShareGroupOffsets; `None` when it is not a share group.
async fn describe_share_group(
    conn: &kavari_wire::connection::Connection,
    group_id: &str,
) -> Result<Option<GroupDescription>, GroupError> {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
    use kafka_protocol::messages::{DescribeShareGroupOffsetsRequest, ShareGroupDescribeRequest};

    let group = GroupId(StrBytes::from_string(group_id.to_string()));
    let resp = match conn
        .send(&ShareGroupDescribeRequest::default().with_group_ids(vec![group.clone()]))
        .await
    {
        Ok(resp) => resp,
        Err(kavari_wire::WireError::UnsupportedVersion { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let described = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| GroupError::malformed("ShareGroupDescribe", "no group in the answer"))?;
    match described.error_code.err() {
        None => {}
        Some(ResponseError::GroupIdNotFound) => return Ok(None),
        Some(e) => {
            return Err(GroupError::Wire(kavari_wire::WireError::broker(
                "ShareGroupDescribe",
                e,
                described.error_message.map(|m| m.to_string()),
            )));
        }
    }
    let members = described
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<TopicPartition> = m
                .assignment
                .topic_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| TopicPartition::new(t.topic_name.to_string(), *p))
                })
                .collect();
            GroupMemberDescription {
                member_id: m.member_id.to_string(),
                group_instance_id: None,
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                rack: m.rack_id.as_ref().map(|r| r.to_string()),
                // A share member owns what it is assigned at once.
                target: Some((m.member_epoch, assignment.clone())),
                assignment,
            }
        })
        .collect();
    let offsets = conn
        .send(
            &DescribeShareGroupOffsetsRequest::default().with_groups(vec![
                DescribeShareGroupOffsetsRequestGroup::default()
                    .with_group_id(group)
                    .with_topics(None),
            ]),
        )
        .await?;
    let mut committed = Vec::new();
    for g in &offsets.groups {
        if let Some(e) = g.error_code.err() {
            return Err(GroupError::Wire(kavari_wire::WireError::broker(
                "DescribeShareGroupOffsets",
                e,
                g.error_message.as_ref().map(|m| m.to_string()),
            )));
        }
        for t in &g.topics {
            for p in &t.partitions {
                if p.error_code == 0 && p.start_offset >= 0 {
                    committed.push((
                        TopicPartition::new(t.topic_name.to_string(), p.partition_index),
                        CommitOffset::from(p.start_offset),
                    ));
                }
            }
        }
    }
    committed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(GroupDescription {
        group_id: group_id.to_string(),
        state: described.group_state.to_string(),
        protocol_type: "share".into(),
        assignor: described.assignor_name.to_string(),
        epochs: Some((described.group_epoch, described.assignment_epoch)),
        members,
        committed,
    }))
}

/// Describes `group_id` with ConsumerGroupDescribe (KIP-848); `None` when
/// it is not a group of the consumer protocol (or the broker predates it).
/// The committed offsets are left for the caller.
async fn describe_consumer_group(
    conn: &kavari_wire::connection::Connection,
    group_id: &str,
) -> Result<Option<GroupDescription>, GroupError> {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::ConsumerGroupDescribeRequest;
    use kafka_protocol::messages::consumer_group_describe_response::Assignment as Described;

    let group = GroupId(StrBytes::from_string(group_id.to_string()));
    let resp = match conn
        .send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec![group]))
        .await
    {
        Ok(resp) => resp,
        Err(kavari_wire::WireError::UnsupportedVersion { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let described =
        resp.groups.into_iter().next().ok_or_else(|| {
            GroupError::malformed("ConsumerGroupDescribe", "no group in the answer")
        })?;
    match described.error_code.err() {
        None => {}
        // A classic group, or none: DescribeGroups says which.
        Some(ResponseError::GroupIdNotFound) => return Ok(None),
        Some(e) => {
            return Err(GroupError::Wire(kavari_wire::WireError::broker(
                "ConsumerGroupDescribe",
                e,
                described.error_message.map(|m| m.to_string()),
            )));
        }
    }
    let partitions = |a: &Described| -> Vec<TopicPartition> {
        a.topic_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.topic_name.to_string(), *p))
            })
            .collect()
    };
    let members = described
        .members
        .iter()
        .map(|m| GroupMemberDescription {
            member_id: m.member_id.to_string(),
            group_instance_id: m.instance_id.as_ref().map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            client_host: m.client_host.to_string(),
            rack: m.rack_id.as_ref().map(|r| r.to_string()),
            assignment: partitions(&m.assignment),
            target: Some((m.member_epoch, partitions(&m.target_assignment))),
        })
        .collect();
    Ok(Some(GroupDescription {
        group_id: group_id.to_string(),
        state: described.group_state.to_string(),
        protocol_type: "consumer".into(),
        assignor: described.assignor_name.to_string(),
        epochs: Some((described.group_epoch, described.assignment_epoch)),
        members,
        committed: Vec::new(),
    }))
}

/// A partition's offset as a tool commits it from outside the group: the
/// offset, and a metadata string kept with it (Kafka keeps up to
/// `offset.metadata.max.bytes`, 4096 by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolOffset {
    /// The next offset to read.
    pub offset: i64,
    /// What the tool keeps with it.
    pub metadata: String,
}

impl From<i64> for ToolOffset {
    fn from(offset: i64) -> Self {
        Self {
            offset,
            metadata: String::new(),
        }
    }
}

/// Every partition `group_id` has a committed offset for, with the
/// metadata committed with it.
pub async fn committed(
    cluster: &Cluster,
    group_id: &str,
) -> Result<BTreeMap<TopicPartition, ToolOffset>, GroupError> {
    let address = coordinator_address(cluster, group_id).await?;
    let conn = cluster.connect(&address).await?;
    let (req, version) = offset_fetch(&conn, group_id)?;
    Ok(committed_with_metadata(&conn.send(&req).await?, version)?
        .into_iter()
        .filter_map(|(tp, offset, metadata)| {
            offset.map(|o| {
                let at = ToolOffset {
                    offset: o.offset,
                    metadata,
                };
                (tp, at)
            })
        })
        .collect())
}

async fn fetch_committed(
    conn: &kavari_wire::connection::Connection,
    group_id: &str,
) -> Result<BTreeMap<TopicPartition, CommitOffset>, GroupError> {
    let (req, version) = offset_fetch(conn, group_id)?;
    Ok(committed_offsets(&conn.send(&req).await?, version)?
        .into_iter()
        .filter_map(|(tp, offset)| offset.map(|o| (tp, o)))
        .collect())
}

/// An OffsetFetch of every partition `group_id` committed, and its version.
fn offset_fetch(
    conn: &kavari_wire::connection::Connection,
    group_id: &str,
) -> Result<(OffsetFetchRequest, i16), GroupError> {
    let group = GroupId(StrBytes::from_string(group_id.to_string()));
    let version = conn.version::<OffsetFetchRequest>()?;
    // Every partition with a committed offset: topics null.
    let req = if version >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(group)
                .with_topics(None),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group)
            .with_topics(None)
    };
    Ok((req, version))
}

/// Commits `offsets` (with their metadata) for `group_id` from outside
/// the group (generation -1, no member): what a tool keeping its progress
/// in a group of its own does. The coordinator refuses it while the group
/// has members.
pub async fn commit(
    cluster: &Cluster,
    group_id: &str,
    offsets: &BTreeMap<TopicPartition, ToolOffset>,
) -> Result<(), GroupError> {
    let address = coordinator_address(cluster, group_id).await?;
    let conn = cluster.connect(&address).await?;
    let outside = Generation {
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
    };
    let plain = offsets
        .iter()
        .map(|(tp, at)| (tp.clone(), CommitOffset::from(at.offset)))
        .collect();
    let mut req = commit_request(group_id, &outside, &plain);
    for topic in &mut req.topics {
        for p in &mut topic.partitions {
            let tp = TopicPartition::new(topic.name.0.as_str(), p.partition_index);
            p.committed_metadata = offsets
                .get(&tp)
                .filter(|at| !at.metadata.is_empty())
                .map(|at| StrBytes::from_string(at.metadata.clone()));
        }
    }
    Ok(commit_refused(&conn.send(&req).await?)?)
}
