//! Pause, resume and seek on partitions a member owns, one at a time and
//! by key; a rebalance keeps a pause on the partitions that stay.

use std::time::SystemTime;

use kavari::{ControlError, ProcessingOrder, SeekTo};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "pause.ticks")]
pub(crate) struct Tick {
    #[kavari(key)]
    key: String,
    n: u64,
}

/// A record handled: by which member, its partition and offset.
type Seen = (&'static str, i32, i64);

/// Every record handled, in order.
#[derive(Clone, Default)]
struct Handled(Arc<Mutex<Vec<Seen>>>);

impl Handled {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The offsets handled from the `from`th record on, sorted.
    fn offsets_from(&self, from: usize) -> Vec<i64> {
        let mut v: Vec<i64> = self.0.lock().unwrap()[from..].iter().map(|h| h.2).collect();
        v.sort_unstable();
        v
    }

    fn by(&self, member: &str) -> Vec<(i32, i64)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.0 == member)
            .map(|h| (h.1, h.2))
            .collect()
    }
}

struct Record(&'static str, Handled);

impl MessageHandler<Tick> for Record {
    async fn handle(&self, _: Tick, ctx: &MessageContext) -> Result<(), HandlerError> {
        (self.1)
            .0
            .lock()
            .unwrap()
            .push((self.0, ctx.partition, ctx.offset));
        Ok(())
    }
}

async fn publish(m: &Kavari, from: u64, n: u64) {
    let ticks: Vec<Tick> = (from..from + n)
        .map(|n| Tick {
            key: format!("k{n}"),
            n,
        })
        .collect();
    for r in m.publish_batch(&ticks).await {
        r.expect("publish");
    }
}

/// A started member `name` of `group` on the prefixed topic, recording
/// into `handled`; returns once it owns `partitions` partitions.
async fn member(
    broker: &KafkaBroker,
    group: &str,
    prefix: &str,
    order: ProcessingOrder,
    name: &'static str,
    handled: &Handled,
    partitions: usize,
) -> Kavari {
    let m = consumer(broker, group)
        .topic_prefix(prefix)
        .processing_order(order)
        .build()
        .await
        .expect("build");
    m.subscribe::<Tick, _>(Record(name, handled.clone()))
        .expect("subscribe");
    m.start().await.expect("start");
    eventually(WAIT, "the partitions assigned", || {
        m.health().partitions.len() == partitions
    })
    .await;
    m
}

async fn pause_then_resume(order: ProcessingOrder) {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Tick>(broker, 1).await;
    let handled = Handled::default();
    let m = member(
        broker,
        &unique_name("pause"),
        &prefix,
        order,
        "a",
        &handled,
        1,
    )
    .await;
    publish(&m, 0, 10).await;
    eventually(WAIT, "the first ten handled", || handled.len() == 10).await;

    m.pause(&topic, &[0]).expect("pause");
    assert!(m.health().partitions[0].paused, "health shows the pause");
    publish(&m, 10, 10).await;
    // Longer than a fetch round (500 ms) and a commit interval.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handled.len(), 10, "nothing handled while paused");
    let held = m.health().partitions[0].clone();
    assert_eq!(held.committed, Some(10), "what was handled stays committed");

    m.resume(&topic, &[0]).expect("resume");
    eventually(WAIT, "the next ten handled", || handled.len() == 20).await;
    assert_eq!(
        handled.offsets_from(0),
        (0..20).collect::<Vec<i64>>(),
        "every record once, the resume going on at the next offset"
    );
    assert!(!m.health().partitions[0].paused);
    m.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_paused_partition_hands_nothing_over_until_resumed() {
    pause_then_resume(ProcessingOrder::Partition).await;
}

#[tokio::test]
async fn a_paused_partition_hands_nothing_over_until_resumed_by_key() {
    pause_then_resume(ProcessingOrder::Key { max_in_flight: 16 }).await;
}

async fn seek_around(order: ProcessingOrder) {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Tick>(broker, 1).await;
    let handled = Handled::default();
    let group = unique_name("seek");
    let m = member(broker, &group, &prefix, order, "a", &handled, 1).await;
    publish(&m, 0, 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&m, 5, 5).await;
    eventually(WAIT, "ten handled", || handled.len() == 10).await;

    let to = m
        .seek(&topic, 0, SeekTo::Time(between))
        .await
        .expect("seek by time");
    assert_eq!(to, 5, "the first record at or after the time");
    eventually(WAIT, "handled again from 5", || handled.len() == 15).await;
    assert_eq!(handled.offsets_from(10), (5..10).collect::<Vec<i64>>());

    assert_eq!(m.seek(&topic, 0, SeekTo::Offset(2)).await.expect("seek"), 2);
    eventually(WAIT, "handled again from 2", || handled.len() == 23).await;
    assert_eq!(handled.offsets_from(15), (2..10).collect::<Vec<i64>>());

    // A seek forward skips records for the group; the commit follows.
    assert_eq!(m.seek(&topic, 0, SeekTo::Latest).await.expect("seek"), 10);
    publish(&m, 10, 1).await;
    eventually(WAIT, "the new record handled", || handled.len() == 24).await;
    assert_eq!(handled.offsets_from(23), [10]);
    eventually(WAIT, "the commit after it", || {
        m.health().partitions[0].committed == Some(11)
    })
    .await;
    // A time past every record: the log end.
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        m.seek(&topic, 0, SeekTo::Time(later)).await.expect("seek"),
        11
    );
    m.shutdown().await.expect("shutdown");
    assert_eq!(handled.len(), 24, "nothing more handled");
    assert_eq!(committed(broker, &group, &topic, 1).await[&0], Some(11));
}

#[tokio::test]
async fn seek_lands_on_an_offset_a_time_or_an_end() {
    seek_around(ProcessingOrder::Partition).await;
}

#[tokio::test]
async fn seek_lands_on_an_offset_a_time_or_an_end_by_key() {
    seek_around(ProcessingOrder::Key { max_in_flight: 16 }).await;
}

#[tokio::test]
async fn a_rebalance_keeps_the_pause_on_partitions_that_stay() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Tick>(broker, 2).await;
    let group = unique_name("pause-rebalance");
    let handled = Handled::default();
    let order = ProcessingOrder::Partition;
    let a = member(broker, &group, &prefix, order, "a", &handled, 2).await;
    a.pause(&topic, &[0, 1]).expect("pause");
    let b = member(broker, &group, &prefix, order, "b", &handled, 1).await;
    eventually(WAIT, "the partitions split", || {
        a.health().partitions.len() == 1
    })
    .await;
    let kept = a.health().partitions[0].clone();
    assert!(kept.paused, "the partition a kept stays paused");
    assert!(
        !b.health().partitions[0].paused,
        "a pause is the member's own"
    );
    publish(&a, 0, 40).await;
    eventually(WAIT, "b handles its partition", || {
        !handled.by("b").is_empty()
    })
    .await;
    // Longer than a fetch round: what b handles now is all it gets.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on_kept = 40 - handled.by("b").len();
    assert!(on_kept > 0, "forty keys land on both partitions");
    assert!(handled.by("a").is_empty(), "a handles nothing while paused");
    a.resume(&topic, &[kept.partition]).expect("resume");
    eventually(WAIT, "a handles its partition after the resume", || {
        handled.by("a").len() == on_kept
    })
    .await;
    assert!(
        handled.by("a").iter().all(|(p, _)| *p == kept.partition),
        "a handles the partition it kept"
    );
    // A partition that moved away is not this member's to pause.
    let moved = 1 - kept.partition;
    assert!(matches!(
        a.pause(&topic, &[moved]),
        Err(ControlError::NotOwned(tp)) if tp.partition == moved
    ));
    b.shutdown().await.expect("shutdown");
    a.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn pause_and_seek_refuse_what_the_member_cannot_do() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Tick>(broker, 1).await;
    let handled = Handled::default();
    let m = consumer(broker, &unique_name("refuse"))
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("build");
    m.subscribe::<Tick, _>(Record("a", handled.clone()))
        .expect("subscribe");
    assert!(matches!(
        m.pause(&topic, &[0]),
        Err(ControlError::NotRunning)
    ));
    m.start().await.expect("start");
    eventually(WAIT, "the partition assigned", || {
        m.health().partitions.len() == 1
    })
    .await;
    let e = m
        .pause(&topic, &[0, 3])
        .expect_err("partition 3 does not exist");
    assert!(e.to_string().contains("does not own"), "{e}");
    assert!(
        !m.health().partitions[0].paused,
        "a refused call pauses nothing"
    );
    assert!(matches!(
        m.seek(&topic, 0, SeekTo::Offset(-1)).await,
        Err(ControlError::NegativeOffset(-1))
    ));
    assert!(matches!(
        m.seek("elsewhere", 0, SeekTo::Earliest).await,
        Err(ControlError::NotOwned(_))
    ));
    m.shutdown().await.expect("shutdown");
    assert!(matches!(
        m.resume(&topic, &[0]),
        Err(ControlError::NotRunning)
    ));
}
