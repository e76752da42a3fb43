//! A shutdown that runs out of time.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "stuck.jobs")]
struct Stuck {
    n: u32,
}

#[derive(Clone, Default)]
struct Sleepy {
    started: Arc<std::sync::atomic::AtomicBool>,
    finished: Arc<std::sync::atomic::AtomicBool>,
}
impl MessageHandler<Stuck> for Sleepy {
    async fn handle(&self, _: Stuck, _: &MessageContext) -> Result<(), HandlerError> {
        use std::sync::atomic::Ordering;
        self.started.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A handler outlives the shutdown timeout: `shutdown()` says so, and from
/// then on nothing of the consumer runs: the handler is not carried on to
/// its end, and nothing is committed past what was before.
#[tokio::test]
async fn after_a_timed_out_shutdown_nothing_runs_or_commits() {
    use std::sync::atomic::Ordering;
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Stuck>(broker, 1).await;
    let group = unique_name("stuck");
    let m = consumer(broker, &group)
        .topic_prefix(&prefix)
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("build");
    m.publish(&Stuck { n: 0 }).await.expect("publish");
    let sleepy = Sleepy::default();
    m.subscribe::<Stuck, _>(sleepy.clone()).expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "the handler started", || {
        sleepy.started.load(Ordering::SeqCst)
    })
    .await;
    let began = std::time::Instant::now();
    assert!(matches!(
        m.shutdown().await,
        Err(kavari::ShutdownError::HandlersInFlight { .. })
    ));
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !sleepy.finished.load(Ordering::SeqCst),
        "the handler ran on after shutdown() returned"
    );
    assert_ne!(
        committed(broker, &group, &topic, 1).await[&0],
        Some(1),
        "nothing committed after shutdown() returned"
    );
}
