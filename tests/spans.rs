//! The spans of publishing and processing, with the OpenTelemetry
//! messaging attributes, seen by a tracing subscriber. A binary of its
//! own: the spans are captured by a subscriber of the test's thread, and
//! other tests setting and dropping subscribers on other threads of the
//! same process made it miss lines now and then.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari_testcontainers::{shared_broker, unique_name};
use kavari_tests::{CapturedLogs, Numbered, Numbers, consumer, eventually, prefixed_topic};
use tracing_subscriber::fmt::format::FmtSpan;

/// Kavari's spans as they close, with their fields, captured on this
/// thread (a #[tokio::test] runtime is single-threaded, so Kavari's tasks
/// log here) while the guard lives.
fn capture_spans() -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("kavari=debug")
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn publish_and_process_run_in_spans_with_messaging_attributes() {
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Numbered>(broker, 1).await;
    let (captured, _guard) = capture_spans();
    let group = unique_name("spans");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let manager = consumer(broker, &group)
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("build");
    manager
        .subscribe::<Numbered, _>(Numbers(Arc::clone(&seen)))
        .expect("subscribe");
    manager.start().await.expect("start");
    let d = manager.publish(&Numbered { n: 7 }).await.expect("publish");
    eventually(Duration::from_secs(20), "handled", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    manager.shutdown().await.expect("shutdown");
    let lines = captured.lines();
    let closed = |name: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("{name}{{")) && l.contains("close"))
            .cloned()
            .unwrap_or_else(|| panic!("no closed {name} span in {lines:#?}"))
    };
    let publish = closed("publish");
    for field in [
        "messaging.system=\"kafka\"".to_string(),
        "messaging.operation.type=\"send\"".to_string(),
        format!("messaging.destination.name={topic}"),
        format!("messaging.destination.partition.id={}", d.partition),
        format!("messaging.kafka.offset={}", d.offset),
        "otel.kind=\"producer\"".to_string(),
    ] {
        assert!(publish.contains(&field), "{field} not in {publish}");
    }
    let process = closed("process");
    for field in [
        "messaging.operation.type=\"process\"".to_string(),
        format!("messaging.destination.name={topic}"),
        format!("messaging.kafka.offset={}", d.offset),
        format!("messaging.consumer.group.name={group}"),
        "otel.kind=\"consumer\"".to_string(),
    ] {
        assert!(process.contains(&field), "{field} not in {process}");
    }
}

/// A handler that logs, as a user's handler does.
struct Logs;

impl kavari::MessageHandler<Numbered> for Logs {
    async fn handle(
        &self,
        e: Numbered,
        _: &kavari::MessageContext,
    ) -> Result<(), kavari::HandlerError> {
        tracing::info!(target: "kavari::user_handler", n = e.n, "handling");
        Ok(())
    }
}

/// What a handler logs carries its process span: its lines can be found
/// by the record's topic and offset.
#[tokio::test]
async fn a_handler_logs_inside_its_process_span() {
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Numbered>(broker, 1).await;
    let (captured, _guard) = capture_spans();
    let manager = consumer(broker, &unique_name("spans-log"))
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("build");
    manager.subscribe::<Numbered, _>(Logs).expect("subscribe");
    manager.start().await.expect("start");
    let d = manager.publish(&Numbered { n: 9 }).await.expect("publish");
    eventually(Duration::from_secs(20), "handled", || {
        captured.lines().iter().any(|l| l.contains("handling"))
    })
    .await;
    manager.shutdown().await.expect("shutdown");
    let lines = captured.lines();
    let line = lines
        .iter()
        .find(|l| l.contains("handling"))
        .unwrap_or_else(|| panic!("no handler line in {lines:#?}"));
    for part in [
        "process{".to_string(),
        format!("messaging.destination.name={topic}"),
        format!("messaging.kafka.offset={}", d.offset),
        "n=9".to_string(),
    ] {
        assert!(line.contains(&part), "{part} not in {line}");
    }
}

/// A bulk publish runs in one send span naming its topic and how many
/// messages it carried.
#[tokio::test]
async fn a_bulk_publish_runs_in_one_span_with_its_message_count() {
    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Numbered>(broker, 1).await;
    let (captured, _guard) = capture_spans();
    let manager = kavari::Kavari::builder(broker.bootstrap_servers())
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("build");
    let batch: Vec<Numbered> = (0..3).map(|n| Numbered { n }).collect();
    for r in manager.publish_batch(&batch).await {
        r.expect("publish_batch");
    }
    manager.shutdown().await.expect("shutdown");
    let lines = captured.lines();
    let publish = lines
        .iter()
        .find(|l| l.contains("publish{") && l.contains("close"))
        .unwrap_or_else(|| panic!("no closed publish span in {lines:#?}"));
    for field in [
        "messaging.operation.type=\"send\"".to_string(),
        format!("messaging.destination.name={topic}"),
        "messaging.batch.message_count=3".to_string(),
        "otel.kind=\"producer\"".to_string(),
    ] {
        assert!(publish.contains(&field), "{field} not in {publish}");
    }
}
