//! Exponential backoff with jitter: the one retry delay of every reconnect
//! and retry loop in Kavari, and [`Retrying`], the bookkeeping of such a
//! loop (failures in a row, when to log).

use std::time::Duration;

use tokio::time::Instant;

/// Doubles from `base` up to `max`, each delay scaled by a random factor in
/// [0.8, 1.2] so members that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays from `base`, doubling to at most `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// Starts again from `base` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }

    /// The next delay with the random draw given (`unit` in [0, 1]).
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        self.attempt = self.attempt.saturating_add(1);
        let capped = exp.min(self.max);
        capped.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
    }
}

/// A retry loop's bookkeeping, the one every "try, wait, try again" loop
/// keeps: the [`Backoff`] between attempts, the failures in a row, and
/// whether a log line is due (the first failure, then one per
/// `log_every`, each saying how many it stands for).
#[derive(Debug, Clone)]
pub struct Retrying {
    backoff: Backoff,
    failures: u32,
    log_every: Duration,
    logged_at: Option<Instant>,
    unlogged: u32,
}

/// What a failed attempt asks of its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// The wait before the next attempt.
    pub wait: Duration,
    /// The failures in a row, this one included.
    pub failures: u32,
    /// `Some(n)` when a line should be logged now, `n` being the failures
    /// it stands for (this one and those kept quiet since the last line).
    pub log: Option<u32>,
}

impl Retrying {
    /// Waits by `backoff`; at most one log line per `log_every`.
    pub fn new(backoff: Backoff, log_every: Duration) -> Self {
        Self {
            backoff,
            failures: 0,
            log_every,
            logged_at: None,
            unlogged: 0,
        }
    }

    /// Counts a failed attempt: the wait before the next one and whether
    /// to log it.
    pub fn failed(&mut self) -> Failed {
        self.failed_at(Instant::now())
    }

    fn failed_at(&mut self, now: Instant) -> Failed {
        self.failures = self.failures.saturating_add(1);
        self.unlogged = self.unlogged.saturating_add(1);
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.log_every);
        let log = due.then(|| {
            self.logged_at = Some(now);
            std::mem::take(&mut self.unlogged)
        });
        Failed {
            wait: self.backoff.next(),
            failures: self.failures,
            log,
        }
    }

    /// The failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An attempt succeeded: the next failure waits from the backoff's
    /// start and is logged at once. Returns the failures it ended.
    pub fn succeeded(&mut self) -> u32 {
        self.backoff.reset();
        self.logged_at = None;
        self.unlogged = 0;
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_jitters() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        assert_eq!(b.next_with(0.5), ms(100));
        assert_eq!(b.next_with(0.5), ms(200));
        assert_eq!(b.next_with(0.0), ms(320));
        assert_eq!(b.next_with(1.0), ms(960));
        assert_eq!(b.next_with(0.5), ms(1000));
        for _ in 0..100 {
            assert!(b.next() <= ms(1200));
        }
        b.reset();
        assert_eq!(b.next_with(0.5), ms(100));
    }

    #[test]
    fn retrying_counts_backs_off_and_logs_once_per_interval() {
        let ms = Duration::from_millis;
        let mut r = Retrying::new(Backoff::new(ms(100), ms(1000)), Duration::from_secs(30));
        let t0 = Instant::now();
        let first = r.failed_at(t0);
        assert_eq!((first.failures, first.log), (1, Some(1)));
        assert!(first.wait >= ms(80) && first.wait <= ms(120));
        let second = r.failed_at(t0 + Duration::from_secs(1));
        assert_eq!((second.failures, second.log), (2, None));
        assert!(
            second.wait >= ms(160),
            "the backoff grows: {:?}",
            second.wait
        );
        let third = r.failed_at(t0 + Duration::from_secs(31));
        assert_eq!(
            (third.failures, third.log),
            (3, Some(2)),
            "the line stands for two"
        );
        assert_eq!(r.succeeded(), 3);
        let again = r.failed_at(t0 + Duration::from_secs(32));
        assert_eq!(
            (again.failures, again.log),
            (1, Some(1)),
            "logged at once after a success"
        );
        assert!(
            again.wait <= ms(120),
            "the backoff starts over: {:?}",
            again.wait
        );
    }
}
