//! Shutdown waits for publishes in flight and drops none.

use super::*;

#[tokio::test]
async fn shutdown_waits_for_publishes_in_flight_and_drops_none() {
    let topic = unique_name("shutdown");
    let (broker, manager) = setup(&[(&topic, 3)], |b| b.linger(Duration::from_millis(200))).await;

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let m = manager.clone();
            let msg = to_topic(&order(i), &topic);
            tokio::spawn(async move { m.publish_encoded(msg).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    manager.shutdown().await.expect("shutdown");

    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(PublishError::Failed { message, .. }) => {
                assert_eq!(
                    message.topic, topic,
                    "refused publishes hand their record back"
                );
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(fetch_topic(broker, &topic, 3).await.len(), ok);
    assert!(ok > 0, "publishes queued before shutdown were flushed");

    // After shutdown, publishes are refused with the record handed back.
    match manager.publish_encoded(to_topic(&order(999), &topic)).await {
        Err(PublishError::Failed { cause, .. }) => {
            assert_eq!(cause.kind(), kavari::ProduceErrorKind::ShuttingDown);
        }
        other => panic!("expected Failed after shutdown, got {other:?}"),
    }
    manager.shutdown().await.expect("shutdown is idempotent");
}

/// A shutdown while the broker is down does not wait out the retries:
/// publishes waiting to be sent again hand their records back at once,
/// with idempotence on (the partition's sender retries) as off (the
/// publisher retries).
#[tokio::test]
async fn a_shutdown_during_an_outage_hands_the_records_back_at_once() {
    for idempotent in [true, false] {
        let topic = unique_name("shutdown-outage");
        let (broker, manager) = behind_proxy(&topic, |b| {
            b.enable_idempotence(idempotent).dead_letter_suffix(None)
        })
        .await;
        let proxy = broker.proxy().expect("proxy");
        proxy.refuse();
        let tasks: Vec<_> = (1..=5)
            .map(|i| {
                let m = manager.clone();
                let msg = to_topic(&order(i), &topic);
                tokio::spawn(async move { m.publish_encoded(msg).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = std::time::Instant::now();
        manager.shutdown().await.expect("shutdown");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "idempotent={idempotent}: shutdown took {took:?}"
        );
        for t in tasks {
            match t.await.expect("task") {
                Err(PublishError::Failed { message, .. }) => assert_eq!(message.topic, topic),
                other => panic!("idempotent={idempotent}: expected the record back, got {other:?}"),
            }
        }
    }
}
