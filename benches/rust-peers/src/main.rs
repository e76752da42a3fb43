//! The pure-Rust peers of `kavari-load`: krafka and kacrab run the same
//! workloads as the librdkafka peer, one per process so each peak RSS is
//! its own. Each client is configured as its README configures it, with
//! idempotence on or off when the driver asks for it alike.
//!
//! Usage (`benches/src/peer.rs` has the contract):
//!   kavari-rust-peers krafka|kacrab publish BOOTSTRAP TOPIC COUNT SIZE [idempotent|plain]
//!   kavari-rust-peers krafka|kacrab consume BOOTSTRAP TOPIC COUNT GROUP
//!   kavari-rust-peers krafka|kacrab latency BOOTSTRAP TOPIC RATE SECONDS GROUP
//! Prints one line: `RESULT key=value ...`.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

#[path = "../../src/measure.rs"]
mod measure;
#[path = "../../src/peer.rs"]
mod peer;
use peer::Workload;

mod kacrab_peer;
mod krafka_peer;

/// Records in flight at most while publishing, as Kavari's worker and the
/// librdkafka peer keep.
const WINDOW: usize = 20_000;

/// Publishes `count` records through `send` (which hands one record to the
/// client and returns its acknowledgement), at most [`WINDOW`] unanswered;
/// the result line.
async fn publish_all<S, F, A, E>(count: usize, size: usize, mut send: S) -> String
where
    S: FnMut(usize) -> F,
    F: Future<Output = Result<A, E>>,
    A: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut in_flight = FuturesUnordered::new();
    let mut errors = 0;
    let started = Instant::now();
    for i in 0..count {
        while in_flight.len() >= WINDOW {
            if let Some(Err(e)) = in_flight.next().await {
                errors += 1;
                eprintln!("a publish failed: {e}");
            }
        }
        match send(i).await {
            Ok(ack) => in_flight.push(ack),
            Err(e) => {
                errors += 1;
                eprintln!("a publish was refused: {e}");
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        if let Err(e) = r {
            errors += 1;
            eprintln!("a publish failed: {e}");
        }
    }
    peer::publish_line(count, size, started.elapsed().as_secs_f64(), errors)
}

/// Reads until `count` records have come, each decoded, timed from the
/// first; `poll` returns the next batch's values.
async fn consume_all<P, E>(count: usize, mut poll: P) -> Result<String, E>
where
    P: AsyncFnMut() -> Result<Vec<Option<Vec<u8>>>, E>,
{
    // `seen` counts the records after the first, which starts the clock.
    let mut seen = 0;
    let mut started = None;
    while seen + 1 < count {
        for value in poll().await? {
            assert!(peer::decodes(value.as_deref()), "a value did not decode");
            if started.is_none() {
                started = Some(Instant::now());
            } else {
                seen += 1;
            }
        }
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    Ok(peer::consume_line(seen, secs))
}

/// The ages of the stamped records `poll` returns (each call the next
/// batch's values), until `total` have come or none came for 30 s.
async fn ages<P, E>(total: usize, mut poll: P) -> Vec<u64>
where
    P: AsyncFnMut() -> Result<Vec<Option<Vec<u8>>>, E>,
{
    let mut samples = Vec::with_capacity(total);
    while samples.len() < total {
        let Ok(Ok(values)) = tokio::time::timeout(Duration::from_secs(30), poll()).await else {
            break;
        };
        samples.extend(values.iter().filter_map(|v| peer::age(v.as_deref())));
    }
    samples
}

/// Sends `rate` stamped records a second for `seconds` through `send`
/// while `reader` collects their ages; the result line.
async fn latency<S, R>(rate: u64, seconds: u64, mut send: S, reader: R) -> String
where
    S: FnMut(usize, [u8; 8]),
    R: Future<Output = Vec<u64>> + Send + 'static,
{
    let reader = tokio::spawn(reader);
    tokio::time::sleep(Duration::from_secs(3)).await; // join the group first
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for i in 0..(rate * seconds) as usize {
        tick.tick().await;
        send(i, peer::stamp());
    }
    peer::latency_line(reader.await.unwrap_or_default())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = match Workload::from_args(args.get(1..).unwrap_or_default()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("kavari-rust-peers: {e}");
            std::process::exit(2);
        }
    };
    let line = match args.first().map(String::as_str) {
        Some("krafka") => krafka_peer::run(workload).await.map_err(|e| e.to_string()),
        Some("kacrab") => kacrab_peer::run(workload).await.map_err(|e| e.to_string()),
        other => Err(format!("{other:?}: krafka or kacrab")),
    };
    match line {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("kavari-rust-peers: {e}");
            std::process::exit(1);
        }
    }
}
