//! End to end: two types on one topic, three handlers.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "e2e.orders")]
struct Placed {
    #[kavari(key)]
    key: String,
    seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "e2e.orders")]
struct Cancelled {
    #[kavari(key)]
    key: String,
    seq: u64,
}

type Seen = Arc<Mutex<Vec<(String, u64)>>>;

struct Record(Seen);
impl MessageHandler<Placed> for Record {
    async fn handle(&self, m: Placed, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((m.key, m.seq));
        Ok(())
    }
}
struct AlsoRecord(Seen);
impl MessageHandler<Placed> for AlsoRecord {
    async fn handle(&self, m: Placed, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((m.key, m.seq));
        Ok(())
    }
}
impl MessageHandler<Cancelled> for Record {
    async fn handle(&self, m: Cancelled, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((m.key, m.seq));
        Ok(())
    }
}

fn assert_per_key_order(seen: &[(String, u64)], what: &str) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (k, s) in seen {
        if let Some(prev) = last.insert(k, *s) {
            assert!(prev < *s, "{what}: key {k} saw {s} after {prev}");
        }
    }
}

#[tokio::test]
async fn every_handler_sees_exactly_its_messages_in_key_order() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(Placed::TOPIC, 3).await.expect("topic");
    let group = unique_name("e2e");
    let m = consumer(broker, &group).build().await.expect("build");
    let (a1, a2, b): (Seen, Seen, Seen) = Default::default();
    m.subscribe::<Placed, _>(Record(Arc::clone(&a1)))
        .expect("subscribe");
    m.subscribe::<Placed, _>(AlsoRecord(Arc::clone(&a2)))
        .expect("subscribe");
    m.subscribe::<Cancelled, _>(Record(Arc::clone(&b)))
        .expect("subscribe");
    assert!(
        m.subscribe::<Placed, _>(Record(Arc::clone(&a1))).is_err(),
        "the same handler twice is refused"
    );
    m.start().await.expect("start");

    let mut placed = Vec::new();
    let mut cancelled = Vec::new();
    for i in 0..1000u64 {
        let key = format!("k{}", i % 17);
        if i % 2 == 0 {
            placed.push(Placed { key, seq: i });
        } else {
            cancelled.push(Cancelled { key, seq: i });
        }
    }
    // Publish in order per key: one batch per type, each awaited in order.
    for (p, c) in placed.iter().zip(&cancelled) {
        let (r1, r2) = tokio::join!(m.publish(p), m.publish(c));
        r1.expect("publish");
        r2.expect("publish");
    }
    eventually(WAIT, "all 1,000 handled", || {
        a1.lock().unwrap().len() >= 500
            && a2.lock().unwrap().len() >= 500
            && b.lock().unwrap().len() >= 500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let want_placed: BTreeSet<u64> = placed.iter().map(|p| p.seq).collect();
    let want_cancelled: BTreeSet<u64> = cancelled.iter().map(|c| c.seq).collect();
    for (seen, want, what) in [
        (&a1, &want_placed, "handler 1"),
        (&a2, &want_placed, "handler 2"),
        (&b, &want_cancelled, "cancel handler"),
    ] {
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 500, "{what} saw each message once");
        assert_eq!(
            &seen.iter().map(|s| s.1).collect::<BTreeSet<_>>(),
            want,
            "{what}"
        );
        assert_per_key_order(&seen, what);
    }
    let health = m.health();
    assert_eq!(health.state, HealthState::Running);
    assert!(health.ready);
    assert_eq!(health.partitions.len(), 3);
    m.shutdown().await.expect("shutdown");
    let offsets = committed(broker, &group, Placed::TOPIC, 3).await;
    let total: i64 = offsets.values().map(|o| o.unwrap_or(0)).sum();
    assert_eq!(total, 1000, "everything handled is committed: {offsets:?}");
}
