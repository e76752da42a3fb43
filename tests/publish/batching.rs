//! Batching: concurrent publishes share requests, pipelined batches,
//! backpressure in records and bytes per partition.

use super::*;

#[tokio::test]
async fn concurrent_publishes_share_produce_requests() {
    let topic = unique_name("batched");
    let (broker, manager) = setup(&[(&topic, 3)], |b| b.linger(Duration::from_millis(20))).await;

    let publishes = (0..1000).map(|i| manager.publish_encoded(to_topic(&order(i), &topic)));
    let results = futures::future::join_all(publishes).await;
    let mut seen = HashSet::new();
    for r in results {
        let d = r.expect("publish");
        assert!(
            seen.insert((d.partition, d.offset)),
            "duplicate offset {d:?}"
        );
    }
    assert_eq!(seen.len(), 1000);
    let stats = manager.publish_stats();
    assert_eq!(stats.records_acknowledged, 1000);
    assert!(
        stats.produce_requests <= 100,
        "1,000 publishes took {} produce requests",
        stats.produce_requests
    );
    assert_eq!(fetch_topic(broker, &topic, 3).await.len(), 1000);

    // publish_batch: one result per message, in order.
    let batch: Vec<OrderPlaced> = (0..10).map(order).collect();
    let manager2 = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    broker.create_topic("orders", 3).await.ok();
    let results = manager2.publish_batch(&batch).await;
    assert_eq!(results.len(), 10);
    for (i, r) in results.into_iter().enumerate() {
        let d = r.expect("publish_batch");
        assert_eq!(d.topic, "orders");
        let key = format!("o-{i}");
        assert_eq!(
            d.partition,
            (Partitioner::murmur2(key.as_bytes()) & 0x7fff_ffff) % 3
        );
    }
}

/// Many small batches of one partition travel at once on one connection:
/// each publish's offset is the offset of its own record.
#[tokio::test]
async fn pipelined_batches_give_every_publish_its_own_offset() {
    let topic = unique_name("pipelined");
    let (broker, manager) = setup(&[(&topic, 1)], |b| {
        b.linger(Duration::from_millis(1)).max_batch_bytes(2 * 1024)
    })
    .await;
    let n = 3_000;
    let publishes = (0..n).map(|i| manager.publish_encoded(to_topic(&order(i), &topic)));
    let results = futures::future::join_all(publishes).await;
    let stats = manager.publish_stats();
    assert!(
        stats.produce_requests >= 100,
        "only {} requests: batches too large to pipeline",
        stats.produce_requests
    );
    let records: HashMap<i64, OrderPlaced> = fetch_topic(broker, &topic, 1)
        .await
        .into_iter()
        .map(|(_, r)| {
            let value = r.record.value.expect("value");
            (
                r.offset,
                kavari::codec::decode_value(&value).expect("decode"),
            )
        })
        .collect();
    assert_eq!(records.len(), n);
    for (i, r) in results.into_iter().enumerate() {
        let d = r.expect("publish");
        assert_eq!(
            records[&d.offset.get().expect("an offset")],
            order(i),
            "offset {} of publish {i}",
            d.offset
        );
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.backpressure")]
struct Tick {
    #[kavari(key)]
    id: u32,
    seq: u32,
}

/// A partition holding `max_queued_per_partition` unsent records makes
/// typed publishes wait (on the general path) instead of failing or growing
/// without bound. Every publish lands once, as its own record.
#[tokio::test]
async fn typed_publishes_wait_for_room_when_a_partition_is_full() {
    let (broker, manager) = setup(&[(Tick::TOPIC, 1)], |b| {
        b.max_queued_per_partition(8)
            .linger(Duration::from_millis(20))
    })
    .await;
    let ticks: Vec<Tick> = (0..400).map(|seq| Tick { id: 7, seq }).collect();
    // The first publish looks the topic up; the rest find it known and
    // fill the partition on the typed path until it is full.
    let mut results = vec![manager.publish(&ticks[0]).await];
    results.extend(futures::future::join_all(ticks[1..].iter().map(|t| manager.publish(t))).await);
    let records = fetch_topic(broker, Tick::TOPIC, 1).await;
    let mut offsets = HashSet::new();
    for (tick, r) in ticks.iter().zip(results) {
        let d = r.expect("publish");
        assert!(offsets.insert(d.offset), "offset {} twice", d.offset);
        let back: Tick = value_of(delivered(&records, 0, d.offset));
        assert_eq!(&back, tick, "offset {} holds its own publish", d.offset);
    }
    let stats = manager.publish_stats();
    assert_eq!(stats.records_acknowledged, 400);
    assert!(
        stats.produce_requests >= 400 / 8,
        "at most 8 queued records per request: {} requests",
        stats.produce_requests
    );

    // The bulk path waits alike, and keeps the call's order.
    let more: Vec<Tick> = (400..800).map(|seq| Tick { id: 7, seq }).collect();
    let offsets = batch_in_order(&manager, &more).await;
    let records = fetch_topic(broker, Tick::TOPIC, 1).await;
    for (tick, offset) in more.iter().zip(&offsets) {
        assert_eq!(
            &value_of::<Tick>(delivered(&records, 0, Offset::At(*offset))),
            tick
        );
    }
    manager.shutdown().await.expect("shutdown");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.byte-bound")]
struct Blob {
    #[kavari(key)]
    id: u32,
    seq: u32,
    body: String,
}

/// `max_queued_bytes_per_partition` bounds the unsent bytes of a partition
/// (as Java's `buffer.memory`): with room for about four 1 KiB records,
/// 200 concurrent publishes wait their turn, travel at most four to a
/// request, and all land; a record larger than the bound still goes, alone.
#[tokio::test]
async fn queued_bytes_are_bounded_per_partition() {
    let (broker, manager) = setup(&[(Blob::TOPIC, 1)], |b| {
        b.max_queued_bytes_per_partition(4 * 1024 + 512)
            .linger(Duration::from_millis(20))
    })
    .await;
    let blob = |seq| Blob {
        id: 1,
        seq,
        body: "x".repeat(1_000),
    };
    manager.publish(&blob(0)).await.expect("first publish");
    let before = manager.publish_stats();
    let blobs: Vec<Blob> = (1..=200).map(blob).collect();
    let results = futures::future::join_all(blobs.iter().map(|b| manager.publish(b))).await;
    let records = fetch_topic(broker, Blob::TOPIC, 1).await;
    for (b, r) in blobs.iter().zip(results) {
        let d = r.expect("publish");
        assert_eq!(&value_of::<Blob>(delivered(&records, 0, d.offset)), b);
    }
    let requests = manager.publish_stats().produce_requests - before.produce_requests;
    assert!(
        requests >= 200 / 4,
        "200 records of 1 KiB with 4.5 KiB queued at most: {requests} requests"
    );
    let big = Blob {
        id: 1,
        seq: 999,
        body: "x".repeat(10_000),
    };
    let d = manager
        .publish(&big)
        .await
        .expect("a record over the bound");
    let records = fetch_topic(broker, Blob::TOPIC, 1).await;
    assert_eq!(value_of::<Blob>(delivered(&records, 0, d.offset)), big);
    manager.shutdown().await.expect("shutdown");
}

/// `buffer_memory` bounds the unsent bytes of all partitions together (as
/// Java's `buffer.memory`): 200 concurrent 1 KiB publishes over 4
/// partitions, with a long linger and room for about 8 KiB, never hold
/// much more than that (a partition with nothing queued may take one
/// record), and all land.
#[tokio::test]
async fn queued_bytes_are_bounded_for_the_whole_manager() {
    let topic = unique_name("buffer-memory");
    let (broker, manager) = setup(&[(&topic, 4)], |b| {
        b.buffer_memory(8 * 1024).linger(Duration::from_millis(200))
    })
    .await;
    let blobs: Vec<EncodedMessage> = (0..200)
        .map(|seq| {
            to_topic(
                &Blob {
                    id: seq,
                    seq,
                    body: "x".repeat(1_000),
                },
                &topic,
            )
        })
        .collect();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (manager, peak) = (manager.clone(), std::sync::Arc::clone(&peak));
        tokio::spawn(async move {
            loop {
                let q = manager.publish_stats().queued_bytes;
                peak.fetch_max(q, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let results =
        futures::future::join_all(blobs.iter().cloned().map(|m| manager.publish_encoded(m))).await;
    sampler.abort();
    for r in results {
        r.expect("publish");
    }
    let records = fetch_topic(broker, &topic, 4).await;
    assert_eq!(records.len(), 200);
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    // 8 KiB, plus one ~1.1 KiB record per partition that had none queued.
    assert!(
        peak > 0 && peak <= 8 * 1024 + 4 * 1_200,
        "peak of {peak} unsent bytes"
    );
    assert_eq!(manager.publish_stats().queued_bytes, 0);
    manager.shutdown().await.expect("shutdown");
}

/// A topic no publish went to for `metadata_max_idle` is forgotten (its
/// batchers send what they hold and end): a topic published once does not
/// hold tasks and buffers for the manager's life. Publishing to it again
/// looks it up anew; a busy topic is kept.
#[tokio::test]
async fn idle_topics_are_forgotten_and_come_back_when_used() {
    let idle = unique_name("idle");
    let busy = unique_name("busy");
    let (_, manager) = setup(&[(&idle, 1), (&busy, 1)], |b| {
        // Long enough that the first publish (a lookup on a loaded CI
        // machine) ends well inside it.
        b.metadata_max_idle(Duration::from_millis(1500))
    })
    .await;
    manager
        .publish_encoded(to_topic(&order(1), &idle))
        .await
        .expect("publish");
    assert_eq!(manager.publish_stats().topics, 1);
    for i in 0..15 {
        manager
            .publish_encoded(to_topic(&order(i), &busy))
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        manager.publish_stats().topics,
        1,
        "the idle topic forgotten, the busy one kept"
    );
    let d = manager
        .publish_encoded(to_topic(&order(2), &idle))
        .await
        .expect("publish to a forgotten topic");
    assert_eq!(d.offset, Offset::At(1));
    assert_eq!(manager.publish_stats().topics, 2);
    manager.shutdown().await.expect("shutdown");
}

/// The partitions one broker leads share produce requests, as with the
/// Java producer and librdkafka: publishes to 64 partitions at once travel
/// as a few requests naming many partitions each (one batch a partition),
/// not as a request per batch. Each publish still learns its own record's
/// offset from the shared answer, and each partition's sequences stay
/// gapless; with idempotence off alike.
#[tokio::test]
async fn a_brokers_partitions_share_produce_requests() {
    for idempotent in [true, false] {
        let topic = unique_name("shared-requests");
        let (broker, manager) = proxied(&topic, 64, |b| {
            b.linger(Duration::from_millis(20))
                .enable_idempotence(idempotent)
        })
        .await;
        let proxy = broker.proxy().expect("proxy");
        manager
            .publish_encoded(to_topic(&order(0), &topic))
            .await
            .expect("the first publish");
        proxy.keep_requests(PRODUCE);
        let before = manager.publish_stats();

        let n = 64 * 30;
        let publishes = (1..=n).map(|i| manager.publish_encoded(to_topic(&order(i), &topic)));
        let results = futures::future::join_all(publishes).await;
        let stats = manager.publish_stats();
        let requests = stats.produce_requests - before.produce_requests;
        let batches = stats.batches_sent - before.batches_sent;

        let records = fetch_topic(&broker, &topic, 64).await;
        assert_eq!(records.len(), n + 1, "idempotent: {idempotent}");
        for (i, r) in (1..=n).zip(results) {
            let d = r.expect("publish");
            assert_eq!(
                value_of::<OrderPlaced>(delivered(&records, d.partition, d.offset)),
                order(i),
                "publish {i} learned the offset of its own record"
            );
        }
        let named: Vec<usize> = proxy
            .kept_requests(PRODUCE)
            .iter()
            .map(|frame| produced_partitions(frame).len())
            .collect();
        assert_eq!(named.len() as u64, requests, "requests counted as sent");
        assert_eq!(named.iter().sum::<usize>() as u64, batches);
        assert!(batches >= 64, "every partition got records: {batches}");
        assert!(
            requests * 4 <= batches,
            "{requests} requests for {batches} batches: {named:?}"
        );
        assert!(
            named.iter().any(|&n| n >= 32),
            "no request named half the partitions: {named:?}"
        );
        if idempotent {
            for p in 0..64 {
                let logged = logged_records(&broker, &topic, p).await;
                for (i, r) in logged.iter().enumerate() {
                    assert_eq!(r.sequence, i as i32, "partition {p} gapless: {r:?}");
                }
            }
        }
        manager.shutdown().await.expect("shutdown");
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.produce-round")]
struct Round {
    #[kavari(key)]
    id: String,
    seq: u32,
}

/// Publishes `lone` (its batch lingers: the manager's linger is 2 s) and,
/// 200 ms later, flushes `flushed` with `publish_batch`. Checks that the
/// lone record did not wait out its linger and that one Produce request
/// carried both; returns both deliveries and the partitions that request
/// named, sorted.
async fn lone_then_flushed<A: KafkaMessage, B: KafkaMessage>(
    manager: &Kavari,
    proxy: &kavari_testcontainers::FaultProxy,
    lone: &A,
    flushed: &B,
) -> (kavari::Delivery, kavari::Delivery, Vec<(String, i32)>) {
    proxy.keep_requests(PRODUCE);
    let started = std::time::Instant::now();
    let flush = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        manager.publish_batch(std::slice::from_ref(flushed)).await
    };
    let (lone_result, mut flushed_results) = tokio::join!(manager.publish(lone), flush);
    let took = started.elapsed();
    let lone_delivery = lone_result.expect("the lone publish");
    let flushed_delivery = flushed_results.remove(0).expect("the flushed publish");
    assert!(
        took < Duration::from_secs(1),
        "the lone record waited out its linger: {took:?}"
    );
    let kept = proxy.kept_requests(PRODUCE);
    assert_eq!(kept.len(), 1, "one request carried both");
    let mut named = produced_partitions(&kept[0]);
    named.sort();
    (lone_delivery, flushed_delivery, named)
}

/// A batch that is due (here flushed by `publish_batch`) takes along the
/// batch another partition of the same broker is filling: a lone publish
/// with a 2 s linger lands with it, in the same request, long before its
/// linger is over.
#[tokio::test]
async fn a_due_batch_takes_along_what_other_partitions_of_its_broker_hold() {
    let (broker, manager) = proxied(Round::TOPIC, 2, |b| b.linger(Duration::from_secs(2))).await;
    let proxy = broker.proxy().expect("proxy");
    // A key of each partition (of two: murmur2's low bit).
    let on = |p: i32| {
        (0..)
            .map(|i| format!("k-{i}"))
            .find(|k| (Partitioner::murmur2(k.as_bytes()) & 0x7fff_ffff) % 2 == p)
            .expect("a key")
    };
    let (lone, flushed) = (on(0), on(1));
    let round = |id: &str, seq| Round { id: id.into(), seq };
    // Both partitions' senders learn their leader with a first batch each.
    for r in manager
        .publish_batch(&[round(&lone, 0), round(&flushed, 0)])
        .await
    {
        r.expect("warm-up");
    }
    let (lone_delivery, _, named) =
        lone_then_flushed(&manager, proxy, &round(&lone, 1), &round(&flushed, 1)).await;
    assert_eq!(lone_delivery.partition, 0);
    let topic = Round::TOPIC.to_string();
    assert_eq!(named, [(topic.clone(), 0), (topic, 1)]);
    manager.shutdown().await.expect("shutdown");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.produce-round.other")]
struct OtherRound {
    #[kavari(key)]
    id: String,
    seq: u32,
}

/// Rounds are per broker, not per topic: a flushed batch of one topic
/// takes along the batch another topic on the same broker is filling, in
/// one request that names both topics, and the broker writes both.
#[tokio::test]
async fn batches_of_two_topics_on_one_broker_share_a_request() {
    let (broker, manager) = proxied(Round::TOPIC, 1, |b| b.linger(Duration::from_secs(2))).await;
    broker
        .create_topic(OtherRound::TOPIC, 1)
        .await
        .expect("the other topic");
    let proxy = broker.proxy().expect("proxy");
    let round = |seq| Round {
        id: "r".into(),
        seq,
    };
    let other = |seq| OtherRound {
        id: "o".into(),
        seq,
    };
    // Both senders learn their leader with a first batch each.
    manager.publish_batch(&[round(0)]).await[0]
        .as_ref()
        .expect("warm-up");
    manager.publish_batch(&[other(0)]).await[0]
        .as_ref()
        .expect("warm-up");
    let (lone_delivery, flushed_delivery, named) =
        lone_then_flushed(&manager, proxy, &other(1), &round(1)).await;
    assert_eq!(
        named,
        [
            (Round::TOPIC.to_string(), 0),
            (OtherRound::TOPIC.to_string(), 0)
        ]
    );
    let records = fetch_topic(&broker, OtherRound::TOPIC, 1).await;
    assert_eq!(
        value_of::<OtherRound>(delivered(&records, 0, lone_delivery.offset)),
        other(1)
    );
    let records = fetch_topic(&broker, Round::TOPIC, 1).await;
    assert_eq!(
        value_of::<Round>(delivered(&records, 0, flushed_delivery.offset)),
        round(1)
    );
    manager.shutdown().await.expect("shutdown");
}

/// While a produce request is unanswered, records that only linger wait
/// for its answer and go together in the next request: a broker that
/// answers slowly (here about 300 ms a round trip, behind the proxy) gets
/// two requests for twenty records published 10 ms apart, not one per
/// linger until five are unanswered.
#[tokio::test]
async fn lingering_records_wait_for_an_unanswered_request_and_go_together() {
    let topic = unique_name("publish.slow-answers");
    let (broker, manager) = behind_proxy(&topic, |b| b.linger(Duration::from_millis(5))).await;
    let proxy = broker.proxy().expect("proxy");
    proxy.set_latency(Duration::from_millis(150));
    let before = manager.publish_stats().produce_requests;
    let publishes = (1..=20usize).map(|i| {
        let (manager, topic) = (&manager, &topic);
        async move {
            tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
            manager.publish_encoded(to_topic(&order(i), topic)).await
        }
    });
    let offsets: Vec<Option<i64>> = futures::future::join_all(publishes)
        .await
        .into_iter()
        .map(|r| r.expect("publish").offset.get())
        .collect();
    let requests = manager.publish_stats().produce_requests - before;
    assert!(
        requests <= 3,
        "{requests} produce requests for 20 records published while answers were slow"
    );
    assert!(
        offsets.windows(2).all(|w| w[0].is_some() && w[0] < w[1]),
        "in publish order: {offsets:?}"
    );
    proxy.heal();
}
