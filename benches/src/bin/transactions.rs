//! `kavari-transactions`: publishing in transactions against publishing
//! without, at 1, 10 and 100 records per transaction: records per second
//! and the latency of a transaction (its publishes and its commit).
//!
//! ```sh
//! cargo run --release -p kavari-benches --bin kavari-transactions -- \
//!     [--partitions 3] [--records 3000] [--out target/kavari-transactions.md]
//! ```
//!
//! Each row publishes `--records` records of 100 B, `n` at a time: in a
//! transaction (`Transaction::publish_batch`, then the commit), or with
//! `publish_batch` (idempotent, at-least-once) as the baseline. It starts
//! the test cluster through kavari-testcontainers unless `KAVARI_BROKERS`
//! is set.

use std::time::{Duration, Instant};

use kavari::{KafkaMessage, Kavari};
use kavari_testcontainers::{KafkaBroker, unique_name};
use serde::{Deserialize, Serialize};

/// A record to publish.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-transactions.records")]
struct Entry {
    #[kavari(key)]
    id: String,
    body: String,
}

struct Opts {
    partitions: i32,
    records: usize,
    out: String,
}

fn opts() -> Opts {
    use kavari_benches::arg;
    Opts {
        partitions: arg("--partitions").unwrap_or(3),
        records: arg("--records").unwrap_or(3_000),
        out: arg("--out").unwrap_or_else(|| "target/kavari-transactions.md".into()),
    }
}

/// A row's result: records per second, and the p50 and p99 of a round
/// (a transaction, or a batch without one).
struct Measured {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

async fn measure(m: &Kavari, records: usize, per_round: usize, transactional: bool) -> Measured {
    let entries: Vec<Entry> = (0..records)
        .map(|i| Entry {
            id: format!("e-{i}"),
            body: "x".repeat(100),
        })
        .collect();
    let mut rounds = Vec::with_capacity(records / per_round + 1);
    let started = Instant::now();
    for chunk in entries.chunks(per_round) {
        let round = Instant::now();
        if transactional {
            let chunk = chunk.to_vec();
            m.transaction(|tx| async move {
                tx.publish_batch(&chunk).await?;
                Ok(())
            })
            .await
            .expect("a transaction");
        } else {
            for r in m.publish_batch(chunk).await {
                r.expect("publish");
            }
        }
        rounds.push(round.elapsed());
    }
    let rate = records as f64 / started.elapsed().as_secs_f64();
    rounds.sort_unstable();
    Measured {
        rate,
        p50: percentile(&rounds, 0.5),
        p99: percentile(&rounds, 0.99),
    }
}

#[tokio::main]
async fn main() {
    let o = opts();
    let cluster = KafkaBroker::start().await.expect("broker");
    let broker = cluster.bootstrap_servers().to_string();
    cluster.create_topic(Entry::TOPIC, o.partitions).await.ok();
    let transactional = Kavari::builder(broker.clone())
        .transactional_id(unique_name("kavari-transactions"))
        .build()
        .await
        .expect("build");
    let plain = Kavari::builder(broker).build().await.expect("build");
    // Warm up: metadata, connections, the producer id.
    measure(&transactional, 10, 10, true).await;
    measure(&plain, 10, 10, false).await;
    let mut table = format!(
        "{} records of 100 B on {} partitions:\n\n\
         | records per round | in transactions: records/s | round p50 / p99 ms | publish_batch: records/s | round p50 / p99 ms | transactions / publish_batch |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        o.records, o.partitions
    );
    for per_round in [1, 10, 100] {
        let records = if per_round == 1 {
            o.records / 10
        } else {
            o.records
        };
        let t = measure(&transactional, records, per_round, true).await;
        let p = measure(&plain, records, per_round, false).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let line = format!(
            "| {per_round} | {:.0} | {:.1} / {:.1} | {:.0} | {:.1} / {:.1} | {:.2} |\n",
            t.rate,
            ms(t.p50),
            ms(t.p99),
            p.rate,
            ms(p.p50),
            ms(p.p99),
            t.rate / p.rate.max(1e-9)
        );
        eprint!("{line}");
        table.push_str(&line);
    }
    let _ = transactional.shutdown().await;
    let _ = plain.shutdown().await;
    if let Some(dir) = std::path::Path::new(&o.out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&o.out, &table).expect("write the table");
    print!("{table}");
}
