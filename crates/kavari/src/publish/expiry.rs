//! Delivery deadlines, kept per batch rather than per publish: one task of
//! the publisher holds each open batch's deadline (the earliest of its
//! records' `delivery_timeout`s). At the deadline a batch still queued is
//! expired, never to be sent; one already taken to be sent gets the
//! request timeout more for its answer, and is then ended as unconfirmed
//! (it may be in the log). So `publish()` returns by its deadline whatever
//! the broker or the broker's sink does, and a publish in flight
//! holds no timer of its own.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::outcome::BatchOutcome;
use super::{ProduceError, ProduceErrorKind};

/// The publisher's handle on its expiry task. The task ends once every
/// handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Expiry {
    watch: mpsc::UnboundedSender<Watched>,
}

/// A batch's deadline, and what it has reached.
#[derive(Debug)]
struct Watched {
    at: Instant,
    /// Whether the batch was found taken at its deadline (then `at` is
    /// the end of its answer's grace).
    taken: bool,
    outcome: Arc<BatchOutcome>,
}

impl PartialEq for Watched {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Watched {}

impl PartialOrd for Watched {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Watched {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Expiry {
    /// Starts the task; a batch taken to be sent is answered within
    /// `grace` of its deadline or ends unconfirmed.
    pub(crate) fn start(grace: Duration) -> Self {
        let (watch, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, grace));
        Self { watch }
    }

    /// Ends `outcome` at `at` unless it is answered by then.
    pub(crate) fn watch(&self, at: Instant, outcome: &Arc<BatchOutcome>) {
        let _ = self.watch.send(Watched {
            at,
            taken: false,
            outcome: Arc::clone(outcome),
        });
    }
}

/// The batch ended at its deadline, never sent.
fn unsent() -> ProduceError {
    ProduceError::new(
        ProduceErrorKind::Timeout,
        true,
        "delivery_timeout ran out before the record's batch was sent",
    )
}

/// The batch was sent and its answer did not come in time.
fn unanswered() -> ProduceError {
    ProduceError::new(
        ProduceErrorKind::Timeout,
        true,
        "no answer to the record's batch within delivery_timeout and the request timeout",
    )
    .with_maybe_written(true)
}

async fn run(mut rx: mpsc::UnboundedReceiver<Watched>, grace: Duration) {
    let mut due: BinaryHeap<Reverse<Watched>> = BinaryHeap::new();
    // Batches answered long before their deadline are dropped from the heap
    // whenever it doubles, so it holds about the batches in flight.
    let mut prune_at = 1024;
    loop {
        let next = due.peek().map(|Reverse(w)| w.at);
        tokio::select! {
            watched = rx.recv() => match watched {
                Some(w) => {
                    due.push(Reverse(w));
                    if due.len() >= prune_at {
                        due.retain(|Reverse(w)| !w.outcome.is_finished());
                        prune_at = (due.len() * 2).max(1024);
                    }
                }
                None => return,
            },
            () = sleep_until(next), if next.is_some() => {
                let now = Instant::now();
                while let Some(Reverse(w)) = due.peek() {
                    if w.at > now {
                        break;
                    }
                    let Some(Reverse(w)) = due.pop() else { break };
                    if let Some(later) = reach(w, grace) {
                        due.push(Reverse(later));
                    }
                }
            }
        }
    }
}

/// A batch at its deadline: expired if still queued, given `grace` more
/// if taken, ended unconfirmed at the end of that.
fn reach(w: Watched, grace: Duration) -> Option<Watched> {
    if w.outcome.is_finished() {
        return None;
    }
    if w.taken {
        w.outcome.finish(Err(unanswered()));
        return None;
    }
    if w.outcome.expire(unsent()) {
        return None;
    }
    Some(Watched {
        at: w.at + grace,
        taken: true,
        outcome: w.outcome,
    })
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Offset;

    /// A batch still queued at its deadline is never sent; one taken is
    /// answered within the grace or ends unconfirmed; one answered in time
    /// keeps its answer.
    #[tokio::test(start_paused = true)]
    async fn batches_end_by_their_deadline_as_far_as_they_got() {
        let grace = Duration::from_secs(3);
        let expiry = Expiry::start(grace);
        let start = Instant::now();
        let queued = Arc::new(BatchOutcome::default());
        let taken = Arc::new(BatchOutcome::default());
        let answered = Arc::new(BatchOutcome::default());
        for o in [&queued, &taken, &answered] {
            expiry.watch(start + Duration::from_secs(8), o);
        }
        assert!(taken.take(), "its sink takes it");
        assert!(answered.take());
        answered.finish(Ok(41));

        tokio::time::sleep(Duration::from_secs(9)).await;
        let e = queued.offset(0).await.expect_err("expired");
        assert_eq!(e.kind(), ProduceErrorKind::Timeout);
        assert!(!e.maybe_written(), "never sent: {e}");
        assert!(!queued.take(), "its partition drops it");
        assert!(!taken.is_finished(), "the answer has the grace");

        tokio::time::sleep(grace).await;
        let e = taken.offset(0).await.expect_err("unanswered");
        assert!(e.maybe_written(), "sent, not answered: {e}");
        assert_eq!(answered.offset(1).await.expect("answered"), Offset::At(42));
        taken.finish(Ok(7));
        assert!(
            taken.offset(0).await.is_err(),
            "a late answer does not change what the publish was told"
        );
    }
}
