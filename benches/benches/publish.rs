//! Publish throughput: Kavari's `publish` against raw rskafka produce with
//! equal batching, on the same broker, topic layout and payloads, in one run.
//!
//! Run: `cargo bench -p kavari-benches --bench publish`
//! (`KAVARI_BENCH_MESSAGES` sets the count per case, `KAVARI_BENCH_ROUNDS`
//! the rounds whose median is printed; `KAVARI_BROKERS` uses your own
//! cluster instead of a local broker; `KAVARI_BENCH_PROFILE=kavari:<bytes>`
//! (windowed), `task:`, `spawn:` (the task harness alone), `joined:`,
//! `batch:` or `raw:<bytes>` runs only that client, for a profiler;
//! `KAVARI_BENCH_LINGER_MS`, `KAVARI_BENCH_BATCH_BYTES`, `KAVARI_BENCH_WINDOW`
//! and `KAVARI_BENCH_WORKERS` change Kavari's linger, batch cap, in-flight
//! window and the runtime's worker threads).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kavari::{KafkaMessage, Kavari};
use kavari_benches::{Payload, partition_clients, payloads, raw_record};
use kavari_testcontainers::{KafkaBroker, unique_name};
use rskafka::client::partition::Compression;

const PARTITIONS: i32 = 3;

struct Run {
    msgs_per_s: f64,
    mb_per_s: f64,
    records_per_batch: f64,
}

/// A manager with default settings; `KAVARI_BENCH_LINGER_MS` overrides the
/// linger, `KAVARI_BENCH_BATCH_BYTES` the batch cap.
async fn manager(broker: &KafkaBroker) -> Kavari {
    let mut builder = Kavari::builder(broker.bootstrap_servers());
    if let Some(ms) = env_number("KAVARI_BENCH_LINGER_MS") {
        builder = builder.linger(Duration::from_millis(ms as u64));
    }
    if let Some(bytes) = env_number("KAVARI_BENCH_BATCH_BYTES") {
        builder = builder.max_batch_bytes(bytes);
    }
    builder.build().await.expect("build")
}

/// How a Kavari client drives its publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Drive {
    /// A task per publish, as in a service where each request publishes from
    /// its own task; at most 20,000 in flight.
    TaskPerMessage,
    /// The same tasks without the publish: what the harness of
    /// `TaskPerMessage` costs by itself.
    TaskOnly,
    /// One task keeps up to 20,000 publishes in flight (`KAVARI_BENCH_WINDOW`),
    /// starting one as each completes: a busy service without a task each.
    Window,
    /// 5,000 publishes joined, then the next 5,000.
    Joined,
    /// `publish_batch` of 5,000, then the next 5,000.
    Batch,
}

async fn kavari_run(broker: &KafkaBroker, size: usize, n: usize, drive: Drive) -> Run {
    use futures::StreamExt;
    // Every Kavari run publishes `Payload`s to their own topic through
    // `publish`, as a service does; `main` created it.
    let manager = manager(broker).await;
    let (msgs, bytes) = payloads(n, size);
    // Connected and routed before the clock starts, as the raw client's
    // partition clients are.
    manager
        .publish(&Payload::of_size(u64::MAX, size))
        .await
        .expect("warm-up publish");
    let started = Instant::now();
    match drive {
        Drive::TaskPerMessage | Drive::TaskOnly => {
            let publish = drive == Drive::TaskPerMessage;
            let window = Arc::new(tokio::sync::Semaphore::new(20_000));
            let mut tasks = Vec::with_capacity(msgs.len());
            for m in msgs {
                let permit = Arc::clone(&window)
                    .acquire_owned()
                    .await
                    .expect("semaphore");
                let manager = manager.clone();
                tasks.push(tokio::spawn(async move {
                    if publish {
                        manager.publish(&m).await.expect("publish");
                    } else {
                        std::hint::black_box((&manager, &m));
                    }
                    drop(permit);
                }));
            }
            for t in tasks {
                t.await.expect("publish task");
            }
        }
        Drive::Window => {
            let window: usize = env_number("KAVARI_BENCH_WINDOW").unwrap_or(20_000);
            let mut in_flight = futures::stream::FuturesUnordered::new();
            for m in &msgs {
                if in_flight.len() >= window {
                    let done: Result<kavari::Delivery, kavari::PublishError> =
                        in_flight.next().await.expect("one in flight");
                    done.expect("publish");
                }
                in_flight.push(manager.publish(m));
            }
            while let Some(r) = in_flight.next().await {
                r.expect("publish");
            }
        }
        Drive::Batch => {
            for chunk in msgs.chunks(5_000) {
                for r in manager.publish_batch(chunk).await {
                    r.expect("publish_batch");
                }
            }
        }
        Drive::Joined => {
            for chunk in msgs.chunks(5_000) {
                let publishes = chunk.iter().map(|m| manager.publish(m));
                for r in futures::future::join_all(publishes).await {
                    r.expect("publish");
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = manager.publish_stats();
    manager.shutdown().await.expect("shutdown");
    Run {
        msgs_per_s: n as f64 / elapsed,
        mb_per_s: bytes as f64 / elapsed / 1e6,
        records_per_batch: match drive {
            Drive::TaskOnly => f64::NAN, // only the warm-up was sent
            _ => stats.records_acknowledged as f64 / stats.batches_sent.max(1) as f64,
        },
    }
}

async fn raw_run(broker: &KafkaBroker, size: usize, n: usize, batch: usize) -> Run {
    let topic = unique_name("bench-raw");
    broker
        .create_topic(&topic, PARTITIONS)
        .await
        .expect("topic");
    let client = broker.client().await.expect("client");
    let pcs = partition_clients(&client, &topic).await;
    // The same typed messages; what any rskafka user does per message:
    // serialize, build the record with its headers, produce in batches.
    let (msgs, bytes) = payloads(n, size);
    let per_partition = n.div_ceil(PARTITIONS as usize);
    let started = Instant::now();
    let tasks = pcs.iter().enumerate().map(|(p, pc)| {
        let slice = &msgs[(p * per_partition).min(n)..((p + 1) * per_partition).min(n)];
        async move {
            for chunk in slice.chunks(batch.max(1)) {
                let records = chunk
                    .iter()
                    .map(|m| raw_record(&m.id, "Payload", m))
                    .collect();
                pc.produce(records, Compression::NoCompression)
                    .await
                    .expect("produce");
            }
        }
    });
    futures::future::join_all(tasks).await;
    let elapsed = started.elapsed().as_secs_f64();
    Run {
        msgs_per_s: n as f64 / elapsed,
        mb_per_s: bytes as f64 / elapsed / 1e6,
        records_per_batch: batch as f64,
    }
}

/// A number from the environment, when set and valid.
fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One client of a round.
enum Case {
    /// Raw rskafka producing batches of this many records.
    Raw(&'static str, usize),
    /// Kavari driven this way.
    Kavari(&'static str, Drive),
}

impl Case {
    fn name(&self) -> &'static str {
        match self {
            Case::Raw(name, _) | Case::Kavari(name, _) => name,
        }
    }
}

/// One client's runs, one per round.
struct Rows(Vec<(&'static str, Vec<Run>)>);

impl Rows {
    fn push(&mut self, name: &'static str, run: Run) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, runs)) => runs.push(run),
            None => self.0.push((name, vec![run])),
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends: nothing to list
    }
    let n: usize = env_number("KAVARI_BENCH_MESSAGES").unwrap_or(100_000);
    let rounds: usize = env_number("KAVARI_BENCH_ROUNDS").unwrap_or(6);
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_number("KAVARI_BENCH_WORKERS").unwrap_or(2))
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let broker = KafkaBroker::start().await.expect("broker");
        // Kavari's topic; on your own cluster it may exist already.
        if let Err(e) = broker.create_topic(Payload::TOPIC, PARTITIONS).await {
            eprintln!("creating {}: {e} (using it as it is)", Payload::TOPIC);
        }
        println!(
            "| payload | client | msgs/s | MB/s | records/batch | ratio to raw, equal batching |"
        );
        println!("| --- | --- | ---: | ---: | ---: | ---: |");
        // `KAVARI_BENCH_PROFILE=kavari:<bytes>` (or `raw:<bytes>`) runs only
        // that client, so a profiler attached to this process sees it alone.
        if let Ok(profile) = std::env::var("KAVARI_BENCH_PROFILE") {
            let (client, size) = profile.split_once(':').expect("client:bytes");
            let size: usize = size.parse().expect("payload bytes");
            for _ in 0..rounds {
                let r = match client {
                    "raw" => raw_run(&broker, size, n, (256 * 1024 / (size + 64)).min(1_000)).await,
                    "task" => kavari_run(&broker, size, n, Drive::TaskPerMessage).await,
                    "spawn" => kavari_run(&broker, size, n, Drive::TaskOnly).await,
                    "joined" => kavari_run(&broker, size, n, Drive::Joined).await,
                    "batch" => kavari_run(&broker, size, n, Drive::Batch).await,
                    _ => kavari_run(&broker, size, n, Drive::Window).await,
                };
                println!("{client} {size} B: {:.0} msgs/s", r.msgs_per_s);
            }
            return;
        }
        for size in [100usize, 1024] {
            let count = if size > 512 { n / 2 } else { n };
            // Warm-up: connections, metadata, allocator; and the batch size
            // Kavari reaches with many publishes in flight, which the first
            // raw client copies.
            let warm_up = kavari_run(&broker, size, count, Drive::Window).await;
            let equal = warm_up.records_per_batch.round().max(1.0) as usize;
            let large = (256 * 1024 / (size + 64)).min(1_000);
            // Rounds interleave the clients, so a slow spell of the shared
            // machine hits them alike, and each round starts one client
            // later than the last: the broker keeps every record in memory
            // and slows as it fills, which would otherwise always favour the
            // clients that run first. Rates are medians over the rounds; the
            // ratio is the median of each round's ratio to that round's raw
            // run with Kavari's batch size, which cancels what a round's
            // slowness did to both. (Against the better of the two raw runs
            // a round's ratio would be biased low: the larger of two noisy
            // samples beats a third by the noise alone.)
            let cases = [
                Case::Raw("raw rskafka, Kavari's batch size", equal),
                Case::Raw("raw rskafka, ~256 KiB batches", large),
                Case::Kavari("kavari publish, a task per message", Drive::TaskPerMessage),
                Case::Kavari("(a task per message, no publish)", Drive::TaskOnly),
                Case::Kavari(
                    "kavari publish, 20,000 in flight in one task",
                    Drive::Window,
                ),
                Case::Kavari("kavari publish, 5,000 joined per task", Drive::Joined),
                Case::Kavari("kavari publish_batch, 5,000 per call", Drive::Batch),
            ];
            let mut rows = Rows(cases.iter().map(|c| (c.name(), Vec::new())).collect());
            let mut baseline = vec![0f64; rounds];
            for (round, base) in baseline.iter_mut().enumerate() {
                for i in 0..cases.len() {
                    let which = (round + i) % cases.len();
                    let case = &cases[which];
                    let run = match *case {
                        Case::Raw(_, batch) => {
                            let run = raw_run(&broker, size, count, batch).await;
                            if which == 0 {
                                *base = run.msgs_per_s;
                            }
                            run
                        }
                        Case::Kavari(_, drive) => kavari_run(&broker, size, count, drive).await,
                    };
                    rows.push(case.name(), run);
                }
            }
            for (name, runs) in &rows.0 {
                let of = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
                let ratio = median(
                    runs.iter()
                        .zip(&baseline)
                        .map(|(r, base)| r.msgs_per_s / base)
                        .collect(),
                );
                let records = of(|r| r.records_per_batch);
                let records = if records.is_nan() {
                    "-".to_string()
                } else {
                    format!("{records:.0}")
                };
                println!(
                    "| {size} B | {name} | {:.0} | {:.1} | {records} | {ratio:.2} |",
                    of(|r| r.msgs_per_s),
                    of(|r| r.mb_per_s),
                );
            }
        }
    });
}
