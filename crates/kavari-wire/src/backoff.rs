//! Exponential backoff with jitter: the one retry delay of every reconnect
//! and retry loop in Kavari.

use std::time::Duration;

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
}
