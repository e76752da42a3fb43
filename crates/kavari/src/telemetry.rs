//! The `tracing` spans of publishing and processing a message, named and
//! attributed by the OpenTelemetry messaging conventions (`messaging.system`
//! `kafka`, `messaging.operation.type` `send` or `process`, the destination,
//! partition, offset, key and consumer group), so a tracing subscriber or an
//! OpenTelemetry bridge (`tracing-opentelemetry`, which reads `otel.name`
//! and `otel.kind`) shows them as a Kafka client's spans.
//!
//! They are DEBUG spans: with the usual INFO filter they cost a callsite
//! check; enable them with `kavari=debug` (or a per-layer filter).

use tracing::Span;

use crate::publish::Offset;
use tracing::field::Empty;

/// Whether the spans are wanted: checked first, so a publish with them
/// off does no work for them (not even its topic's name).
pub(crate) fn enabled() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// A DEBUG span named `$name` with the attributes every Kafka messaging
/// span carries (the operation `$op` on `$topic`, by a `$kind`), then the
/// ones of its kind.
macro_rules! messaging_span {
    ($name:literal, $op:literal, $kind:literal, $topic:expr, $($rest:tt)*) => {
        tracing::debug_span!(
            $name,
            otel.name = %format_args!("{} {}", $op, $topic),
            otel.kind = $kind,
            messaging.system = "kafka",
            messaging.operation.type = $op,
            messaging.destination.name = %$topic,
            $($rest)*
        )
    };
}

/// The span of one publish to `topic`; its partition and offset are
/// recorded by [`published`] once the broker answers.
pub(crate) fn publish_span(topic: &str) -> Span {
    messaging_span!(
        "publish",
        "send",
        "producer",
        topic,
        messaging.destination.partition.id = Empty,
        messaging.kafka.offset = Empty,
        messaging.kafka.message.key = Empty,
    )
}

/// The span of one bulk publish of `count` messages to `topic`: one send
/// of a batch, as the messaging conventions name it; the messages carry
/// its trace context.
pub(crate) fn publish_batch_span(topic: &str, count: usize) -> Span {
    messaging_span!(
        "publish",
        "send",
        "producer",
        topic,
        messaging.batch.message_count = count,
    )
}

/// Records where a publish landed.
pub(crate) fn published(span: &Span, key: Option<&str>, partition: i32, offset: Offset) {
    if span.is_disabled() {
        return;
    }
    span.record("messaging.destination.partition.id", partition);
    if let Some(offset) = offset.get() {
        span.record("messaging.kafka.offset", offset);
    }
    if let Some(key) = key {
        span.record("messaging.kafka.message.key", key);
    }
}

/// The span of one handler call for a record.
pub(crate) fn process_span(
    topic: &str,
    partition: i32,
    offset: i64,
    key: Option<&str>,
    group: &str,
    handler: &str,
) -> Span {
    messaging_span!(
        "process",
        "process",
        "consumer",
        topic,
        messaging.destination.partition.id = partition,
        messaging.kafka.offset = offset,
        messaging.kafka.message.key = key,
        messaging.consumer.group.name = %group,
        kavari.handler = %handler,
    )
}
