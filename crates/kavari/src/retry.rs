//! Retry policies: how long to wait after a failed attempt, or when to give up.

use std::fmt::Debug;
use std::time::Duration;

/// Decides the delay before the next attempt.
pub trait RetryPolicy: Debug + Send + Sync + 'static {
    /// The delay after `failed_attempts` attempts have failed (1 after the
    /// first failure), or `None` to give up.
    fn delay(&self, failed_attempts: u32) -> Option<Duration>;
}

/// Never retries: one attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetry;

impl RetryPolicy for NoRetry {
    fn delay(&self, _failed_attempts: u32) -> Option<Duration> {
        None
    }
}

/// The Python library's policy: up to `max_attempts` attempts, waiting
/// 1, 2, 3, 5, 8, … units between them (Fibonacci). The unit is one second
/// unless set with [`with_unit`](Self::with_unit).
#[derive(Debug, Clone, Copy)]
pub struct FibonacciRetryPolicy {
    max_attempts: u32,
    unit: Duration,
}

impl FibonacciRetryPolicy {
    /// At most `max_attempts` attempts in all (0 and 1 both mean one attempt).
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            unit: Duration::from_secs(1),
        }
    }

    /// The unit the Fibonacci numbers multiply. Default: one second.
    pub fn with_unit(mut self, unit: Duration) -> Self {
        self.unit = unit;
        self
    }
}

impl RetryPolicy for FibonacciRetryPolicy {
    fn delay(&self, failed_attempts: u32) -> Option<Duration> {
        if failed_attempts == 0 || failed_attempts >= self.max_attempts {
            return None;
        }
        // 1, 2, 3, 5, 8, …: fib(n + 1) with fib(1) = fib(2) = 1.
        let (mut a, mut b) = (1u64, 2u64);
        for _ in 1..failed_attempts {
            (a, b) = (b, a.saturating_add(b));
        }
        let factor = u32::try_from(a).unwrap_or(u32::MAX);
        Some(self.unit.saturating_mul(factor))
    }
}

/// Exponential backoff with full-range jitter and a cap:
/// `min(cap, initial * multiplier^(n-1))`, scaled down by up to `jitter`.
#[derive(Debug, Clone, Copy)]
pub struct ExponentialRetryPolicy {
    max_attempts: u32,
    initial: Duration,
    multiplier: f64,
    cap: Duration,
    jitter: f64,
}

impl ExponentialRetryPolicy {
    /// Up to `max_attempts` attempts; 100 ms doubling to a 30 s cap, with
    /// 50 % jitter, until changed.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            cap: Duration::from_secs(30),
            jitter: 0.5,
        }
    }

    /// The first delay. Default: 100 ms.
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// The growth factor (at least 1). Default: 2.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The largest delay. Default: 30 s.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The fraction (0 to 1) by which a delay is randomly shortened, so
    /// clients that failed together do not retry together. Default: 0.5.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The delay with the random draw given: `unit` in `[0, 1]`, where 0 is
    /// the longest delay and 1 the shortest. [`RetryPolicy::delay`] draws it.
    pub fn delay_with(&self, failed_attempts: u32, unit: f64) -> Option<Duration> {
        if failed_attempts == 0 || failed_attempts >= self.max_attempts {
            return None;
        }
        let exp = i32::try_from(failed_attempts - 1).unwrap_or(i32::MAX);
        let raw = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let capped = if raw.is_finite() {
            raw.min(self.cap.as_secs_f64())
        } else {
            self.cap.as_secs_f64()
        };
        let scaled = capped * (1.0 - self.jitter * unit.clamp(0.0, 1.0));
        Some(Duration::from_secs_f64(scaled.max(0.0)))
    }
}

impl RetryPolicy for ExponentialRetryPolicy {
    fn delay(&self, failed_attempts: u32) -> Option<Duration> {
        self.delay_with(failed_attempts, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fibonacci_delays_match_the_python_library() {
        let p = FibonacciRetryPolicy::new(6);
        let delays: Vec<_> = (1..=6).map(|n| p.delay(n)).collect();
        let s = Duration::from_secs;
        assert_eq!(
            delays,
            [
                Some(s(1)),
                Some(s(2)),
                Some(s(3)),
                Some(s(5)),
                Some(s(8)),
                None
            ]
        );
        assert_eq!(FibonacciRetryPolicy::new(1).delay(1), None);
        assert_eq!(FibonacciRetryPolicy::new(0).delay(1), None);
        let ms = FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(10));
        assert_eq!(ms.delay(2), Some(Duration::from_millis(20)));
        // Huge attempt counts saturate instead of overflowing.
        assert!(FibonacciRetryPolicy::new(u32::MAX).delay(500).is_some());
    }

    #[test]
    fn exponential_grows_caps_and_jitters_within_bounds() {
        let p = ExponentialRetryPolicy::new(10)
            .initial(Duration::from_millis(100))
            .cap(Duration::from_secs(1))
            .jitter(0.5);
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(p.delay_with(1, 0.0), ms(100));
        assert_eq!(p.delay_with(2, 0.0), ms(200));
        assert_eq!(p.delay_with(4, 0.0), ms(800));
        assert_eq!(p.delay_with(5, 0.0), ms(1000), "capped");
        assert_eq!(p.delay_with(5, 1.0), ms(500), "max jitter halves it");
        assert_eq!(p.delay_with(5, 0.5), ms(750), "midpoint");
        assert_eq!(p.delay_with(10, 0.0), None);
        assert_eq!(p.delay_with(200, 0.0), None);
        let long = ExponentialRetryPolicy::new(u32::MAX).cap(Duration::from_secs(5));
        assert_eq!(long.delay_with(5_000, 0.0), Some(Duration::from_secs(5)));
        for n in 1..9 {
            let d = p.delay(n).unwrap();
            assert!(d <= Duration::from_secs(1));
        }
    }

    #[test]
    fn no_retry_gives_up_at_once() {
        assert_eq!(NoRetry.delay(1), None);
    }
}
