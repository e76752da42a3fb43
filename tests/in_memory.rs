//! The in-memory test kit (`kavari::testing`): what a user's unit test
//! relies on, with no broker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::codec::EncodedMessage;
use kavari::testing::InMemoryBroker;
use kavari::{ControlError, Offset, ProduceErrorKind, SeekTo, TransactionError};
use kavari::{
    FailurePolicy, FibonacciRetryPolicy, HandlerError, HealthState, KafkaMessage, Kavari,
    KavariBuilder, MessageContext, MessageHandler, NoRetry, OffsetReset, PublishError,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "orders")]
struct OrderPlaced {
    #[kavari(key)]
    id: String,
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "orders")]
struct OrderCancelled {
    #[kavari(key)]
    id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "invoices")]
struct Invoice {
    #[kavari(key)]
    order: String,
}

/// What handlers saw: (handler, message id, context).
type Log = Arc<Mutex<Vec<(&'static str, String, MessageContext)>>>;

/// Records every order; fails the ones whose cents say so: 1 and 2 fail
/// that many times (retriable), 99 fails for good.
#[derive(Clone)]
struct Orders {
    seen: Log,
    failures: Arc<Mutex<Vec<String>>>,
}

impl MessageHandler<OrderPlaced> for Orders {
    async fn handle(&self, o: OrderPlaced, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.seen
            .lock()
            .unwrap()
            .push(("placed", o.id.clone(), ctx.clone()));
        match o.cents {
            99 => Err(HandlerError::permanent(format!(
                "order {} is refused",
                o.id
            ))),
            n @ (1 | 2) if ctx.attempt <= n as u32 => {
                self.failures.lock().unwrap().push(o.id);
                Err(HandlerError::new("the ledger is busy"))
            }
            _ => Ok(()),
        }
    }
}

impl MessageHandler<OrderCancelled> for Orders {
    async fn handle(&self, o: OrderCancelled, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.seen
            .lock()
            .unwrap()
            .push(("cancelled", o.id, ctx.clone()));
        Ok(())
    }
}

fn orders() -> Orders {
    Orders {
        seen: Log::default(),
        failures: Arc::default(),
    }
}

fn ids(seen: &Log, handler: &str) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(h, _, _)| *h == handler)
        .map(|(_, id, _)| id.clone())
        .collect()
}

fn builder(group: &str) -> KavariBuilder {
    Kavari::builder("kafka:9092").group_id(group)
}

/// A started manager of `group` with `handler` on both order types.
async fn consumer(broker: &InMemoryBroker, b: KavariBuilder, handler: &Orders) -> Kavari {
    let m = broker.manager(b).expect("manager");
    m.subscribe::<OrderPlaced, _>(handler.clone())
        .expect("subscribe");
    m.subscribe::<OrderCancelled, _>(handler.clone())
        .expect("subscribe");
    m.start().await.expect("start");
    m
}

fn placed(id: &str, cents: u64) -> OrderPlaced {
    OrderPlaced {
        id: id.into(),
        cents,
    }
}

#[tokio::test]
async fn a_publish_returns_after_its_handlers_ran_with_the_records_context() {
    let broker = InMemoryBroker::new();
    broker.create_topic("orders", 3);
    let h = orders();
    let m = consumer(&broker, builder("billing"), &h).await;
    let d = m.publish(&placed("o-1", 10)).await.expect("publish");
    // Handled before publish returned.
    assert_eq!(ids(&h.seen, "placed"), ["o-1"]);
    m.publish(&OrderCancelled { id: "o-1".into() })
        .await
        .expect("publish");
    assert_eq!(ids(&h.seen, "cancelled"), ["o-1"]);

    let seen = h.seen.lock().unwrap().clone();
    let (_, _, ctx) = &seen[0];
    assert_eq!(
        (ctx.topic.as_str(), ctx.partition, ctx.offset),
        ("orders", d.partition, d.offset.get().expect("an offset"))
    );
    assert_eq!(ctx.key.as_deref(), Some("o-1"));
    assert_eq!(ctx.attempt, 1);
    assert_eq!(
        ctx.headers.get("msg_type").map(Vec::as_slice),
        Some(&b"OrderPlaced"[..])
    );
    // The Java client's murmur2 placement: one key, one partition.
    assert_eq!(
        d.partition,
        kavari::Partitioner::Murmur2.partition_for_key(b"o-1", 3)
    );
    assert_eq!(seen[1].2.partition, d.partition, "same key, same partition");
    assert_eq!(Offset::At(seen[1].2.offset - 1), d.offset);

    assert_eq!(
        broker.published::<OrderPlaced>().unwrap(),
        [placed("o-1", 10)]
    );
    let records = broker.records("orders");
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].msg_type(), Some("OrderCancelled"));
    assert_eq!(
        records[1].header("content-type"),
        Some("application/msgpack")
    );
    assert_eq!(records[1].key_str(), Some("o-1"));
    assert_eq!(broker.committed("billing", "orders", d.partition), Some(2));
    let health = m.health();
    assert!(health.ready);
    assert_eq!(health.partitions.len(), 3);
    assert!(health.partitions.iter().all(|p| p.lag == Some(0)));
    m.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_by_policy_then_dead_lettered() {
    let broker = InMemoryBroker::new();
    let h = orders();
    let m = consumer(
        &broker,
        builder("billing").delivery_retry_policy(FibonacciRetryPolicy::new(3)),
        &h,
    )
    .await;
    m.publish(&placed("retried", 2)).await.expect("publish");
    m.publish(&placed("refused", 99)).await.expect("publish");
    m.publish(&placed("fine", 5)).await.expect("publish");

    // Two retriable failures, then success on the third attempt; the
    // permanent one once, then dead-lettered; the rest goes on.
    assert_eq!(*h.failures.lock().unwrap(), ["retried", "retried"]);
    assert_eq!(
        ids(&h.seen, "placed"),
        ["retried", "retried", "retried", "refused", "fine"]
    );
    let dead = broker.dead_letters::<OrderPlaced>().expect("decode");
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.message, placed("refused", 99));
    assert!(
        letter.error.contains("order refused is refused"),
        "{}",
        letter.error
    );
    assert_eq!(letter.original_topic.as_deref(), Some("orders"));
    assert_eq!(letter.original_partition, Some(0));
    assert_eq!(letter.original_offset, Some(1));
    assert_eq!(letter.attempts, Some(1));
    assert_eq!(letter.record.header("group_id"), Some("billing"));
    assert_eq!(broker.committed("billing", "orders", 0), Some(3));
}

#[tokio::test]
async fn poison_is_skipped_or_dead_lettered_by_policy() {
    let mut unknown = kavari::codec::encode(&placed("p", 1)).expect("encode");
    unknown
        .headers
        .insert("msg_type".into(), b"Nobody".to_vec());
    let garbage = EncodedMessage {
        value: b"\xc1 not msgpack".to_vec(),
        ..kavari::codec::encode(&placed("g", 1)).expect("encode")
    };
    for (policy, dead) in [(FailurePolicy::Skip, 0), (FailurePolicy::DeadLetter, 2)] {
        let broker = InMemoryBroker::new();
        let h = orders();
        let m = consumer(&broker, builder("g").on_poison(policy), &h).await;
        m.publish_encoded(unknown.clone()).await.expect("publish");
        m.publish_encoded(garbage.clone()).await.expect("publish");
        m.publish(&placed("good", 5)).await.expect("publish");
        assert_eq!(ids(&h.seen, "placed"), ["good"], "{policy:?}");
        assert_eq!(broker.records("orders.dlq").len(), dead, "{policy:?}");
        assert_eq!(broker.committed("g", "orders", 0), Some(3), "{policy:?}");
    }
}

/// Publishes an invoice for every order, from inside the handler, and
/// (for "loop") another order on its own partition.
#[derive(Clone)]
struct Chain {
    manager: Arc<Mutex<Option<Kavari>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl MessageHandler<OrderPlaced> for Chain {
    async fn handle(&self, o: OrderPlaced, _: &MessageContext) -> Result<(), HandlerError> {
        self.seen.lock().unwrap().push(format!("order {}", o.id));
        let m = self.manager.lock().unwrap().clone().expect("manager");
        m.publish(&Invoice {
            order: o.id.clone(),
        })
        .await?;
        if o.id == "loop" {
            m.publish(&placed("looped", 1)).await?;
        }
        self.seen
            .lock()
            .unwrap()
            .push(format!("published for {}", o.id));
        Ok(())
    }
}

impl MessageHandler<Invoice> for Chain {
    async fn handle(&self, i: Invoice, _: &MessageContext) -> Result<(), HandlerError> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("invoice {}", i.order));
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_that_publishes_chains_without_deadlock() {
    let broker = InMemoryBroker::new();
    let chain = Chain {
        manager: Arc::default(),
        seen: Arc::default(),
    };
    let m = broker.manager(builder("chain")).expect("manager");
    *chain.manager.lock().unwrap() = Some(m.clone());
    m.subscribe::<OrderPlaced, _>(chain.clone())
        .expect("subscribe");
    m.subscribe::<Invoice, _>(chain.clone()).expect("subscribe");
    m.start().await.expect("start");
    tokio::time::timeout(Duration::from_secs(5), m.publish(&placed("loop", 1)))
        .await
        .expect("no deadlock")
        .expect("publish");
    // The invoice (another topic) is delivered at once, inside the
    // handler's publish; the order it publishes on its own partition
    // after the current one; everything before the outer publish returns.
    assert_eq!(
        *chain.seen.lock().unwrap(),
        [
            "order loop",
            "invoice loop",
            "published for loop",
            "order looped",
            "invoice looped",
            "published for looped",
        ]
    );
    m.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn groups_keep_their_positions_across_managers() {
    let broker = InMemoryBroker::new();
    let publisher = broker
        .manager(Kavari::builder("kafka:9092"))
        .expect("manager");
    publisher
        .publish(&placed("before", 5))
        .await
        .expect("publish");

    // start() delivers what was there, from the start...
    let first = orders();
    let m1 = consumer(&broker, builder("billing"), &first).await;
    assert_eq!(ids(&first.seen, "placed"), ["before"]);
    m1.shutdown().await.expect("shutdown");
    publisher
        .publish(&placed("between", 5))
        .await
        .expect("publish");

    // ...the group's next manager goes on where the last stopped...
    let second = orders();
    let m2 = consumer(&broker, builder("billing"), &second).await;
    assert_eq!(ids(&second.seen, "placed"), ["between"]);
    // ...another group gets everything, or only what comes with Latest.
    let other = orders();
    let m3 = consumer(&broker, builder("audit"), &other).await;
    let late = orders();
    let m4 = consumer(
        &broker,
        builder("late").auto_offset_reset(OffsetReset::Latest),
        &late,
    )
    .await;
    publisher
        .publish(&placed("after", 5))
        .await
        .expect("publish");
    assert_eq!(ids(&second.seen, "placed"), ["between", "after"]);
    assert_eq!(ids(&other.seen, "placed"), ["before", "between", "after"]);
    assert_eq!(ids(&late.seen, "placed"), ["after"]);
    assert!(
        ids(&first.seen, "placed") == ["before"],
        "a stopped manager gets nothing"
    );
    for m in [m2, m3, m4, publisher] {
        m.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn concurrent_publishes_are_handled_once_each_in_partition_order() {
    let broker = InMemoryBroker::new();
    broker.create_topic("orders", 3);
    let h = orders();
    // Two managers of one group share the partitions' records.
    let a = consumer(&broker, builder("billing"), &h).await;
    let b = consumer(&broker, builder("billing"), &h).await;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let m = if t % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..25 {
                    m.publish(&placed(&format!("k{t}-{i:02}"), 5))
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let mut seen = ids(&h.seen, "placed");
    assert_eq!(seen.len(), 200, "each handled once");
    // Each partition's records handled in offset order.
    let contexts = h.seen.lock().unwrap().clone();
    for p in 0..3 {
        let offsets: Vec<i64> = contexts
            .iter()
            .filter(|(_, _, c)| c.partition == p)
            .map(|(_, _, c)| c.offset)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {p}: {offsets:?}"
        );
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 200);
}

#[tokio::test]
async fn too_large_publishes_are_dead_lettered_and_shutdown_refuses_publishes() {
    let broker = InMemoryBroker::new();
    let m = broker
        .manager(Kavari::builder("kafka:9092").max_message_bytes(200))
        .expect("manager");
    let big = placed(&"x".repeat(500), 1);
    match m.publish(&big).await {
        Err(PublishError::DeadLettered { dlq, cause }) => {
            assert_eq!(dlq.topic, "orders.dlq");
            assert_eq!(cause.kind(), ProduceErrorKind::MessageTooLarge);
        }
        other => panic!("{other:?}"),
    }
    let dead = broker.dead_letters::<OrderPlaced>().expect("decode");
    assert_eq!(dead[0].message, big);
    assert!(
        dead[0].error.contains("max_message_bytes"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].original_topic, None, "a publisher's dead letter");
    assert_eq!(m.publish_stats().dead_lettered, 1);

    let off = broker
        .manager(
            Kavari::builder("kafka:9092")
                .max_message_bytes(200)
                .dead_letter_suffix(None),
        )
        .expect("manager");
    let failed = off.publish(&big).await.expect_err("too large");
    assert!(matches!(failed, PublishError::Failed { .. }), "{failed:?}");
    assert_eq!(
        failed
            .into_message()
            .map(|m| m.topic.into_owned())
            .as_deref(),
        Some("orders")
    );

    m.publish(&placed("ok", 1)).await.expect("publish");
    assert_eq!(m.publish_stats().records_acknowledged, 1);
    m.shutdown().await.expect("shutdown");
    let refused = m
        .publish(&placed("late", 1))
        .await
        .expect_err("after shutdown");
    assert_eq!(refused.kind(), Some(ProduceErrorKind::ShuttingDown));
}

#[tokio::test]
async fn a_blocked_partition_holds_its_publish_until_shutdown() {
    let broker = InMemoryBroker::new();
    let h = orders();
    let m = consumer(
        &broker,
        builder("billing")
            .delivery_retry_policy(NoRetry)
            .on_handler_failure(FailurePolicy::Block),
        &h,
    )
    .await;
    let waiting = tokio::spawn({
        let m = m.clone();
        async move { m.publish(&placed("stuck", 99)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the partition waits at the record");
    let health = m.health();
    assert!(!health.ready);
    let error = health.partitions[0].error.clone().unwrap_or_default();
    assert!(error.contains("blocked at offset 0"), "{error}");
    m.shutdown().await.expect("shutdown");
    waiting.await.expect("task").expect("appended");
    assert_eq!(m.health().state, HealthState::Stopped);
    m.wait().await.expect("stopped");
    assert_eq!(
        broker.committed("billing", "orders", 0),
        Some(0),
        "not committed"
    );
}

#[tokio::test]
async fn renamed_topics_are_used_for_publish_subscribe_and_dead_letters() {
    let broker = InMemoryBroker::new();
    let h = orders();
    let m = consumer(
        &broker,
        builder("billing")
            .topic_prefix("staging.")
            .delivery_retry_policy(NoRetry),
        &h,
    )
    .await;
    m.publish(&placed("refused", 99)).await.expect("publish");
    assert!(broker.published::<OrderPlaced>().unwrap().is_empty());
    let records = broker.records("staging.orders");
    assert_eq!(
        records[0].decode::<OrderPlaced>().unwrap(),
        placed("refused", 99)
    );
    assert_eq!(broker.records("staging.orders.dlq").len(), 1);
}

#[tokio::test]
async fn a_manager_without_group_cannot_subscribe_and_options_are_checked() {
    let broker = InMemoryBroker::new();
    let m = broker
        .manager(Kavari::builder("kafka:9092"))
        .expect("manager");
    assert!(m.subscribe::<OrderPlaced, _>(orders()).is_err());
    assert!(
        broker
            .manager(Kavari::builder("kafka:9092").max_message_bytes(0))
            .is_err()
    );
    assert_eq!(m.health().state, HealthState::NotStarted);
    assert!(m.bootstrap_servers().is_empty());
}

#[tokio::test]
async fn pause_holds_a_partition_and_seek_moves_it() {
    let broker = InMemoryBroker::new();
    let handled = orders();
    let m = consumer(&broker, builder("billing"), &handled).await;
    m.publish(&placed("a", 5)).await.expect("publish");
    m.pause("orders", &[0]).expect("pause");
    assert!(m.health().partitions[0].paused);
    m.publish(&placed("b", 5)).await.expect("publish");
    assert_eq!(ids(&handled.seen, "placed"), ["a"], "held while paused");
    assert_eq!(m.health().partitions[0].committed, Some(1));

    // What a resume frees is delivered by a task of its own.
    m.resume("orders", &[0]).expect("resume");
    for _ in 0..100 {
        if ids(&handled.seen, "placed").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ids(&handled.seen, "placed"), ["a", "b"]);

    // A seek delivers from its offset before it returns.
    assert_eq!(
        m.seek("orders", 0, SeekTo::Offset(0)).await.expect("seek"),
        0
    );
    assert_eq!(ids(&handled.seen, "placed"), ["a", "b", "a", "b"]);
    assert_eq!(m.seek("orders", 0, SeekTo::Latest).await.expect("seek"), 2);
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    assert_eq!(
        m.seek("orders", 0, SeekTo::Time(later))
            .await
            .expect("seek"),
        2
    );
    assert_eq!(
        m.seek("orders", 0, SeekTo::Time(std::time::SystemTime::UNIX_EPOCH))
            .await
            .expect("seek"),
        0
    );
    assert_eq!(ids(&handled.seen, "placed").len(), 6);
    assert!(matches!(
        m.pause("orders", &[1]),
        Err(ControlError::NotOwned(_))
    ));
    m.shutdown().await.expect("shutdown");
}

/// Inserts orders in batches; refuses the ones of 99 cents.
struct BulkOrders(Arc<Mutex<Vec<Vec<String>>>>);

impl kavari::BatchHandler<OrderPlaced> for BulkOrders {
    async fn handle(
        &self,
        batch: Vec<(OrderPlaced, MessageContext)>,
    ) -> Result<(), kavari::BatchError> {
        self.0
            .lock()
            .unwrap()
            .push(batch.iter().map(|(o, _)| o.id.clone()).collect());
        let mut failed = kavari::BatchError::none();
        for (i, (o, _)) in batch.iter().enumerate() {
            if o.cents == 99 {
                failed = failed.failed(i, HandlerError::permanent("refused"));
            }
        }
        failed.into_result()
    }
}

#[tokio::test]
async fn a_batch_handler_gets_what_is_there_and_its_rejects_are_dead_lettered() {
    let broker = InMemoryBroker::new();
    let batches: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let m = broker.manager(builder("billing")).expect("manager");
    m.subscribe_batch::<OrderPlaced, _>(
        10,
        Duration::from_secs(1),
        BulkOrders(Arc::clone(&batches)),
    )
    .expect("subscribe");
    let publisher = broker
        .manager(Kavari::builder("kafka:9092"))
        .expect("manager");
    for (id, cents) in [("a", 5), ("b", 99), ("c", 5)] {
        publisher
            .publish(&placed(id, cents))
            .await
            .expect("publish");
    }
    // What was there at start() is one batch; what comes later is handed
    // over as it comes.
    m.start().await.expect("start");
    publisher.publish(&placed("d", 5)).await.expect("publish");
    assert_eq!(*batches.lock().unwrap(), [vec!["a", "b", "c"], vec!["d"]]);
    let dead = broker.records("orders.dlq");
    assert_eq!(dead.len(), 1, "the refused order is dead-lettered");
    assert_eq!(m.health().partitions[0].dead_lettered, 1);
    assert_eq!(m.health().partitions[0].committed, Some(4));
    m.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn transactions_deliver_on_commit_drop_on_abort_and_fence_older_managers() {
    let broker = InMemoryBroker::new();
    let handled = orders();
    let _consumer = consumer(&broker, builder("billing"), &handled).await;
    let m = broker
        .manager(Kavari::builder("kafka:9092").transactional_id("billing-0"))
        .expect("manager");

    let delivered = m
        .transaction(|tx| async move {
            let a = tx.publish(&placed("a", 5)).await?;
            let b = tx.publish(&placed("b", 5)).await?;
            Ok((a, b))
        })
        .await
        .expect("committed");
    assert_eq!(
        ids(&handled.seen, "placed"),
        ["a", "b"],
        "delivered at the commit"
    );
    assert_eq!(
        (delivered.0.offset, delivered.1.offset),
        (Offset::At(0), Offset::At(1))
    );

    let aborted = m
        .transaction(|tx| async move {
            tx.publish(&placed("c", 5)).await?;
            Err::<(), _>(HandlerError::new("refused"))
        })
        .await;
    assert!(
        matches!(aborted, Err(TransactionError::Aborted { .. })),
        "{aborted:?}"
    );
    assert_eq!(
        ids(&handled.seen, "placed"),
        ["a", "b"],
        "nothing of an aborted one"
    );
    assert_eq!(broker.published::<OrderPlaced>().expect("decode").len(), 2);

    // A newer manager with the id fences this one.
    let newer = broker
        .manager(Kavari::builder("kafka:9092").transactional_id("billing-0"))
        .expect("manager");
    let fenced = m
        .transaction(|tx| async move {
            tx.publish(&placed("d", 5)).await?;
            Ok(())
        })
        .await;
    assert!(
        matches!(fenced, Err(TransactionError::Fenced { .. })),
        "{fenced:?}"
    );
    newer
        .transaction(|tx| async move {
            tx.publish(&placed("e", 5)).await?;
            Ok(())
        })
        .await
        .expect("the newer commits");
    assert_eq!(ids(&handled.seen, "placed"), ["a", "b", "e"]);
}

/// Records each delivery of an order; fails (retriably) the deliveries up
/// to its cents.
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<Vec<(String, u16)>>>);

impl MessageHandler<OrderPlaced> for Deliveries {
    async fn handle(&self, o: OrderPlaced, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push((o.id.clone(), ctx.delivery_count));
        if u64::from(ctx.delivery_count) <= o.cents {
            return Err(HandlerError::new("the ledger is busy"));
        }
        Ok(())
    }
}

/// A share group's managers on the kit: a failed delivery is released and
/// delivered again with the next delivery count, up to the delivery limit
/// (5), then dead-lettered; two members of the group handle each record
/// once between them.
#[tokio::test]
async fn a_share_groups_failed_deliveries_come_again_up_to_the_limit() {
    let broker = InMemoryBroker::new();
    let (first, second) = (Deliveries::default(), Deliveries::default());
    let mut members = Vec::new();
    for handler in [&first, &second] {
        let m = broker
            .manager(Kavari::builder("kafka:9092").share_group("billing"))
            .expect("manager");
        m.subscribe::<OrderPlaced, _>(handler.clone())
            .expect("subscribe");
        m.start().await.expect("start");
        members.push(m);
    }
    for order in [placed("twice", 2), placed("never", 99), placed("fine", 0)] {
        members[0].publish(&order).await.expect("publish");
    }

    let mut all: Vec<(String, u16)> = first.0.lock().unwrap().clone();
    all.extend(second.0.lock().unwrap().iter().cloned());
    all.sort();
    fn want(
        id: &'static str,
        deliveries: std::ops::RangeInclusive<u16>,
    ) -> impl Iterator<Item = (String, u16)> {
        deliveries.map(move |d| (id.to_string(), d))
    }
    let mut expected: Vec<(String, u16)> = want("twice", 1..=3)
        .chain(want("never", 1..=5))
        .chain(want("fine", 1..=1))
        .collect();
    expected.sort();
    assert_eq!(all, expected, "each delivery, by one member");

    let dead = broker.dead_letters::<OrderPlaced>().expect("decode");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message, placed("never", 99));
    assert_eq!(dead[0].attempts, Some(5), "dead-lettered at the limit");
    assert_eq!(dead[0].record.header("group_id"), Some("billing"));

    let counted =
        members
            .iter()
            .filter_map(|m| m.health().share)
            .fold((0, 0, 0, 0), |(a, c, r, j), s| {
                (
                    a + s.acquired,
                    c + s.accepted,
                    r + s.released,
                    j + s.rejected,
                )
            });
    assert_eq!(
        counted,
        (9, 2, 6, 1),
        "acquired, accepted, released, rejected"
    );
    for m in members {
        m.shutdown().await.expect("shutdown");
    }
}
