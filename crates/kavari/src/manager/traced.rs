//! A publish as the manager makes it over Kafka: in a `publish` span when
//! tracing is on (its trace context in the record's headers), and counted
//! in the metrics.

use futures::future::BoxFuture;
use tracing::Instrument;

use crate::codec::EncodedMessage;
use crate::message::KafkaMessage;
use crate::publish::{Delivery, PublishError, Publisher};
use crate::trace_context::TraceHeaders;
use crate::{metrics, telemetry};

/// A typed publish, copied straight into its partition's batch, in a
/// `publish` span when tracing is on.
pub(super) async fn publish_typed<M: KafkaMessage>(
    publisher: &Publisher,
    msg: &M,
) -> Result<Delivery, PublishError> {
    let delivered = if telemetry::enabled() {
        publish_typed_in_span(publisher, msg).await
    } else {
        let trace = TraceHeaders::of(&tracing::Span::none());
        publisher.publish_typed(msg, &trace).await
    };
    metrics::published(&delivered, || publisher.topic_names().topic_of::<M>());
    delivered
}

/// A typed publish in its `publish` span, boxed: every publish in flight
/// holds the untraced path's future, which the span and its wrapping would
/// otherwise make larger by a third.
fn publish_typed_in_span<'a, M: KafkaMessage>(
    publisher: &'a Publisher,
    msg: &'a M,
) -> BoxFuture<'a, Result<Delivery, PublishError>> {
    Box::pin(async move {
        let span = telemetry::publish_span(&publisher.topic_names().topic_of::<M>());
        let trace = TraceHeaders::of(&span);
        let delivered = publisher
            .publish_typed(msg, &trace)
            .instrument(span.clone())
            .await;
        if let Ok(d) = &delivered {
            telemetry::published(&span, msg.key().as_deref(), d.partition, d.offset);
        }
        delivered
    })
}

/// The bulk path, in one `publish` span naming its count.
pub(super) async fn publish_batch<M: KafkaMessage>(
    publisher: &Publisher,
    msgs: &[M],
) -> Vec<Result<Delivery, PublishError>> {
    let delivered = if telemetry::enabled() {
        let topic = publisher.topic_names().topic_of::<M>();
        let span = telemetry::publish_batch_span(&topic, msgs.len());
        let trace = TraceHeaders::of(&span);
        publisher.publish_all(msgs, &trace).instrument(span).await
    } else {
        let trace = TraceHeaders::of(&tracing::Span::none());
        publisher.publish_all(msgs, &trace).await
    };
    for d in &delivered {
        metrics::published(d, || publisher.topic_names().topic_of::<M>());
    }
    delivered
}

/// An encoded publish, in a `publish` span when tracing is on (its trace
/// context written into the record's headers).
pub(super) async fn publish_encoded(
    publisher: &Publisher,
    mut message: EncodedMessage,
) -> Result<Delivery, PublishError> {
    let topic = message.topic.clone();
    let delivered = if telemetry::enabled() {
        let span = telemetry::publish_span(&message.topic);
        TraceHeaders::of(&span).write_into(&mut message.headers);
        let key = message
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        let delivered = publisher.publish(message).instrument(span.clone()).await;
        if let Ok(d) = &delivered {
            telemetry::published(&span, key.as_deref(), d.partition, d.offset);
        }
        delivered
    } else {
        TraceHeaders::of(&tracing::Span::none()).write_into(&mut message.headers);
        publisher.publish(message).await
    };
    metrics::published(&delivered, || topic);
    delivered
}
