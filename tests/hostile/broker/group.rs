//! The lying broker as a consumer group's coordinator and as the leader of
//! the topic's partitions: one member is all it expects (plus the members
//! it makes up), its offsets start at nothing committed, and partition 0
//! holds one order at offset 0.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use super::{GroupLie, Script, TOPIC, framed};

/// The answer to a group or fetch request, or `None` to close the
/// connection (a request it does not read).
pub(super) async fn answer(
    api: ApiKey,
    version: i16,
    id: i32,
    mut body: Bytes,
    address: SocketAddr,
    script: &Arc<Mutex<Script>>,
) -> Option<Bytes> {
    macro_rules! reply {
        ($resp:ty, $value:expr) => {{
            let resp: $resp = $value;
            Some(framed(id, <$resp>::header_version(version), |b| {
                resp.encode(b, version).expect("encode")
            }))
        }};
    }
    match api {
        ApiKey::FindCoordinator => {
            FindCoordinatorRequest::decode(&mut body, version).ok()?;
            reply!(
                FindCoordinatorResponse,
                FindCoordinatorResponse::default()
                    .with_node_id(0.into())
                    .with_host(StrBytes::from_string(address.ip().to_string()))
                    .with_port(i32::from(address.port()))
            )
        }
        ApiKey::JoinGroup => {
            let request = JoinGroupRequest::decode(&mut body, version).ok()?;
            let member = if request.member_id.is_empty() {
                StrBytes::from_static_str("member-1")
            } else {
                request.member_id.clone()
            };
            // The first assignor it offers; cooperative-sticky when offered.
            let chosen = request
                .protocols
                .iter()
                .find(|p| p.name.as_str() == "cooperative-sticky")
                .or_else(|| request.protocols.first())?;
            let (lie, protocol) = {
                let mut script = script.lock().expect("script");
                script.joins += 1;
                script.protocol = chosen.name.to_string();
                (script.group, chosen.name.clone())
            };
            let others = match lie {
                GroupLie::Members(n) => n.saturating_sub(1),
                _ => 0,
            };
            let members = std::iter::once(member.clone())
                .chain((1..=others).map(|i| StrBytes::from_string(format!("member-{}", i + 1))))
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(m)
                        .with_metadata(chosen.metadata.clone())
                })
                .collect();
            reply!(
                JoinGroupResponse,
                JoinGroupResponse::default()
                    .with_generation_id(1)
                    .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                    .with_protocol_name(Some(protocol))
                    .with_leader(member.clone())
                    .with_member_id(member)
                    .with_members(members)
            )
        }
        ApiKey::SyncGroup => {
            let request = SyncGroupRequest::decode(&mut body, version).ok()?;
            let (lie, protocol) = {
                let script = script.lock().expect("script");
                (script.group, script.protocol.clone())
            };
            let assignment = match lie {
                GroupLie::Assignment(n) => assignment(TOPIC, n),
                GroupLie::LongTopicName(n) => assignment(&"x".repeat(32_767), n),
                // What the leader (the member itself) assigned itself.
                _ => request
                    .assignments
                    .iter()
                    .find(|a| a.member_id == request.member_id)
                    .map(|a| a.assignment.clone())
                    .unwrap_or_default(),
            };
            reply!(
                SyncGroupResponse,
                SyncGroupResponse::default()
                    .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                    .with_protocol_name(Some(StrBytes::from_string(protocol)))
                    .with_assignment(assignment)
            )
        }
        ApiKey::Heartbeat => reply!(HeartbeatResponse, HeartbeatResponse::default()),
        ApiKey::LeaveGroup => reply!(LeaveGroupResponse, LeaveGroupResponse::default()),
        ApiKey::OffsetFetch => {
            let request = OffsetFetchRequest::decode(&mut body, version).ok()?;
            let topics = request
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partition_indexes
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            reply!(
                OffsetFetchResponse,
                OffsetFetchResponse::default().with_topics(topics)
            )
        }
        ApiKey::OffsetCommit => {
            let request = OffsetCommitRequest::decode(&mut body, version).ok()?;
            let topics = request
                .topics
                .into_iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                })
                                .collect(),
                        )
                })
                .collect();
            reply!(
                OffsetCommitResponse,
                OffsetCommitResponse::default().with_topics(topics)
            )
        }
        ApiKey::ListOffsets => {
            let request = ListOffsetsRequest::decode(&mut body, version).ok()?;
            let topics = request
                .topics
                .into_iter()
                .map(|t| {
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partitions
                                .into_iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_offset(0)
                                })
                                .collect(),
                        )
                })
                .collect();
            reply!(
                ListOffsetsResponse,
                ListOffsetsResponse::default().with_topics(topics)
            )
        }
        ApiKey::Fetch => {
            let request = FetchRequest::decode(&mut body, version).ok()?;
            let served = script.lock().expect("script").batch.clone();
            let mut any = false;
            let responses = request
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let (hw, records) = if p.partition == 0 {
                                let (hw, records) = match &served {
                                    Some((batch, n)) => {
                                        (*n, (p.fetch_offset == 0).then(|| batch.clone()))
                                    }
                                    None => (1, (p.fetch_offset == 0).then(one_order)),
                                };
                                any |= records.is_some();
                                (hw, records)
                            } else {
                                (0, None)
                            };
                            PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_high_watermark(hw)
                                .with_last_stable_offset(hw)
                                .with_records(records)
                        })
                        .collect();
                    FetchableTopicResponse::default()
                        .with_topic(t.topic)
                        .with_partitions(partitions)
                })
                .collect();
            if !any {
                // As a broker waits out max_wait for data that is not there.
                let wait = u64::try_from(request.max_wait_ms).unwrap_or(0).min(200);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            reply!(
                FetchResponse,
                FetchResponse::default().with_responses(responses)
            )
        }
        _ => None,
    }
}

/// A consumer-protocol assignment (version 1) of `partitions` partitions
/// of `topic`, written as bytes.
fn assignment(topic: &str, partitions: i32) -> Bytes {
    let count = usize::try_from(partitions).unwrap_or(0);
    let mut b = BytesMut::with_capacity(16 + topic.len() + count * 4);
    b.put_i16(1); // version
    b.put_i32(1); // topics
    b.put_i16(i16::try_from(topic.len()).expect("a string"));
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions);
    for p in 0..partitions {
        b.put_i32(p);
    }
    b.put_i32(-1); // no user data
    b.freeze()
}

/// Partition 0's one record: an order at offset 0, as Kavari writes it.
fn one_order() -> Bytes {
    use kavari_wire::Compression;
    use kavari_wire::record_batch::write::{Record, RecordBatch};
    let message = kavari::codec::encode(&crate::order(0)).expect("encode");
    let mut batch = RecordBatch::with_capacity(256);
    batch.push(
        &Record {
            key: message.key.as_deref(),
            value: &message.value,
            headers: &message.headers,
        },
        1,
    );
    Bytes::from(batch.finish(Compression::None).expect("finish"))
}
