//! A handler stuck past `max_handler_time`.

use super::*;

/// The first call for record 0 never returns; later calls return at once.
#[derive(Clone, Default)]
struct HangsOnce {
    calls: Arc<Mutex<Vec<u32>>>,
    done: Arc<Mutex<Vec<u32>>>,
}
impl MessageHandler<Numbered> for HangsOnce {
    async fn handle(&self, e: Numbered, _: &MessageContext) -> Result<(), HandlerError> {
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(e.n);
            calls.len() == 1
        };
        if first {
            std::future::pending::<()>().await;
        }
        self.done.lock().unwrap().push(e.n);
        Ok(())
    }
}

/// A started member with a 2 s `max_handler_time` and `order`, whose
/// handler hangs on its first call, over records 0 and 1.
async fn hanging_member(order: kavari::ProcessingOrder) -> (Kavari, HangsOnce) {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, _) = prefixed_topic::<Numbered>(broker, 1).await;
    let m = consumer(broker, &unique_name("stuck"))
        .topic_prefix(&prefix)
        .max_handler_time(Duration::from_secs(2))
        .processing_order(order)
        .build()
        .await
        .expect("build");
    for n in 0..2 {
        m.publish(&Numbered { n }).await.expect("publish");
    }
    let handler = HangsOnce::default();
    m.subscribe::<Numbered, _>(handler.clone())
        .expect("subscribe");
    m.start().await.expect("start");
    (m, handler)
}

/// A handler that runs past `max_handler_time` makes the member leave the
/// group so its partitions move, and join again: the stuck record is
/// delivered again (to whoever owns the partition now) and the partition
/// goes on, instead of being held for good.
#[tokio::test]
async fn a_stuck_handler_makes_the_member_step_aside_and_the_partition_move_on() {
    let (m, handler) = hanging_member(kavari::ProcessingOrder::Partition).await;
    eventually(
        WAIT,
        "both records handled after the stuck one moved",
        || *handler.done.lock().unwrap() == [0, 1],
    )
    .await;
    assert_eq!(
        *handler.calls.lock().unwrap(),
        [0, 0, 1],
        "record 0 again, then 1"
    );
    assert!(m.health().generation.unwrap_or(0) >= 2, "{:?}", m.health());
    m.shutdown().await.expect("shutdown");
}

/// Handled side by side, a stuck record makes the member step aside all
/// the same: the records beside it finish, the commit stays before the
/// stuck one, and after the move the partition goes on past it.
#[tokio::test]
async fn a_stuck_handler_among_concurrent_ones_makes_the_member_step_aside() {
    let order = kavari::ProcessingOrder::Unordered { max_in_flight: 8 };
    let (m, handler) = hanging_member(order).await;
    eventually(WAIT, "record 1 handled beside the stuck 0", || {
        handler.done.lock().unwrap().first() == Some(&1)
    })
    .await;
    assert_eq!(
        m.health().partitions[0].committed,
        Some(0),
        "nothing past the stuck record is committed"
    );
    eventually(WAIT, "record 0 handled after the move", || {
        handler.done.lock().unwrap().contains(&0)
    })
    .await;
    eventually(WAIT, "the commit past both", || {
        m.health().partitions.first().and_then(|p| p.committed) == Some(2)
    })
    .await;
    let calls = handler.calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().filter(|n| **n == 0).count(),
        2,
        "record 0 again after the move: {calls:?}"
    );
    assert!(m.health().generation.unwrap_or(0) >= 2, "{:?}", m.health());
    m.shutdown().await.expect("shutdown");
}
