//! `kavari-rebalance`: what a fourth member joining a group of three costs
//! while the group handles records, by group protocol: the consumer
//! protocol (KIP-848), classic eager (range) and classic
//! cooperative-sticky.
//!
//! ```sh
//! cargo run --release -p kavari-benches --bin kavari-rebalance -- \
//!     [--partitions 200] [--rate 2000] [--runs 5] [--out target/kavari-rebalance.md]
//! ```
//!
//! A publisher writes `--rate` records a second over the topic's
//! partitions the whole time. Each run starts three members of a new
//! group (reading from the end), waits until they split the partitions
//! and handle records, then starts a fourth and measures: the time from
//! its start until the group has settled (the four own every partition
//! once) and every partition has handled a record since; and for each old
//! member, the longest it went without handling anything meanwhile. Medians
//! of `--runs`. It starts the test cluster through kavari-testcontainers
//! unless `KAVARI_BROKERS` is set (the protocol's heartbeat is then the
//! broker's `group.consumer.heartbeat.interval.ms`; the test cluster sets
//! 1 s, as the classic members here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kavari::assignor::{CooperativeStickyAssignor, RangeAssignor};
use kavari::{
    GroupProtocol, HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, OffsetReset,
};
use kavari_testcontainers::{KafkaBroker, unique_name};
use serde::{Deserialize, Serialize};

/// A record of the load.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-rebalance.load")]
struct Tick {
    #[kavari(key)]
    key: String,
}

/// When each member handled a record of each partition, after `since`.
#[derive(Default)]
struct Handled {
    /// (member, partition, when), in the order handled.
    events: Mutex<Vec<(usize, i32, Instant)>>,
}

struct Member(usize, Arc<Handled>);

impl MessageHandler<Tick> for Member {
    async fn handle(&self, _: Tick, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.1
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.0, ctx.partition, Instant::now()));
        Ok(())
    }
}

/// The group protocols compared.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Consumer,
    Eager,
    Cooperative,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Self::Consumer => "consumer protocol (KIP-848, uniform)",
            Self::Eager => "classic, eager (range)",
            Self::Cooperative => "classic, cooperative-sticky",
        }
    }
}

struct Opts {
    partitions: i32,
    rate: u64,
    runs: usize,
    out: String,
}

/// A started member `i` of `group`.
async fn member(
    broker: &str,
    group: &str,
    protocol: Protocol,
    i: usize,
    handled: &Arc<Handled>,
) -> Kavari {
    let mut b = Kavari::builder(broker)
        .group_id(group)
        .auto_offset_reset(OffsetReset::Latest)
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_secs(1));
    b = match protocol {
        Protocol::Consumer => b.group_protocol(GroupProtocol::Consumer),
        Protocol::Eager => b.assignors(vec![Arc::new(RangeAssignor)]),
        Protocol::Cooperative => b.assignors(vec![Arc::new(CooperativeStickyAssignor)]),
    };
    let m = b.build().await.expect("build");
    m.subscribe::<Tick, _>(Member(i, Arc::clone(handled)))
        .expect("subscribe");
    m.start().await.expect("start");
    m
}

fn owned(m: &Kavari) -> BTreeSet<i32> {
    m.health().partitions.iter().map(|p| p.partition).collect()
}

/// Whether `members` own every partition exactly once, each some.
fn settled(members: &[Kavari], partitions: i32) -> bool {
    let owns: Vec<BTreeSet<i32>> = members.iter().map(owned).collect();
    let total: usize = owns.iter().map(BTreeSet::len).sum();
    let all: BTreeSet<i32> = owns.iter().flatten().copied().collect();
    owns.iter().all(|o| !o.is_empty()) && total == partitions as usize && all.len() == total
}

/// One run: the time until every partition is handled again after the
/// fourth member's start, and each old member's longest pause, in ms.
async fn run(broker: &str, o: &Opts, protocol: Protocol) -> Option<(f64, Vec<f64>)> {
    let group = unique_name("rebalance");
    let handled = Arc::new(Handled::default());
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(member(broker, &group, protocol, i, &handled).await);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !settled(&members, o.partitions) {
        if Instant::now() > deadline {
            eprintln!("{}: three members did not settle", protocol.label());
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Handling for a while before the fourth comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let joined = Instant::now();
    members.push(member(broker, &group, protocol, 3, &handled).await);
    let deadline = joined + Duration::from_secs(120);
    let settled_at = loop {
        if settled(&members, o.partitions) {
            break Instant::now();
        }
        if Instant::now() > deadline {
            eprintln!("{}: four members did not settle", protocol.label());
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Every partition handled since the group settled.
    let done_at = loop {
        let first: BTreeMap<i32, Instant> = {
            let events = handled.events.lock().unwrap_or_else(|p| p.into_inner());
            let mut first = BTreeMap::new();
            for (_, p, at) in events.iter().filter(|e| e.2 >= settled_at) {
                first.entry(*p).or_insert(*at);
            }
            first
        };
        if first.len() == o.partitions as usize {
            break first.values().max().copied().unwrap_or(settled_at);
        }
        if Instant::now() > deadline {
            eprintln!("{}: partitions not handled again", protocol.label());
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Each old member's longest gap between records from the join on.
    let pauses = {
        let events = handled.events.lock().unwrap_or_else(|p| p.into_inner());
        (0..3)
            .map(|i| {
                let mut last = joined;
                let mut longest = Duration::ZERO;
                for at in events
                    .iter()
                    .filter(|e| e.0 == i && e.2 >= joined && e.2 <= done_at)
                    .map(|e| e.2)
                {
                    longest = longest.max(at - last);
                    last = at;
                }
                longest
                    .max(done_at.saturating_duration_since(last))
                    .as_secs_f64()
                    * 1000.0
            })
            .collect()
    };
    for m in members {
        let _ = tokio::time::timeout(Duration::from_secs(30), m.shutdown()).await;
    }
    Some(((done_at - joined).as_secs_f64() * 1000.0, pauses))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    use kavari_benches::arg;
    let o = Opts {
        partitions: arg("--partitions").unwrap_or(200),
        rate: arg("--rate").unwrap_or(2_000),
        runs: arg("--runs").unwrap_or(5),
        out: arg("--out").unwrap_or_else(|| "target/kavari-rebalance.md".into()),
    };
    let cluster = KafkaBroker::start().await.expect("broker");
    let broker = cluster.bootstrap_servers().to_string();
    cluster
        .create_topic(Tick::TOPIC, o.partitions)
        .await
        .expect("topic");
    // The load: `rate` records a second, spread over the partitions.
    let publisher = Kavari::builder(broker.clone())
        .build()
        .await
        .expect("publisher");
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (publisher, stop, rate) = (publisher.clone(), Arc::clone(&stop), o.rate);
        tokio::spawn(async move {
            // Every 10 ms: a member's pause shows to about that.
            let per_tick = (rate / 100).max(1);
            let mut n = 0u64;
            let mut every = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                let ticks: Vec<Tick> = (0..per_tick)
                    .map(|i| Tick {
                        key: format!("k{}", n + i),
                    })
                    .collect();
                n += per_tick;
                for r in publisher.publish_batch(&ticks).await {
                    if let Err(e) = r {
                        eprintln!("publish failed: {e}");
                    }
                }
            }
        })
    };
    let mut table = format!(
        "A fourth member joins three that handle {} records/s over {} partitions; medians of {} runs:\n\n\
         | protocol | until every partition is handled again, ms | longest pause of an old member, ms (each of the three) |\n\
         | --- | ---: | --- |\n",
        o.rate, o.partitions, o.runs
    );
    for protocol in [Protocol::Consumer, Protocol::Cooperative, Protocol::Eager] {
        let mut totals = Vec::new();
        let mut pauses: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for _ in 0..o.runs {
            if let Some((total, p)) = run(&broker, &o, protocol).await {
                eprintln!("{}: {total:.0} ms, pauses {p:.0?}", protocol.label());
                totals.push(total);
                for (i, ms) in p.into_iter().enumerate() {
                    pauses[i].push(ms);
                }
            }
        }
        let pauses: Vec<String> = pauses
            .into_iter()
            .map(|p| format!("{:.0}", median(p)))
            .collect();
        let line = format!(
            "| {} | {:.0} | {} |\n",
            protocol.label(),
            median(totals),
            pauses.join(" / ")
        );
        eprint!("{line}");
        table.push_str(&line);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let _ = publisher.shutdown().await;
    if let Some(dir) = std::path::Path::new(&o.out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&o.out, &table).expect("write the table");
    print!("{table}");
}
