//! [`LogRate`]: one log line per cause and interval, however many records
//! or attempts share the cause.
//!
//! A missing topic fails every publish to it, and an unreachable broker
//! every request; a line per failure floods the logs an operator needs to
//! read. A caller counts each occurrence under a key (topic and cause) and
//! logs only when [`LogRate::admit`] says so, with the count of
//! occurrences the line stands for.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Keys kept before expired ones are dropped.
const PRUNE_ABOVE: usize = 256;

/// Counts occurrences per key; admits a log line for the first one and then
/// at most one per `interval`.
#[derive(Debug)]
pub struct LogRate<K> {
    interval: Duration,
    keys: Mutex<HashMap<K, Window>>,
}

#[derive(Debug)]
struct Window {
    /// When the last line for the key was admitted.
    logged_at: Instant,
    /// Occurrences since then, not yet reported.
    pending: u64,
}

impl<K: Hash + Eq> LogRate<K> {
    /// At most one line per key and `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one occurrence of `key`. `Some(n)` when a line should be
    /// written now, `n` being the occurrences it reports (this one and the
    /// ones kept quiet since the key's last line); `None` to stay quiet.
    pub fn admit(&self, key: K) -> Option<u64> {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() > PRUNE_ABOVE {
            let interval = self.interval;
            keys.retain(|_, w| now.duration_since(w.logged_at) < interval);
        }
        match keys.get_mut(&key) {
            Some(w) if now.duration_since(w.logged_at) < self.interval => {
                w.pending += 1;
                None
            }
            Some(w) => {
                let n = w.pending + 1;
                *w = Window {
                    logged_at: now,
                    pending: 0,
                };
                Some(n)
            }
            None => {
                keys.insert(
                    key,
                    Window {
                        logged_at: now,
                        pending: 0,
                    },
                );
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_key_and_interval_reporting_what_it_stands_for() {
        let rate = LogRate::new(Duration::from_secs(10));
        assert_eq!(rate.admit("a"), Some(1), "the first occurrence logs");
        for _ in 0..199 {
            assert_eq!(rate.admit("a"), None);
        }
        assert_eq!(rate.admit("b"), Some(1), "keys are independent");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(rate.admit("a"), Some(200), "199 kept quiet and this one");
        assert_eq!(rate.admit("a"), None);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(rate.admit("a"), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_keys_are_dropped_once_many_are_kept() {
        let rate = LogRate::new(Duration::from_secs(1));
        for k in 0..=PRUNE_ABOVE {
            rate.admit(k);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        rate.admit(usize::MAX);
        let kept = rate.keys.lock().map(|k| k.len()).unwrap_or_default();
        assert_eq!(kept, 1);
    }
}
