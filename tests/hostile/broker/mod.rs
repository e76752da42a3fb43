//! A broker that lies: it speaks just enough of the protocol for a
//! publishing client and a one-broker consumer group (ApiVersions,
//! Metadata v4, Produce v3, the group's coordinator APIs, offsets, Fetch),
//! truthfully until told to lie, and then claims what no cluster has. Its
//! large lies are written as bytes, never built as structures: the broker
//! must not spend the memory the test bounds.

mod group;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FindCoordinatorRequest,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListOffsetsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the broker claims in its Metadata answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// The truth: one broker (itself), each topic asked for with one
    /// partition it leads.
    None,
    /// Each topic asked for has this many partitions.
    Partitions(i32),
    /// The cluster has this many brokers (itself the first).
    Brokers(i32),
}

/// What the broker claims as the group's coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupLie {
    /// The truth: the joining member alone, given what its leader assigned.
    None,
    /// The SyncGroup assignment names this many partitions of the topic.
    Assignment(i32),
    /// The SyncGroup assignment names a topic of 32,767 bytes with this
    /// many partitions.
    LongTopicName(i32),
    /// The JoinGroup answer makes the member the leader of this many
    /// members, all subscribed as it is.
    Members(i32),
}

/// What the broker is told to claim, and what it saw.
#[derive(Debug)]
struct Script {
    lie: Lie,
    group: GroupLie,
    /// The assignor the member's last JoinGroup chose.
    protocol: String,
    joins: usize,
    /// What partition 0 holds instead of one order: a batch and how many
    /// records it claims.
    batch: Option<(Bytes, i64)>,
}

/// A lying broker on a loopback port, serving until dropped.
pub struct LyingBroker {
    address: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LyingBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LyingBroker {
    /// Starts the broker, truthful for now.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let script = Arc::new(Mutex::new(Script {
            lie: Lie::None,
            group: GroupLie::None,
            protocol: String::new(),
            joins: 0,
            batch: None,
        }));
        let offsets = Arc::new(AtomicI64::new(0));
        let served = Arc::clone(&script);
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, address, Arc::clone(&served), Arc::clone(&offsets)));
            }
        });
        Self {
            address,
            script,
            task,
        }
    }

    /// The address to bootstrap from.
    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    /// Lies in Metadata answers from now on (or tells the truth again
    /// with [`Lie::None`]).
    pub fn lie(&self, lie: Lie) {
        self.script.lock().expect("script").lie = lie;
    }

    /// Lies as the group's coordinator from now on.
    pub fn lie_in_group(&self, lie: GroupLie) {
        self.script.lock().expect("script").group = lie;
    }

    /// Partition 0 holds `batch`, of `records` records, from now on.
    pub fn serve_batch(&self, batch: Bytes, records: i64) {
        self.script.lock().expect("script").batch = Some((batch, records));
    }

    /// How many JoinGroup requests it answered.
    pub fn joins(&self) -> usize {
        self.script.lock().expect("script").joins
    }
}

/// The topic every consumer test subscribes to.
pub const TOPIC: &str = "orders";

async fn serve(
    mut s: TcpStream,
    address: SocketAddr,
    script: Arc<Mutex<Script>>,
    offsets: Arc<AtomicI64>,
) {
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let Ok(len) = usize::try_from(i32::from_be_bytes(len)) else {
            return;
        };
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).await.is_err() || body.len() < 4 {
            return;
        }
        let mut body = Bytes::from(body);
        let (key, version) = (
            i16::from_be_bytes([body[0], body[1]]),
            i16::from_be_bytes([body[2], body[3]]),
        );
        let Ok(api) = ApiKey::try_from(key) else {
            return;
        };
        let header_version = match api {
            ApiKey::ApiVersions => ApiVersionsRequest::header_version(version),
            ApiKey::Metadata => MetadataRequest::header_version(version),
            ApiKey::Produce => ProduceRequest::header_version(version),
            ApiKey::FindCoordinator => FindCoordinatorRequest::header_version(version),
            ApiKey::JoinGroup => JoinGroupRequest::header_version(version),
            ApiKey::SyncGroup => SyncGroupRequest::header_version(version),
            ApiKey::Heartbeat => HeartbeatRequest::header_version(version),
            ApiKey::LeaveGroup => LeaveGroupRequest::header_version(version),
            ApiKey::OffsetFetch => OffsetFetchRequest::header_version(version),
            ApiKey::OffsetCommit => OffsetCommitRequest::header_version(version),
            ApiKey::ListOffsets => ListOffsetsRequest::header_version(version),
            ApiKey::Fetch => FetchRequest::header_version(version),
            _ => return, // nothing else is spoken here
        };
        let Ok(header) = RequestHeader::decode(&mut body, header_version) else {
            return;
        };
        let id = header.correlation_id;
        let answer = match api {
            ApiKey::ApiVersions => {
                let keys = [
                    (ApiKey::ApiVersions, 0, 3),
                    (ApiKey::Metadata, 4, 4),
                    (ApiKey::Produce, 3, 3),
                    (ApiKey::FindCoordinator, 0, 3),
                    (ApiKey::JoinGroup, 0, 9),
                    (ApiKey::SyncGroup, 0, 5),
                    (ApiKey::Heartbeat, 0, 4),
                    (ApiKey::LeaveGroup, 0, 5),
                    (ApiKey::OffsetFetch, 0, 7),
                    (ApiKey::OffsetCommit, 0, 8),
                    (ApiKey::ListOffsets, 0, 7),
                    (ApiKey::Fetch, 4, 12),
                ];
                let resp = ApiVersionsResponse::default().with_api_keys(
                    keys.iter()
                        .map(|(k, min, max)| {
                            ApiVersion::default()
                                .with_api_key(*k as i16)
                                .with_min_version(*min)
                                .with_max_version(*max)
                        })
                        .collect(),
                );
                framed(id, 0, |b| resp.encode(b, version.min(3)).expect("encode"))
            }
            ApiKey::Metadata => {
                let Ok(request) = MetadataRequest::decode(&mut body, version) else {
                    return;
                };
                let topics: Vec<String> = request
                    .topics
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| t.name.map(|n| n.0.to_string()))
                    .collect();
                let lie = script.lock().expect("script").lie;
                framed(id, 0, |b| metadata_v4(b, address, &topics, lie))
            }
            ApiKey::Produce => {
                let Ok(request) = ProduceRequest::decode(&mut body, version) else {
                    return;
                };
                let responses = request
                    .topic_data
                    .into_iter()
                    .map(|t| {
                        TopicProduceResponse::default()
                            .with_name(t.name)
                            .with_partition_responses(
                                t.partition_data
                                    .into_iter()
                                    .map(|p| {
                                        PartitionProduceResponse::default()
                                            .with_index(p.index)
                                            .with_base_offset(
                                                offsets.fetch_add(1, Ordering::Relaxed),
                                            )
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let resp = ProduceResponse::default().with_responses(responses);
                framed(id, 0, |b| resp.encode(b, version).expect("encode"))
            }
            _ => match group::answer(api, version, id, body, address, &script).await {
                Some(answer) => answer,
                None => return,
            },
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A response frame: its length, the header (version 0: the correlation
/// id), and the body `write` writes.
pub(crate) fn framed(
    correlation_id: i32,
    header_version: i16,
    write: impl FnOnce(&mut BytesMut),
) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .expect("header");
    write(&mut buf);
    let len = i32::try_from(buf.len() - 4).expect("frame fits");
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

fn string(b: &mut BytesMut, s: &str) {
    b.put_i16(i16::try_from(s.len()).expect("short"));
    b.put_slice(s.as_bytes());
}

/// A Metadata v4 answer for `topics`, telling `lie`.
fn metadata_v4(b: &mut BytesMut, address: SocketAddr, topics: &[String], lie: Lie) {
    let brokers = match lie {
        Lie::Brokers(n) => n.max(1),
        _ => 1,
    };
    b.put_i32(0); // throttle time
    b.reserve(usize::try_from(brokers).unwrap_or(0) * 12);
    b.put_i32(brokers);
    // Itself first: node 0 at its address, no rack.
    b.put_i32(0);
    string(b, &address.ip().to_string());
    b.put_i32(i32::from(address.port()));
    b.put_i16(-1);
    for node in 1..brokers {
        b.put_i32(node);
        string(b, "");
        b.put_i32(9092);
        b.put_i16(-1);
    }
    b.put_i16(-1); // no cluster id
    b.put_i32(0); // controller
    let partitions = match lie {
        Lie::Partitions(n) => n,
        _ => 1,
    };
    b.put_i32(i32::try_from(topics.len()).expect("few topics"));
    for topic in topics {
        b.reserve(usize::try_from(partitions).unwrap_or(0) * 26);
        b.put_i16(0); // error
        string(b, topic);
        b.put_u8(0); // not internal
        b.put_i32(partitions);
        for p in 0..partitions {
            b.put_i16(0); // error
            b.put_i32(p);
            b.put_i32(0); // leader: itself
            b.put_i32(1); // replicas
            b.put_i32(0);
            b.put_i32(1); // in-sync replicas
            b.put_i32(0);
        }
    }
}
