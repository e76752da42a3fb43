//! Poison input dead-lettered (the default) or skipped (relaxed, when
//! asked for), counted in health either way.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "poison.relaxed")]
struct GoodRelaxed {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "poison.strict")]
struct GoodStrict {
    n: u32,
}

struct Count(Arc<Mutex<Vec<u32>>>);
impl MessageHandler<GoodRelaxed> for Count {
    async fn handle(&self, m: GoodRelaxed, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(m.n);
        Ok(())
    }
}
impl MessageHandler<GoodStrict> for Count {
    async fn handle(&self, m: GoodStrict, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(m.n);
        Ok(())
    }
}

/// Three records nobody can handle, then a good one.
fn poison<M: KafkaMessage>(good: &M) -> Vec<EncodedMessage> {
    let valid = kavari::codec::encode(good).expect("encode");
    let mut no_header = valid.clone();
    no_header.headers.remove("msg_type");
    let mut unknown = valid.clone();
    unknown
        .headers
        .insert("msg_type".into(), b"Nobody".to_vec());
    let mut garbage = valid.clone();
    garbage.value = b"\xc1\xc1 not msgpack".to_vec();
    vec![no_header, unknown, garbage, valid]
}

async fn publish_raw(m: &Kavari, records: Vec<EncodedMessage>) {
    for r in records {
        m.publish_encoded(r).await.expect("publish raw");
    }
}

/// The partition's health once `count` of its records went unhandled.
async fn unhandled(m: &Kavari, topic: &str, count: impl Fn(&kavari::PartitionHealth) -> u64) {
    let health = || m.health();
    eventually(WAIT, "the unhandled records counted", || {
        health()
            .partitions
            .iter()
            .any(|p| p.topic.ends_with(topic) && count(p) == 3)
    })
    .await;
}

#[tokio::test]
async fn relaxed_mode_skips_poison_and_moves_on() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker
        .create_topic(GoodRelaxed::TOPIC, 1)
        .await
        .expect("topic");
    broker
        .create_topic("poison.relaxed.dlq", 1)
        .await
        .expect("dlq");
    let group = unique_name("relaxed");
    let m = consumer(broker, &group)
        .on_poison(kavari::FailurePolicy::Skip)
        .build()
        .await
        .expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    m.subscribe::<GoodRelaxed, _>(Count(Arc::clone(&seen)))
        .expect("subscribe");
    m.start().await.expect("start");
    publish_raw(&m, poison(&GoodRelaxed { n: 7 })).await;
    eventually(WAIT, "the good record", || !seen.lock().unwrap().is_empty()).await;
    unhandled(&m, GoodRelaxed::TOPIC, |p| p.skipped).await;
    assert!(m.health().partitions.iter().all(|p| p.dead_lettered == 0));
    m.shutdown().await.expect("shutdown");
    assert_eq!(*seen.lock().unwrap(), [7]);
    assert!(
        fetch_topic(broker, "poison.relaxed.dlq", 1)
            .await
            .is_empty()
    );
    assert_eq!(
        committed(broker, &group, GoodRelaxed::TOPIC, 1).await[&0],
        Some(4)
    );
}

/// No policy set: poison goes to the dead-letter topic.
#[tokio::test]
async fn poison_is_dead_lettered_by_default_and_counted() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker
        .create_topic(GoodStrict::TOPIC, 1)
        .await
        .expect("topic");
    broker
        .create_topic("poison.strict.dlq", 1)
        .await
        .expect("dlq");
    let group = unique_name("strict");
    let m = consumer(broker, &group).build().await.expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    m.subscribe::<GoodStrict, _>(Count(Arc::clone(&seen)))
        .expect("subscribe");
    m.start().await.expect("start");
    publish_raw(&m, poison(&GoodStrict { n: 8 })).await;
    eventually(WAIT, "the good record", || !seen.lock().unwrap().is_empty()).await;
    unhandled(&m, GoodStrict::TOPIC, |p| p.dead_lettered).await;
    assert!(m.health().partitions.iter().all(|p| p.skipped == 0));
    m.shutdown().await.expect("shutdown");
    assert_eq!(*seen.lock().unwrap(), [8]);
    let letters = fetch_topic(broker, "poison.strict.dlq", 1).await;
    assert_eq!(letters.len(), 3, "three poison records dead-lettered");
    let offsets: Vec<_> = letters
        .iter()
        .map(|(_, r)| header(&r.record.headers, "original_offset").expect("original_offset"))
        .collect();
    assert_eq!(offsets, ["0", "1", "2"]);
    for (_, r) in &letters {
        assert_eq!(
            header(&r.record.headers, "original_topic").as_deref(),
            Some("poison.strict")
        );
        assert_eq!(
            header(&r.record.headers, "group_id").as_deref(),
            Some(group.as_str())
        );
        assert!(header(&r.record.headers, "original_error").is_some());
    }
    assert_eq!(
        committed(broker, &group, GoodStrict::TOPIC, 1).await[&0],
        Some(4)
    );
}
