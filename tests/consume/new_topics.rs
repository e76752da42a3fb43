//! A subscribed topic created after the group formed.

use super::*;

/// A member subscribed to a topic that does not exist yet gets its
/// partitions once it is created: the leader looks the topics up every
/// `metadata_max_age` and rebalances when they changed.
#[tokio::test]
async fn a_subscribed_topic_created_later_is_consumed() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let prefix = format!("{}.", unique_name("later"));
    let topic = format!("{prefix}{}", Numbered::TOPIC);
    let m = consumer(broker, &unique_name("later"))
        .topic_prefix(&prefix)
        .metadata_max_age(Duration::from_secs(1))
        .build()
        .await
        .expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    m.subscribe::<Numbered, _>(Numbers(Arc::clone(&seen)))
        .expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "the group formed", || {
        m.health().state == HealthState::Running
    })
    .await;
    assert!(m.health().partitions.is_empty(), "nothing to assign yet");
    broker.create_topic(&topic, 2).await.expect("topic");
    for n in 0..4 {
        m.publish(&Numbered { n }).await.expect("publish");
    }
    eventually(WAIT, "the new topic's records handled", || {
        seen.lock().unwrap().len() == 4
    })
    .await;
    m.shutdown().await.expect("shutdown");
}
