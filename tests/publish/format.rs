//! Records as other clients read them: the key placed where Java puts it,
//! every codec, the typed path writing what the encoded path writes.

use super::*;

#[tokio::test]
async fn typed_messages_land_where_java_would_put_them() {
    let topic = unique_name("orders");
    let (broker, manager) = setup(&[(&topic, 3)], |b| b).await;

    let mut sent = Vec::new();
    for i in 0..20 {
        let placed = order(i);
        let d = manager
            .publish_encoded(to_topic(&placed, &topic))
            .await
            .expect("publish placed");
        sent.push((d, placed.order_id.clone(), "OrderPlaced"));
        let cancelled = OrderCancelled {
            order_id: format!("o-{i}"),
            reason: "changed mind".into(),
        };
        let d = manager
            .publish_encoded(to_topic(&cancelled, &topic))
            .await
            .expect("publish cancelled");
        sent.push((d, cancelled.order_id.clone(), "order.cancelled"));
    }

    let records = fetch_topic(broker, &topic, 3).await;
    assert_eq!(records.len(), 40);
    for (delivery, key, msg_type) in &sent {
        let java_partition = (Partitioner::murmur2(key.as_bytes()) & 0x7fff_ffff) % 3;
        assert_eq!(delivery.partition, java_partition, "key {key}");
        let r = delivered(&records, delivery.partition, delivery.offset);
        assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(header(&r.headers, "msg_type").as_deref(), Some(*msg_type));
        assert_eq!(
            header(&r.headers, "content-type").as_deref(),
            Some("application/msgpack")
        );
        match *msg_type {
            "OrderPlaced" => assert_eq!(&value_of::<OrderPlaced>(r).order_id, key),
            _ => assert_eq!(value_of::<OrderCancelled>(r).reason, "changed mind"),
        }
    }
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn compressed_batches_read_back_unchanged() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    for compression in [kavari::Compression::Gzip, kavari::Compression::Snappy] {
        let topic = unique_name("compressed");
        broker.create_topic(&topic, 1).await.expect("topic");
        let manager = Kavari::builder(broker.bootstrap_servers())
            .compression(compression)
            .build()
            .await
            .expect("build");
        let sent: Vec<_> = (0..50).map(|i| to_topic(&order(i), &topic)).collect();
        for r in manager.publish_batch_encoded_for_test(&sent).await {
            r.expect("publish");
        }
        let records = fetch_topic(broker, &topic, 1).await;
        assert_eq!(records.len(), 50, "{compression:?}");
        for (i, (_, r)) in records.iter().enumerate() {
            let m: OrderPlaced =
                kavari::codec::decode_value(r.record.value.as_deref().expect("value"))
                    .expect("decode");
            assert_eq!(m, order(i), "{compression:?}");
        }
        manager.shutdown().await.expect("shutdown");
    }
}

trait PublishAll {
    async fn publish_batch_encoded_for_test(
        &self,
        msgs: &[EncodedMessage],
    ) -> Vec<Result<kavari::Delivery, PublishError>>;
}

impl PublishAll for Kavari {
    async fn publish_batch_encoded_for_test(
        &self,
        msgs: &[EncodedMessage],
    ) -> Vec<Result<kavari::Delivery, PublishError>> {
        futures::future::join_all(msgs.iter().cloned().map(|m| self.publish_encoded(m))).await
    }
}

// `manager.publish(&msg)` has a path of its own: the value is encoded into a
// per-thread buffer and copied straight into its batch, and an
// `EncodedMessage` is built only when the publish must wait or its first
// attempt failed. The tests below drive that path (types with topics of
// their own) and hold it to what the encoded path writes.

/// Publishes `msg` typed (to its own topic) and encoded (to `topic`).
async fn both_ways<M: KafkaMessage>(
    manager: &Kavari,
    msg: &M,
    topic: &str,
) -> (kavari::Delivery, kavari::Delivery) {
    let typed = manager.publish(msg).await.expect("typed publish");
    let encoded = manager
        .publish_encoded(to_topic(msg, topic))
        .await
        .expect("encoded publish");
    (typed, encoded)
}

#[tokio::test]
async fn typed_publish_writes_what_the_encoded_path_writes() {
    let encoded_topic = unique_name("orders-encoded");
    let (broker, manager) = setup(&[(OrderPlaced::TOPIC, 3), (&encoded_topic, 3)], |b| b).await;

    let mut pairs = Vec::new();
    for i in 0..20 {
        let placed = order(i);
        let cancelled = OrderCancelled {
            order_id: format!("o-{i}"),
            reason: "changed mind".into(),
        };
        pairs.push(both_ways(&manager, &placed, &encoded_topic).await);
        pairs.push(both_ways(&manager, &cancelled, &encoded_topic).await);
    }

    let typed_records = fetch_topic(broker, OrderPlaced::TOPIC, 3).await;
    let encoded_records = fetch_topic(broker, &encoded_topic, 3).await;
    for (typed, encoded) in &pairs {
        assert_eq!(typed.topic, OrderPlaced::TOPIC);
        assert_eq!(
            typed.partition, encoded.partition,
            "same key, same partition"
        );
        let t = delivered(&typed_records, typed.partition, typed.offset);
        let e = delivered(&encoded_records, encoded.partition, encoded.offset);
        assert_eq!(t.key, e.key);
        assert_eq!(t.value, e.value);
        assert_eq!(t.headers, e.headers);
    }
    manager.shutdown().await.expect("shutdown");
}
