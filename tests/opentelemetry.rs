//! W3C trace context across the real broker (feature `opentelemetry`): a
//! handler's span continues the trace of the publish that wrote its record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{HandlerError, KafkaMessage, MessageContext, MessageHandler};
use kavari_testcontainers::shared_broker;
use kavari_tests::{consumer, eventually, prefixed_topic};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rskafka::client::partition::UnknownTopicHandling;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "traced.orders")]
struct Order {
    #[kavari(key)]
    id: String,
}

/// What a handler saw: the record's `traceparent` header and the trace
/// its own span is in.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Handled>>>);

/// An order's id, its record's `traceparent`, its handler's trace.
type Handled = (String, Option<String>, TraceId);

impl MessageHandler<Order> for Seen {
    async fn handle(&self, order: Order, ctx: &MessageContext) -> Result<(), HandlerError> {
        let traceparent = ctx
            .headers
            .get("traceparent")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let trace = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id();
        self.0.lock().unwrap().push((order.id, traceparent, trace));
        Ok(())
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn a_handler_span_continues_the_publishers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("kavari-tests")))
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let broker = shared_broker().await.expect("broker");
    let (prefix, topic) = prefixed_topic::<Order>(broker, 2).await;
    let seen = Seen::default();
    let manager = consumer(broker, &format!("{prefix}group"))
        .topic_prefix(&prefix)
        .build()
        .await
        .expect("build");
    manager
        .subscribe::<Order, _>(seen.clone())
        .expect("subscribe");
    manager.start().await.expect("start");

    // One publish and one bulk publish, each inside a request's span.
    let request = tracing::info_span!("request");
    let request_trace = request.context().span().span_context().trace_id();
    manager
        .publish(&Order { id: "o-1".into() })
        .instrument(request.clone())
        .await
        .expect("publish");
    let bulk = tracing::info_span!("bulk request");
    let bulk_trace = bulk.context().span().span_context().trace_id();
    for result in manager
        .publish_batch(&[Order { id: "o-2".into() }, Order { id: "o-3".into() }])
        .instrument(bulk.clone())
        .await
    {
        result.expect("publish in bulk");
    }
    drop((request, bulk));
    // Written by another client, with a header that is no trace context:
    // handled, in a trace of its own.
    let garbled = kavari::codec::encode(&Order { id: "o-4".into() }).expect("encode");
    let mut headers: std::collections::BTreeMap<String, Vec<u8>> = garbled.headers;
    headers.insert("traceparent".into(), b"00-\xff-not-a-context".to_vec());
    broker
        .client()
        .await
        .expect("rskafka")
        .partition_client(topic.clone(), 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client")
        .produce(
            vec![rskafka::record::Record {
                key: garbled.key,
                value: Some(garbled.value),
                headers,
                timestamp: chrono::Utc::now(),
            }],
            rskafka::client::partition::Compression::NoCompression,
        )
        .await
        .expect("produce");
    eventually(Duration::from_secs(60), "four orders handled", || {
        seen.0.lock().unwrap().len() == 4
    })
    .await;
    manager.shutdown().await.expect("shutdown");
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");

    // A send span per publish call: the single publish's in the request's
    // trace, the bulk publish's in the bulk request's, naming its count.
    let sends = named(&spans, &format!("send {topic}"));
    assert_eq!(sends.len(), 2, "one send span per publish call: {sends:?}");
    let in_trace = |trace| {
        sends
            .iter()
            .copied()
            .find(|s| s.span_context.trace_id() == trace)
            .unwrap_or_else(|| panic!("no send span in trace {trace}: {sends:?}"))
    };
    let batch = in_trace(bulk_trace);
    assert!(
        batch.attributes.iter().any(
            |kv| kv.key.as_str() == "messaging.batch.message_count" && kv.value.as_str() == "2"
        ),
        "the bulk send names its count: {batch:?}"
    );
    // The single publish: its send span, its context in the record's
    // header, the handler's process span its child.
    let send = in_trace(request_trace);
    let mut seen = seen.0.lock().unwrap().clone();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let (_, traceparent, handler_trace) = &seen[0];
    assert_eq!(
        traceparent.as_deref(),
        Some(
            format!(
                "00-{}-{}-01",
                send.span_context.trace_id(),
                send.span_context.span_id()
            )
            .as_str()
        )
    );
    assert_eq!(*handler_trace, request_trace);
    let process = named(&spans, &format!("process {topic}"));
    assert_eq!(process.len(), 4, "one process span per handler call");
    let child: Vec<_> = process
        .iter()
        .filter(|p| p.parent_span_id == send.span_context.span_id())
        .collect();
    assert_eq!(
        child.len(),
        1,
        "the handler's span is the send span's child"
    );
    assert_eq!(child[0].span_context.trace_id(), request_trace);

    // The bulk publish carries its caller's context; both handlers ran in
    // that trace.
    for (id, traceparent, trace) in &seen[1..3] {
        let traceparent = traceparent.as_deref().unwrap_or_default();
        assert!(
            traceparent.starts_with(&format!("00-{bulk_trace}-")),
            "{id}: {traceparent}"
        );
        assert_eq!(*trace, bulk_trace, "{id}");
    }
    assert_ne!(bulk_trace, request_trace);
    let (_, _, garbled_trace) = &seen[3];
    assert!(![request_trace, bulk_trace].contains(garbled_trace));
    assert_eq!(
        process
            .iter()
            .filter(|p| p.parent_span_id == SpanId::INVALID)
            .count(),
        1,
        "only the record without a trace context starts a trace"
    );
}
