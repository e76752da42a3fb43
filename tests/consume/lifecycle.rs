//! The manager's lifecycle: subscribing without a group or after start,
//! and the last handle dropped without a shutdown.

use super::*;
use crate::restart::{Event, Slow};
use crate::retries::{FlakyHandler, Job};

#[tokio::test]
async fn subscribe_without_group_and_after_start_are_errors() {
    let broker = shared_broker().await.expect("broker");
    let m = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    // Refused where the mistake is made, not only at start().
    assert_eq!(
        m.subscribe::<Job, _>(FlakyHandler(Arc::default())),
        Err(kavari::SubscribeError::NoGroupId)
    );
    m.start().await.expect("nothing to start");
    let m = consumer(broker, &unique_name("g"))
        .delivery_retry_policy(NoRetry)
        .build()
        .await
        .expect("build");
    m.subscribe::<Job, _>(FlakyHandler(Arc::default()))
        .expect("subscribe");
    m.start().await.expect("start");
    assert!(
        m.subscribe::<Event, _>(Slow {
            seen: Arc::default(),
            delay: Duration::ZERO,
            no_retry: true
        })
        .is_err()
    );
    m.shutdown().await.expect("shutdown");
    m.shutdown().await.expect("shutdown twice");
}

#[tokio::test]
async fn dropping_the_last_handle_leaves_the_group_without_hanging() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let topic_group = unique_name("drop");
    let survivor_seen = Arc::new(Mutex::new(Vec::new()));
    let make = |seen: Arc<Mutex<Vec<u64>>>| {
        let group = topic_group.clone();
        async move {
            let m = consumer(broker, &group)
                .session_timeout(Duration::from_secs(30))
                .heartbeat_interval(Duration::from_secs(1))
                .build()
                .await
                .expect("build");
            m.subscribe::<Event, _>(Slow {
                seen,
                delay: Duration::ZERO,
                no_retry: true,
            })
            .expect("subscribe");
            m.start().await.expect("start");
            m
        }
    };
    broker.create_topic(Event::TOPIC, 2).await.ok();
    let survivor = make(Arc::clone(&survivor_seen)).await;
    let dropped = make(Arc::default()).await;
    eventually(WAIT, "both members share the partitions", || {
        survivor.health().partitions.len() == 1 && dropped.health().partitions.len() == 1
    })
    .await;
    let dropped_at = std::time::Instant::now();
    drop(dropped);
    // Far sooner than the 30 s session timeout: the dropped member left.
    eventually(
        Duration::from_secs(20),
        "the survivor owns both partitions",
        || survivor.health().partitions.len() == 2 && survivor.health().ready,
    )
    .await;
    assert!(dropped_at.elapsed() < Duration::from_secs(20));
    survivor.shutdown().await.expect("shutdown");
}
