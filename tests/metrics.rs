//! Metrics (feature `metrics`): the axum example serves them on `/metrics`,
//! scraped here over HTTP while it publishes and handles; failures are
//! counted by class.

use std::sync::OnceLock;
use std::time::Duration;

use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, NoRetry};
use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{init_tracing, own_broker};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// The sum of every sample of `metric` whose labels start with `labels`
/// (`name{a="b"` matches `name{a="b",c="d"} 3`), in Prometheus' text
/// format; `None` when there is none.
fn sample(text: &str, metric: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{metric}{{{labels}");
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// One HTTP/1.1 request; the status code and the body.
async fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    s.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The axum example, built by `cargo test --workspace` next to this test's
/// binary (target/…/examples/axum_service).
fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("axum_service"))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p kavari --features metrics --example axum_service`) first",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_axum_example_serves_kavari_metrics_on_slash_metrics() {
    init_tracing();
    let broker = own_broker(KafkaBroker::builder(), "service.orders", 3).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut service = tokio::process::Command::new(example_binary())
        .env("KAVARI_BROKERS", broker.bootstrap_servers())
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");

    // Ready: listening, and the consumer owns its partitions.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !matches!(http(port, "GET", "/health", "").await, Ok((200, _))) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the example never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..2 {
        let order = format!(r#"{{"order_id":"o-{i}","amount_cents":100}}"#);
        let (status, body) = http(port, "POST", "/orders", &order).await.expect("POST");
        assert_eq!(status, 200, "POST /orders: {body}");
    }

    let topic = r#"topic="service.orders""#;
    let text = loop {
        let (status, text) = http(port, "GET", "/metrics", "")
            .await
            .expect("GET /metrics");
        assert_eq!(status, 200);
        // A partition's lag shows from its first fetch answer on.
        let lags = text
            .lines()
            .filter(|l| l.starts_with("kavari_consumer_lag{"))
            .count();
        if sample(&text, "kavari_handled_total", topic) == Some(2.0)
            && sample(&text, "kavari_consumer_lag", topic) == Some(0.0)
            && lags == 3
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both orders never showed as handled, with no lag on each of the 3 partitions:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sample(&text, "kavari_published_total", topic),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kavari_handler_errors_total", topic),
        None,
        "{text}"
    );
    assert_eq!(
        sample(&text, "kavari_handler_duration_seconds_count", topic),
        Some(2.0),
        "{text}"
    );
    assert!(
        sample(&text, "kavari_rebalances_total", r#"group="fulfilment""#) >= Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "kavari_commit_duration_seconds_count",
            r#"group="fulfilment""#
        ) >= Some(1.0),
        "{text}"
    );
    // The publisher's, the group coordinator's and the fetcher's
    // connections are open, and counted per broker: on the three-node
    // cluster, to every node that leads a partition of the topic.
    let mut brokers = 0;
    for address in broker.bootstrap_list() {
        let broker_label = format!(r#"broker="{address}""#);
        if sample(&text, "kavari_connections", &broker_label) >= Some(1.0) {
            brokers += 1;
        }
    }
    assert!(brokers >= 1, "{text}");

    // SIGTERM: a clean shutdown.
    let pid = service.id().expect("running");
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let exit = tokio::time::timeout(WAIT, service.wait())
        .await
        .expect("the example stops after SIGTERM")
        .expect("exit status");
    assert!(exit.success(), "the example exited with {exit}");
}

/// This process's recorder: metrics recorded by any test here show in it.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder")
    })
}

#[derive(Debug, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "metrics.failures")]
struct Job {
    n: u32,
}

/// Fails job 1 for good.
struct FailsOne;

impl MessageHandler<Job> for FailsOne {
    async fn handle(&self, job: Job, _: &MessageContext) -> Result<(), HandlerError> {
        match job.n {
            1 => Err(HandlerError::permanent("job 1 cannot be done")),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn failures_are_counted_by_class() {
    init_tracing();
    let prometheus = recorder();
    let broker = shared_broker().await.expect("broker");
    let prefix = format!("{}.", unique_name("m"));
    let topic = format!("{prefix}{}", Job::TOPIC);
    broker.create_topic(&topic, 1).await.expect("topic");
    let manager = Kavari::builder(broker.bootstrap_servers())
        .topic_prefix(&prefix)
        .group_id(unique_name("metrics"))
        .delivery_retry_policy(NoRetry)
        .max_message_bytes(1_000)
        .build()
        .await
        .expect("build");
    manager.subscribe::<Job, _>(FailsOne).expect("subscribe");
    manager.start().await.expect("start");
    for n in 0..3 {
        manager.publish(&Job { n }).await.expect("publish");
    }
    // Too large for this manager's limit: dead-lettered by the publisher.
    #[derive(Serialize, Deserialize, KafkaMessage)]
    #[kavari(topic = "metrics.failures")]
    struct Big {
        blob: String,
    }
    let big = manager
        .publish(&Big {
            blob: "x".repeat(2_000),
        })
        .await;
    assert!(
        matches!(big, Err(kavari::PublishError::DeadLettered { .. })),
        "{big:?}"
    );

    let labels = format!(r#"topic="{topic}""#);
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = prometheus.render();
        if sample(&text, "kavari_dead_letters_total", &labels) == Some(2.0)
            && sample(&text, "kavari_handled_total", &labels) == Some(2.0)
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failures never showed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let with = |more: &str| format!("{labels},{more}");
    for (metric, labels, expected) in [
        ("kavari_published_total", labels.clone(), 3.0),
        (
            "kavari_publish_errors_total",
            with(r#"kind="message_too_large""#),
            1.0,
        ),
        (
            "kavari_dead_letters_total",
            with(r#"source="publish""#),
            1.0,
        ),
        (
            "kavari_dead_letters_total",
            with(r#"source="consume""#),
            1.0,
        ),
        ("kavari_handler_errors_total", labels.clone(), 1.0),
    ] {
        assert_eq!(
            sample(&text, metric, &labels),
            Some(expected),
            "{metric}{{{labels}}}: {text}"
        );
    }
    manager.shutdown().await.expect("shutdown");
}

#[derive(Debug, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "metrics.backlog")]
struct Backlogged {
    n: u32,
}

/// Takes 10 ms per record, so a backlog drains visibly.
struct Slow;

impl MessageHandler<Backlogged> for Slow {
    async fn handle(&self, _: Backlogged, _: &MessageContext) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    }
}

/// While a backlog drains, every partition's health shows the log's end
/// as its high watermark and `end - position` as its lag (never 0 or
/// null while records wait), the metric shows the same lag, and
/// `group describe`'s lag (end - committed) is never below it.
#[tokio::test]
async fn health_and_the_lag_metric_follow_a_draining_backlog() {
    init_tracing();
    let prometheus = recorder();
    let broker = shared_broker().await.expect("broker");
    let prefix = format!("{}.", unique_name("lag"));
    let topic = format!("{prefix}{}", Backlogged::TOPIC);
    broker.create_topic(&topic, 2).await.expect("topic");
    let group = unique_name("lag");
    let manager = Kavari::builder(broker.bootstrap_servers())
        .topic_prefix(&prefix)
        .group_id(&group)
        .auto_offset_reset(kavari::OffsetReset::Earliest)
        .build()
        .await
        .expect("build");
    let jobs: Vec<_> = (0..400).map(|n| Backlogged { n }).collect();
    let mut end = [0i64; 2];
    for d in manager.publish_batch(&jobs).await {
        let d = d.expect("publish");
        let p = usize::try_from(d.partition).expect("partition");
        end[p] = end[p].max(d.offset.get().expect("an offset") + 1);
    }
    assert!(
        end.iter().all(|&e| e > 50),
        "both partitions hold a backlog: {end:?}"
    );
    manager.subscribe::<Backlogged, _>(Slow).expect("subscribe");
    manager.start().await.expect("start");

    let cluster = kavari_wire::cluster::Cluster::new(broker.bootstrap_list(), "t".into(), WAIT);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sampled_waiting = 0;
    loop {
        // Read first: what it says committed is handled by the samples below.
        // (Not before the group's coordinator is up.)
        let described = kavari_group::admin::describe_group(&cluster, &group)
            .await
            .map(|d| d.committed)
            .unwrap_or_default();
        let before = manager.health();
        let text = prometheus.render();
        let after = manager.health();
        for p in &after.partitions {
            let i = usize::try_from(p.partition).expect("partition");
            let Some(position) = p.position else { continue };
            if position == 0 {
                continue; // not handling yet: the first fetch may not have answered
            }
            assert_eq!(p.high_watermark, Some(end[i]), "{p:?}");
            assert_eq!(p.lag, Some(end[i] - position), "{p:?}");
            let committed = described
                .iter()
                .find(|(tp, _)| tp.topic == topic && tp.partition == p.partition)
                .map(|(_, c)| c.offset)
                .unwrap_or(0);
            if position < end[i] {
                if sampled_waiting == 0 {
                    eprintln!(
                        "backlog sample {}: health position {position} high_watermark {:?} lag {:?}; \
                         group describe committed {committed} end {} lag {}",
                        p.partition,
                        p.high_watermark,
                        p.lag,
                        end[i],
                        end[i] - committed
                    );
                }
                sampled_waiting += 1;
            }
            // Lag only falls while nothing is written: the metric read
            // between two health samples lies between their lags.
            let earlier = before
                .partitions
                .iter()
                .find(|b| b.partition == p.partition)
                .and_then(|b| b.lag)
                .unwrap_or(end[i]);
            let labels = format!(r#"partition="{}",topic="{topic}""#, p.partition);
            let metric = sample(&text, "kavari_consumer_lag", &labels)
                .or_else(|| {
                    let labels = format!(r#"topic="{topic}",partition="{}""#, p.partition);
                    sample(&text, "kavari_consumer_lag", &labels)
                })
                .expect("the lag metric");
            let later = p.lag.expect("lag") as f64;
            assert!(
                later <= metric && metric <= earlier as f64,
                "metric {metric} not between {earlier} and {later}"
            );
            assert!(
                end[i] - committed >= p.lag.expect("lag"),
                "group describe's lag {} below health's {p:?}",
                end[i] - committed
            );
        }
        let drained = after.partitions.len() == 2
            && after
                .partitions
                .iter()
                .all(|p| p.position == Some(end[usize::try_from(p.partition).unwrap_or(0)]));
        if drained {
            assert!(after.partitions.iter().all(|p| p.lag == Some(0)));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never drained: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sampled_waiting >= 5,
        "health was sampled only {sampled_waiting} times with records waiting"
    );
    manager.shutdown().await.expect("shutdown");
}

#[derive(Debug, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "metrics.skips")]
struct Wanted {
    n: u32,
}

/// Counts the `Wanted` records it handles.
struct CountWanted(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl MessageHandler<Wanted> for CountWanted {
    async fn handle(&self, _: Wanted, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// A topic that carries a type this service ignores on purpose: with
/// `on_poison(Skip)` each of those records is skipped, and counted in the
/// metric and in the partition's health.
#[tokio::test]
async fn skipped_records_are_counted() {
    init_tracing();
    let prometheus = recorder();
    let broker = shared_broker().await.expect("broker");
    let prefix = format!("{}.", unique_name("skip"));
    let topic = format!("{prefix}{}", Wanted::TOPIC);
    broker.create_topic(&topic, 1).await.expect("topic");
    let manager = Kavari::from_vars(
        [
            ("KAVARI_BROKERS", broker.bootstrap_servers()),
            ("KAVARI_GROUP_ID", unique_name("skip")),
            ("KAVARI_TOPIC_PREFIX", prefix.clone()),
            ("KAVARI_ON_POISON", "skip".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("config")
    .build()
    .await
    .expect("build");
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    manager
        .subscribe::<Wanted, _>(CountWanted(std::sync::Arc::clone(&handled)))
        .expect("subscribe");
    manager.start().await.expect("start");
    #[derive(Serialize, Deserialize, KafkaMessage)]
    #[kavari(topic = "metrics.skips")]
    struct Ignored {
        n: u32,
    }
    for n in 0..2 {
        manager.publish(&Ignored { n }).await.expect("publish");
    }
    manager.publish(&Wanted { n: 9 }).await.expect("publish");
    let labels = format!(r#"topic="{topic}",reason="poison""#);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = prometheus.render();
        let skipped_in_health: u64 = manager.health().partitions.iter().map(|p| p.skipped).sum();
        if handled.load(std::sync::atomic::Ordering::SeqCst) == 1
            && sample(&text, "kavari_skipped_total", &labels) == Some(2.0)
            && skipped_in_health == 2
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the skips never showed (health {skipped_in_health}):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    manager.shutdown().await.expect("shutdown");
}
