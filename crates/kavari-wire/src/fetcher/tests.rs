//! The test broker refuses a batch with a bad CRC or an unknown codec on
//! produce (as Kafka does), so what the engine does with one it fetched
//! is shown against a scripted peer that answers ApiVersions, Metadata
//! and Fetch, the last with a crafted batch.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::compression::Compression;
use crate::fetch::Isolation;
use crate::record_batch::write::{Record, RecordBatch};

/// One batch of three records (offsets 0 to 2), its last byte flipped
/// when `corrupt`: then its CRC fails.
fn batch(corrupt: bool) -> Bytes {
    let mut batch = RecordBatch::with_capacity(0);
    let headers: [(&str, &[u8]); 0] = [];
    for i in 0..3u8 {
        batch.push(
            &Record {
                key: None,
                value: &[i],
                headers: &headers[..],
            },
            1,
        );
    }
    let mut bytes = batch.finish(Compression::None).expect("finish");
    if corrupt {
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
    }
    Bytes::from(bytes)
}

fn framed(
    correlation_id: i32,
    header_version: i16,
    body: &impl Encodable,
    version: i16,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Serves one connection: answers by API key, each Fetch with `records`
/// under a high watermark of 3, and counts Fetch requests.
async fn serve(mut s: TcpStream, port: u16, fetches: Arc<AtomicUsize>, records: Bytes) {
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        if s.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut body = Bytes::from(body);
        let (key, version) = (
            i16::from_be_bytes([body[0], body[1]]),
            i16::from_be_bytes([body[2], body[3]]),
        );
        let header_version = match ApiKey::try_from(key) {
            Ok(ApiKey::ApiVersions) => ApiVersionsRequest::header_version(version),
            Ok(ApiKey::Metadata) => MetadataRequest::header_version(version),
            _ => FetchRequest::header_version(version),
        };
        let header = RequestHeader::decode(&mut body, header_version).expect("header");
        let id = header.correlation_id;
        let answer = match ApiKey::try_from(key) {
            Ok(ApiKey::ApiVersions) => {
                let keys = [
                    (ApiKey::Metadata, 1, 12),
                    (ApiKey::Fetch, 4, 12),
                    (ApiKey::ListOffsets, 1, 7),
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
                framed(id, 0, &resp, version)
            }
            Ok(ApiKey::Metadata) => {
                let resp = MetadataResponse::default()
                    .with_brokers(vec![
                        MetadataResponseBroker::default()
                            .with_node_id(1.into())
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(i32::from(port)),
                    ])
                    .with_topics(vec![
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                            .with_partitions(vec![
                                MetadataResponsePartition::default()
                                    .with_partition_index(0)
                                    .with_leader_id(1.into())
                                    .with_leader_epoch(0),
                            ]),
                    ]);
                framed(
                    id,
                    MetadataResponse::header_version(version),
                    &resp,
                    version,
                )
            }
            _ => {
                fetches.fetch_add(1, Ordering::Relaxed);
                let resp = FetchResponse::default().with_responses(vec![
                    FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_static_str("t")))
                        .with_partitions(vec![
                            PartitionData::default()
                                .with_partition_index(0)
                                .with_high_watermark(3)
                                .with_last_stable_offset(3)
                                .with_records(Some(records.clone())),
                        ]),
                ]);
                framed(id, FetchResponse::header_version(version), &resp, version)
            }
        };
        let mut out = BytesMut::new();
        out.put_slice(&answer);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A peer that answers every Fetch with `records`, and a fetcher on it;
/// the peer's count of Fetch requests.
async fn scripted(records: Bytes) -> (Fetcher, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&fetches);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(
                s,
                address.port(),
                Arc::clone(&counted),
                records.clone(),
            ));
        }
    });
    let cluster = Arc::new(Cluster::new(
        vec![address.to_string()],
        "t".into(),
        Duration::from_secs(5),
    ));
    let fetcher = Fetcher::new(
        cluster,
        FetcherConfig {
            limits: FetchLimits {
                max_wait: Duration::from_millis(10),
                min_bytes: 1,
                max_bytes: 1 << 20,
                partition_max_bytes: 1 << 20,
                isolation: Isolation::ReadCommitted,
            },
            reset: None,
            partition_buffer_bytes: 1 << 20,
            total_buffer_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
        },
    );
    (fetcher, fetches)
}

/// A broker that answers every Fetch at offset 3 with the batch of
/// offsets 0 to 2 again: no progress, and no busy loop either (the
/// engine asked such a broker thousands of times a second).
#[tokio::test]
async fn answers_without_progress_are_not_asked_again_at_once() {
    let (fetcher, fetches) = scripted(batch(false)).await;
    let mut feed = fetcher.subscribe(TopicPartition::new("t", 0), 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = fetches.load(Ordering::Relaxed);
    // 100 ms doubling: about 5 rounds in 2 s (a first one without wait).
    assert!((2..=12).contains(&asked), "{asked} fetches in 2 s");
    assert!(feed.rx.try_recv().is_err(), "nothing to deliver");
}

#[tokio::test]
async fn a_batch_failing_its_crc_stops_its_partition_once_with_the_reason() {
    let (fetcher, fetches) = scripted(batch(true)).await;
    let mut feed = fetcher.subscribe(TopicPartition::new("t", 0), 0);
    match tokio::time::timeout(Duration::from_secs(10), feed.recv()).await {
        Ok(Some(FetchEvent::Failed(e))) => {
            assert!(e.to_string().contains("fails its CRC"), "{e}");
            assert!(e.to_string().contains("offset 0"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Stopped: no endless refetching of the same bytes, no more events.
    let after = fetches.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fetches.load(Ordering::Relaxed),
        after,
        "the partition is not fetched again"
    );
    assert!(feed.rx.try_recv().is_err());
    assert_eq!(
        fetcher.subscribed(),
        1,
        "still subscribed until its owner lets go"
    );
}
