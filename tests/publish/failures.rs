//! Failed publishes: retries through an outage within the delivery timeout,
//! batches split when too large, dead letters, records handed back.

use super::*;
use kavari::ProduceErrorKind;

#[tokio::test]
async fn outage_retries_by_policy_then_returns_the_record_and_recovers() {
    let topic = unique_name("outage");
    let (broker, manager) = proxied(&topic, 1, |b| {
        b.request_timeout(Duration::from_secs(2))
            .publishing_retry_policy(
                FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(100)),
            )
    })
    .await;
    let proxy = broker.proxy().expect("proxy");
    manager
        .publish_encoded(to_topic(&order(0), &topic))
        .await
        .expect("publish before the outage");

    broker
        .create_topic("orders", 1)
        .await
        .expect("orders topic");
    proxy.refuse();
    let before = manager.publish_stats();
    let msg = to_topic(&order(1), &topic);
    let started = std::time::Instant::now();
    let err = manager
        .publish_encoded(msg.clone())
        .await
        .expect_err("publish during an outage");
    let elapsed = started.elapsed();
    match err {
        PublishError::Failed {
            attempts,
            message,
            dlq_error,
            ..
        } => {
            assert_eq!(attempts, 3, "the policy allows three attempts");
            assert_eq!(*message, msg, "the record comes back unchanged");
            assert!(dlq_error.is_some(), "the dead-letter write was tried");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(manager.publish_stats().retries, before.retries + 1);
    // Three attempts and a dead-letter attempt, each bounded by the 2 s
    // request timeout, plus 300 ms of waits: never a hang.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");

    // The bulk path in the same outage: the failed messages are retried by
    // the policy together, not one after another, and each comes back with
    // its own record.
    let batch: Vec<OrderPlaced> = (10..15).map(order).collect();
    let started = std::time::Instant::now();
    let results = manager.publish_batch(&batch).await;
    let batch_elapsed = started.elapsed();
    assert_eq!(results.len(), batch.len());
    for (m, r) in batch.iter().zip(results) {
        match r {
            Err(PublishError::Failed {
                attempts, message, ..
            }) => {
                assert_eq!(attempts, 3);
                assert_eq!(message.key.as_deref(), Some(m.order_id.as_bytes()));
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
    assert!(
        batch_elapsed < elapsed * 2 + Duration::from_millis(500),
        "5 failed publishes took {batch_elapsed:?}, one took {elapsed:?}: retried one by one?"
    );

    proxy.heal();
    let d = manager
        .publish_encoded(msg)
        .await
        .expect("publish after healing");
    assert_eq!(d.offset, Offset::At(1));
    // After healing the bulk path lands them all, in order.
    batch_in_order(&manager, &batch).await;
}

/// A batch larger than the broker takes (each record fits) is refused as a
/// whole; the partition halves its batches and the publishes, retried, all
/// land, none dead-lettered.
#[tokio::test]
async fn a_batch_the_broker_refuses_as_too_large_is_split_and_retried() {
    let topic = unique_name("big-batch");
    let (broker, manager) = setup(&[(&topic, 1)], |b| {
        b.linger(Duration::from_millis(50))
            .max_batch_bytes(8 * 1024 * 1024)
            .publishing_retry_policy(
                FibonacciRetryPolicy::new(8).with_unit(Duration::from_millis(50)),
            )
    })
    .await;
    // 12 × 300 KB: one 3.6 MB batch, past the broker's 1 MiB limit.
    let publishes = (0..12).map(|i| {
        let m = OrderCancelled {
            order_id: format!("o-{i}"),
            reason: "x".repeat(300_000),
        };
        manager.publish_encoded(to_topic(&m, &topic))
    });
    let results = futures::future::join_all(publishes).await;
    for r in results {
        r.expect("every publish lands after the split");
    }
    let stats = manager.publish_stats();
    assert!(stats.failed_requests >= 1, "the first batch was refused");
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(fetch_topic(broker, &topic, 1).await.len(), 12);
}

#[tokio::test]
async fn too_large_message_goes_to_the_dead_letter_topic_at_once() {
    let topic = unique_name("large");
    let dlq_topic = format!("{topic}.dlq");
    let (broker, manager) = setup(&[(&topic, 1), (&dlq_topic, 1)], |b| {
        b.max_message_bytes(1_000)
            .publishing_retry_policy(FibonacciRetryPolicy::new(5))
    })
    .await;
    let big = OrderCancelled {
        order_id: "o-big".into(),
        reason: "x".repeat(2_000),
    };
    let started = std::time::Instant::now();
    let err = manager
        .publish_encoded(to_topic(&big, &topic))
        .await
        .expect_err("too large");
    // A retry would wait out the policy's first delays (1 s, 2 s, …):
    // well past 3 s, however busy the machine.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a too-large message is not retried: {:?}",
        started.elapsed()
    );
    let PublishError::DeadLettered { dlq, cause } = err else {
        panic!("expected DeadLettered, got {err:?}");
    };
    assert_eq!(dlq.topic, format!("{topic}.dlq"));
    assert_eq!(cause.kind(), kavari::ProduceErrorKind::MessageTooLarge);

    let letters = fetch_topic(broker, &dlq.topic, 1).await;
    assert_eq!(letters.len(), 1);
    let r = &letters[0].1.record;
    assert_eq!(r.key.as_deref(), Some(&b"o-big"[..]));
    assert_eq!(
        header(&r.headers, "msg_type").as_deref(),
        Some("order.cancelled")
    );
    let original_error = header(&r.headers, "original_error").expect("original_error");
    assert!(
        original_error.contains("max_message_bytes"),
        "{original_error}"
    );
    let back: OrderCancelled =
        kavari::codec::decode_value(r.value.as_deref().expect("value")).expect("decode");
    assert_eq!(back, big);
    assert!(fetch_topic(broker, &topic, 1).await.is_empty());
}

#[tokio::test]
async fn unknown_topic_without_dead_letters_hands_the_record_back() {
    let (_, manager) = setup(&[], |b| {
        b.publishing_retry_policy(NoRetry).dead_letter_suffix(None)
    })
    .await;
    let msg = to_topic(&order(1), &unique_name("missing"));
    match manager.publish_encoded(msg.clone()).await {
        Err(PublishError::Failed {
            message, dlq_error, ..
        }) => {
            assert_eq!(*message, msg);
            assert!(dlq_error.is_none());
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.oversized", name = "oversized")]
struct Oversized {
    #[kavari(key)]
    id: String,
    body: String,
}

/// A typed publish whose first attempt fails goes on as an encoded one:
/// too large goes to the dead-letter topic at once with the same bytes, and
/// once shut down the record is handed back, equal to `codec::encode`.
#[tokio::test]
async fn typed_publish_failures_dead_letter_or_hand_the_record_back() {
    let dlq = format!("{}.dlq", Oversized::TOPIC);
    let (broker, manager) = setup(&[(Oversized::TOPIC, 1), (&dlq, 1)], |b| {
        b.max_message_bytes(1_000)
            .publishing_retry_policy(FibonacciRetryPolicy::new(5))
    })
    .await;
    let small = Oversized {
        id: "small".into(),
        body: "x".into(),
    };
    // Routed now: the big one below fails on the typed path itself.
    manager.publish(&small).await.expect("small publish");
    let big = Oversized {
        id: "big".into(),
        body: "x".repeat(2_000),
    };
    let started = std::time::Instant::now();
    let err = manager.publish(&big).await.expect_err("too large");
    assert!(started.elapsed() < Duration::from_secs(1), "not retried");
    let PublishError::DeadLettered { dlq, cause } = err else {
        panic!("expected DeadLettered, got {err:?}");
    };
    assert_eq!(cause.kind(), kavari::ProduceErrorKind::MessageTooLarge);
    let letters = fetch_topic(broker, &dlq.topic, 1).await;
    let letter = delivered(&letters, 0, dlq.offset);
    let encoded = kavari::codec::encode(&big).expect("encode");
    assert_eq!(letter.key, encoded.key);
    assert_eq!(letter.value, Some(encoded.value));
    assert_eq!(
        header(&letter.headers, "msg_type").as_deref(),
        Some("oversized")
    );

    manager.shutdown().await.expect("shutdown");
    match manager.publish(&small).await {
        Err(PublishError::Failed { cause, message, .. }) => {
            assert_eq!(cause.kind(), kavari::ProduceErrorKind::ShuttingDown);
            assert_eq!(*message, kavari::codec::encode(&small).expect("encode"));
        }
        other => panic!("expected Failed after shutdown, got {other:?}"),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "publish.never-created")]
struct Nowhere {
    #[kavari(key)]
    id: u64,
}

/// A typed publish to a topic that does not exist fails with its record,
/// as built by `codec::encode`, handed back.
#[tokio::test]
async fn typed_publish_to_a_missing_topic_hands_the_record_back() {
    let (_, manager) = setup(&[], |b| {
        b.publishing_retry_policy(NoRetry).dead_letter_suffix(None)
    })
    .await;
    let msg = Nowhere { id: 5 };
    for _ in 0..2 {
        match manager.publish(&msg).await {
            Err(PublishError::Failed {
                message, dlq_error, ..
            }) => {
                assert_eq!(*message, kavari::codec::encode(&msg).expect("encode"));
                assert!(dlq_error.is_none());
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}

/// The default retry policy keeps trying through an outage shorter than
/// `delivery_timeout` (120 s, Java's default): a publish begun while every
/// connection is refused lands once the broker is back, nothing
/// dead-lettered. With a short `delivery_timeout` the same outage ends the
/// publish in about that time, however many attempts the policy allows.
#[tokio::test]
async fn publishes_keep_trying_for_the_delivery_timeout() {
    let topic = unique_name("delivery");
    let (broker, patient) =
        behind_proxy(&topic, |b| b.request_timeout(Duration::from_secs(2))).await;
    let proxy = broker.proxy().expect("proxy");
    proxy.refuse();
    let healer = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.heal();
    };
    let (landed, ()) = tokio::join!(patient.publish_encoded(to_topic(&order(1), &topic)), healer);
    let d = landed.expect("landed after the outage, within the delivery timeout");
    assert_eq!(d.offset, Offset::At(1));
    assert_eq!(patient.publish_stats().dead_lettered, 0);

    let hasty = Kavari::builder(broker.bootstrap_servers())
        .request_timeout(Duration::from_secs(2))
        .delivery_timeout(Duration::from_secs(2))
        .publishing_retry_policy(
            kavari::ExponentialRetryPolicy::new(1000).cap(Duration::from_millis(200)),
        )
        .build()
        .await
        .expect("build");
    hasty
        .publish_encoded(to_topic(&order(2), &topic))
        .await
        .expect("publish before the outage");
    proxy.refuse();
    let started = std::time::Instant::now();
    match hasty.publish_encoded(to_topic(&order(3), &topic)).await {
        Err(PublishError::Failed { attempts, .. }) => assert!(attempts > 1, "{attempts}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "gave up after {took:?}"
    );
    proxy.heal();
}

/// A broker that stops answering (its connections black-holed: requests
/// are held, not refused) cannot hold a publish past its deadline: the
/// delivery timeout, plus the request timeout for an answer to what was
/// sent. A publish whose batch was sent and never answered is unconfirmed
/// (the record may be in the log, so no dead letter is written); one whose
/// batch waited unsent (behind the five batches a partition keeps in
/// flight) is a failure, and is never written once the broker answers
/// again. So with and without idempotence.
#[tokio::test]
async fn a_silent_broker_ends_publishes_by_their_deadline_as_unconfirmed_or_unsent() {
    let request_timeout = Duration::from_secs(3);
    let delivery_timeout = Duration::from_secs(8);
    let bound = delivery_timeout + request_timeout + Duration::from_secs(1);
    for idempotent in [true, false] {
        let topic = unique_name("silent");
        let (broker, manager) = behind_proxy(&topic, |b| {
            b.request_timeout(request_timeout)
                .delivery_timeout(delivery_timeout)
                .linger(Duration::ZERO)
                .max_batch_bytes(300)
                .enable_idempotence(idempotent)
        })
        .await;
        let proxy = broker.proxy().expect("proxy");
        proxy.black_hole();
        let timed = |i: usize| {
            let manager = &manager;
            let topic = &topic;
            async move {
                let started = std::time::Instant::now();
                let r = manager.publish_encoded(to_topic(&order(i), topic)).await;
                (i, r, started.elapsed())
            }
        };
        let results = futures::future::join_all((1..=30).map(timed)).await;
        let mut failed = Vec::new();
        let mut unconfirmed = 0;
        for (i, r, took) in &results {
            assert!(
                took < &bound,
                "idempotent {idempotent}: publish {i} took {took:?}"
            );
            match r {
                Err(e @ PublishError::Unconfirmed { .. }) => {
                    assert_eq!(e.kind(), Some(ProduceErrorKind::Unconfirmed), "{e}");
                    assert!(
                        e.to_string().contains("may or may not have been written"),
                        "{e}"
                    );
                    unconfirmed += 1;
                }
                Err(PublishError::Failed { .. }) => failed.push(*i),
                other => panic!("idempotent {idempotent}: publish {i}: {other:?}"),
            }
        }
        assert!(
            unconfirmed > 0,
            "idempotent {idempotent}: the batches in flight are unconfirmed"
        );
        if idempotent {
            assert!(
                !failed.is_empty(),
                "the batches queued behind them were never sent"
            );
        }

        // A publish made after those were given up is bounded alike.
        let (_, third, took) = timed(31).await;
        assert!(third.is_err(), "the broker is still silent");
        assert!(
            took < bound,
            "idempotent {idempotent}: a later publish took {took:?}"
        );

        proxy.heal();
        manager
            .publish_encoded(to_topic(&order(32), &topic))
            .await
            .expect("published once the broker answers");
        let logged: Vec<Vec<u8>> = logged_records(&broker, &topic, 0)
            .await
            .into_iter()
            .map(|r| r.value)
            .collect();
        for i in &failed {
            assert!(
                !logged.contains(&to_topic(&order(*i), &topic).value),
                "idempotent {idempotent}: publish {i} failed and was written after all"
            );
        }
        assert!(logged.contains(&to_topic(&order(32), &topic).value));
        assert_eq!(
            manager.publish_stats().dead_lettered,
            0,
            "nothing unconfirmed is dead-lettered (and the dead-letter topic is as silent)"
        );
        eprintln!(
            "idempotent {idempotent}: {unconfirmed} unconfirmed, {} failed, {} records logged",
            failed.len(),
            logged.len()
        );
        manager.shutdown().await.expect("shutdown");
    }
}

/// Publishes to a topic the manager has not looked up yet, made while the
/// broker is silent, wait for its partitions together (one lookup) and
/// each ends by its own deadline, unsent and not dead-lettered: not when
/// the lookup's request times out, long after.
#[tokio::test]
async fn publishes_waiting_for_a_topics_partitions_end_by_their_own_deadlines() {
    let topic = unique_name("looked-up");
    let unknown = unique_name("not-looked-up");
    let delivery_timeout = Duration::from_secs(2);
    let (broker, manager) = behind_proxy(&topic, |b| {
        b.request_timeout(Duration::from_secs(30))
            .delivery_timeout(delivery_timeout)
            .dead_letter_suffix(None)
    })
    .await;
    broker.create_topic(&unknown, 3).await.expect("topic");
    broker.proxy().expect("proxy").black_hole();

    // Started 100 ms apart, so their deadlines fall one after another while
    // the one lookup hangs.
    let publish = |i: usize| {
        let (manager, unknown) = (&manager, &unknown);
        async move {
            tokio::time::sleep(Duration::from_millis(100) * i as u32).await;
            let started = std::time::Instant::now();
            let r = manager.publish_encoded(to_topic(&order(i), unknown)).await;
            (i, r, started.elapsed())
        }
    };
    let results = futures::future::join_all((0..40).map(publish)).await;
    for (i, r, took) in results {
        assert!(
            took >= delivery_timeout - Duration::from_millis(20)
                && took < delivery_timeout + Duration::from_secs(1),
            "publish {i} ended after {took:?}, not at its deadline"
        );
        match r {
            Err(PublishError::Failed {
                cause, dlq_error, ..
            }) => {
                assert_eq!(cause.kind(), ProduceErrorKind::Timeout, "{cause}");
                assert!(
                    cause.to_string().contains(&unknown)
                        && cause.to_string().contains("leader known"),
                    "{cause}"
                );
                assert!(dlq_error.is_none(), "no dead letter is tried");
            }
            other => panic!("publish {i}: {other:?}"),
        }
    }
}
