//! kavari-wire against a real broker: one pipelined
//! connection answering many requests at once, cluster metadata, and what a
//! dead connection does to the requests waiting on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{init_tracing, own_broker};
use kavari_wire::WireError;
use kavari_wire::cluster::Cluster;

fn cluster(broker: &KafkaBroker, timeout: Duration) -> Arc<Cluster> {
    Arc::new(Cluster::new(
        broker.bootstrap_list(),
        "kavari-wire-test".into(),
        timeout,
    ))
}

/// Hundreds of concurrent requests share one connection, and each caller gets
/// the answer to its own request (the topics differ in partition count, so a
/// swapped answer shows).
#[tokio::test]
async fn one_connection_answers_concurrent_requests_each_its_own() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topics: Vec<(String, usize)> = (1..=5).map(|p| (unique_name("wire"), p)).collect();
    for (t, p) in &topics {
        broker.create_topic(t, *p as i32).await.expect("topic");
    }
    let cluster = cluster(broker, Duration::from_secs(10));
    let first = cluster.any_broker().await.expect("connect");
    let asks = (0..500).map(|i| {
        let (topic, partitions) = topics[i % topics.len()].clone();
        let cluster = Arc::clone(&cluster);
        tokio::spawn(async move {
            let got = cluster.topics(&[&topic]).await.expect("metadata");
            assert_eq!(got.len(), 1, "one topic asked, one answered");
            assert_eq!(got[0].name, topic);
            assert_eq!(got[0].partitions.len(), partitions, "{topic}");
            assert!(got[0].partitions.iter().all(|p| p.leader.is_some()));
        })
    });
    for r in futures::future::join_all(asks).await {
        r.expect("request task");
    }
    let after = cluster.any_broker().await.expect("connection");
    assert!(
        Arc::ptr_eq(&first, &after),
        "all 500 went over one connection"
    );
    assert!(!after.is_broken());
}

/// A topic the cluster does not know is left out and is not created by
/// asking; a partition's leader is reachable through `broker`.
#[tokio::test]
async fn metadata_never_creates_topics_and_leaders_connect() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let cluster = cluster(broker, Duration::from_secs(10));
    let missing = unique_name("wire-missing");
    for _ in 0..2 {
        let got = cluster.topics(&[&missing]).await.expect("metadata");
        assert!(got.is_empty(), "{got:?}");
    }
    let topic = unique_name("wire-leader");
    broker.create_topic(&topic, 2).await.expect("topic");
    let got = cluster.topics(&[&topic]).await.expect("metadata");
    let leader = got[0].partitions[1].leader.expect("a leader");
    let conn = cluster.broker(leader).await.expect("leader connection");
    assert!(!conn.is_broken());
    let again = cluster.broker(leader).await.expect("leader connection");
    assert!(Arc::ptr_eq(&conn, &again), "the connection is kept");
    assert!(matches!(
        cluster.broker(leader + 1000).await,
        Err(WireError::Connection { .. })
    ));
}

/// When the broker goes silent, the first request times out and breaks the
/// connection; the requests waiting behind it fail at once instead of each
/// waiting out its own timeout, and the next request connects afresh.
#[tokio::test]
async fn a_silent_broker_fails_every_waiting_request_within_one_timeout() {
    init_tracing();
    let topic = unique_name("wire-silent");
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), &topic, 1).await;
    let proxy = broker.proxy().expect("proxy");
    let timeout = Duration::from_secs(2);
    let cluster = cluster(&broker, timeout);
    let conn = cluster.any_broker().await.expect("connect");

    proxy.black_hole();
    let started = Instant::now();
    let asks = (0..20).map(|i| {
        let cluster = Arc::clone(&cluster);
        let topic = topic.clone();
        tokio::spawn(async move {
            // Staggered, so later requests queue behind an earlier one.
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            cluster.topics(&[&topic]).await
        })
    });
    for r in futures::future::join_all(asks).await {
        let r = r.expect("request task");
        assert!(r.is_err(), "answered through a black hole: {r:?}");
    }
    let took = started.elapsed();
    assert!(
        took < timeout * 2,
        "20 waiting requests took {took:?} to fail (timeout {timeout:?})"
    );
    assert!(conn.is_broken());

    proxy.heal();
    let got = cluster
        .topics(&[&topic])
        .await
        .expect("metadata after heal");
    assert_eq!(got.len(), 1);
    let fresh = cluster.any_broker().await.expect("connection");
    assert!(
        !Arc::ptr_eq(&conn, &fresh),
        "a new connection after the break"
    );
}

/// CreateTopics through the controller: the topic exists with its
/// partitions, creating it again reports that it existed, and a refused
/// request says why.
#[tokio::test]
async fn topics_are_created_once_and_a_refusal_names_its_cause() {
    use kavari_wire::admin::{NewTopic, create_topic};

    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let cluster = cluster(broker, Duration::from_secs(10));
    let name = unique_name("admin");
    let topic = NewTopic {
        name: &name,
        partitions: 4,
        replication_factor: -1,
        configs: &[],
    };
    assert!(create_topic(&cluster, &topic).await.expect("create"));
    // The controller made it; the broker asked for metadata may learn of
    // it a moment later (Kafka's brokers follow the controller's log).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let meta = loop {
        match cluster.topic(&name).await.expect("metadata") {
            Some(meta) => break meta,
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => panic!("topic {name} never in metadata"),
        }
    };
    assert_eq!(meta.partitions.len(), 4);
    assert!(
        !create_topic(&cluster, &topic).await.expect("create again"),
        "it existed"
    );
    let bad = NewTopic {
        partitions: 0,
        name: &unique_name("admin"),
        ..topic
    };
    let e = create_topic(&cluster, &bad)
        .await
        .expect_err("zero partitions");
    assert!(e.response_error().is_some(), "{e}");
}

/// Real answers of every API Kavari reads, each byte corrupted in turn
/// (and four-byte windows set to huge lengths): decoding is an error or a
/// value, never a panic, and never an allocation as large as a corrupt
/// length claims (that aborts the test process).
#[tokio::test]
async fn corrupted_real_answers_are_errors_not_aborts() {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use kavari_wire::connection::{Connection, Request, decode_response};

    async fn answer<R: Request>(conn: &Connection, req: &R) -> (i16, bytes::Bytes) {
        let version = conn.version::<R>().expect("version");
        let body = conn
            .send_raw(req, version, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{} v{version}: {e}", R::NAME));
        decode_response::<R>(body.clone(), version).expect("the real answer decodes");
        (version, body)
    }

    fn corrupt_each<R: Request>(version: i16, body: &bytes::Bytes) -> usize {
        let mut tried = 0;
        for at in 0..body.len() {
            let mut variants: Vec<Vec<u8>> = [0x00, 0x7f, 0x80, 0xff]
                .iter()
                .map(|&b| {
                    let mut v = body.to_vec();
                    v[at] = b;
                    v
                })
                .collect();
            let mut huge = body.to_vec();
            let end = (at + 4).min(huge.len());
            huge[at..end].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff][..end - at]);
            variants.push(huge);
            for v in variants {
                let _ = decode_response::<R>(bytes::Bytes::from(v), version);
                tried += 1;
            }
        }
        tried
    }

    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("wire-corrupt");
    broker.create_topic(&topic, 3).await.expect("topic");
    let cluster = cluster(broker, Duration::from_secs(10));
    let conn = cluster.any_broker().await.expect("connect");
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let group = unique_name("wire-corrupt-group");
    let mut tried = 0;

    let (v, b) = answer(&conn, &ApiVersionsRequest::default()).await;
    tried += corrupt_each::<ApiVersionsRequest>(v, &b);
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(&topic)))),
    ]));
    let (v, b) = answer(&conn, &metadata).await;
    tried += corrupt_each::<MetadataRequest>(v, &b);
    let find = if conn.version::<FindCoordinatorRequest>().expect("version") >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![s(&group)])
    } else {
        FindCoordinatorRequest::default().with_key(s(&group))
    };
    let (v, b) = answer(&conn, &find).await;
    tried += corrupt_each::<FindCoordinatorRequest>(v, &b);

    // Join twice (the first answer names the member id), then sync as the
    // leader: answers with a member list and an assignment.
    let protocol = join_group_request::JoinGroupRequestProtocol::default()
        .with_name(s("range"))
        .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![protocol.clone()])
    };
    let (v, b) = answer(&conn, &join("")).await;
    tried += corrupt_each::<JoinGroupRequest>(v, &b);
    let first = decode_response::<JoinGroupRequest>(b, v).expect("join");
    let member = if first.member_id.is_empty() {
        unique_name("member")
    } else {
        first.member_id.to_string()
    };
    let (v, b) = answer(&conn, &join(&member)).await;
    tried += corrupt_each::<JoinGroupRequest>(v, &b);
    let joined = decode_response::<JoinGroupRequest>(b, v).expect("join");
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(s(&member))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(vec![
            sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
        ]);
    let (v, b) = answer(&conn, &sync).await;
    tried += corrupt_each::<SyncGroupRequest>(v, &b);
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(s(&member));
    let (v, b) = answer(&conn, &heartbeat).await;
    tried += corrupt_each::<HeartbeatRequest>(v, &b);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_generation_id_or_member_epoch(joined.generation_id)
        .with_member_id(s(&member))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(&topic)))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(1)
                        .with_committed_offset(0),
                ]),
        ]);
    let (v, b) = answer(&conn, &commit).await;
    tried += corrupt_each::<OffsetCommitRequest>(v, &b);
    let fetch_offsets = if conn.version::<OffsetFetchRequest>().expect("version") >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(&group)))
                .with_topics(None),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_topics(None)
    };
    let (v, b) = answer(&conn, &fetch_offsets).await;
    tried += corrupt_each::<OffsetFetchRequest>(v, &b);
    let leave = LeaveGroupRequest::default().with_group_id(GroupId(s(&group)));
    let leave = if conn.version::<LeaveGroupRequest>().expect("version") >= 3 {
        leave.with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(s(&member)),
        ])
    } else {
        leave.with_member_id(s(&member))
    };
    let (v, b) = answer(&conn, &leave).await;
    tried += corrupt_each::<LeaveGroupRequest>(v, &b);

    let list = ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(s(&topic)))
            .with_partitions(
                (0..3)
                    .map(|p| {
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(-1)
                    })
                    .collect(),
            ),
    ]);
    let (v, b) = answer(&conn, &list).await;
    tried += corrupt_each::<ListOffsetsRequest>(v, &b);
    let mut batch = kavari_wire::record_batch::write::RecordBatch::with_capacity(256);
    let no_headers: &[(&str, &[u8])] = &[];
    batch.push(
        &kavari_wire::record_batch::write::Record {
            key: Some(b"k"),
            value: b"v",
            headers: no_headers,
        },
        0,
    );
    let records = batch
        .finish(kavari_wire::Compression::None)
        .expect("a record batch");
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(s(&topic)))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(2)
                        .with_records(Some(bytes::Bytes::from(records))),
                ]),
        ]);
    let (v, b) = answer(&conn, &produce).await;
    tried += corrupt_each::<ProduceRequest>(v, &b);
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(&topic)))
                .with_num_partitions(3)
                .with_replication_factor(1),
        ]);
    let (v, b) = answer(&conn, &create).await;
    tried += corrupt_each::<CreateTopicsRequest>(v, &b);
    assert!(tried > 1000, "{tried} corrupted answers decoded");
}
