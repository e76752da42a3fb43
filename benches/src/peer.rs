//! What every peer client of `kavari-load` shares: the command line it
//! takes, the records it writes, how it checks what it reads and the one
//! line it prints. The peers (`rdkafka-peer`, `rust-peers`) are crates of
//! their own outside the workspace and take this file by `#[path]`, beside
//! `measure.rs`; the Java peer (`java-peer/LoadPeer.java`) follows the same
//! contract.
//!
//! ```text
//! publish BOOTSTRAP TOPIC COUNT SIZE [idempotent|plain]
//! consume BOOTSTRAP TOPIC COUNT GROUP
//! latency BOOTSTRAP TOPIC RATE SECONDS GROUP
//! ```
//!
//! Publishing without the last word keeps the client's own default. The
//! result is one line on stdout, `RESULT key=value ...`, with `rss_kb`.

use crate::measure::{micros, peak_rss_kb, percentile_ms};

/// One measurement a peer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// `count` records of `size` bytes, as fast as the client takes them.
    Publish {
        /// The brokers to start from.
        bootstrap: String,
        /// The topic to write.
        topic: String,
        /// How many records.
        count: usize,
        /// The value's size in bytes.
        size: usize,
        /// `Some(true)` idempotent, `Some(false)` not, `None` the client's
        /// default.
        idempotence: Option<bool>,
    },
    /// The first `count` records of `topic`, read by a new group member.
    Consume {
        /// The brokers to start from.
        bootstrap: String,
        /// The topic to read.
        topic: String,
        /// How many records.
        count: usize,
        /// A group of its own.
        group: String,
    },
    /// `rate` records a second for `seconds`, each read back by the same
    /// process: the time from send to receipt.
    Latency {
        /// The brokers to start from.
        bootstrap: String,
        /// The topic to write and read (one partition).
        topic: String,
        /// Records per second.
        rate: u64,
        /// For how long.
        seconds: u64,
        /// A group of its own.
        group: String,
    },
}

impl Workload {
    /// The workload `args` (the words after the program, and after the
    /// client's name where a peer holds several) name.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let word = |i: usize| {
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("argument {} missing in {args:?}", i + 1))
        };
        let number = |i: usize| -> Result<u64, String> {
            let w = word(i)?;
            w.parse().map_err(|_| format!("{w:?} is not a number"))
        };
        match args.first().map(String::as_str) {
            Some("publish") => Ok(Self::Publish {
                bootstrap: word(1)?,
                topic: word(2)?,
                count: number(3)? as usize,
                size: number(4)? as usize,
                idempotence: match args.get(5).map(String::as_str) {
                    None => None,
                    Some("idempotent") => Some(true),
                    Some("plain") => Some(false),
                    Some(other) => return Err(format!("{other:?}: idempotent or plain")),
                },
            }),
            Some("consume") => Ok(Self::Consume {
                bootstrap: word(1)?,
                topic: word(2)?,
                count: number(3)? as usize,
                group: word(4)?,
            }),
            Some("latency") => Ok(Self::Latency {
                bootstrap: word(1)?,
                topic: word(2)?,
                rate: number(3)?.max(1),
                seconds: number(4)?,
                group: word(5)?,
            }),
            other => Err(format!("{other:?}: publish, consume or latency")),
        }
    }
}

/// The `i`-th published record's key: 1,024 keys, as Kavari's worker uses.
pub fn key(i: usize) -> String {
    format!("key-{}", i % 1024)
}

/// The headers Kavari writes, which every peer writes too.
pub const HEADERS: [(&str, &str); 2] = [
    ("msg_type", "Payload"),
    ("content-type", "application/msgpack"),
];

/// The consume workload's record as Kavari decodes it (the body skipped).
#[derive(serde::Deserialize)]
struct Load {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    body: serde::de::IgnoredAny,
}

/// Decodes a consumed value as a consumer must; `false` when it is not a
/// record the preload wrote.
pub fn decodes(value: Option<&[u8]>) -> bool {
    rmp_serde::from_slice::<Load>(value.unwrap_or_default()).is_ok()
}

/// A latency record's value: the time it is sent, in microseconds.
pub fn stamp() -> [u8; 8] {
    micros().to_le_bytes()
}

/// How long ago a latency record's value was stamped, in microseconds;
/// `None` for any other value.
pub fn age(value: Option<&[u8]>) -> Option<u64> {
    let sent: [u8; 8] = value?.try_into().ok()?;
    Some(micros().saturating_sub(u64::from_le_bytes(sent)))
}

/// The result line of a publish run.
pub fn publish_line(count: usize, size: usize, secs: f64, errors: usize) -> String {
    format!(
        "RESULT msgs_per_s={:.0} mb_per_s={:.1} errors={errors} rss_kb={}",
        count as f64 / secs,
        (count * (size + 40)) as f64 / secs / 1e6,
        peak_rss_kb()
    )
}

/// The result line of a consume run: `count` records in `secs`.
pub fn consume_line(count: usize, secs: f64) -> String {
    format!(
        "RESULT msgs_per_s={:.0} rss_kb={}",
        count as f64 / secs,
        peak_rss_kb()
    )
}

/// A latency run's percentiles, from its samples in microseconds:
/// `samples=N p50_ms=.. p99_ms=.. p999_ms=..`.
pub fn latency_fields(mut samples: Vec<u64>) -> String {
    samples.sort_unstable();
    format!(
        "samples={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
        samples.len(),
        percentile_ms(&samples, 0.5),
        percentile_ms(&samples, 0.99),
        percentile_ms(&samples, 0.999),
    )
}

/// The result line of a latency run, from its samples in microseconds.
pub fn latency_line(samples: Vec<u64>) -> String {
    format!(
        "RESULT {} rss_kb={}",
        latency_fields(samples),
        peak_rss_kb()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_publish_keeps_the_clients_default_unless_told() {
        let w = Workload::from_args(&words("publish b:9 t 10 100")).unwrap();
        assert!(matches!(
            w,
            Workload::Publish {
                idempotence: None,
                count: 10,
                size: 100,
                ..
            }
        ));
        let w = Workload::from_args(&words("publish b:9 t 10 100 plain")).unwrap();
        assert!(matches!(
            w,
            Workload::Publish {
                idempotence: Some(false),
                ..
            }
        ));
        assert!(Workload::from_args(&words("publish b:9 t 10 100 maybe")).is_err());
        assert!(Workload::from_args(&words("publish b:9 t ten 100")).is_err());
        assert!(Workload::from_args(&words("latency b:9 t 10")).is_err());
    }

    #[test]
    fn a_stamp_ages_and_other_values_do_not() {
        let s = stamp();
        assert!(age(Some(&s)).is_some_and(|us| us < 60_000_000));
        assert_eq!(age(Some(b"short")), None);
        assert_eq!(age(None), None);
    }

    #[test]
    fn latency_percentiles_come_from_the_sorted_samples() {
        let line = latency_line((1..=1000).rev().map(|ms| ms * 1000).collect());
        assert!(line.contains("samples=1000 p50_ms=501.00 p99_ms=990.00 p999_ms=999.00"));
    }
}
