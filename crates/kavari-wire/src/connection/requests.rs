//! The requests Kavari speaks: each paired with its response, with the
//! versions it has code for.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::response_shape::{Shape, apis};

/// Pairs a request with its response and bounds the versions Kavari speaks
/// (kafka-protocol's own `Request` trait needs its `broker` feature).
pub trait Request: Encodable + HeaderVersion + Send + Sync {
    /// The API key.
    const KEY: ApiKey;
    /// The API's name, for errors and logs.
    const NAME: &'static str;
    /// The lowest version Kavari can use.
    const MIN: i16;
    /// The highest version Kavari has code for.
    const MAX: i16;
    /// The response type.
    type Response: Decodable + HeaderVersion + Send;
    /// The response's wire shape, walked before it is decoded.
    const SHAPE: &'static Shape;
}

macro_rules! request {
    ($req:ty => $resp:ty, $key:ident, $min:expr, $max:expr, $shape:ident) => {
        impl Request for $req {
            const KEY: ApiKey = ApiKey::$key;
            const NAME: &'static str = stringify!($key);
            const MIN: i16 = $min;
            const MAX: i16 = $max;
            type Response = $resp;
            const SHAPE: &'static Shape = &apis::$shape;
        }
    };
}

request!(ApiVersionsRequest => ApiVersionsResponse, ApiVersions, 0, 3, API_VERSIONS);
// v4 brings allow_auto_topic_creation: Kavari never creates a topic by
// asking for its metadata, and before v4 a broker may.
request!(MetadataRequest => MetadataResponse, Metadata, 4, 12, METADATA);
request!(FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator, 0, 4, FIND_COORDINATOR);
request!(JoinGroupRequest => JoinGroupResponse, JoinGroup, 1, 9, JOIN_GROUP);
request!(SyncGroupRequest => SyncGroupResponse, SyncGroup, 0, 5, SYNC_GROUP);
request!(HeartbeatRequest => HeartbeatResponse, Heartbeat, 0, 4, HEARTBEAT);
request!(LeaveGroupRequest => LeaveGroupResponse, LeaveGroup, 0, 5, LEAVE_GROUP);
// v9 carries a member epoch for members of the consumer group protocol
// (KIP-848; the broker refuses them older versions); v10 names topics by id.
request!(OffsetCommitRequest => OffsetCommitResponse, OffsetCommit, 2, 9, OFFSET_COMMIT);
request!(OffsetFetchRequest => OffsetFetchResponse, OffsetFetch, 1, 8, OFFSET_FETCH);
// v3 is the first with record batches (magic 2); v12 is the last that names
// topics (v13 identifies them by id).
request!(ProduceRequest => ProduceResponse, Produce, 3, 12, PRODUCE);
// v4 brings isolation levels and aborted transactions; v12 is the last that
// names topics (v13 identifies them by id).
request!(FetchRequest => FetchResponse, Fetch, 4, 12, FETCH);
// v2 brings the current leader epoch (a stale one is fenced).
request!(OffsetForLeaderEpochRequest => OffsetForLeaderEpochResponse, OffsetForLeaderEpoch, 2, 4, OFFSET_FOR_LEADER_EPOCH);
// v1 asks by timestamp; v2 brings the isolation level.
request!(ListOffsetsRequest => ListOffsetsResponse, ListOffsets, 1, 7, LIST_OFFSETS);
request!(CreateTopicsRequest => CreateTopicsResponse, CreateTopics, 2, 7, CREATE_TOPICS);
request!(CreatePartitionsRequest => CreatePartitionsResponse, CreatePartitions, 0, 3, CREATE_PARTITIONS);
// v1 brings the election type (preferred or unclean).
request!(ElectLeadersRequest => ElectLeadersResponse, ElectLeaders, 1, 2, ELECT_LEADERS);
// v2 is the first flexible version; v4 is the last before KIP-890's
// transaction changes.
request!(InitProducerIdRequest => InitProducerIdResponse, InitProducerId, 0, 4, INIT_PRODUCER_ID);
// Transactions: v3 and below are the clients' versions of
// AddPartitionsToTxn (v4+ batch transactions, for brokers); EndTxn v5,
// AddOffsetsToTxn v4 and TxnOffsetCommit v4+ belong to KIP-890's second
// transaction version, where every transaction bumps the epoch.
request!(AddPartitionsToTxnRequest => AddPartitionsToTxnResponse, AddPartitionsToTxn, 0, 3, ADD_PARTITIONS_TO_TXN);
request!(AddOffsetsToTxnRequest => AddOffsetsToTxnResponse, AddOffsetsToTxn, 0, 3, ADD_OFFSETS_TO_TXN);
request!(EndTxnRequest => EndTxnResponse, EndTxn, 0, 4, END_TXN);
// v3 brings the group's generation, member id and instance id (KIP-447).
request!(TxnOffsetCommitRequest => TxnOffsetCommitResponse, TxnOffsetCommit, 0, 3, TXN_OFFSET_COMMIT);
request!(DescribeGroupsRequest => DescribeGroupsResponse, DescribeGroups, 0, 5, DESCRIBE_GROUPS);
// The consumer group protocol (KIP-848): v1 has the client make its member
// id and subscribe by regex.
request!(ConsumerGroupHeartbeatRequest => ConsumerGroupHeartbeatResponse, ConsumerGroupHeartbeat, 1, 1, CONSUMER_GROUP_HEARTBEAT);
request!(ConsumerGroupDescribeRequest => ConsumerGroupDescribeResponse, ConsumerGroupDescribe, 0, 1, CONSUMER_GROUP_DESCRIBE);
// Share groups (KIP-932); a share member's heartbeat is answered as a
// consumer member's.
request!(ShareGroupHeartbeatRequest => ShareGroupHeartbeatResponse, ShareGroupHeartbeat, 1, 1, CONSUMER_GROUP_HEARTBEAT);
request!(ShareGroupDescribeRequest => ShareGroupDescribeResponse, ShareGroupDescribe, 1, 1, SHARE_GROUP_DESCRIBE);
request!(ShareFetchRequest => ShareFetchResponse, ShareFetch, 1, 1, SHARE_FETCH);
request!(ShareAcknowledgeRequest => ShareAcknowledgeResponse, ShareAcknowledge, 1, 1, SHARE_ACKNOWLEDGE);
request!(DescribeShareGroupOffsetsRequest => DescribeShareGroupOffsetsResponse, DescribeShareGroupOffsets, 0, 0, DESCRIBE_SHARE_GROUP_OFFSETS);
// v4 brings the group's state.
request!(ListGroupsRequest => ListGroupsResponse, ListGroups, 0, 4, LIST_GROUPS);
// v6 names topics by id.
request!(DeleteTopicsRequest => DeleteTopicsResponse, DeleteTopics, 1, 5, DELETE_TOPICS);
request!(DescribeConfigsRequest => DescribeConfigsResponse, DescribeConfigs, 1, 4, DESCRIBE_CONFIGS);
request!(IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse, IncrementalAlterConfigs, 0, 1, INCREMENTAL_ALTER_CONFIGS);
// v1 carries the mechanism's bytes in SaslAuthenticate requests (v0 sent
// them raw, outside the protocol).
request!(SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake, 1, 1, SASL_HANDSHAKE);
request!(SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate, 0, 2, SASL_AUTHENTICATE);
