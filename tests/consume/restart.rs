//! Restart and shutdown.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "restart.events")]
pub(crate) struct Event {
    #[kavari(key)]
    key: String,
    seq: u64,
}

pub(crate) struct Slow {
    pub(crate) seen: Arc<Mutex<Vec<u64>>>,
    pub(crate) delay: Duration,
    pub(crate) no_retry: bool,
}
impl MessageHandler<Event> for Slow {
    async fn handle(&self, e: Event, _: &MessageContext) -> Result<(), HandlerError> {
        tokio::time::sleep(self.delay).await;
        self.seen.lock().unwrap().push(e.seq);
        if self.no_retry {
            return Ok(());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_restarted_group_handles_nothing_twice_and_shutdown_waits_for_slow_handlers() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(Event::TOPIC, 2).await.expect("topic");
    let group = unique_name("restart");

    // First life: a slow handler; shut down while one is in flight.
    let first = Arc::new(Mutex::new(Vec::new()));
    let m = consumer(broker, &group).build().await.expect("build");
    m.subscribe::<Event, _>(Slow {
        seen: Arc::clone(&first),
        delay: Duration::from_millis(300),
        no_retry: true,
    })
    .expect("subscribe");
    m.start().await.expect("start");
    for seq in 0..20 {
        m.publish(&Event {
            key: format!("k{seq}"),
            seq,
        })
        .await
        .expect("publish");
    }
    eventually(WAIT, "a first message handled", || {
        !first.lock().unwrap().is_empty()
    })
    .await;
    m.shutdown()
        .await
        .expect("shutdown waits for the handler in flight");
    let handled_first: BTreeSet<u64> = first.lock().unwrap().iter().copied().collect();
    assert!(
        handled_first.len() < 20,
        "shut down midway: {handled_first:?}"
    );
    let offsets = committed(broker, &group, Event::TOPIC, 2).await;
    let committed_total: i64 = offsets.values().map(|o| o.unwrap_or(0)).sum();
    assert_eq!(
        committed_total,
        handled_first.len() as i64,
        "every handled message, the slow one in flight included, is committed: {offsets:?}"
    );

    // Second life: the rest, and nothing again.
    let second = Arc::new(Mutex::new(Vec::new()));
    let m2 = consumer(broker, &group).build().await.expect("build");
    m2.subscribe::<Event, _>(Slow {
        seen: Arc::clone(&second),
        delay: Duration::ZERO,
        no_retry: false,
    })
    .expect("subscribe");
    m2.start().await.expect("start");
    eventually(WAIT, "the rest handled", || {
        handled_first.len() + second.lock().unwrap().len() >= 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    m2.shutdown().await.expect("shutdown");
    let handled_second: BTreeSet<u64> = second.lock().unwrap().iter().copied().collect();
    assert!(
        handled_first.is_disjoint(&handled_second),
        "handled twice: {:?}",
        handled_first
            .intersection(&handled_second)
            .collect::<Vec<_>>()
    );
    assert_eq!(handled_first.len() + second.lock().unwrap().len(), 20);
}
