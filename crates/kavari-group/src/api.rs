//! The group APIs the member state machine uses, as a trait: the Kafka
//! implementation speaks to a real coordinator; unit tests script answers.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName, join_group_request::JoinGroupRequestProtocol,
    leave_group_request::MemberIdentity, offset_commit_request, offset_fetch_request,
    sync_group_request::SyncGroupRequestAssignment,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;

use kavari_wire::WireError;
use kavari_wire::cluster::Cluster;
use kavari_wire::connection::Connection;
use kavari_wire::topic_name;

use crate::{CommitOffset, Generation, GroupError, TopicPartition};

/// What a JoinGroup needs.
#[derive(Debug, Clone)]
pub(crate) struct JoinParams {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    /// (assignor name, subscription bytes), in preference order.
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) reason: String,
}

/// A JoinGroup answer; `error` is set on failure, with `member_id` still
/// meaningful for MEMBER_ID_REQUIRED.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinResult {
    pub(crate) error: Option<ResponseError>,
    pub(crate) generation: i32,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader: String,
    pub(crate) member_id: String,
    /// (member id, instance id, subscription bytes): only for the leader.
    pub(crate) members: Vec<(String, Option<String>, Bytes)>,
}

/// What a SyncGroup needs.
#[derive(Debug, Clone)]
pub(crate) struct SyncParams {
    pub(crate) generation: Generation,
    pub(crate) protocol_name: String,
    pub(crate) assignments: Vec<(String, Bytes)>,
}

/// The group APIs, semantically: each implementation builds the request for
/// the version it negotiated.
pub(crate) trait GroupApi: Send + Sync + 'static {
    /// Finds the group's coordinator and connects to it.
    fn find_coordinator(&self) -> impl Future<Output = Result<(), GroupError>> + Send;
    fn join_group(
        &self,
        p: JoinParams,
    ) -> impl Future<Output = Result<JoinResult, GroupError>> + Send;
    /// Returns the member's assignment bytes.
    fn sync_group(&self, p: SyncParams) -> impl Future<Output = Result<Bytes, GroupError>> + Send;
    fn heartbeat(&self, g: &Generation) -> impl Future<Output = Result<(), GroupError>> + Send;
    fn leave_group(&self, g: &Generation) -> impl Future<Output = Result<(), GroupError>> + Send;
    fn partition_counts(
        &self,
        topics: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, i32>, GroupError>> + Send;
    fn offset_commit(
        &self,
        g: &Generation,
        offsets: &BTreeMap<TopicPartition, CommitOffset>,
    ) -> impl Future<Output = Result<(), GroupError>> + Send;
    fn offset_fetch(
        &self,
        partitions: &[TopicPartition],
    ) -> impl Future<Output = Result<BTreeMap<TopicPartition, Option<CommitOffset>>, GroupError>> + Send;
}

/// The two connections to the coordinator: one for JoinGroup/SyncGroup,
/// which may wait a whole rebalance, one for everything else.
#[derive(Debug)]
pub(crate) struct CoordinatorLink {
    join: Connection,
    pub(crate) control: Connection,
}

/// [`GroupApi`] over real connections.
#[derive(Debug)]
pub(crate) struct KafkaGroupApi {
    group_id: String,
    pub(crate) cluster: Arc<Cluster>,
    link: Mutex<Option<Arc<CoordinatorLink>>>,
}

pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(crate) fn check(
    api: &'static str,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), WireError> {
    match code.err() {
        None => Ok(()),
        Some(e) => Err(WireError::broker(
            api,
            e,
            message.map(|m| m.as_str().to_string()),
        )),
    }
}

impl KafkaGroupApi {
    /// Commits `offsets` in the open transaction of `producer` under
    /// `transactional_id` (TxnOffsetCommit, to the group's coordinator),
    /// with the generation's member id and instance id (KIP-447): a member
    /// the group has moved past is refused, so a zombie's transaction
    /// cannot commit.
    pub(crate) async fn txn_offset_commit(
        &self,
        g: &Generation,
        transactional_id: &str,
        producer: kavari_wire::producer_id::ProducerIdentity,
        offsets: &BTreeMap<TopicPartition, CommitOffset>,
    ) -> Result<(), GroupError> {
        use kafka_protocol::messages::txn_offset_commit_request::{
            TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::{ProducerId, TransactionalId, TxnOffsetCommitRequest};

        let link = self.link().await?;
        let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, o) in offsets {
            topics.entry(tp.topic.as_str()).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(o.offset)
                    .with_committed_leader_epoch(o.leader_epoch.unwrap_or(-1)),
            );
        }
        let version = link.control.version::<TxnOffsetCommitRequest>()?;
        let mut req = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s(transactional_id)))
            .with_group_id(self.group())
            .with_producer_id(ProducerId(producer.id))
            .with_producer_epoch(producer.epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        if version >= 3 {
            req = req
                .with_generation_id(g.generation_id)
                .with_member_id(s(&g.member_id))
                .with_group_instance_id(g.group_instance_id.as_deref().map(s));
        }
        let resp = self.on_error(link.control.send(&req).await).await?;
        let refused = resp
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .try_for_each(|p| check("TxnOffsetCommit", p.error_code, None));
        self.on_error(refused).await
    }

    pub(crate) fn new(group_id: String, cluster: Arc<Cluster>) -> Self {
        Self {
            group_id,
            cluster,
            link: Mutex::new(None),
        }
    }

    pub(crate) fn group(&self) -> GroupId {
        GroupId(s(&self.group_id))
    }

    pub(crate) async fn link(&self) -> Result<Arc<CoordinatorLink>, GroupError> {
        let slot = self.link.lock().await;
        match slot.as_ref() {
            Some(l) if !l.join.is_broken() && !l.control.is_broken() => Ok(Arc::clone(l)),
            _ => Err(GroupError::broker(
                "coordinator",
                ResponseError::CoordinatorNotAvailable,
                Some("no connection to the coordinator".into()),
            )),
        }
    }

    /// Forgets a coordinator that failed, so the member looks it up again.
    pub(crate) async fn on_error<T>(&self, r: Result<T, WireError>) -> Result<T, GroupError> {
        let r = r.map_err(GroupError::Wire);
        if let Err(e) = &r
            && e.needs_new_coordinator()
        {
            *self.link.lock().await = None;
        }
        r
    }
}

impl GroupApi for KafkaGroupApi {
    async fn find_coordinator(&self) -> Result<(), GroupError> {
        let address = coordinator_address(&self.cluster, &self.group_id).await?;
        let join = self.cluster.connect(&address).await?;
        let control = self.cluster.connect(&address).await?;
        tracing::debug!(group = %self.group_id, coordinator = %address, "found the group coordinator");
        *self.link.lock().await = Some(Arc::new(CoordinatorLink { join, control }));
        Ok(())
    }

    async fn join_group(&self, p: JoinParams) -> Result<JoinResult, GroupError> {
        let link = self.link().await?;
        let req = JoinGroupRequest::default()
            .with_group_id(self.group())
            .with_session_timeout_ms(
                i32::try_from(p.session_timeout.as_millis()).unwrap_or(i32::MAX),
            )
            .with_rebalance_timeout_ms(
                i32::try_from(p.rebalance_timeout.as_millis()).unwrap_or(i32::MAX),
            )
            .with_member_id(s(&p.member_id))
            .with_group_instance_id(p.group_instance_id.as_deref().map(s))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(
                p.protocols
                    .iter()
                    .map(|(name, meta)| {
                        JoinGroupRequestProtocol::default()
                            .with_name(s(name))
                            .with_metadata(meta.clone())
                    })
                    .collect(),
            )
            .with_reason(Some(s(&p.reason)));
        // The broker holds JoinGroup until the rebalance completes.
        let timeout = p.rebalance_timeout + self.cluster.request_timeout();
        let resp = self
            .on_error(link.join.send_with_timeout(&req, timeout).await)
            .await?;
        Ok(JoinResult {
            error: resp.error_code.err(),
            generation: resp.generation_id,
            protocol_name: resp.protocol_name.map(|n| n.as_str().to_string()),
            leader: resp.leader.as_str().to_string(),
            member_id: resp.member_id.as_str().to_string(),
            members: resp
                .members
                .into_iter()
                .map(|m| {
                    (
                        m.member_id.as_str().to_string(),
                        m.group_instance_id.map(|i| i.as_str().to_string()),
                        m.metadata,
                    )
                })
                .collect(),
        })
    }

    async fn sync_group(&self, p: SyncParams) -> Result<Bytes, GroupError> {
        let link = self.link().await?;
        let req = SyncGroupRequest::default()
            .with_group_id(self.group())
            .with_generation_id(p.generation.generation_id)
            .with_member_id(s(&p.generation.member_id))
            .with_group_instance_id(p.generation.group_instance_id.as_deref().map(s))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(s(&p.protocol_name)))
            .with_assignments(
                p.assignments
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(m))
                            .with_assignment(a.clone())
                    })
                    .collect(),
            );
        // Followers wait for the leader's SyncGroup.
        let timeout = self.cluster.request_timeout() * 2;
        let resp = self
            .on_error(link.join.send_with_timeout(&req, timeout).await)
            .await?;
        check("SyncGroup", resp.error_code, None)?;
        Ok(resp.assignment)
    }

    async fn heartbeat(&self, g: &Generation) -> Result<(), GroupError> {
        let link = self.link().await?;
        let req = HeartbeatRequest::default()
            .with_group_id(self.group())
            .with_generation_id(g.generation_id)
            .with_member_id(s(&g.member_id))
            .with_group_instance_id(g.group_instance_id.as_deref().map(s));
        let resp = self.on_error(link.control.send(&req).await).await?;
        self.on_error(check("Heartbeat", resp.error_code, None))
            .await
    }

    async fn leave_group(&self, g: &Generation) -> Result<(), GroupError> {
        let link = self.link().await?;
        let version = link.control.version::<LeaveGroupRequest>()?;
        let req = if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(self.group())
                .with_members(vec![
                    MemberIdentity::default()
                        .with_member_id(s(&g.member_id))
                        .with_group_instance_id(g.group_instance_id.as_deref().map(s))
                        .with_reason(Some(StrBytes::from_static_str("the consumer is closing"))),
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(self.group())
                .with_member_id(s(&g.member_id))
        };
        let resp = link.control.send(&req).await?;
        check("LeaveGroup", resp.error_code, None)?;
        for m in &resp.members {
            check("LeaveGroup", m.error_code, None)?;
        }
        Ok(())
    }

    async fn partition_counts(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, i32>, GroupError> {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        Ok(self
            .cluster
            .topics(&names)
            .await?
            .into_iter()
            .filter(|t| t.error.is_none() && !t.partitions.is_empty())
            .filter_map(|t| Some((t.name, i32::try_from(t.partitions.len()).ok()?)))
            .collect())
    }

    async fn offset_commit(
        &self,
        g: &Generation,
        offsets: &BTreeMap<TopicPartition, CommitOffset>,
    ) -> Result<(), GroupError> {
        let link = self.link().await?;
        let req = commit_request(&self.group_id, g, offsets);
        let resp = self.on_error(link.control.send(&req).await).await?;
        self.on_error(commit_refused(&resp)).await
    }

    async fn offset_fetch(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<CommitOffset>>, GroupError> {
        let link = self.link().await?;
        let version = link.control.version::<OffsetFetchRequest>()?;
        let by_topic = crate::protocol::by_topic(partitions);
        // Offsets a transaction is committing wait for its end (KIP-447):
        // the broker answers UNSTABLE_OFFSET_COMMIT, retriable, meanwhile,
        // so a partition's next owner never starts from before them.
        let req = if version >= 8 {
            OffsetFetchRequest::default()
                .with_require_stable(true)
                .with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(self.group())
                        .with_topics(Some(
                            by_topic
                                .iter()
                                .map(|(t, ps)| {
                                    offset_fetch_request::OffsetFetchRequestTopics::default()
                                        .with_name(topic_name(t))
                                        .with_partition_indexes(ps.clone())
                                })
                                .collect(),
                        )),
                ])
        } else {
            OffsetFetchRequest::default()
                .with_require_stable(version >= 7)
                .with_group_id(self.group())
                .with_topics(Some(
                    by_topic
                        .iter()
                        .map(|(t, ps)| {
                            offset_fetch_request::OffsetFetchRequestTopic::default()
                                .with_name(topic_name(t))
                                .with_partition_indexes(ps.clone())
                        })
                        .collect(),
                ))
        };
        let resp = self.on_error(link.control.send(&req).await).await?;
        let mut out: BTreeMap<TopicPartition, Option<CommitOffset>> =
            partitions.iter().map(|tp| (tp.clone(), None)).collect();
        out.extend(self.on_error(committed_offsets(&resp, version)).await?);
        Ok(out)
    }
}

/// An OffsetCommit of `offsets` for `group_id` by the member of `g`
/// (generation -1 and no member id: a commit from outside the group).
pub(crate) fn commit_request(
    group_id: &str,
    g: &Generation,
    offsets: &BTreeMap<TopicPartition, CommitOffset>,
) -> OffsetCommitRequest {
    let mut topics: BTreeMap<&str, Vec<offset_commit_request::OffsetCommitRequestPartition>> =
        BTreeMap::new();
    for (tp, o) in offsets {
        topics.entry(tp.topic.as_str()).or_default().push(
            offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(o.offset)
                // -1: unknown (and what versions before 6 cannot carry).
                .with_committed_leader_epoch(o.leader_epoch.unwrap_or(-1)),
        );
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group_id)))
        .with_generation_id_or_member_epoch(g.generation_id)
        .with_member_id(s(&g.member_id))
        .with_group_instance_id(g.group_instance_id.as_deref().map(s))
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

/// The first partition error of an OffsetCommit answer.
pub(crate) fn commit_refused(
    resp: &kafka_protocol::messages::OffsetCommitResponse,
) -> Result<(), WireError> {
    for t in &resp.topics {
        for p in &t.partitions {
            check("OffsetCommit", p.error_code, None)?;
        }
    }
    Ok(())
}

/// The address (`host:port`) of `group_id`'s coordinator, asked of any
/// broker.
pub(crate) async fn coordinator_address(
    cluster: &Cluster,
    group_id: &str,
) -> Result<String, GroupError> {
    use kavari_wire::coordinator::{CoordinatorOf, coordinator_address};
    Ok(coordinator_address(cluster, CoordinatorOf::Group, group_id).await?)
}

/// The committed offsets in an OffsetFetch answer of `version` (`None`:
/// nothing committed), with their leader epochs where the broker keeps
/// them, or the first error it carries.
pub(crate) fn committed_offsets(
    resp: &kafka_protocol::messages::OffsetFetchResponse,
    version: i16,
) -> Result<Vec<(TopicPartition, Option<CommitOffset>)>, WireError> {
    Ok(committed_with_metadata(resp, version)?
        .into_iter()
        .map(|(tp, committed, _)| (tp, committed))
        .collect())
}

/// [`committed_offsets`] with the metadata string committed with each
/// (empty when none).
pub(crate) fn committed_with_metadata(
    resp: &kafka_protocol::messages::OffsetFetchResponse,
    version: i16,
) -> Result<Vec<(TopicPartition, Option<CommitOffset>, String)>, WireError> {
    let mut out = Vec::new();
    let mut record = |topic: &TopicName,
                      partition: i32,
                      offset: i64,
                      epoch: i32,
                      code: i16,
                      metadata: Option<&StrBytes>| {
        check("OffsetFetch", code, None)?;
        // -1: nothing committed for this partition, or no epoch.
        let tp = TopicPartition::new(topic.0.as_str(), partition);
        let committed = CommitOffset {
            offset,
            leader_epoch: (epoch >= 0).then_some(epoch),
        };
        let metadata = metadata.map(|m| m.to_string()).unwrap_or_default();
        out.push((tp, (offset >= 0).then_some(committed), metadata));
        Ok::<(), WireError>(())
    };
    // (topic, (partition, offset, epoch), error) of each partition: the
    // versions nest them in types of their own, with the same fields.
    macro_rules! rows {
        ($topics:expr) => {
            $topics.iter().flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    let at = (
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref(),
                    );
                    (&t.name, at, p.error_code)
                })
            })
        };
    }
    let mut rows = Vec::new();
    if version >= 8 {
        for g in &resp.groups {
            check("OffsetFetch", g.error_code, None)?;
            rows.extend(rows!(g.topics));
        }
    } else {
        check("OffsetFetch", resp.error_code, None)?;
        rows.extend(rows!(resp.topics));
    }
    for (name, (partition, offset, epoch, metadata), code) in rows {
        record(name, partition, offset, epoch, code, metadata)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::OffsetFetchResponse;
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponsePartition, OffsetFetchResponseTopic,
    };

    use super::*;

    /// A commit carries each partition's leader epoch (KIP-320), -1 where
    /// it is not known; an answer's epochs are read back the same way.
    #[test]
    fn leader_epochs_travel_with_commits_and_fetched_offsets() {
        let g = Generation {
            generation_id: 3,
            member_id: "m".into(),
            group_instance_id: None,
        };
        let offsets = BTreeMap::from([
            (
                TopicPartition::new("t", 0),
                CommitOffset {
                    offset: 10,
                    leader_epoch: Some(4),
                },
            ),
            (TopicPartition::new("t", 1), CommitOffset::from(20)),
        ]);
        let req = commit_request("g", &g, &offsets);
        let sent: Vec<(i32, i64, i32)> = req.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                )
            })
            .collect();
        assert_eq!(sent, [(0, 10, 4), (1, 20, -1)]);

        let partition = |index, offset, epoch| {
            OffsetFetchResponsePartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(epoch)
        };
        let resp = OffsetFetchResponse::default().with_topics(vec![
            OffsetFetchResponseTopic::default()
                .with_name(topic_name("t"))
                .with_partitions(vec![
                    partition(0, 10, 4),
                    partition(1, 20, -1),
                    partition(2, -1, -1),
                ]),
        ]);
        let read = committed_offsets(&resp, 7).expect("no error");
        assert_eq!(
            read,
            [
                (
                    TopicPartition::new("t", 0),
                    Some(CommitOffset {
                        offset: 10,
                        leader_epoch: Some(4)
                    })
                ),
                (TopicPartition::new("t", 1), Some(CommitOffset::from(20))),
                (TopicPartition::new("t", 2), None),
            ]
        );
    }
}
