//! A partition blocked behind a dead letter that cannot be written.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "blocked.jobs")]
struct Blocking {
    seq: u64,
    doomed: bool,
}

struct FailDoomed(Arc<Mutex<Vec<u64>>>);
impl MessageHandler<Blocking> for FailDoomed {
    async fn handle(&self, job: Blocking, _: &MessageContext) -> Result<(), HandlerError> {
        if job.doomed {
            return Err(HandlerError::permanent("doomed"));
        }
        self.0.lock().unwrap().push(job.seq);
        Ok(())
    }
}

/// Offsets 0-3 are handled, offset 4 fails for good and its dead-letter
/// topic does not exist, so the partition waits there: the handled prefix
/// is committed within a commit interval anyway, and health shows where
/// the partition stands.
#[tokio::test]
async fn a_blocked_partition_commits_its_handled_prefix() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Blocking>(broker, 1).await;
    let group = unique_name("blocked");
    let m = consumer(broker, &group)
        .topic_prefix(&prefix)
        .delivery_retry_policy(NoRetry)
        .create_dead_letter_topics(false)
        .commit_interval(Duration::from_millis(500))
        .build()
        .await
        .expect("build");
    let handled = Arc::new(Mutex::new(Vec::new()));
    m.subscribe::<Blocking, _>(FailDoomed(Arc::clone(&handled)))
        .expect("subscribe");
    for seq in 0..5 {
        m.publish(&Blocking {
            seq,
            doomed: seq == 4,
        })
        .await
        .expect("publish");
    }
    m.start().await.expect("start");
    eventually(WAIT, "offsets 0-3 handled", || {
        handled.lock().unwrap().len() == 4
    })
    .await;
    // Well within a few commit intervals, while offset 4 stays blocked.
    eventually(
        Duration::from_secs(5),
        "the handled prefix committed",
        || m.health().partitions.first().and_then(|p| p.committed) == Some(4),
    )
    .await;
    let p = m.health().partitions[0].clone();
    assert_eq!(p.position, Some(4), "the next offset to handle: {p:?}");
    assert!(p.last_progress.is_some(), "{p:?}");
    assert_eq!(committed(broker, &group, &topic, 1).await[&0], Some(4));
    m.shutdown().await.ok();
}
