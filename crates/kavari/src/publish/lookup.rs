//! A topic's metadata lookup, shared by every publish waiting for the
//! topic's partitions: one request however many wait, and one timer (the
//! earliest waiter's deadline) rather than one per waiting publish. A burst
//! of publishes before a topic's first answer holds, each, only its wait.

use std::future::Future;
use std::pin::pin;
use std::sync::{Mutex, OnceLock};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ProduceError, ProduceErrorKind};

/// What a lookup answers: what it found (a topic's route), or why it found
/// nothing.
pub(super) type Answer<T> = Result<T, ProduceError>;

/// One lookup of a topic and the publishes waiting for it.
#[derive(Debug)]
pub(super) struct Lookup<T> {
    answer: OnceLock<Answer<T>>,
    /// Wakes every waiter: at the answer, and at the earliest deadline
    /// (the waiters not yet due register theirs again).
    wake: Notify,
    /// The earliest deadline registered since the waiters were last woken.
    due: Mutex<Option<Instant>>,
    /// Tells the lookup a deadline sooner than its timer came.
    sooner: Notify,
}

impl<T> Default for Lookup<T> {
    fn default() -> Self {
        Self {
            answer: OnceLock::new(),
            wake: Notify::new(),
            due: Mutex::default(),
            sooner: Notify::new(),
        }
    }
}

impl<T: Clone> Lookup<T> {
    /// Whether the lookup has answered (a later publish starts another).
    pub(super) fn is_answered(&self) -> bool {
        self.answer.get().is_some()
    }

    /// The answer, or `None` once `deadline` passes first.
    pub(super) async fn answer(&self, deadline: Instant) -> Option<Answer<T>> {
        loop {
            // Registered before the checks: an answer or a wake in between
            // is not missed.
            let mut woken = pin!(self.wake.notified());
            woken.as_mut().enable();
            if let Some(answer) = self.answer.get() {
                return Some(answer.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.wake_by(deadline);
            woken.await;
        }
    }

    /// Has the waiters woken by `deadline` at the latest.
    fn wake_by(&self, deadline: Instant) {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        if due.is_none_or(|d| deadline < d) {
            *due = Some(deadline);
            drop(due);
            self.sooner.notify_one();
        }
    }

    /// Runs `lookup` for `topic` and hands its answer to every waiter,
    /// waking them at the earliest deadline meanwhile. A lookup dropped
    /// before its answer (its runtime shut down) answers with an error.
    pub(super) async fn run(&self, topic: &str, lookup: impl Future<Output = Answer<T>>) {
        let unanswered = Unanswered {
            lookup: self,
            topic,
        };
        let mut lookup = pin!(lookup);
        let answer = loop {
            let due = *self.due.lock().unwrap_or_else(|p| p.into_inner());
            let sooner = self.sooner.notified();
            let timer = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                answer = &mut lookup => break answer,
                () = timer => {
                    *self.due.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.wake.notify_waiters();
                }
                () = sooner => {}
            }
        };
        self.finish(answer);
        drop(unanswered);
    }

    /// Hands `answer` to the waiters, unless one was handed already.
    fn finish(&self, answer: Answer<T>) {
        if self.answer.set(answer).is_ok() {
            self.wake.notify_waiters();
        }
    }
}

/// Answers a lookup dropped before its answer, so its waiters do not wait
/// out their deadlines.
struct Unanswered<'a, T: Clone> {
    lookup: &'a Lookup<T>,
    topic: &'a str,
}

impl<T: Clone> Drop for Unanswered<'_, T> {
    fn drop(&mut self) {
        if !self.lookup.is_answered() {
            self.lookup.finish(Err(ProduceError::new(
                ProduceErrorKind::ShuttingDown,
                false,
                format!(
                    "the lookup of {}'s partitions ended unanswered: its runtime shut down",
                    self.topic
                ),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A lookup failing with `detail` after `after`.
    async fn failing(after: Duration, detail: &str) -> Answer<u32> {
        tokio::time::sleep(after).await;
        Err(ProduceError::new(
            ProduceErrorKind::Connection,
            true,
            detail,
        ))
    }

    /// Runs `lookup` with `answer` as its request, in a task.
    fn answering(
        lookup: &Arc<Lookup<u32>>,
        answer: impl Future<Output = Answer<u32>> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let lookup = Arc::clone(lookup);
        tokio::spawn(async move { lookup.run("t", answer).await })
    }

    /// A waiter due at `deadline`, in a task: its answer and when it left.
    fn waiting(
        lookup: &Arc<Lookup<u32>>,
        deadline: Instant,
    ) -> tokio::task::JoinHandle<(Option<Answer<u32>>, Instant)> {
        let lookup = Arc::clone(lookup);
        tokio::spawn(async move { (lookup.answer(deadline).await, Instant::now()) })
    }

    /// Every waiter gets the one answer, each waiting only for it.
    #[tokio::test(start_paused = true)]
    async fn every_waiter_gets_the_one_answer() {
        let lookup = Arc::new(Lookup::<u32>::default());
        let far = Instant::now() + Duration::from_secs(60);
        let waiters: Vec<_> = (0..100).map(|_| waiting(&lookup, far)).collect();
        tokio::task::yield_now().await;
        answering(&lookup, failing(Duration::from_secs(1), "the one answer"));
        for w in waiters {
            let answer = w
                .await
                .expect("joins")
                .0
                .expect("answered before the deadline");
            let e = answer.expect_err("the lookup failed");
            assert!(e.to_string().contains("the one answer"), "{e}");
        }
        assert!(lookup.is_answered());
        // One that comes after the answer gets it at once.
        let late = lookup.answer(Instant::now()).await.expect("answered");
        assert!(late.is_err());
    }

    /// A waiter whose deadline comes before the answer leaves at its
    /// deadline; one due later stays for the answer.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_leaves_at_its_deadline() {
        let lookup = Arc::new(Lookup::<u32>::default());
        let start = Instant::now();
        let soon = waiting(&lookup, start + Duration::from_secs(2));
        let later = waiting(&lookup, start + Duration::from_secs(20));
        answering(&lookup, failing(Duration::from_secs(10), "late answer"));
        let (answer, at) = soon.await.expect("joins");
        assert!(answer.is_none(), "left without the answer");
        assert_eq!(at - start, Duration::from_secs(2));
        let (answer, at) = later.await.expect("joins");
        assert!(answer.is_some(), "stayed for the answer");
        assert_eq!(at - start, Duration::from_secs(10));
    }

    /// A waiter due sooner than every earlier one still leaves on time.
    #[tokio::test(start_paused = true)]
    async fn a_sooner_deadline_moves_the_timer() {
        let lookup = Arc::new(Lookup::<u32>::default());
        let start = Instant::now();
        answering(&lookup, std::future::pending());
        let first = waiting(&lookup, start + Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = lookup.answer(start + Duration::from_secs(5));
        let second = tokio::time::timeout(Duration::from_secs(60), second)
            .await
            .expect("woken for its deadline");
        assert!(second.is_none());
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        let (answer, at) = first.await.expect("joins");
        assert!(answer.is_none());
        assert_eq!(at - start, Duration::from_secs(30));
    }

    /// A lookup dropped unanswered answers its waiters with an error.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_lookup_answers_its_waiters() {
        let lookup = Arc::new(Lookup::<u32>::default());
        let task = answering(&lookup, std::future::pending());
        let waiter = waiting(&lookup, Instant::now() + Duration::from_secs(60));
        tokio::task::yield_now().await;
        task.abort();
        let answer = waiter.await.expect("joins").0.expect("answered");
        let e = answer.expect_err("an error");
        assert_eq!(e.kind(), ProduceErrorKind::ShuttingDown);
        assert!(e.to_string().contains("of t's partitions"), "{e}");
    }
}
