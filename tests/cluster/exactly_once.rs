//! Exactly-once handling (`exactly_once`): each record's publishes, made
//! through its context's transaction, land with its offset commit or not
//! at all; a failed attempt's publishes are aborted before the retry, and
//! a dead letter lands with the commit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{
    FibonacciRetryPolicy, HandlerError, Isolation, KafkaMessage, Kavari, MessageContext,
    MessageHandler,
};
use kavari_testcontainers::KafkaBroker;
use kavari_tests::{consumer, eventually};
use serde::{Deserialize, Serialize};

use crate::{Setup, Ticket, tickets};

/// What handling a ticket publishes.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "cluster.billed")]
pub(crate) struct Billed {
    #[kavari(key)]
    key: String,
    seq: u64,
}

/// Publishes a `Billed` per ticket in the record's transaction; tickets
/// whose seq ends in 3 fail their first attempt after publishing, ticket 7
/// fails every attempt (a permanent error: dead-lettered).
#[derive(Clone, Default)]
struct Bill(Arc<Mutex<BTreeMap<u64, u32>>>);

impl MessageHandler<Ticket> for Bill {
    async fn handle(&self, t: Ticket, ctx: &MessageContext) -> Result<(), HandlerError> {
        let tx = ctx
            .transaction()
            .ok_or_else(|| HandlerError::permanent("no transaction"))?;
        tx.publish(&Billed {
            key: t.key.clone(),
            seq: t.seq,
        })
        .await?;
        let attempts = {
            let mut calls = self.0.lock().unwrap();
            let n = calls.entry(t.seq).or_default();
            *n += 1;
            *n
        };
        if t.seq == 7 {
            return Err(HandlerError::permanent("ticket 7 cannot be billed"));
        }
        if t.seq % 10 == 3 && attempts == 1 {
            return Err(HandlerError::new("the billing service timed out"));
        }
        Ok(())
    }
}

/// Every `Billed` read, by seq, with how often.
#[derive(Clone, Default)]
struct Read(Arc<Mutex<BTreeMap<u64, usize>>>);

impl MessageHandler<Billed> for Read {
    async fn handle(&self, b: Billed, _: &MessageContext) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(b.seq).or_default() += 1;
        Ok(())
    }
}

/// The tickets read from the dead-letter topic.
#[derive(Clone, Default)]
struct Letters(Arc<Mutex<Vec<u64>>>);

impl MessageHandler<Ticket> for Letters {
    async fn handle(&self, t: Ticket, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(t.seq);
        Ok(())
    }
}

async fn reader(setup: &Setup, read: &Read, isolation: Isolation) -> Kavari {
    let m = consumer(
        &setup.broker,
        &kavari_testcontainers::unique_name("billed-reader"),
    )
    .topic_prefix(&setup.prefix)
    .isolation_level(isolation)
    .build()
    .await
    .expect("build");
    m.subscribe::<Billed, _>(read.clone()).expect("subscribe");
    m.start().await.expect("start");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_records_publishes_land_once_with_its_commit() {
    const N: u64 = 30;
    let setup = Setup::start("eos", KafkaBroker::builder(), 3).await;
    let billed = format!("{}{}", setup.prefix, Billed::TOPIC);
    setup.broker.create_topic(&billed, 3).await.expect("topic");
    let dlq = format!("{}.dlq", setup.topic);
    setup.broker.create_topic(&dlq, 3).await.expect("dlq");
    let publisher = setup.publisher().await;
    for r in publisher.publish_batch(&tickets(0..N)).await {
        r.expect("publish");
    }

    let bill = Bill::default();
    let m = consumer(&setup.broker, &kavari_testcontainers::unique_name("eos"))
        .topic_prefix(&setup.prefix)
        .exactly_once("billing")
        .delivery_retry_policy(FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(20)))
        .build()
        .await
        .expect("build");
    m.subscribe::<Ticket, _>(bill.clone()).expect("subscribe");
    m.start().await.expect("start");
    eventually(Duration::from_secs(90), "every ticket committed", || {
        let h = m.health();
        h.partitions.len() == 3
            && h.partitions
                .iter()
                .map(|p| p.committed.unwrap_or(0))
                .sum::<i64>()
                == N as i64
    })
    .await;

    let (committed, all) = (Read::default(), Read::default());
    let r1 = reader(&setup, &committed, Isolation::ReadCommitted).await;
    let r2 = reader(&setup, &all, Isolation::ReadUncommitted).await;
    let want: BTreeMap<u64, usize> = (0..N).filter(|s| *s != 7).map(|s| (s, 1)).collect();
    eventually(Duration::from_secs(60), "every bill read committed", || {
        *committed.0.lock().unwrap() == want
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "the aborted attempts read uncommitted",
        || all.0.lock().unwrap().values().sum::<usize>() > want.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        *committed.0.lock().unwrap(),
        want,
        "one bill per ticket, none of an aborted attempt, none of the dead-lettered ticket"
    );
    let attempts = bill.0.lock().unwrap().clone();
    assert_eq!(attempts[&3], 2, "ticket 3 was retried once");
    assert!(attempts[&7] >= 1, "ticket 7 was tried");
    assert_eq!(
        m.health()
            .partitions
            .iter()
            .map(|p| p.dead_lettered)
            .sum::<u64>(),
        1
    );
    // The dead letter, committed with the ticket's offset: read as a
    // ticket from the dead-letter topic, read_committed.
    let letters = Letters::default();
    let dead = consumer(
        &setup.broker,
        &kavari_testcontainers::unique_name("eos-dlq"),
    )
    .topic_for::<Ticket>(dlq)
    .build()
    .await
    .expect("build");
    dead.subscribe::<Ticket, _>(letters.clone())
        .expect("subscribe");
    dead.start().await.expect("start");
    eventually(Duration::from_secs(60), "the dead letter", || {
        !letters.0.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        *letters.0.lock().unwrap(),
        [7],
        "ticket 7's dead letter, once"
    );
    for manager in [m, r1, r2, publisher, dead] {
        manager.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn exactly_once_refuses_what_it_cannot_keep() {
    let b = || {
        Kavari::builder("127.0.0.1:1")
            .group_id("g")
            .exactly_once("p")
    };
    assert!(
        b().processing_order(kavari::ProcessingOrder::Key { max_in_flight: 4 })
            .build()
            .await
            .is_err(),
        "exactly_once needs partition order"
    );
    let m = b().build().await.expect("build");
    m.subscribe::<Ticket, _>(Bill::default())
        .expect("one handler");
    assert!(matches!(
        m.subscribe::<Ticket, _>(SecondTicketHandler),
        Err(kavari::SubscribeError::ExactlyOnceOneHandler { .. })
    ));
}

/// A second handler type for tickets.
struct SecondTicketHandler;

impl MessageHandler<Ticket> for SecondTicketHandler {
    async fn handle(&self, _: Ticket, _: &MessageContext) -> Result<(), HandlerError> {
        Ok(())
    }
}
