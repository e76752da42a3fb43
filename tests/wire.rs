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
    let meta = cluster
        .topic(&name)
        .await
        .expect("metadata")
        .expect("the topic");
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
