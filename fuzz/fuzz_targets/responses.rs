//! Every response Kavari reads, at every version it speaks: the first byte
//! picks the API, the second the version, the rest is the body after the
//! response header. A body may be refused; it may not panic, abort or
//! allocate what a corrupt length claims (libFuzzer's malloc limit).
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::*;
use kavari_wire::connection::{Request, decode_response};
use libfuzzer_sys::fuzz_target;

fn decode<R: Request>(body: Bytes, pick: u8) {
    let versions = u8::try_from(R::MAX - R::MIN + 1).unwrap_or(u8::MAX);
    let version = R::MIN + i16::from(pick % versions);
    let _ = decode_response::<R>(body, version);
}

type Decode = fn(Bytes, u8);

const APIS: &[Decode] = &[
    decode::<ApiVersionsRequest>,
    decode::<MetadataRequest>,
    decode::<FindCoordinatorRequest>,
    decode::<JoinGroupRequest>,
    decode::<SyncGroupRequest>,
    decode::<HeartbeatRequest>,
    decode::<LeaveGroupRequest>,
    decode::<OffsetCommitRequest>,
    decode::<OffsetFetchRequest>,
    decode::<ProduceRequest>,
    decode::<FetchRequest>,
    decode::<ListOffsetsRequest>,
    decode::<CreateTopicsRequest>,
    decode::<CreatePartitionsRequest>,
    decode::<ElectLeadersRequest>,
    decode::<InitProducerIdRequest>,
    decode::<DescribeGroupsRequest>,
    decode::<ListGroupsRequest>,
    decode::<DeleteTopicsRequest>,
    decode::<DescribeConfigsRequest>,
    decode::<SaslHandshakeRequest>,
    decode::<SaslAuthenticateRequest>,
    decode::<AddPartitionsToTxnRequest>,
    decode::<AddOffsetsToTxnRequest>,
    decode::<EndTxnRequest>,
    decode::<TxnOffsetCommitRequest>,
    decode::<ConsumerGroupHeartbeatRequest>,
    decode::<ConsumerGroupDescribeRequest>,
    decode::<ShareGroupHeartbeatRequest>,
    decode::<ShareGroupDescribeRequest>,
    decode::<ShareFetchRequest>,
    decode::<ShareAcknowledgeRequest>,
    decode::<IncrementalAlterConfigsRequest>,
    decode::<DescribeShareGroupOffsetsRequest>,
];

fuzz_target!(|data: &[u8]| {
    let [api, version, body @ ..] = data else {
        return;
    };
    APIS[usize::from(*api) % APIS.len()](Bytes::copy_from_slice(body), *version);
});
