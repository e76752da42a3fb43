//! `kavari-load`: publish throughput, consume throughput, end-to-end latency
//! and peak RSS for Kavari, raw rskafka and librdkafka (rust-rdkafka), on the
//! same broker and topic layout, in one run. Each measurement runs in a
//! process of its own, so each peak RSS belongs to one client.
//!
//! ```sh
//! cargo run --release -p kavari-benches --bin kavari-load -- \
//!     [--messages 100000] [--size 100] [--partitions 3] [--rate 1000] [--seconds 5] [--repeat 1] \
//!     [--tls] [--out target/kavari-load.md]
//! ```
//!
//! `--tls` adds Kavari over SASL_SSL (TLS with the pure-Rust graviola
//! provider, SCRAM-SHA-512) to a second broker that requires both, and as
//! its baseline Kavari in plaintext to a third on the same (file) storage,
//! which SASL users need and which is slower than memory: publish, consume,
//! and the handshake of a new connection (connect, API versions, TLS,
//! SASL).
//!
//! It starts a local broker through kavari-testcontainers unless
//! `KAVARI_BROKERS` is set, and builds the rust-rdkafka peer
//! (`benches/rdkafka-peer`, which compiles librdkafka) on first use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler};
use kavari_benches::{
    Stamped, fetch_to_end, kavari_latency, micros, partition_clients, peak_rss_kb, percentile_ms,
    raw_record,
};
use kavari_testcontainers::{KafkaBroker, unique_name};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::record::Record;
use serde::{Deserialize, Serialize};

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
/// which every client publishes to.
#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "kavari-load.publish", name = "Payload")]
struct PublishLoad {
    #[kavari(key)]
    id: String,
    #[serde(with = "serde_bytes_compat")]
    body: Vec<u8>,
}

mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Vec::new())
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
    out: PathBuf,
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
        out: arg("--out").unwrap_or_else(|| "target/kavari-load.md".into()),
    }
}

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    format!(
        "samples={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
        v.len(),
        percentile_ms(&v, 0.5),
        percentile_ms(&v, 0.99),
        percentile_ms(&v, 0.999)
    )
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
        ("kavari-at-least-once", "publish") => {
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
        id: format!("key-{}", i % 1024),
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
    // A task per publish, at most 20,000 in flight; finished tasks are not
    // kept (a held JoinHandle keeps its task's memory).
    const WINDOW: u32 = 20_000;
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW as usize));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    for i in 0..n {
        let permit = Arc::clone(&window).acquire_owned().await.expect("permit");
        let (manager, failed) = (manager.clone(), Arc::clone(&failed));
        tokio::spawn(async move {
            let ConsumeLoad { id, body } = payload(i, size);
            if manager.publish(&PublishLoad { id, body }).await.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let _all_done = window.acquire_many(WINDOW).await.expect("permits");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "publishes failed");
    let secs = started.elapsed().as_secs_f64();
    let stats = manager.publish_stats();
    manager.shutdown().await.expect("shutdown");
    format!(
        "msgs_per_s={:.0} mb_per_s={:.1} produce_requests={} batches={}",
        n as f64 / secs,
        (n * (size + 40)) as f64 / secs / 1e6,
        stats.produce_requests,
        stats.batches_sent,
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
    let pcs = partition_clients(&client, topic).await;
    let started = Instant::now();
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
    percentiles(kavari_latency(bootstrap, rate, seconds, Duration::from_millis(20)).await)
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
    percentiles(reader.await.expect("reader"))
}

// ---------------------------------------------------------------------------
// The driver.

fn parse_result(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(cmd: &mut Command, what: &str) -> BTreeMap<String, String> {
    match cmd.output() {
        Ok(out) if out.status.success() => parse_result(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            eprintln!(
                "kavari-load: {what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            BTreeMap::new()
        }
        Err(e) => {
            eprintln!("kavari-load: {what} could not run: {e}");
            BTreeMap::new()
        }
    }
}

/// Builds the rust-rdkafka peer; `None` (and why) when it cannot build here.
fn rdkafka_peer() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rdkafka-peer");
    eprintln!(
        "kavari-load: building the rust-rdkafka peer (compiles librdkafka; minutes the first time)"
    );
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("cargo build of rdkafka-peer: {status}"));
    }
    Ok(dir.join("target/release/kavari-rdkafka-peer"))
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

fn num(r: &BTreeMap<String, String>, k: &str) -> Option<f64> {
    r.get(k).and_then(|v| v.parse().ok())
}

/// One run of `client` in `mode`, in a process of its own.
async fn run_client(
    client: &str,
    mode: &str,
    o: &Opts,
    brokers: &Brokers,
    me: &Path,
    peer: &Result<PathBuf, String>,
) -> BTreeMap<String, String> {
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
    if client.starts_with("rdkafka") {
        let Ok(bin) = peer else {
            return BTreeMap::new();
        };
        let mut cmd = Command::new(bin);
        cmd.arg(mode).arg(&bootstrap).arg(&topic);
        match mode {
            "publish" if client == "rdkafka-idempotent" => cmd.arg(&a).arg(&b).arg("idempotent"),
            "publish" => cmd.arg(&a).arg(&b),
            "consume" => cmd.arg(&a).arg(unique_name("rdk")),
            _ => cmd.arg(&a).arg(&b).arg(unique_name("rdk")),
        };
        run(&mut cmd, &format!("rdkafka {mode}"))
    } else {
        let mut cmd = Command::new(me);
        if let Some(worker) = client.strip_suffix("-tls").or(client.strip_suffix("-file")) {
            if let Some(ca) = broker.tls_ca_file() {
                cmd.env(TLS_CA_VAR, ca);
            }
            cmd.args(["--worker", worker, mode, &bootstrap, &topic, &a, &b]);
        } else {
            cmd.args(["--worker", client, mode, &bootstrap, &topic, &a, &b]);
        }
        run(&mut cmd, &format!("{client} {mode}"))
    }
}

/// The brokers of a run: plaintext in memory; for `--tls`, one requiring
/// SASL_SSL and, as its baseline, a plaintext one on the same file storage
/// (SASL users need it, and it is slower than memory).
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

async fn driver(o: Opts) {
    let broker = KafkaBroker::start().await.expect("broker");
    let me = std::env::current_exe().expect("own path");
    let peer = rdkafka_peer();
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

    // Kavari without idempotence and librdkafka with it publish only: the
    // cost of idempotence measured in the same run, and each client against
    // the other with idempotence alike (librdkafka's default is off,
    // Kavari's on).
    let mut clients = vec![
        "rskafka",
        "kavari",
        "rdkafka",
        "kavari-at-least-once",
        "rdkafka-idempotent",
    ];
    if o.tls {
        clients.extend(["kavari-file", "kavari-tls"]);
    }
    let modes = ["publish", "consume", "latency"];
    // Every client's runs of every mode. Repeats interleave the clients and
    // each repeat starts with the next one: the in-memory broker slows as it
    // fills, so a fixed order would favour whichever client ran first.
    let mut all: BTreeMap<(&str, &str), Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for repeat in 0..o.repeat.max(1) {
        for mode in modes {
            for i in 0..clients.len() {
                let client = clients[(repeat + i) % clients.len()];
                let only = match client {
                    "kavari-at-least-once" | "rdkafka-idempotent" => mode == "publish",
                    "kavari-tls" | "kavari-file" => mode != "latency",
                    _ => true,
                };
                if !only {
                    continue;
                }
                let result = run_client(client, mode, &o, &brokers, &me, &peer).await;
                eprintln!("kavari-load: {client} {mode}: {result:?}");
                all.entry((client, mode)).or_default().push(result);
            }
        }
    }
    // The median run of each: 2-core machines are noisy.
    let mut rows: BTreeMap<&str, BTreeMap<&str, BTreeMap<String, String>>> = BTreeMap::new();
    for ((client, mode), mut runs) in all {
        let key = if mode == "latency" {
            "p50_ms"
        } else {
            "msgs_per_s"
        };
        runs.sort_by(|a, b| {
            let (a, b) = (num(a, key).unwrap_or(0.0), num(b, key).unwrap_or(0.0));
            a.total_cmp(&b)
        });
        let median = runs.get(runs.len() / 2).cloned().unwrap_or_default();
        rows.entry(client).or_default().insert(mode, median);
    }

    let cell = |client: &str, mode: &str, key: &str| {
        rows.get(client)
            .and_then(|m| m.get(mode))
            .and_then(|r| num(r, key))
    };
    let fmt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".to_string(),
    };
    let ratio = |client: &str, mode: &str, key: &str, base: &str| match (
        cell(client, mode, key),
        cell(base, mode, key),
    ) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{} messages of {} B, {} partitions; latency at {} msg/s for {} s; median of {} runs\n\n",
        o.messages, o.size, o.partitions, o.rate, o.seconds, o.repeat
    ));
    out.push_str("| client | publish msgs/s | publish MB/s | consume msgs/s | latency p50 ms | p99 ms | p99.9 ms | peak RSS MiB (publish / consume / latency) |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for &client in &clients {
        let name = match client {
            "rdkafka" => match &peer {
                Ok(_) => {
                    "librdkafka (rust-rdkafka 0.39), idempotence off (its default)".to_string()
                }
                Err(e) => format!("librdkafka: not built ({e})"),
            },
            "rdkafka-idempotent" => "librdkafka, idempotent".to_string(),
            "rskafka" => "raw rskafka 0.6".to_string(),
            "kavari-at-least-once" => "kavari, idempotence off".to_string(),
            "kavari-tls" => {
                "kavari over SASL_SSL (graviola, SCRAM-SHA-512), file storage".to_string()
            }
            "kavari-file" => "kavari, plaintext, file storage".to_string(),
            _ => "kavari".to_string(),
        };
        let rss = |mode| fmt(cell(client, mode, "rss_kb").map(|k| k / 1024.0), 0);
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
            fmt(cell(client, "publish", "msgs_per_s"), 0),
            fmt(cell(client, "publish", "mb_per_s"), 1),
            fmt(cell(client, "consume", "msgs_per_s"), 0),
            fmt(cell(client, "latency", "p50_ms"), 2),
            fmt(cell(client, "latency", "p99_ms"), 2),
            fmt(cell(client, "latency", "p999_ms"), 2),
            rss("publish"),
            rss("consume"),
            rss("latency"),
        ));
    }
    for base in ["rskafka", "rdkafka"] {
        out.push_str(&format!(
            "| kavari / {base} | {} | {} | {} | {} | {} | {} | {} |\n",
            ratio("kavari", "publish", "msgs_per_s", base),
            ratio("kavari", "publish", "mb_per_s", base),
            ratio("kavari", "consume", "msgs_per_s", base),
            ratio("kavari", "latency", "p50_ms", base),
            ratio("kavari", "latency", "p99_ms", base),
            ratio("kavari", "latency", "p999_ms", base),
            ratio("kavari", "consume", "rss_kb", base),
        ));
    }
    out.push_str(&format!(
        "| kavari / kavari, idempotence off | {} | {} | | | | | |\n",
        ratio("kavari", "publish", "msgs_per_s", "kavari-at-least-once"),
        ratio("kavari", "publish", "mb_per_s", "kavari-at-least-once"),
    ));
    out.push_str(&format!(
        "| kavari / librdkafka, both idempotent | {} | {} | | | | | |\n",
        ratio("kavari", "publish", "msgs_per_s", "rdkafka-idempotent"),
        ratio("kavari", "publish", "mb_per_s", "rdkafka-idempotent"),
    ));
    out.push_str(&format!(
        "| kavari / librdkafka, both idempotence off | {} | {} | | | | | |\n",
        ratio("kavari-at-least-once", "publish", "msgs_per_s", "rdkafka"),
        ratio("kavari-at-least-once", "publish", "mb_per_s", "rdkafka"),
    ));
    // How Kavari's median publish run travelled: batches per request.
    for client in ["kavari", "kavari-at-least-once"] {
        if let (Some(requests), Some(batches)) = (
            cell(client, "publish", "produce_requests"),
            cell(client, "publish", "batches"),
        ) {
            out.push_str(&format!(
                "\n{client} publish (median run): {batches:.0} record batches in {requests:.0} produce requests"
            ));
        }
    }
    out.push('\n');
    if o.tls {
        out.push_str(&format!(
            "| kavari over SASL_SSL / plaintext, both on file storage | {} | {} | {} | | | | {} |\n",
            ratio("kavari-tls", "publish", "msgs_per_s", "kavari-file"),
            ratio("kavari-tls", "publish", "mb_per_s", "kavari-file"),
            ratio("kavari-tls", "consume", "msgs_per_s", "kavari-file"),
            ratio("kavari-tls", "consume", "rss_kb", "kavari-file"),
        ));
    }
    if o.tls {
        // A new connection's cost, each broker measured the same way.
        let mut took = Vec::new();
        for client in ["kavari-file", "kavari-tls"] {
            let broker = brokers.of(client);
            let mut cmd = Command::new(&me);
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
            let r = run(&mut cmd, &format!("{client} handshake"));
            eprintln!("kavari-load: {client} handshake: {r:?}");
            took.push(
                r.get("handshake_ms")
                    .cloned()
                    .unwrap_or_else(|| "n/a".into()),
            );
        }
        out.push_str(&format!(
            "\nA new connection (TCP, API versions, then TLS and SCRAM-SHA-512 on the secured broker), median of 15: plaintext {} ms, SASL_SSL {} ms\n",
            took[0], took[1]
        ));
    }
    print!("{out}");
    if let Some(dir) = o.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&o.out, &out) {
        Ok(()) => eprintln!("kavari-load: table written to {}", o.out.display()),
        Err(e) => eprintln!("kavari-load: could not write {}: {e}", o.out.display()),
    }
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
    } else {
        runtime.block_on(driver(opts()));
    }
}
