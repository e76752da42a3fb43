//! `kavari-load`: publish throughput, consume throughput, end-to-end latency
//! and peak RSS for Kavari and its peers (raw rskafka, librdkafka, krafka,
//! kacrab and the Java client), on the same broker and topic layout, in one
//! run, with each client at its default and publishing with idempotence the
//! other way too. Each measurement runs in a process of its own, so each
//! peak RSS belongs to one client.
//!
//! ```sh
//! cargo run --release -p kavari-benches --bin kavari-load -- \
//!     [--broker nisshi|kafka] [--messages 100000] [--size 100] [--partitions 3] \
//!     [--rate 1000] [--seconds 5] [--repeat 1] [--clients kavari,krafka,...] \
//!     [--tls] [--instructions] [--log DIR] [--out target/kavari-load.md]
//! ```
//!
//! `--broker` picks nisshi (one process) or the three-broker Apache Kafka
//! cluster of the tests (topics with three copies, `min.insync.replicas`
//! 2; every client writes with acks all); the default is what
//! `KAVARI_TEST_BROKER` names, and `KAVARI_BROKERS` overrides both. The
//! Markdown table goes to `--out`, and an SVG chart of Kavari's ratios
//! beside it (the same name, `.svg`).
//!
//! `--log DIR` keeps each run's stderr in `DIR/<client>-<mode>-<n>.log`
//! (the driver otherwise shows only a failed run's last lines). With
//! `RUST_LOG=kavari::publish::sink=debug`, Kavari's runs log each produce
//! request's round trip there, which is how the brokers' answer times are
//! compared between modes.
//!
//! `--help` prints the flags; a flag it does not know, or a number that
//! does not parse, is refused before anything starts.
//!
//! `--instructions` instead counts each client's instructions per
//! published and per consumed record under callgrind (`instructions.rs`).
//!
//! `--tls` adds Kavari over SASL_SSL (TLS with the pure-Rust graviola
//! provider, SCRAM-SHA-512) to a second broker that requires both, and as
//! its baseline Kavari in plaintext to a third on the same (file) storage,
//! which SASL users need and which is slower than memory: publish, consume,
//! and the handshake of a new connection (connect, API versions, TLS,
//! SASL).
//!
//! The peers that compile C are built on first use outside the workspace
//! (`benches/rdkafka-peer`, `benches/rust-peers`); the Java peer runs on
//! the JVM with the Kafka jars of the tests.

mod chart;
mod compare;
mod instructions;
mod peers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler};
use kavari_benches::{
    Stamped, fetch_to_end, kavari_latency, micros, partition_clients, peak_rss_kb, raw_record,
};
use kavari_testcontainers::{KafkaBroker, TestBroker, unique_name};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::record::Record;
use serde::{Deserialize, Serialize};

use crate::compare::{Metric, Results, Run};
use crate::peers::Peers;

/// The consume workload's messages (every client reads the same data).
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-load.consume", name = "Payload")]
struct ConsumeLoad {
    #[kavari(key)]
    id: String,
    #[serde(with = "serde_bytes_compat")]
    body: Vec<u8>,
}

/// The publish workload's messages: the same fields on a topic of their own,
/// which every client publishes to. The body is shared, as the peers share
/// theirs: `publish` borrows the message until its answer, and a window of
/// 20,000 copies would weigh on Kavari's RSS, not on the client's.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-load.publish", name = "Payload")]
struct PublishLoad {
    #[kavari(key)]
    id: String,
    #[serde(with = "serde_bytes_compat")]
    body: std::sync::Arc<[u8]>,
}

mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: Default>(d: D) -> Result<T, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| T::default())
    }
}

#[derive(Debug, Clone)]
struct Opts {
    messages: usize,
    size: usize,
    partitions: i32,
    rate: u64,
    seconds: u64,
    repeat: usize,
    tls: bool,
    instructions: bool,
    broker: TestBroker,
    clients: Option<Vec<String>>,
    log: Option<PathBuf>,
    out: PathBuf,
}

/// How long the Kafka cluster idles before each publishing run.
const SETTLE: Duration = Duration::from_secs(3);

/// How to call the driver, for `--help` and a mistaken flag.
const USAGE: &str = "usage: kavari-load [--broker nisshi|kafka] [--messages 100000] [--size 100] \
[--partitions 3] [--rate 1000] [--seconds 5] [--repeat 1] [--clients kavari,krafka,...] \
[--tls] [--instructions] [--log DIR] [--out target/kavari-load.md]";

/// The driver's flags that take a value, and those that stand alone.
const VALUED: [&str; 10] = [
    "--broker",
    "--messages",
    "--size",
    "--partitions",
    "--rate",
    "--seconds",
    "--repeat",
    "--clients",
    "--log",
    "--out",
];
const SWITCHES: [&str; 2] = ["--tls", "--instructions"];

/// Checks the driver's command line before anything starts: `--help`
/// prints the usage, and an unknown flag, a flag without its value or a
/// number that does not parse is refused rather than a run of minutes
/// started with defaults.
fn check_args(args: &[String]) -> Result<(), String> {
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        if SWITCHES.contains(&a.as_str()) {
            continue;
        }
        if !VALUED.contains(&a.as_str()) {
            return Err(format!("unknown argument {a:?}"));
        }
        let Some(value) = rest.next() else {
            return Err(format!("{a} needs a value"));
        };
        let numeric = !matches!(a.as_str(), "--broker" | "--clients" | "--log" | "--out");
        if numeric && value.parse::<u64>().is_err() {
            return Err(format!("{a} takes a whole number, not {value:?}"));
        }
    }
    Ok(())
}

fn opts() -> Opts {
    use kavari_benches::arg;
    Opts {
        messages: arg("--messages").unwrap_or(100_000),
        size: arg("--size").unwrap_or(100),
        partitions: arg("--partitions").unwrap_or(3),
        rate: arg("--rate").unwrap_or(1_000),
        seconds: arg("--seconds").unwrap_or(5),
        repeat: arg("--repeat").unwrap_or(1),
        tls: std::env::args().any(|a| a == "--tls"),
        instructions: std::env::args().any(|a| a == "--instructions"),
        broker: match arg::<String>("--broker") {
            Some(name) => name.parse().expect("--broker nisshi|kafka"),
            None => TestBroker::from_env().expect("KAVARI_TEST_BROKER"),
        },
        clients: arg::<String>("--clients")
            .map(|list| list.split(',').map(str::to_string).collect()),
        log: arg("--log"),
        out: arg("--out").unwrap_or_else(|| "target/kavari-load.md".into()),
    }
}

// ---------------------------------------------------------------------------
// Workers: one measurement, printed as `RESULT k=v ...`.

async fn worker(args: &[String]) {
    let (client, mode, bootstrap, topic) = (&args[0], &args[1], &args[2], &args[3]);
    let n: u64 = args[4].parse().expect("count or rate");
    let m: u64 = args[5].parse().expect("size or seconds");
    let line = match (client.as_str(), mode.as_str()) {
        ("kavari", "publish") => {
            kavari_publish(bootstrap, topic, n as usize, m as usize, true).await
        }
        ("kavari-plain", "publish") => {
            kavari_publish(bootstrap, topic, n as usize, m as usize, false).await
        }
        ("rskafka", "publish") => rskafka_publish(bootstrap, topic, n as usize, m as usize).await,
        ("kavari", "consume") => kavari_consume(bootstrap, n as usize).await,
        ("rskafka", "consume") => rskafka_consume(bootstrap, topic, n as usize).await,
        ("kavari", "latency") => kavari_latency_run(bootstrap, n, m).await,
        ("kavari", "handshake") => handshake(bootstrap, n as usize).await,
        ("rskafka", "latency") => rskafka_latency(bootstrap, topic, n, m).await,
        other => panic!("unknown worker {other:?}"),
    };
    println!("RESULT {line} rss_kb={}", peak_rss_kb());
}

fn payload(i: usize, size: usize) -> ConsumeLoad {
    ConsumeLoad {
        id: kavari_benches::peer::key(i),
        body: vec![0xab; size],
    }
}

/// Where the TLS broker's CA is, for a worker that connects over TLS.
const TLS_CA_VAR: &str = "KAVARI_LOAD_TLS_CA";

/// The SCRAM user of the SASL_SSL broker.
const LOAD_USER: &str = "load";
const LOAD_PASSWORD: &str = "kavari-load password";

/// How the driver secured the worker's broker: SASL_SSL when it named a
/// CA, plaintext otherwise.
fn security() -> kavari::Security {
    match std::env::var(TLS_CA_VAR) {
        Ok(ca) => kavari::Security::plaintext()
            .with_tls(
                kavari::Tls::builder()
                    .ca_file(ca)
                    .build()
                    .expect("TLS settings"),
            )
            .with_sasl(kavari::Sasl::scram_sha512(LOAD_USER, LOAD_PASSWORD)),
        Err(_) => kavari::Security::plaintext(),
    }
}

/// A builder for `bootstrap`, secured as the driver said.
fn kavari_builder(bootstrap: &str) -> kavari::KavariBuilder {
    Kavari::builder(bootstrap).security(security())
}

/// How long a new connection takes to be ready for requests: TCP connect,
/// API versions and, on the secured broker, TLS and SASL; the median of
/// `n` connections, one after another.
async fn handshake(bootstrap: &str, n: usize) -> String {
    let ms = kavari_benches::median_connect_ms(bootstrap, security(), n).await;
    format!("handshake_ms={ms:.2}")
}

/// Kavari's publishes, idempotent (the default) or not.
async fn kavari_publish(
    bootstrap: &str,
    topic: &str,
    n: usize,
    size: usize,
    idempotent: bool,
) -> String {
    assert_eq!(
        topic,
        PublishLoad::TOPIC,
        "Kavari publishes its type's topic"
    );
    let mut builder = kavari_builder(bootstrap);
    if !idempotent {
        builder = builder.enable_idempotence(false);
    }
    let manager = builder.build().await.expect("build");
    // At most 20,000 unanswered publishes, driven from one task, as every
    // peer is driven (`rust-peers`' publish_all, the librdkafka peer's
    // buffer_unordered, the Java peer's semaphore).
    const WINDOW: usize = 20_000;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut failed = 0;
    let body: std::sync::Arc<[u8]> = vec![0xab; size].into();
    let started = Instant::now();
    for i in 0..n {
        while in_flight.len() >= WINDOW {
            if let Some(Err(_)) = in_flight.next().await {
                failed += 1;
            }
        }
        let manager = &manager;
        let msg = PublishLoad {
            id: kavari_benches::peer::key(i),
            body: body.clone(),
        };
        in_flight.push(async move { manager.publish(&msg).await });
    }
    while let Some(r) = in_flight.next().await {
        if r.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "publishes failed");
    let secs = started.elapsed().as_secs_f64();
    let stats = manager.publish_stats();
    manager.shutdown().await.expect("shutdown");
    format!(
        "msgs_per_s={:.0} mb_per_s={:.1} produce_requests={} batches={} failed_requests={}",
        n as f64 / secs,
        (n * (size + 40)) as f64 / secs / 1e6,
        stats.produce_requests,
        stats.batches_sent,
        stats.failed_requests,
    )
}

async fn rskafka_client(bootstrap: &str) -> rskafka::client::Client {
    rskafka::client::ClientBuilder::new(bootstrap.split(',').map(str::to_string).collect())
        .build()
        .await
        .expect("client")
}

async fn rskafka_publish(bootstrap: &str, topic: &str, n: usize, size: usize) -> String {
    let client = rskafka_client(bootstrap).await;
    // Timed from a built client that knows nothing of the topic, as every
    // other client is: looking up its partitions and connecting to their
    // leaders count, as they do for Kavari's first publishes. (Timed after
    // them, raw rskafka's 64-partition runs on Kafka measured 1.2-1.4x
    // what the same runs gave with them.)
    let started = Instant::now();
    let pcs = partition_clients(&client, topic).await;
    produce_raw(&pcs, n, size).await;
    let secs = started.elapsed().as_secs_f64();
    format!(
        "msgs_per_s={:.0} mb_per_s={:.1}",
        n as f64 / secs,
        (n * (size + 40)) as f64 / secs / 1e6
    )
}

/// What a raw rskafka user writes: `n` payloads split over the partitions,
/// each produced in batches of about 256 KiB (above rskafka's Nagle stall at
/// 9-64 KiB), all partitions at once.
async fn produce_raw(pcs: &[rskafka::client::partition::PartitionClient], n: usize, size: usize) {
    let batch = (256 * 1024 / (size + 64)).max(1);
    let per = n.div_ceil(pcs.len());
    futures::future::join_all(pcs.iter().enumerate().map(|(p, pc)| async move {
        let ids: Vec<usize> = (p * per..((p + 1) * per).min(n)).collect();
        for chunk in ids.chunks(batch) {
            let records = chunk
                .iter()
                .map(|&i| {
                    let m = payload(i, size);
                    raw_record(&m.id, "Payload", &m)
                })
                .collect();
            pc.produce(records, Compression::NoCompression)
                .await
                .expect("produce");
        }
    }))
    .await;
}

struct Count(Arc<AtomicU64>);

impl MessageHandler<ConsumeLoad> for Count {
    async fn handle(&self, _: ConsumeLoad, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn kavari_consume(bootstrap: &str, n: usize) -> String {
    let count = Arc::new(AtomicU64::new(0));
    let manager = kavari_builder(bootstrap)
        .group_id(unique_name("load"))
        .build()
        .await
        .expect("build");
    manager
        .subscribe::<ConsumeLoad, _>(Count(Arc::clone(&count)))
        .expect("subscribe");
    manager.start().await.expect("start");
    let rate = kavari_benches::consume_rate(&count, n as u64).await;
    manager.shutdown().await.expect("shutdown");
    format!("msgs_per_s={rate:.0}")
}

async fn rskafka_consume(bootstrap: &str, topic: &str, n: usize) -> String {
    let client = rskafka_client(bootstrap).await;
    let pcs = partition_clients(&client, topic).await;
    let started = Instant::now();
    // Decode, as a consumer must.
    let count = fetch_to_end(&pcs, |v| {
        let _: ConsumeLoad = rmp_serde::from_slice(v).expect("decode");
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    format!("msgs_per_s={:.0}", count.min(n) as f64 / secs)
}

async fn kavari_latency_run(bootstrap: &str, rate: u64, seconds: u64) -> String {
    kavari_benches::peer::latency_fields(
        kavari_latency(bootstrap, rate, seconds, Duration::from_millis(20)).await,
    )
}

async fn rskafka_latency(bootstrap: &str, topic: &str, rate: u64, seconds: u64) -> String {
    let client = Arc::new(rskafka_client(bootstrap).await);
    let pc = Arc::new(
        client
            .partition_client(topic, 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition client"),
    );
    let start = pc.get_offset(OffsetAt::Latest).await.expect("offset");
    let total = rate * seconds;
    let reader = {
        let pc = Arc::clone(&pc);
        tokio::spawn(async move {
            let (mut offset, mut samples) = (start, Vec::new());
            while (samples.len() as u64) < total {
                let Ok(Ok((records, _))) = tokio::time::timeout(
                    Duration::from_secs(30),
                    pc.fetch_records(offset, 1..1024 * 1024, 20),
                )
                .await
                else {
                    break;
                };
                for r in records {
                    offset = r.offset + 1;
                    if let Ok(m) = rmp_serde::from_slice::<Stamped>(
                        r.record.value.as_deref().unwrap_or_default(),
                    ) {
                        samples.push(micros().saturating_sub(m.sent_micros));
                    }
                }
            }
            samples
        })
    };
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for id in 0..total {
        tick.tick().await;
        let pc = Arc::clone(&pc);
        tokio::spawn(async move {
            let m = Stamped {
                id,
                sent_micros: micros(),
            };
            let record = Record {
                key: Some(id.to_string().into_bytes()),
                value: Some(rmp_serde::to_vec_named(&m).expect("encode")),
                headers: BTreeMap::from([("msg_type".to_string(), b"Stamped".to_vec())]),
                timestamp: chrono::Utc::now(),
            };
            let _ = pc.produce(vec![record], Compression::NoCompression).await;
        });
    }
    kavari_benches::peer::latency_fields(reader.await.expect("reader"))
}

// ---------------------------------------------------------------------------
// The driver.

fn parse_result(stdout: &str) -> Run {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs one worker and reads its result line. Its stderr goes to `log`
/// when given (`--log`), and is otherwise kept for the lines shown when
/// the run fails or has failed records.
fn run(cmd: &mut Command, what: &str, log: Option<&Path>) -> Run {
    if let Some(path) = log {
        match std::fs::File::create(path) {
            Ok(file) => {
                cmd.stderr(file);
            }
            Err(e) => eprintln!("kavari-load: could not create {}: {e}", path.display()),
        }
    }
    let see = match log {
        Some(path) => format!(" (its log: {})", path.display()),
        None => String::new(),
    };
    match cmd.output() {
        Ok(out) if out.status.success() => {
            let result = parse_result(&String::from_utf8_lossy(&out.stdout));
            if result.get("errors").is_some_and(|n| n != "0") {
                // A run with failed records is reported with what went
                // wrong: its rate counts them.
                let stderr = String::from_utf8_lossy(&out.stderr);
                let first: Vec<&str> = stderr.lines().take(3).collect();
                eprintln!("kavari-load: {what} had errors{see}: {}", first.join(" | "));
            }
            result
        }
        Ok(out) => {
            eprintln!(
                "kavari-load: {what} failed{see}: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            Run::new()
        }
        Err(e) => {
            eprintln!("kavari-load: {what} could not run: {e}");
            Run::new()
        }
    }
}

/// Where `--log` keeps one run's stderr: `<client>-<mode>-<run>.log`.
fn log_path(o: &Opts, client: &str, mode: &str, run: &str) -> Option<PathBuf> {
    let dir = o.log.as_ref()?;
    Some(dir.join(format!("{client}-{mode}-{run}.log")))
}

async fn preload(broker: &KafkaBroker, topic: &str, n: usize, size: usize) {
    let client = broker.client().await.expect("client");
    produce_raw(&partition_clients(&client, topic).await, n, size).await;
}

/// The consume topic's records on a TLS broker (rskafka has no TLS without
/// C): written by Kavari itself, unmeasured.
async fn preload_tls(broker: &KafkaBroker, n: usize, size: usize) {
    let ca = broker.tls_ca_file().expect("a TLS broker");
    let manager = Kavari::builder(broker.bootstrap_servers())
        .tls(
            kavari::Tls::builder()
                .ca_file(ca)
                .build()
                .expect("TLS settings"),
        )
        .sasl(kavari::Sasl::scram_sha512(LOAD_USER, LOAD_PASSWORD))
        .build()
        .await
        .expect("build");
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let msgs: Vec<ConsumeLoad> = chunk.iter().map(|&i| payload(i, size)).collect();
        for r in manager.publish_batch(&msgs).await {
            r.expect("preload over TLS");
        }
    }
    manager.shutdown().await.expect("shutdown");
}

/// One run of `client` in `mode`, in a process of its own; `run` names
/// its log (`--log`).
fn run_client(
    (client, mode, run_name): (&str, &str, &str),
    o: &Opts,
    brokers: &Brokers,
    me: &Path,
    peers: &Peers,
) -> Run {
    let log = log_path(o, client, mode, run_name);
    match client_command(client, mode, o, brokers, me, peers) {
        Some(mut cmd) => run(&mut cmd, &format!("{client} {mode}"), log.as_deref()),
        None => Run::new(),
    }
}

/// The command of one run of `client` in `mode`; `None` when the client's
/// program is missing.
fn client_command(
    client: &str,
    mode: &str,
    o: &Opts,
    brokers: &Brokers,
    me: &Path,
    peers: &Peers,
) -> Option<Command> {
    let broker = brokers.of(client);
    let bootstrap = broker.bootstrap_servers();
    let topic = match mode {
        "publish" => PublishLoad::TOPIC.to_string(),
        "consume" => ConsumeLoad::TOPIC.to_string(),
        _ => Stamped::TOPIC.to_string(),
    };
    let (a, b) = match mode {
        "latency" => (o.rate.to_string(), o.seconds.to_string()),
        _ => (o.messages.to_string(), o.size.to_string()),
    };
    match peers.command(client) {
        Some(Err(_)) => None,
        Some(Ok(mut cmd)) => {
            cmd.arg(mode).arg(&bootstrap).arg(&topic);
            match mode {
                "publish" => cmd.arg(&a).arg(&b).args(peers::idempotence_word(client)),
                "consume" => cmd.arg(&a).arg(unique_name("peer")),
                _ => cmd.arg(&a).arg(&b).arg(unique_name("peer")),
            };
            Some(cmd)
        }
        None => {
            let mut cmd = Command::new(me);
            if let Some(worker) = client.strip_suffix("-tls").or(client.strip_suffix("-file")) {
                if let Some(ca) = broker.tls_ca_file() {
                    cmd.env(TLS_CA_VAR, ca);
                }
                cmd.args(["--worker", worker, mode, &bootstrap, &topic, &a, &b]);
            } else {
                cmd.args(["--worker", client, mode, &bootstrap, &topic, &a, &b]);
            }
            Some(cmd)
        }
    }
}

/// The brokers of a run: plaintext (nisshi in memory, or the Kafka
/// cluster); for `--tls`, one requiring SASL_SSL and, as its baseline, a
/// plaintext one on the same file storage (SASL users need it, and it is
/// slower than memory).
struct Brokers {
    plain: KafkaBroker,
    tls: Option<(KafkaBroker, KafkaBroker)>,
}

impl Brokers {
    /// The broker `client` runs against.
    fn of(&self, client: &str) -> &KafkaBroker {
        match (client, &self.tls) {
            ("kavari-tls", Some((tls, _))) => tls,
            ("kavari-file", Some((_, file))) => file,
            _ => &self.plain,
        }
    }
}

/// What the tables call `client`, and why it did not run if it could not.
fn describe(client: &str, peers: &Peers) -> String {
    let name = match client {
        "rskafka" => "raw rskafka 0.6",
        "kavari" => "kavari (idempotent, its default)",
        "kavari-plain" => "kavari, idempotence off",
        "rdkafka" => "librdkafka (rust-rdkafka 0.39), idempotence off (its default)",
        "rdkafka-idempotent" => "librdkafka, idempotent",
        "krafka" => "krafka 0.28.1 (idempotent, its default)",
        "krafka-plain" => "krafka, idempotence off",
        "kacrab" => "kacrab 0.4.0 (idempotent, its default)",
        "kacrab-plain" => "kacrab, idempotence off",
        "java" => "Java kafka-clients 4.4.0 (idempotent, its default)",
        "java-plain" => "Java kafka-clients, idempotence off",
        "kavari-tls" => "kavari over SASL_SSL (graviola, SCRAM-SHA-512), file storage",
        "kavari-file" => "kavari, plaintext, file storage",
        other => other,
    };
    match peers.missing(client) {
        Some(why) => format!("{name}: not run ({why})"),
        None => name.to_string(),
    }
}

/// Whether `client` runs `mode`: a client's second idempotence setting
/// publishes only, the TLS pair measures no latency.
fn runs(client: &str, mode: &str) -> bool {
    if peers::idempotence_word(client).is_some() {
        return mode == "publish";
    }
    match client {
        "kavari-tls" | "kavari-file" => mode != "latency",
        _ => true,
    }
}

async fn driver(o: Opts) {
    if let Some(dir) = &o.log
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("kavari-load: could not create {}: {e}", dir.display());
    }
    let broker = KafkaBroker::builder()
        .broker(o.broker)
        .start()
        .await
        .expect("broker");
    let me = std::env::current_exe().expect("own path");
    broker
        .create_topic(ConsumeLoad::TOPIC, o.partitions)
        .await
        .ok();
    broker
        .create_topic(PublishLoad::TOPIC, o.partitions)
        .await
        .ok();
    broker.create_topic(Stamped::TOPIC, 1).await.ok();
    preload(&broker, ConsumeLoad::TOPIC, o.messages, o.size).await;
    let tls = if o.tls {
        let tls = KafkaBroker::builder()
            .broker(o.broker)
            .tls(&["127.0.0.1"])
            .sasl_user(LOAD_USER, LOAD_PASSWORD)
            .start()
            .await
            .expect("a SASL_SSL broker");
        for topic in [ConsumeLoad::TOPIC, PublishLoad::TOPIC] {
            tls.create_topic(topic, o.partitions).await.ok();
        }
        preload_tls(&tls, o.messages, o.size).await;
        let file = KafkaBroker::builder()
            .broker(o.broker)
            .storage(kavari_testcontainers::Storage::File)
            .start()
            .await
            .expect("a broker on file storage");
        for topic in [ConsumeLoad::TOPIC, PublishLoad::TOPIC] {
            file.create_topic(topic, o.partitions).await.ok();
        }
        preload(&file, ConsumeLoad::TOPIC, o.messages, o.size).await;
        Some((tls, file))
    } else {
        None
    };
    let brokers = Brokers { plain: broker, tls };

    // Each client at its default, and publishing with idempotence the other
    // way, so every client meets Kavari with idempotence alike.
    let mut clients = vec![
        "rskafka",
        "kavari",
        "rdkafka",
        "krafka",
        "kacrab",
        "java",
        "kavari-plain",
        "rdkafka-idempotent",
        "krafka-plain",
        "kacrab-plain",
        "java-plain",
    ];
    if let Some(only) = &o.clients {
        clients.retain(|c| only.iter().any(|o| o == c || o == peers::family(c)));
    }
    if o.tls {
        clients.extend(["kavari-file", "kavari-tls"]);
    }
    let peers = Peers::build(&clients);
    if o.instructions {
        let command = |client: &str, mode: &str, n: usize| {
            let o = Opts {
                messages: n,
                ..o.clone()
            };
            client_command(client, mode, &o, &brokers, &me, &peers)
                .ok_or_else(|| peers.missing(client).unwrap_or_default())
        };
        let top_up = preload(&brokers.plain, ConsumeLoad::TOPIC, o.messages, o.size);
        let out = instructions::table(o.messages, o.size, command, top_up).await;
        print!("{out}");
        return;
    }
    // A fresh cluster is cold: its brokers' produce path is not compiled
    // yet and the first idempotent producer waits for a block of producer
    // ids. One idempotent publish before the clock (unmeasured) keeps that
    // off whichever client would have run first.
    let warm_up = run_client(("kavari", "publish", "warm-up"), &o, &brokers, &me, &peers);
    eprintln!("kavari-load: warm-up publish (not counted): {warm_up:?}");
    let modes = ["publish", "consume", "latency"];
    // Every client's runs of every mode, in `peers::run_order`.
    let mut all: BTreeMap<(String, String), Vec<Run>> = BTreeMap::new();
    for repeat in 0..o.repeat.max(1) {
        for mode in modes {
            for client in peers::run_order(&clients, repeat) {
                if !runs(client, mode) {
                    continue;
                }
                // On nisshi every publish and latency run writes to an empty
                // topic: it holds every record in memory, and by the third
                // repeat a long latency log cost it a core per fetch. Kafka
                // keeps its logs on disk, and a topic made just before a run
                // measures its brokers still setting up its replicas.
                let fresh = match mode {
                    _ if o.broker != TestBroker::Nisshi => None,
                    "publish" => Some((PublishLoad::TOPIC, o.partitions)),
                    "latency" => Some((Stamped::TOPIC, 1)),
                    _ => None,
                };
                if let Some((topic, partitions)) = fresh {
                    brokers
                        .plain
                        .recreate_topic(topic, partitions)
                        .await
                        .expect("an empty topic");
                }
                if mode == "publish" && o.broker != TestBroker::Nisshi {
                    // The cluster finishes what the run before left it
                    // (replicas catching up, logs flushed) before the
                    // clock: the first of a client's two publishing runs
                    // measured it otherwise.
                    tokio::time::sleep(SETTLE).await;
                }
                let run_name = (repeat + 1).to_string();
                let result = run_client((client, mode, &run_name), &o, &brokers, &me, &peers);
                eprintln!("kavari-load: {client} {mode}: {result:?}");
                all.entry((client.to_string(), mode.to_string()))
                    .or_default()
                    .push(result);
            }
        }
    }
    let results = Results::from_runs(all);
    let broker_name = match o.broker {
        TestBroker::Nisshi => "nisshi (one process, in memory)".to_string(),
        _ => format!(
            "Apache Kafka {} (three brokers, replication 3, min.insync.replicas 2, acks all)",
            kavari_testcontainers::KAFKA_VERSION
        ),
    };
    let out = tables(&o, &results, &clients, &peers, &brokers, &me, &broker_name);
    print!("{out}");
    if let Some(dir) = o.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&o.out, &out) {
        Ok(()) => eprintln!("kavari-load: table written to {}", o.out.display()),
        Err(e) => eprintln!("kavari-load: could not write {}: {e}", o.out.display()),
    }
    let svg = o.out.with_extension("svg");
    let title = format!(
        "{} B, {} partitions, {}",
        o.size,
        o.partitions,
        match o.broker {
            TestBroker::Nisshi => "nisshi",
            _ => "Kafka, 3 brokers",
        }
    );
    match chart::draw(&results, &title, &svg) {
        Ok(()) => eprintln!("kavari-load: chart written to {}", svg.display()),
        Err(e) => eprintln!("kavari-load: could not draw {}: {e}", svg.display()),
    }
}

/// The run's Markdown: every client's medians, then Kavari over each peer.
fn tables(
    o: &Opts,
    results: &Results,
    clients: &[&str],
    peers: &Peers,
    brokers: &Brokers,
    me: &Path,
    broker_name: &str,
) -> String {
    let fmt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{broker_name}: {} messages of {} B, {} partitions; latency at {} msg/s for {} s; median of {} runs\n\n",
        o.messages, o.size, o.partitions, o.rate, o.seconds, o.repeat
    ));
    out.push_str("| client | publish msgs/s | publish MB/s | consume msgs/s | latency p50 ms | p99 ms | p99.9 ms | peak RSS MiB (publish / consume / latency) |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for &client in clients {
        let cell = |mode, key| results.cell(client, mode, key);
        let rss = |mode| fmt(cell(mode, "rss_kb").map(|k| k / 1024.0), 0);
        let failed = match cell("publish", "errors") {
            Some(n) if n > 0.0 => format!(" ({n:.0} records failed)"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "| {}{failed} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
            describe(client, peers),
            fmt(cell("publish", "msgs_per_s"), 0),
            fmt(cell("publish", "mb_per_s"), 1),
            fmt(cell("consume", "msgs_per_s"), 0),
            fmt(cell("latency", "p50_ms"), 2),
            fmt(cell("latency", "p99_ms"), 2),
            fmt(cell("latency", "p999_ms"), 2),
            rss("publish"),
            rss("consume"),
            rss("latency"),
        ));
    }
    // Kavari over each peer: above 1 is ahead for throughput, behind for
    // latency and memory.
    out.push_str("\n| kavari / | ");
    out.push_str(
        &Metric::ALL
            .iter()
            .map(|m| m.heading())
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" |\n| --- |");
    out.push_str(&" ---: |".repeat(Metric::ALL.len()));
    out.push('\n');
    for peer in &compare::PEERS {
        out.push_str(&format!("| {} |", peer.label));
        for m in Metric::ALL {
            out.push_str(&format!(" {} |", fmt(results.ratio(peer, m), 2)));
        }
        out.push('\n');
    }
    out.push_str("| the best peer |");
    for m in Metric::ALL {
        match results.ratio_to_best(m) {
            Some((r, label)) => out.push_str(&format!(" {r:.2} ({label}) |")),
            None => out.push_str(" n/a |"),
        }
    }
    out.push('\n');
    let own = |a: &str, b: &str| match (
        results.cell(a, "publish", "msgs_per_s"),
        results.cell(b, "publish", "msgs_per_s"),
    ) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    };
    out.push_str(&format!(
        "\nKavari idempotent / Kavari with idempotence off, publishing: {}\n",
        own("kavari", "kavari-plain")
    ));
    // How Kavari's median publish run travelled: batches per request.
    for client in ["kavari", "kavari-plain"] {
        if let (Some(requests), Some(batches)) = (
            results.cell(client, "publish", "produce_requests"),
            results.cell(client, "publish", "batches"),
        ) {
            let failed = results
                .cell(client, "publish", "failed_requests")
                .unwrap_or(0.0);
            out.push_str(&format!(
                "\n{client} publish (median run): {batches:.0} record batches in {requests:.0} produce requests, {failed:.0} of them failed\n"
            ));
        }
    }
    if o.tls {
        out.push_str(&format!(
            "\nKavari over SASL_SSL / plaintext, both on file storage: publish {}, consume {}\n",
            own("kavari-tls", "kavari-file"),
            match (
                results.cell("kavari-tls", "consume", "msgs_per_s"),
                results.cell("kavari-file", "consume", "msgs_per_s"),
            ) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "n/a".into(),
            }
        ));
        out.push_str(&handshakes(o, brokers, me));
    }
    out
}

/// A new connection's cost on the plaintext and the secured broker, each
/// measured the same way.
fn handshakes(o: &Opts, brokers: &Brokers, me: &Path) -> String {
    let mut took = Vec::new();
    for client in ["kavari-file", "kavari-tls"] {
        let broker = brokers.of(client);
        let mut cmd = Command::new(me);
        if let Some(ca) = broker.tls_ca_file() {
            cmd.env(TLS_CA_VAR, ca);
        }
        let bootstrap = broker.bootstrap_servers();
        cmd.args([
            "--worker",
            "kavari",
            "handshake",
            &bootstrap,
            "-",
            "15",
            "0",
        ]);
        let log = log_path(o, client, "handshake", "15");
        let r = run(&mut cmd, &format!("{client} handshake"), log.as_deref());
        eprintln!("kavari-load: {client} handshake: {r:?}");
        took.push(
            r.get("handshake_ms")
                .cloned()
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    format!(
        "\nA new connection (TCP, API versions, then TLS and SCRAM-SHA-512 on the secured broker), median of 15: plaintext {} ms, SASL_SSL {} ms\n",
        took[0], took[1]
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(i) = args.iter().position(|a| a == "--worker") {
        // Logs only when asked for (RUST_LOG), to stderr: the result line
        // is stdout's.
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        runtime.block_on(worker(&args[i + 1..]));
    } else if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
    } else if let Err(e) = check_args(&args) {
        eprintln!("kavari-load: {e}\n{USAGE}");
        std::process::exit(2);
    } else {
        runtime.block_on(driver(opts()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &str) -> Vec<String> {
        std::iter::once("kavari-load")
            .chain(args.split_whitespace())
            .map(str::to_string)
            .collect()
    }

    /// The README's and RESULTS.md's command lines pass; a typo, a missing
    /// value or a number with a unit is refused with what was wrong.
    #[test]
    fn a_mistaken_command_line_is_refused_before_a_run() {
        for ok in [
            "",
            "--broker kafka --repeat 3 --partitions 64 --size 1024 --out /tmp/r.md",
            "--broker nisshi --instructions --messages 20000",
            "--tls --clients kavari,krafka",
            "--clients kavari,rskafka --log /tmp/kavari-load-logs",
        ] {
            assert_eq!(check_args(&line(ok)), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("--repeats 3", "unknown argument \"--repeats\""),
            ("--size 1k", "--size takes a whole number"),
            ("--broker", "--broker needs a value"),
            ("kafka", "unknown argument \"kafka\""),
        ] {
            let e = check_args(&line(bad)).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// With `--log`, a run's stderr is kept whole in its file, and its
    /// result line is still read from stdout.
    #[test]
    fn a_runs_log_keeps_its_stderr() {
        let dir = std::env::temp_dir().join(unique_name("kavari-load-log"));
        std::fs::create_dir_all(&dir).expect("a log directory");
        let o = Opts {
            log: Some(dir.clone()),
            ..opts()
        };
        let log = log_path(&o, "kavari", "publish", "2").expect("a log path");
        assert_eq!(log, dir.join("kavari-publish-2.log"));
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "for i in 1 2 3 4 5 6; do echo \"line $i\" >&2; done; echo 'RESULT msgs_per_s=42'",
        ]);
        let result = run(&mut cmd, "sh publish", Some(&log));
        assert_eq!(result.get("msgs_per_s").map(String::as_str), Some("42"));
        let kept = std::fs::read_to_string(&log).expect("the run's log");
        assert_eq!(kept.lines().count(), 6, "{kept}");
        assert!(kept.contains("line 6"), "{kept}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
