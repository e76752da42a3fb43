//! `kavari-share`: jobs per second in a share group (KIP-932) against a
//! consumer group, on a topic of two partitions.
//!
//! ```sh
//! cargo run --release -p kavari-benches --bin kavari-share -- \
//!     [--records 20000] [--seconds 8] [--out target/kavari-share.md]
//! ```
//!
//! Two rows: a handler that waits 20 ms (a job), eight members one job at
//! a time each: a consumer group keeps at most two of them busy (one per
//! partition), a share group all eight; and a handler that does nothing,
//! one member, 64 records in flight in the share group (unordered) and in
//! the consumer group (key order, distinct keys). Each row is a new
//! group reading the records from the beginning for `--seconds` (or to the
//! end); the rate counts records from the first handled to the last. It
//! starts the test cluster through kavari-testcontainers unless
//! `KAVARI_BROKERS` is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kavari::{
    HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, OffsetReset,
    ProcessingOrder,
};
use kavari_benches::Count;
use kavari_testcontainers::{KafkaBroker, unique_name};
use serde::{Deserialize, Serialize};

/// A job.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-share.jobs")]
struct Job {
    #[kavari(key)]
    id: String,
}

struct Work(Arc<Count>, Option<Duration>);

impl MessageHandler<Job> for Work {
    async fn handle(&self, _: Job, _: &MessageContext) -> Result<(), HandlerError> {
        if let Some(wait) = self.1 {
            tokio::time::sleep(wait).await;
        }
        self.0.add(1);
        Ok(())
    }
}

/// Runs `members` members of a new consumer or share group for at most
/// `seconds`; returns records per second.
async fn measure(
    broker: &str,
    share: bool,
    members: usize,
    order: ProcessingOrder,
    wait: Option<Duration>,
    records: u64,
    seconds: u64,
) -> f64 {
    let group = unique_name(if share { "share" } else { "group" });
    let count = Arc::new(Count::default());
    let mut running = Vec::new();
    for _ in 0..members {
        let b = Kavari::builder(broker)
            .auto_offset_reset(OffsetReset::Earliest)
            .processing_order(order);
        let b = if share {
            b.share_group(&group)
        } else {
            b.group_id(&group)
        };
        let m = b.build().await.expect("build");
        m.subscribe::<Job, _>(Work(Arc::clone(&count), wait))
            .expect("subscribe");
        m.start().await.expect("start");
        running.push(m);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds + 20);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = *count.first.lock().unwrap_or_else(|p| p.into_inner());
        let done = count.handled.load(std::sync::atomic::Ordering::Relaxed) >= records;
        if done || started.is_some_and(|t| t.elapsed() >= Duration::from_secs(seconds)) {
            break;
        }
    }
    let rate = count.rate();
    for m in running {
        let _ = tokio::time::timeout(Duration::from_secs(30), m.shutdown()).await;
    }
    rate
}

#[tokio::main]
async fn main() {
    use kavari_benches::arg;
    let records: u64 = arg("--records").unwrap_or(20_000);
    let seconds: u64 = arg("--seconds").unwrap_or(8);
    let out: String = arg("--out").unwrap_or_else(|| "target/kavari-share.md".into());
    let cluster = KafkaBroker::start().await.expect("broker");
    let broker = cluster.bootstrap_servers().to_string();
    cluster.create_topic(Job::TOPIC, 2).await.ok();
    let publisher = Kavari::builder(broker.clone())
        .build()
        .await
        .expect("publisher");
    let jobs: Vec<Job> = (0..records)
        .map(|n| Job {
            id: format!("job-{n}"),
        })
        .collect();
    for chunk in jobs.chunks(500) {
        for r in publisher.publish_batch(chunk).await {
            r.expect("publish");
        }
    }
    let _ = publisher.shutdown().await;
    let wait = Some(Duration::from_millis(20));
    let one = ProcessingOrder::Partition;
    let wide = |order: fn(usize) -> ProcessingOrder| order(64);
    let rows = [
        (
            "waits 20 ms, 8 members one job at a time",
            measure(&broker, false, 8, one, wait, records, seconds).await,
            measure(&broker, true, 8, one, wait, records, seconds).await,
        ),
        (
            "does nothing, 1 member, 64 in flight",
            measure(
                &broker,
                false,
                1,
                wide(|n| ProcessingOrder::Key { max_in_flight: n }),
                None,
                records,
                seconds,
            )
            .await,
            measure(
                &broker,
                true,
                1,
                wide(|n| ProcessingOrder::Unordered { max_in_flight: n }),
                None,
                records,
                seconds,
            )
            .await,
        ),
    ];
    let mut table = format!(
        "Jobs per second on a topic of 2 partitions, {records} jobs (at most {seconds} s per row):\n\n\
         | handler | consumer group | share group | share / consumer |\n| --- | ---: | ---: | ---: |\n"
    );
    for (label, group, share) in rows {
        let line = format!(
            "| {label} | {group:.0} | {share:.0} | {:.2} |\n",
            share / group.max(1e-9)
        );
        eprint!("{line}");
        table.push_str(&line);
    }
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&out, &table).expect("write the table");
    print!("{table}");
}
