//! `kavari-handlers`: records handled per second by handlers that wait on
//! I/O, by processing order: one at a time (partition order), by key with
//! 16, 64 and 256 records in flight, and a batch handler of 100; and the
//! publishing handler exactly once, at 1, 10 and 100 records per
//! transaction, with the transactions' commit latency.
//!
//! ```sh
//! cargo run --release -p kavari-benches --bin kavari-handlers -- \
//!     [--partitions 3] [--records 60000] [--seconds 5] [--out target/kavari-handlers.md]
//! ```
//!
//! Two handlers: one that waits 20 ms (a database call; the batch handler
//! waits 20 ms per batch, a bulk insert), and one that publishes one
//! message per record and waits for its acknowledgement (the batch handler
//! publishes the batch's messages together). The records are written
//! first, with distinct keys; each row is a new consumer group reading
//! them for `--seconds` (or to the end), and the rate counts records from
//! the first handled to the last. It starts the test cluster through
//! kavari-testcontainers unless `KAVARI_BROKERS` is set.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kavari::{
    BatchError, BatchHandler, HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler,
    ProcessingOrder,
};
use kavari_testcontainers::{KafkaBroker, unique_name};
use serde::{Deserialize, Serialize};
use tracing_subscriber::Layer as _;

/// A job to handle.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-handlers.jobs")]
struct Job {
    #[kavari(key)]
    id: String,
    n: u64,
}

/// What the publishing handler writes per job.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-handlers.done")]
struct JobDone {
    #[kavari(key)]
    id: String,
}

/// How long the waiting handler waits per call.
const WAIT: Duration = Duration::from_millis(20);

/// What a handler does per record (or per batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// Waits 20 ms.
    Sleep,
    /// Publishes a message per record and waits for it.
    Publish,
}

struct Handler {
    count: Arc<kavari_benches::Count>,
    work: Work,
    out: Kavari,
}

impl MessageHandler<Job> for Handler {
    async fn handle(&self, job: Job, ctx: &MessageContext) -> Result<(), HandlerError> {
        match self.work {
            Work::Sleep => tokio::time::sleep(WAIT).await,
            Work::Publish => match ctx.transaction() {
                // Exactly once: in the record's transaction.
                Some(tx) => {
                    tx.publish(&JobDone { id: job.id }).await?;
                }
                None => {
                    self.out.publish(&JobDone { id: job.id }).await?;
                }
            },
        }
        self.count.add(1);
        Ok(())
    }
}

impl BatchHandler<Job> for Handler {
    async fn handle(&self, batch: Vec<(Job, MessageContext)>) -> Result<(), BatchError> {
        let n = batch.len() as u64;
        match self.work {
            Work::Sleep => tokio::time::sleep(WAIT).await,
            Work::Publish => {
                let done: Vec<JobDone> = batch
                    .into_iter()
                    .map(|(job, _)| JobDone { id: job.id })
                    .collect();
                for r in self.out.publish_batch(&done).await {
                    r?;
                }
            }
        }
        self.count.add(n);
        Ok(())
    }
}

/// The transactions committed under exactly-once handling, as the
/// consumer logs them (a debug event per commit): records and took_us.
#[derive(Default)]
struct Commits(std::sync::Mutex<Vec<(u64, u64)>>);

impl Commits {
    /// Commit latency p50 and p99 in ms, and the mean records per commit.
    fn summary(&self) -> (f64, f64, f64) {
        let commits = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut took: Vec<u64> = commits.iter().map(|c| c.1).collect();
        took.sort_unstable();
        let records: u64 = commits.iter().map(|c| c.0).sum();
        let mean = records as f64 / commits.len().max(1) as f64;
        (
            kavari_benches::percentile_ms(&took, 0.5),
            kavari_benches::percentile_ms(&took, 0.99),
            mean,
        )
    }
}

/// Collects the consumer's "transaction committed" events.
struct CommitLog(Arc<Commits>);

/// The fields of one event.
#[derive(Default)]
struct CommitFields {
    records: Option<u64>,
    took_us: Option<u64>,
}

impl tracing::field::Visit for CommitFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "records" => self.records = Some(value),
            "took_us" => self.took_us = Some(value),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CommitLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = CommitFields::default();
        event.record(&mut fields);
        if let (Some(records), Some(took)) = (fields.records, fields.took_us) {
            self.0
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((records, took));
        }
    }
}

struct Opts {
    partitions: i32,
    records: u64,
    seconds: u64,
    out: String,
}

fn opts() -> Opts {
    use kavari_benches::arg;
    Opts {
        partitions: arg("--partitions").unwrap_or(3),
        records: arg("--records").unwrap_or(60_000),
        seconds: arg("--seconds").unwrap_or(5),
        out: arg("--out").unwrap_or_else(|| "target/kavari-handlers.md".into()),
    }
}

/// One row of the table: how records are handed over.
#[derive(Clone, Copy)]
enum Row {
    Order(ProcessingOrder),
    Batch(usize),
    /// Partition order, exactly once: up to this many records per
    /// transaction.
    ExactlyOnce(usize),
}

impl Row {
    fn label(self) -> String {
        match self {
            Row::Order(ProcessingOrder::Partition) => "partition order (one at a time)".into(),
            Row::Order(ProcessingOrder::Key { max_in_flight }) => {
                format!("key order, {max_in_flight} in flight")
            }
            Row::Order(o) => format!("{o:?}"),
            Row::Batch(n) => format!("batch handler of {n}"),
            Row::ExactlyOnce(n) => format!("exactly once, up to {n} records per transaction"),
        }
    }
}

/// Handles the jobs with a new group for `seconds` (or until all are
/// handled); returns records per second.
async fn measure(broker: &str, o: &Opts, row: Row, work: Work, out: &Kavari) -> f64 {
    let order = match row {
        Row::Order(order) => order,
        Row::Batch(_) | Row::ExactlyOnce(_) => ProcessingOrder::Partition,
    };
    let mut builder = Kavari::builder(broker)
        .group_id(unique_name("handlers"))
        .processing_order(order);
    if let Row::ExactlyOnce(n) = row {
        builder = builder
            .exactly_once(unique_name("handlers"))
            .records_per_transaction(n);
    }
    let m = builder.build().await.expect("build");
    let count = Arc::new(kavari_benches::Count::default());
    let handler = Handler {
        count: Arc::clone(&count),
        work,
        out: out.clone(),
    };
    match row {
        Row::Order(_) | Row::ExactlyOnce(_) => m.subscribe::<Job, _>(handler),
        Row::Batch(n) => m.subscribe_batch::<Job, _>(n, Duration::from_millis(100), handler),
    }
    .expect("subscribe");
    m.start().await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(o.seconds) + Duration::from_secs(10);
    // The clock starts with the first record handled (after the join).
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = *count.first.lock().unwrap_or_else(|p| p.into_inner());
        let done = count.handled.load(Ordering::Relaxed) >= o.records;
        if done || started.is_some_and(|t| t.elapsed() >= Duration::from_secs(o.seconds)) {
            break;
        }
    }
    let rate = count.rate();
    let _ = tokio::time::timeout(Duration::from_secs(30), m.shutdown()).await;
    rate
}

#[tokio::main]
async fn main() {
    let o = opts();
    let cluster = KafkaBroker::start().await.expect("broker");
    let broker = cluster.bootstrap_servers().to_string();
    let out = Kavari::builder(broker.clone())
        .build()
        .await
        .expect("build");
    for topic in [Job::TOPIC, JobDone::TOPIC] {
        cluster.create_topic(topic, o.partitions).await.ok();
    }
    let jobs: Vec<Job> = (0..o.records)
        .map(|n| Job {
            id: format!("job-{n}"),
            n,
        })
        .collect();
    for chunk in jobs.chunks(10_000) {
        for r in out.publish_batch(chunk).await {
            r.expect("publish");
        }
    }
    let rows = [
        Row::Order(ProcessingOrder::Partition),
        Row::Order(ProcessingOrder::Key { max_in_flight: 16 }),
        Row::Order(ProcessingOrder::Key { max_in_flight: 64 }),
        Row::Order(ProcessingOrder::Key { max_in_flight: 256 }),
        Row::Batch(100),
    ];
    let mut table = format!(
        "Records handled per second, {} partitions, {} records with distinct keys (at most {} s per row):\n\n\
         | | waits 20 ms | publishes one message |\n| --- | ---: | ---: |\n",
        o.partitions, o.records, o.seconds
    );
    let mut base: Option<(f64, f64)> = None;
    let commits = Arc::new(Commits::default());
    {
        use tracing_subscriber::layer::SubscriberExt;
        let layer = CommitLog(Arc::clone(&commits)).with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("kavari::consume::worker::in_order", tracing::Level::DEBUG),
        );
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the commit log");
    }
    for row in rows {
        let sleep = measure(&broker, &o, row, Work::Sleep, &out).await;
        let publish = measure(&broker, &o, row, Work::Publish, &out).await;
        let (s0, p0) = *base.get_or_insert((sleep, publish));
        let line = format!(
            "| {} | {sleep:.0} ({:.1}x) | {publish:.0} ({:.1}x) |\n",
            row.label(),
            sleep / s0.max(1e-9),
            publish / p0.max(1e-9)
        );
        eprint!("{line}");
        table.push_str(&line);
    }
    let at_least_once = base.map_or(0.0, |b| b.1);
    table.push_str(
        "\nThe publishing handler exactly once (partition order), against at-least-once in partition order above; \
         each transaction's commit (AddOffsetsToTxn, TxnOffsetCommit, EndTxn) timed:\n\n\
         | records per transaction, at most | records/s | exactly once / at-least-once | commit p50 / p99 ms | records per transaction, mean |\n\
         | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for n in [1, 10, 100] {
        commits.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let rate = measure(&broker, &o, Row::ExactlyOnce(n), Work::Publish, &out).await;
        let (p50, p99, mean) = commits.summary();
        let line = format!(
            "| {n} | {rate:.0} | {:.2} | {p50:.1} / {p99:.1} | {mean:.1} |\n",
            rate / at_least_once.max(1e-9)
        );
        eprint!("{line}");
        table.push_str(&line);
    }
    let _ = out.shutdown().await;
    if let Some(dir) = std::path::Path::new(&o.out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&o.out, &table).expect("write the table");
    print!("{table}");
}
