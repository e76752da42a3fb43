//! Partitions added to a subscribed topic (CreatePartitions): the group's
//! leader finds the new count at its next metadata look-up
//! (`metadata_max_age`), the group rebalances, and records on the new
//! partitions are handled.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kavari::{HandlerError, Kavari, MessageContext, MessageHandler, OffsetReset};
use kavari_testcontainers::KafkaBroker;
use kavari_tests::{consumer, eventually, init_tracing, started};

use crate::{Ticket, prefixed, with_topic};

/// Every (partition, seq) handled, and when the first record of a
/// partition added later was.
#[derive(Default)]
struct Seen {
    tickets: BTreeSet<(i32, u64)>,
    first_on_new: Option<Instant>,
}

#[derive(Clone, Default)]
struct Handled(Arc<Mutex<Seen>>);

impl MessageHandler<Ticket> for Handled {
    async fn handle(&self, t: Ticket, ctx: &MessageContext) -> Result<(), HandlerError> {
        let mut seen = self.0.lock().unwrap();
        seen.tickets.insert((ctx.partition, t.seq));
        if ctx.partition >= 2 && seen.first_on_new.is_none() {
            seen.first_on_new = Some(Instant::now());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_to_a_subscribed_topic_are_consumed_within_the_metadata_age() {
    init_tracing();
    let (prefix, topic) = prefixed("grown");
    let cluster = KafkaBroker::builder()
        .start_cluster()
        .await
        .expect("a Kafka cluster");
    let broker = with_topic(cluster, &topic, 2).await;
    let handled = Handled::default();
    let group = kavari_testcontainers::unique_name("grown");
    let member = started::<Ticket, _>(
        consumer(&broker, &group)
            .topic_prefix(&prefix)
            .auto_offset_reset(OffsetReset::Earliest)
            .metadata_max_age(Duration::from_secs(3)),
        handled.clone(),
    )
    .await;
    eventually(Duration::from_secs(60), "both partitions owned", || {
        member.health().partitions.len() == 2
    })
    .await;

    let added = Instant::now();
    broker
        .add_partitions(&topic, 4)
        .await
        .expect("two more partitions");
    // A publisher that starts now sees four partitions and spreads its keys
    // over them.
    let publisher = Kavari::builder(broker.bootstrap_servers())
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("publisher");
    let tickets: Vec<Ticket> = (0..200)
        .map(|seq| Ticket {
            key: format!("k{seq}"),
            seq,
        })
        .collect();
    let mut on_new = 0;
    for r in publisher.publish_batch(&tickets).await {
        if r.expect("publish").partition >= 2 {
            on_new += 1;
        }
    }
    assert!(on_new > 0, "some keys land on the new partitions");
    eventually(Duration::from_secs(60), "every ticket handled", || {
        handled.0.lock().unwrap().tickets.len() == tickets.len()
    })
    .await;
    let first_on_new = handled
        .0
        .lock()
        .unwrap()
        .first_on_new
        .expect("a record of a new partition");
    eprintln!(
        "new partitions: {on_new} of 200 records on the two added partitions; the first handled \
         {:?} after the partitions were added (metadata_max_age 3 s)",
        first_on_new.duration_since(added)
    );
    assert_eq!(
        member.health().partitions.len(),
        4,
        "the member owns all four"
    );
    member.shutdown().await.expect("shutdown");
    publisher.shutdown().await.expect("shutdown");
}
