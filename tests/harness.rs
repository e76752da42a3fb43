//! The broker harness itself: a real broker answers produce and fetch with
//! headers on every partition, keeps file-backed data across a SIGKILL, and
//! the fault proxy really cuts, refuses and black-holes traffic.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use kavari_testcontainers::{FaultMode, KafkaBroker, Storage, shared_broker, unique_name};
use kavari_tests::{fetch_all, header, init_tracing, own_broker};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

fn record(key: &str, value: &str, msg_type: &str) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: BTreeMap::from([("msg_type".to_string(), msg_type.as_bytes().to_vec())]),
        timestamp: Utc::now(),
    }
}

#[tokio::test]
async fn produce_and_fetch_with_headers_on_every_partition() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic = unique_name("harness");
    broker.create_topic(&topic, 3).await.expect("create topic");
    let client = broker.client().await.expect("client");

    for partition in 0..3 {
        let pc = client
            .partition_client(topic.as_str(), partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let records = (0..10)
            .map(|i| record(&format!("k{i}"), &format!("p{partition}-v{i}"), "Ping"))
            .collect();
        let offsets = pc
            .produce(records, Compression::Gzip)
            .await
            .expect("produce");
        assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
    }

    for partition in 0..3 {
        let got = fetch_all(&client, &topic, partition).await;
        assert_eq!(got.len(), 10, "partition {partition}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(
                r.record.value.as_deref(),
                Some(format!("p{partition}-v{i}").as_bytes())
            );
            assert_eq!(r.record.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(
                header(&r.record.headers, "msg_type").as_deref(),
                Some("Ping")
            );
        }
    }
}

#[tokio::test]
async fn kill_and_restart_keeps_file_backed_records() {
    init_tracing();
    let topic = unique_name("durable");
    let broker = own_broker(KafkaBroker::builder().storage(Storage::File), &topic, 1).await;
    if broker.is_external() {
        panic!("this test needs a local broker process: unset KAVARI_BROKERS");
    }
    {
        let client = broker.client().await.expect("client");
        let pc = client
            .partition_client(topic.as_str(), 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let records = (0..5).map(|i| record("k", &format!("v{i}"), "T")).collect();
        pc.produce(records, Compression::NoCompression)
            .await
            .expect("produce");
    }

    broker.kill().expect("kill");
    broker.restart().await.expect("restart");

    let client = broker.client().await.expect("client after restart");
    let got = fetch_all(&client, &topic, 0).await;
    let values: Vec<_> = got
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned()
        })
        .collect();
    assert_eq!(values, ["v0", "v1", "v2", "v3", "v4"]);
}

#[tokio::test]
async fn fault_proxy_refuses_black_holes_and_heals() {
    init_tracing();
    let topic = unique_name("proxied");
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), &topic, 1).await;
    let proxy = broker.proxy().expect("proxy");
    assert!(
        proxy.connections_accepted() > 0,
        "clients went through the proxy"
    );

    // Refused: a new client cannot even bootstrap.
    proxy.refuse();
    assert_eq!(proxy.mode(), FaultMode::Refuse);
    let refused = tokio::time::timeout(Duration::from_secs(3), broker.client()).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a client connected through a refusing proxy"
    );

    // Black hole: the TCP connect succeeds, but no answer ever comes.
    proxy.black_hole();
    let silent = tokio::time::timeout(Duration::from_secs(2), broker.client()).await;
    assert!(silent.is_err(), "the black hole answered: {silent:?}");

    // Healed: everything works again.
    proxy.heal();
    let client = broker.client().await.expect("client after heal");
    let pc = client
        .partition_client(topic.as_str(), 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    pc.produce(
        vec![record("k", "after-heal", "T")],
        Compression::NoCompression,
    )
    .await
    .expect("produce after heal");
    assert_eq!(fetch_all(&client, &topic, 0).await.len(), 1);
}
