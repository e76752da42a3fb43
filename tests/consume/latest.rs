//! `Latest` across a handover.

use super::*;

/// A member with `Latest` gets an empty partition and handles nothing
/// before it leaves; what is written before the next member starts is
/// still handled: the reset position was committed, so the next owner does
/// not reset past those records.
#[tokio::test]
async fn latest_commits_its_reset_position_so_a_handover_skips_nothing() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, _) = prefixed_topic::<Numbered>(broker, 1).await;
    let group = unique_name("latest");
    let member = || {
        consumer(broker, &group)
            .topic_prefix(&prefix)
            .auto_offset_reset(kavari::OffsetReset::Latest)
            .build()
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first = member().await.expect("build");
    first
        .subscribe::<Numbered, _>(Numbers(Arc::clone(&seen)))
        .expect("subscribe");
    first.start().await.expect("start");
    eventually(WAIT, "the first member consumes from the log end", || {
        first.health().partitions.first().and_then(|p| p.position) == Some(0)
    })
    .await;
    first.shutdown().await.expect("shutdown");

    let second = member().await.expect("build");
    for n in 0..5 {
        second.publish(&Numbered { n }).await.expect("publish");
    }
    second
        .subscribe::<Numbered, _>(Numbers(Arc::clone(&seen)))
        .expect("subscribe");
    second.start().await.expect("start");
    eventually(Duration::from_secs(20), "the five records handled", || {
        seen.lock().unwrap().len() == 5
    })
    .await;
    second.shutdown().await.expect("shutdown");
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3, 4]);
}
