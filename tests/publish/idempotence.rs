//! Idempotent publishing against the real broker: producer ids and gapless
//! sequences in the log, a lost answer written once and in order, and the
//! broker answers the protocol defines for idempotent producers, crafted on
//! real traffic by the fault proxy.

use super::*;
use kavari::ProduceErrorKind;
use kavari_wire::ResponseError;

/// The encoded values of `order(i)` for `range`, as the log holds them.
fn values(range: std::ops::RangeInclusive<usize>, topic: &str) -> Vec<Vec<u8>> {
    range.map(|i| to_topic(&order(i), topic).value).collect()
}

/// Every batch carries the manager's producer id and epoch, and each
/// partition's sequence numbers run from 0 without a gap across many
/// batches.
#[tokio::test]
async fn batches_carry_a_producer_id_and_gapless_sequences() {
    let topic = unique_name("idem-seq");
    let (broker, manager) = setup(&[(&topic, 3)], |b| b.linger(Duration::from_millis(1))).await;
    for round in 0..10 {
        let publishes =
            (0..30).map(|i| manager.publish_encoded(to_topic(&order(round * 30 + i), &topic)));
        for r in futures::future::join_all(publishes).await {
            r.expect("publish");
        }
    }
    let mut total = 0;
    let mut producers = HashSet::new();
    for p in 0..3 {
        let logged = logged_records(broker, &topic, p).await;
        total += logged.len();
        for (i, r) in logged.iter().enumerate() {
            assert!(r.producer_id >= 0 && r.producer_epoch >= 0, "{r:?}");
            assert_eq!(r.sequence, i as i32, "partition {p}: {r:?}");
            producers.insert((r.producer_id, r.producer_epoch));
        }
    }
    assert_eq!(total, 300);
    assert_eq!(
        producers.len(),
        1,
        "one producer id for the manager: {producers:?}"
    );
}

/// The broker writes batches whose answers never come back (five in flight:
/// two records a batch, no linger); they are sent again once the requests
/// time out. With idempotence the log holds each record once, in publish
/// order, its sequences gapless under one producer id; without it, the
/// lost batches twice (what idempotence is for).
#[tokio::test]
async fn a_lost_answer_is_written_once_and_in_order() {
    for idempotent in [true, false] {
        let topic = unique_name("idem-lost");
        let (broker, manager) = behind_proxy(&topic, |b| {
            b.linger(Duration::ZERO)
                .max_batch_bytes(300)
                .enable_idempotence(idempotent)
        })
        .await;
        let proxy = broker.proxy().expect("proxy");
        proxy.lose_answers();
        let publishes = (1..=40).map(|i| manager.publish_encoded(to_topic(&order(i), &topic)));
        let (results, ()) = tokio::join!(futures::future::join_all(publishes), async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            proxy.heal();
        });
        for r in results {
            r.expect("published once the answers come back");
        }
        let records = logged_records(&broker, &topic, 0).await;
        let logged: Vec<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
        if idempotent {
            assert_eq!(logged, values(0..=40, &topic), "each once, in order");
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.sequence, i as i32, "gapless: {r:?}");
                assert_eq!(r.producer_id, records[0].producer_id);
            }
            let produced = proxy.requests(0);
            assert!(produced > 20, "{produced} produce requests: sent again");
        } else {
            assert!(
                logged.len() > 41,
                "without idempotence a lost answer means a duplicate: {} records",
                logged.len()
            );
        }
        manager.shutdown().await.expect("shutdown");
    }
}

/// DUPLICATE_SEQUENCE_NUMBER: the batch is in the log already; the publish
/// succeeds (its offset unknown: -1) and nothing is written twice.
#[tokio::test]
async fn a_duplicate_sequence_is_a_success() {
    let topic = unique_name("idem-dup");
    let (broker, manager) = behind_proxy(&topic, |b| b).await;
    let proxy = broker.proxy().expect("proxy");
    proxy.answer_produce_with(ResponseError::DuplicateSequenceNumber.code(), 1);
    let d = manager
        .publish_encoded(to_topic(&order(1), &topic))
        .await
        .expect("a duplicate is a success");
    assert_eq!(d.offset, Offset::Duplicate, "the broker does not say where");
    let d = manager
        .publish_encoded(to_topic(&order(2), &topic))
        .await
        .expect("the next publish");
    assert_eq!(d.offset, Offset::At(2));
    let logged: Vec<Vec<u8>> = logged_records(&broker, &topic, 0)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(logged, values(0..=2, &topic));
}

/// OUT_OF_ORDER_SEQUENCE_NUMBER and UNKNOWN_PRODUCER_ID for a batch with
/// nothing failed before it: the broker lost this producer's sequence. The
/// producer starts again under a new epoch (or id), from sequence 0, and
/// nothing is lost or reordered. (The broker had written the batch: only
/// its answer was crafted, so its copy under the new epoch is in the log
/// too, right after it.)
#[tokio::test]
async fn a_lost_sequence_starts_a_new_epoch_and_loses_nothing() {
    for code in [
        ResponseError::OutOfOrderSequenceNumber,
        ResponseError::UnknownProducerId,
    ] {
        let topic = unique_name("idem-reset");
        let (broker, manager) = behind_proxy(&topic, |b| b).await;
        let proxy = broker.proxy().expect("proxy");
        proxy.answer_produce_with(code.code(), 1);
        for i in 1..=10 {
            manager
                .publish_encoded(to_topic(&order(i), &topic))
                .await
                .unwrap_or_else(|e| panic!("{code:?}: {e}"));
        }
        let logged = logged_records(&broker, &topic, 0).await;
        let mut firsts: Vec<Vec<u8>> = Vec::new();
        for r in &logged {
            if !firsts.contains(&r.value) {
                firsts.push(r.value.clone());
            }
        }
        assert_eq!(firsts, values(0..=10, &topic), "{code:?}: all, in order");
        let before = (logged[0].producer_id, logged[0].producer_epoch);
        let after: Vec<_> = logged
            .iter()
            .filter(|r| (r.producer_id, r.producer_epoch) != before)
            .collect();
        assert_eq!(
            after.len(),
            10,
            "{code:?}: a new epoch from the crafted answer on: {logged:?}"
        );
        for (i, r) in after.iter().enumerate() {
            assert_eq!(r.sequence, i as i32, "{code:?}: from 0 again");
        }
        manager.shutdown().await.expect("shutdown");
    }
}

/// PRODUCER_FENCED stops the producer: that publish and every later one
/// fail with an error that says so.
#[tokio::test]
async fn a_fenced_producer_stops_with_a_clear_error() {
    let topic = unique_name("idem-fenced");
    let (broker, manager) = behind_proxy(&topic, |b| b).await;
    let proxy = broker.proxy().expect("proxy");
    proxy.answer_produce_with(ResponseError::ProducerFenced.code(), 1);
    for i in 1..=2 {
        let e = manager
            .publish_encoded(to_topic(&order(i), &topic))
            .await
            .expect_err("fenced");
        assert!(e.to_string().contains("fenced"), "{e}");
        assert_eq!(e.kind(), Some(ProduceErrorKind::Broker), "{e}");
    }
}

/// A cluster that offers no InitProducerId (a broker before 0.11): by
/// default the manager publishes without idempotence (unstamped batches)
/// and says so; asked for it explicitly, it refuses to publish.
#[tokio::test]
async fn a_cluster_without_idempotence_falls_back_or_is_refused_when_required() {
    let (logs, _guard) = CapturedLogs::warnings();
    let topic = unique_name("idem-old");
    let broker = own_broker(KafkaBroker::builder().behind_proxy(), &topic, 1).await;
    let proxy = broker.proxy().expect("proxy");
    proxy.hide_api(Some(22)); // InitProducerId
    let preferred = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    preferred
        .publish_encoded(to_topic(&order(0), &topic))
        .await
        .expect("published without idempotence");
    assert!(
        logs.lines()
            .iter()
            .any(|w| w.contains("cannot do idempotent publishing")),
        "{:?}",
        logs.lines()
    );
    let required = Kavari::builder(broker.bootstrap_servers())
        .enable_idempotence(true)
        .build()
        .await
        .expect("build");
    let e = required
        .publish_encoded(to_topic(&order(1), &topic))
        .await
        .expect_err("idempotence required");
    assert!(
        e.to_string().contains("cannot do idempotent publishing"),
        "{e}"
    );
    let logged = logged_records(&broker, &topic, 0).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!((logged[0].producer_id, logged[0].sequence), (-1, -1));
}

/// A shared request's answer fails one partition and succeeds the others
/// (NOT_LEADER_OR_FOLLOWER written over the broker's success for the first
/// partition the answer names, which need not be the first the request
/// named: Kafka answers in an order of its own): that partition's batch
/// alone is sent again, under the same sequence, and the broker keeps one
/// copy; the other partitions' batches are acknowledged once. Every record
/// is in the log once, each partition's sequences gapless.
#[tokio::test]
async fn one_partitions_error_in_a_shared_answer_sends_that_batch_alone_again() {
    let topic = unique_name("idem-shared");
    let (broker, manager) = proxied(&topic, 4, |b| {
        b.linger(Duration::from_millis(50)).publishing_retry_policy(
            FibonacciRetryPolicy::new(5).with_unit(Duration::from_millis(50)),
        )
    })
    .await;
    let proxy = broker.proxy().expect("proxy");
    // Every partition's sender knows its leader.
    for r in futures::future::join_all(
        (0..40).map(|i| manager.publish_encoded(to_topic(&order(i), &topic))),
    )
    .await
    {
        r.expect("warm-up");
    }
    proxy.keep_requests(PRODUCE);
    proxy.answer_produce_with(ResponseError::NotLeaderOrFollower.code(), 1);
    for r in futures::future::join_all(
        (40..80).map(|i| manager.publish_encoded(to_topic(&order(i), &topic))),
    )
    .await
    {
        r.expect("publish");
    }

    let kept = proxy.kept_requests(PRODUCE);
    let first = produced_sequences(&kept[0]);
    assert!(first.len() >= 2, "the first request was shared: {first:?}");
    let mut sent: HashMap<((String, i32), i32), usize> = HashMap::new();
    for frame in &kept {
        for batch in produced_sequences(frame) {
            *sent.entry(batch).or_default() += 1;
        }
    }
    let again: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(again.len(), 1, "one batch sent again: {sent:?}");
    let (failed, times) = again[0];
    assert_eq!(*times, 2, "sent again once: {sent:?}");
    assert!(
        first.contains(failed),
        "the batch sent again was in the shared request: {failed:?} {first:?}"
    );
    // Alone: the request that sent it again names nothing else.
    let resent_alone = kept[1..].iter().any(|frame| {
        let batches = produced_sequences(frame);
        batches.len() == 1 && batches[0] == *failed
    });
    assert!(resent_alone, "{failed:?} sent again alone: {sent:?}");
    let mut values = HashSet::new();
    for p in 0..4 {
        let logged = logged_records(&broker, &topic, p).await;
        for (i, r) in logged.iter().enumerate() {
            assert_eq!(r.sequence, i as i32, "partition {p} gapless: {r:?}");
            assert!(values.insert(r.value.clone()), "written twice: {r:?}");
        }
    }
    assert_eq!(values.len(), 80);
    manager.shutdown().await.expect("shutdown");
}
