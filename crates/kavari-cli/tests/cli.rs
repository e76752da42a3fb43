//! The `kavari` binary against a real broker: topics created and listed, a
//! topic tailed as JSON, dead letters listed, a group described, and the
//! exit codes a script relies on.

// Test helpers: a failed expectation is the test failing, with its reason.
#![allow(clippy::expect_used)]

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, NoRetry};
use kavari_testcontainers::{TestBroker, shared_broker, unique_name};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "cli.orders", name = "OrderPlaced")]
struct OrderPlaced {
    #[kavari(key)]
    id: String,
    cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "cli.orders", name = "OrderCancelled")]
struct OrderCancelled {
    #[kavari(key)]
    id: String,
}

/// Fails every order: they all become dead letters.
struct Refuse(Arc<AtomicUsize>);

impl MessageHandler<OrderPlaced> for Refuse {
    async fn handle(&self, order: OrderPlaced, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        // Each error names its order: `dlq list` still counts them as one.
        Err(format!("card declined for order {}", order.id).into())
    }
}

impl MessageHandler<OrderCancelled> for Refuse {
    async fn handle(&self, _: OrderCancelled, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err("card declined".into())
    }
}

fn kavari(brokers: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kavari"))
        .arg("--brokers")
        .arg(brokers)
        .args(args)
        .env_remove("KAVARI_SECURITY_PROTOCOL")
        .output()
        .expect("the kavari binary runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test]
async fn the_commands_against_a_real_broker() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let broker = shared_broker().await.expect("broker");
    let brokers = broker.bootstrap_servers();
    let prefix = format!("{}.", unique_name("cli"));
    let topic = format!("{prefix}cli.orders");
    let dlq = format!("{topic}.dlq");

    // topic create (twice) and list.
    let out = stdout(&kavari(
        &brokers,
        &["topic", "create", &topic, "--partitions", "2"],
    ));
    assert!(out.contains("created"), "{out}");
    let out = stdout(&kavari(
        &brokers,
        &["topic", "create", &topic, "--partitions", "2"],
    ));
    assert!(out.contains("exists already"), "{out}");
    stdout(&kavari(
        &brokers,
        &["topic", "create", &dlq, "--partitions", "2"],
    ));
    let out = stdout(&kavari(&brokers, &["topic", "list"]));
    assert!(out.lines().any(|l| l == format!("{topic}\t2")), "{out}");

    // Three orders and two cancellations, each refused by a consumer: five
    // dead letters.
    let group = unique_name("cli-group");
    let refused = Arc::new(AtomicUsize::new(0));
    let manager = Kavari::builder(&brokers)
        .topic_prefix(&prefix)
        .group_id(&group)
        .delivery_retry_policy(NoRetry)
        .commit_interval(Duration::from_millis(100))
        .build()
        .await
        .expect("build");
    manager
        .subscribe::<OrderPlaced, _>(Refuse(Arc::clone(&refused)))
        .expect("subscribe");
    manager
        .subscribe::<OrderCancelled, _>(Refuse(Arc::clone(&refused)))
        .expect("subscribe");
    manager.start().await.expect("start");
    for i in 0..3 {
        manager
            .publish(&OrderPlaced {
                id: format!("o-{i}"),
                cents: 100 * i,
            })
            .await
            .expect("publish");
    }
    for i in 0..2 {
        manager
            .publish(&OrderCancelled {
                id: format!("o-{i}"),
            })
            .await
            .expect("publish");
    }
    // Every record refused, dead-lettered and committed before the commands
    // run: they run synchronously, and this test's runtime (the manager's
    // too) stands still meanwhile. (A dead letter's acknowledgement waits
    // for its new partition's replicas, which can take a second.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let committed = |m: &Kavari| -> i64 {
        m.health()
            .partitions
            .iter()
            .filter_map(|p| p.committed)
            .sum()
    };
    while (refused.load(Ordering::SeqCst) < 5 || committed(&manager) < 5)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed(&manager), 5, "the five records committed");

    // tail: the three orders as JSON, values decoded from MessagePack.
    let lines = json_lines(&stdout(&kavari(
        &brokers,
        &[
            "tail",
            &topic,
            "--from-beginning",
            "--count",
            "3",
            "--type",
            "OrderPlaced",
        ],
    )));
    assert_eq!(lines.len(), 3);
    let mut cents: Vec<u64> = lines
        .iter()
        .map(|l| l["value"]["cents"].as_u64().expect("cents"))
        .collect();
    cents.sort_unstable();
    assert_eq!(cents, [0, 100, 200]);
    for l in &lines {
        assert_eq!(l["topic"], topic.as_str());
        assert_eq!(l["headers"]["msg_type"], "OrderPlaced");
        assert!(
            l["key"].as_str().is_some_and(|k| k.starts_with("o-")),
            "{l}"
        );
        assert!(l["offset"].as_i64().is_some() && l["timestamp"].as_i64().is_some());
    }

    // dlq list: a group of three orders, then one of two cancellations.
    let groups = json_lines(&stdout(&kavari(&brokers, &["dlq", "list", &dlq])));
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0]["count"], 3);
    assert_eq!(groups[1]["count"], 2);
    assert_eq!(groups[1]["msg_type"], "OrderCancelled");
    assert!(
        groups[0]["error_kind"]
            .as_str()
            .is_some_and(|k| k.ends_with("card declined for order …")),
        "{groups:?}"
    );
    assert_eq!(groups[0]["original_topic"], topic.as_str());
    assert_eq!(groups[0]["msg_type"], "OrderPlaced");
    assert!(
        groups[0]["original_error"]
            .as_str()
            .is_some_and(|e| e.contains("card declined")),
        "{groups:?}"
    );

    // dlq replay: a dry run changes nothing; a run per message type
    // republishes each type's letters to --to with where they came from and
    // leaves the other's replayable; a run without a filter then finds
    // nothing left; --reset makes every letter replayable again.
    let replayed = format!("{prefix}replayed");
    stdout(&kavari(
        &brokers,
        &[
            "topic",
            "create",
            &replayed,
            "--partitions",
            "1",
            "--config",
            "retention.ms=86400000",
        ],
    ));
    let dry = json_lines(&stdout(&kavari(
        &brokers,
        &["dlq", "replay", &dlq, "--to", &replayed, "--dry-run"],
    )));
    assert_eq!(dry.len(), 5, "{dry:?}");
    assert!(
        dry.iter().all(|l| l["topic"] == replayed.as_str()),
        "{dry:?}"
    );
    let filtered = stdout(&kavari(
        &brokers,
        &[
            "dlq",
            "replay",
            &dlq,
            "--to",
            &replayed,
            "--where",
            "msg_type=Other",
            "--dry-run",
        ],
    ));
    assert!(filtered.trim().is_empty(), "{filtered}");
    let replay = |filter: Option<&str>| {
        let mut args = vec!["dlq", "replay", &dlq, "--to", &replayed];
        if let Some(f) = filter {
            args.extend(["--where", f]);
        }
        stdout(&kavari(&brokers, &args))
    };
    let out = replay(Some("msg_type=OrderPlaced"));
    assert!(
        out.contains("replayed 3 of 5") && out.contains("2 passed over"),
        "{out}"
    );
    let out = replay(Some("msg_type=OrderCancelled"));
    assert!(
        out.contains("replayed 2 of 2") && out.contains("3 replayed by earlier runs"),
        "{out}"
    );
    let out = replay(None);
    assert!(out.contains("replayed 0 of 0"), "{out}");
    // Exactly five in the topic (list reads it to its end).
    let counted: u64 = json_lines(&stdout(&kavari(&brokers, &["dlq", "list", &replayed])))
        .iter()
        .map(|g| g["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(counted, 5, "republished once each");
    let lines = json_lines(&stdout(&kavari(
        &brokers,
        &["tail", &replayed, "--from-beginning", "--count", "5"],
    )));
    assert_eq!(lines.len(), 5);
    for l in &lines {
        assert!(
            l["headers"]["msg_type"]
                .as_str()
                .is_some_and(|t| t.starts_with("Order")),
            "{l}"
        );
        assert!(
            l["headers"]["kavari-replayed-from"]
                .as_str()
                .is_some_and(|f| f.starts_with(&format!("{dlq}/"))),
            "{l}"
        );
    }
    let out = stdout(&kavari(&brokers, &["dlq", "replay", &dlq, "--reset"]));
    assert!(out.contains("reset"), "{out}");
    let dry = json_lines(&stdout(&kavari(
        &brokers,
        &["dlq", "replay", &dlq, "--to", &replayed, "--dry-run"],
    )));
    assert_eq!(dry.len(), 5, "replayable again after --reset: {dry:?}");

    // group describe: one member holding both partitions, nothing lagging.
    let d: Value = serde_json::from_str(&stdout(&kavari(
        &brokers,
        &["group", "describe", &group, "--json"],
    )))
    .expect("JSON");
    assert_eq!(d["state"], "Stable", "{d}");
    assert_eq!(d["members"].as_array().map(Vec::len), Some(1), "{d}");
    // nisshi's DescribeGroups names no protocol and no member's
    // assignment: what the command shows of them only Kafka can show.
    if TestBroker::is_kafka() {
        assert_eq!(d["assignor"], "range", "the default assignor: {d}");
        assert_eq!(
            d["members"][0]["assignment"].as_array().map(Vec::len),
            Some(2),
            "the member's two partitions: {d}"
        );
    }
    let partitions = d["partitions"].as_array().expect("partitions");
    let committed: u64 = partitions
        .iter()
        .map(|p| p["committed"].as_u64().expect("committed"))
        .sum();
    assert_eq!(committed, 5, "{d}");
    assert!(partitions.iter().all(|p| p["lag"] == 0), "{d}");
    let text = stdout(&kavari(&brokers, &["group", "describe", &group]));
    assert!(
        text.contains("1 member(s)") && text.contains(&topic),
        "{text}"
    );
    manager.shutdown().await.expect("shutdown");

    // group list: the consumer group, and the replay's progress group.
    let listed = stdout(&kavari(&brokers, &["group", "list"]));
    assert!(
        listed.lines().any(|l| l.starts_with(&format!("{group}\t"))),
        "{listed}"
    );
    // Kafka lists a group that only committed offsets with no protocol
    // type ("offsets only"); nisshi says "consumer".
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("kavari-replay.{dlq}\t"))
                && (l.ends_with("offsets only") || !TestBroker::is_kafka())),
        "{listed}"
    );

    // group reset-offsets: shown first, done with --execute, within the log.
    let committed_now = |brokers: &str| -> Vec<u64> {
        let d: Value = serde_json::from_str(&stdout(&kavari(
            brokers,
            &["group", "describe", &group, "--json"],
        )))
        .expect("JSON");
        d["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p["committed"].as_u64().expect("committed"))
            .collect()
    };
    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset-offsets", &group, "--topic", &topic];
        all.extend(args);
        stdout(&kavari(&brokers, &all))
    };
    let shown = reset(&["--to-earliest"]);
    assert!(shown.contains("would move 2 partition(s)"), "{shown}");
    assert_eq!(committed_now(&brokers).iter().sum::<u64>(), 5, "a dry run");
    let done = reset(&["--to-earliest", "--execute"]);
    assert!(done.contains("moved 2 partition(s)"), "{done}");
    assert_eq!(committed_now(&brokers), [0, 0]);
    reset(&["--to-offset", "1", "--execute"]);
    assert_eq!(committed_now(&brokers), [1, 1]);
    reset(&["--to-datetime", "2999-01-01T00:00:00Z", "--execute"]);
    assert_eq!(committed_now(&brokers).iter().sum::<u64>(), 5, "the end");

    // produce: a JSON value published as a Kavari service of the type would.
    let out = stdout(&kavari(
        &brokers,
        &[
            "produce",
            &topic,
            "--type",
            "OrderPlaced",
            "--key",
            "o-9",
            "--value",
            r#"{"id":"o-9","cents":900}"#,
        ],
    ));
    assert!(out.starts_with(&format!("{topic}/")), "{out}");
    let lines = json_lines(&stdout(&kavari(
        &brokers,
        &["tail", &topic, "--from-beginning", "--count", "6"],
    )));
    let produced = lines
        .iter()
        .find(|l| l["key"] == "o-9")
        .expect("the produced record");
    assert_eq!(produced["headers"]["content-type"], "application/msgpack");
    assert_eq!(produced["headers"]["msg_type"], "OrderPlaced");
    assert_eq!(produced["value"]["cents"], 900);

    // A reader that stops reading ends the command quietly.
    let mut head = Command::new(env!("CARGO_BIN_EXE_kavari"))
        .args(["--brokers", &brokers, "tail", &topic, "--from-beginning"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the kavari binary runs");
    let mut first = [0u8; 1];
    std::io::Read::read_exact(head.stdout.as_mut().expect("stdout"), &mut first)
        .expect("a first byte");
    drop(head.stdout.take());
    // The next record it follows finds the pipe closed.
    stdout(&kavari(
        &brokers,
        &[
            "produce",
            &topic,
            "--type",
            "OrderPlaced",
            "--value",
            r#"{"id":"o-10","cents":1}"#,
        ],
    ));
    let closed = head.wait_with_output().expect("exits");
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert_eq!(closed.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // topic describe and delete.
    let d: Value = serde_json::from_str(&stdout(&kavari(
        &brokers,
        &["topic", "describe", &replayed, "--json"],
    )))
    .expect("JSON");
    assert_eq!(d["configs"]["retention.ms"], "86400000", "{d}");
    let p = &d["partitions"][0];
    let replicas = p["replicas"].as_array().expect("replicas");
    assert!(
        !replicas.is_empty() && replicas.contains(&p["leader"]),
        "{d}"
    );
    let out = stdout(&kavari(&brokers, &["topic", "delete", &replayed]));
    assert!(out.contains("deleted"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stdout(&kavari(&brokers, &["topic", "list"]))
        .lines()
        .any(|l| l.starts_with(&format!("{replayed}\t")))
    {
        assert!(Instant::now() < deadline, "{replayed} still listed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Exit codes: 1 with the reason for what the cluster refuses, 2 for
    // usage.
    let missing = kavari(&brokers, &["tail", &unique_name("missing"), "--count", "1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    assert_eq!(kavari(&brokers, &["tail"]).status.code(), Some(2));
    let no_brokers = Command::new(env!("CARGO_BIN_EXE_kavari"))
        .args(["topic", "list"])
        .env_remove("KAVARI_BROKERS")
        .output()
        .expect("the kavari binary runs");
    assert_eq!(no_brokers.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&no_brokers.stderr).contains("--brokers"));
    let unreachable = kavari("127.0.0.1:1", &["topic", "list"]);
    assert_eq!(unreachable.status.code(), Some(1));
}

/// `tail --isolation`: read_committed (the default) shows a committed
/// transaction's records and not an aborted one's; read_uncommitted shows
/// both. (Kafka only: the single-node test broker keeps no aborted
/// transactions apart.)
#[tokio::test]
async fn tail_shows_aborted_transactions_only_read_uncommitted() {
    if !TestBroker::is_kafka() {
        return;
    }
    let broker = shared_broker().await.expect("broker");
    let brokers = broker.bootstrap_servers().to_string();
    let prefix = format!("{}.", unique_name("cli-txn"));
    let topic = format!("{prefix}{}", OrderPlaced::TOPIC);
    broker.create_topic(&topic, 1).await.expect("topic");
    let m = Kavari::builder(brokers.clone())
        .topic_prefix(&prefix)
        .transactional_id(unique_name("cli-txn"))
        .build()
        .await
        .expect("build");
    let order = |id: &str| OrderPlaced {
        id: id.into(),
        cents: 1,
    };
    m.transaction(|tx| async move {
        tx.publish(&order("committed")).await?;
        Ok(())
    })
    .await
    .expect("commit");
    let aborted = m
        .transaction(|tx| async move {
            tx.publish(&order("aborted")).await?;
            Err::<(), _>(HandlerError::new("changed my mind"))
        })
        .await;
    assert!(aborted.is_err());
    m.transaction(|tx| async move {
        tx.publish(&order("later")).await?;
        Ok(())
    })
    .await
    .expect("commit");
    m.shutdown().await.expect("shutdown");

    let keys = |args: &[&str]| -> Vec<String> {
        json_lines(&stdout(&kavari(&brokers, args)))
            .iter()
            .map(|l| l["key"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let base = ["tail", topic.as_str(), "--from-beginning", "--count"];
    assert_eq!(
        keys(&[&base[..], &["2"]].concat()),
        ["committed", "later"],
        "read_committed by default"
    );
    assert_eq!(
        keys(&[&base[..], &["3", "--isolation", "read_uncommitted"]].concat()),
        ["committed", "aborted", "later"]
    );
    assert_eq!(
        kavari(
            &brokers,
            &[&base[..], &["1", "--isolation", "dirty"]].concat()
        )
        .status
        .code(),
        Some(2),
        "an unknown isolation is a usage error"
    );
}

/// Starts a manager of `configure`'s group on `topic`'s prefix that counts
/// what it handles, publishes `orders` orders through it, and describes
/// `group` as JSON until it handled them all and the committed column
/// sums to at least `committed`.
async fn describe_once_handled(
    brokers: &str,
    prefix: &str,
    group: &str,
    orders: usize,
    committed: u64,
    configure: impl FnOnce(kavari::KavariBuilder) -> kavari::KavariBuilder,
) -> (Kavari, Value) {
    let handled = Arc::new(AtomicUsize::new(0));
    let m = configure(Kavari::builder(brokers).topic_prefix(prefix))
        .build()
        .await
        .expect("build");
    m.subscribe::<OrderPlaced, _>(Count(Arc::clone(&handled)))
        .expect("subscribe");
    m.start().await.expect("start");
    for i in 0..orders {
        m.publish(&OrderPlaced {
            id: format!("o{i}"),
            cents: 1,
        })
        .await
        .expect("publish");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d: Value = serde_json::from_str(&stdout(&kavari(
            brokers,
            &["group", "describe", group, "--json"],
        )))
        .expect("JSON");
        let sum: u64 = d["partitions"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["committed"].as_u64()).sum())
            .unwrap_or(0);
        if handled.load(Ordering::SeqCst) == orders && sum >= committed {
            return (m, d);
        }
        assert!(
            Instant::now() < deadline,
            "handled {} of {orders}, committed {sum}: {d}",
            handled.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts what it handles.
struct Count(Arc<AtomicUsize>);

impl MessageHandler<OrderPlaced> for Count {
    async fn handle(&self, _: OrderPlaced, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// `group describe` of a group of the consumer protocol (KIP-848): its
/// epochs, the broker's assignor, each member's epoch, assignment and
/// target assignment, and the lag per partition.
#[tokio::test]
async fn group_describe_shows_a_consumer_protocol_group() {
    if !TestBroker::is_kafka() {
        return;
    }
    let broker = shared_broker().await.expect("broker");
    let brokers = broker.bootstrap_servers().to_string();
    let prefix = format!("{}.", unique_name("cli-kip848"));
    let topic = format!("{prefix}{}", OrderPlaced::TOPIC);
    broker.create_topic(&topic, 2).await.expect("topic");
    let group = unique_name("cli-kip848");
    let (m, d) = describe_once_handled(&brokers, &prefix, &group, 4, 4, |b| {
        b.group_id(&group)
            .group_protocol(kavari::GroupProtocol::Consumer)
            .commit_interval(Duration::from_millis(100))
    })
    .await;
    assert_eq!(d["group_protocol"], "consumer", "{d}");
    assert_eq!(d["assignor"], "uniform", "the broker's default: {d}");
    assert!(d["group_epoch"].as_i64().is_some_and(|e| e > 0), "{d}");
    let member = &d["members"][0];
    assert!(
        member["member_epoch"].as_i64().is_some_and(|e| e > 0),
        "{d}"
    );
    assert_eq!(
        member["assignment"].as_array().map(Vec::len),
        Some(2),
        "{d}"
    );
    assert_eq!(member["assignment"], member["target_assignment"], "{d}");
    let text = stdout(&kavari(&brokers, &["group", "describe", &group]));
    assert!(
        text.contains("consumer protocol") && text.contains("target ["),
        "{text}"
    );
    m.shutdown().await.expect("shutdown");
}

/// `group describe` of a share group (KIP-932): its members, and each
/// share partition's start offset (as the broker reports it) where a
/// consumer group shows its committed offset.
#[tokio::test]
async fn group_describe_shows_a_share_group() {
    if !TestBroker::is_kafka() {
        return;
    }
    let broker = shared_broker().await.expect("broker");
    let brokers = broker.bootstrap_servers().to_string();
    let prefix = format!("{}.", unique_name("cli-share"));
    let topic = format!("{prefix}{}", OrderPlaced::TOPIC);
    broker.create_topic(&topic, 1).await.expect("topic");
    let group = unique_name("cli-share");
    // The broker reports a share partition's start offset a little behind
    // the last acknowledgement.
    let (m, d) =
        describe_once_handled(&brokers, &prefix, &group, 3, 2, |b| b.share_group(&group)).await;
    assert_eq!(d["group_protocol"], "share", "{d}");
    assert_eq!(d["members"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(
        d["members"][0]["assignment"].as_array().map(Vec::len),
        Some(1),
        "{d}"
    );
    let text = stdout(&kavari(&brokers, &["group", "describe", &group]));
    assert!(text.contains("share group"), "{text}");
    m.shutdown().await.expect("shutdown");
}
