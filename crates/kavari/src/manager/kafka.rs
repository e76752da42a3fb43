//! [`Kafka`]: the manager's backend over a Kafka cluster: the publisher
//! (with its spans and metrics) and the consumer once started.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kavari_wire::cluster::Cluster;
use tracing::Instrument;

use super::ShutdownError;
use super::backend::Backend;
use crate::codec::EncodedMessage;
use crate::consume::{Consumer, ConsumerConfig, StartError};
use crate::health::Health;
use crate::publish::{Delivery, PublishError, PublishStats, Publisher};
use crate::registry::Registry;
use crate::topic_names::TopicNames;
use crate::trace_context::TraceHeaders;
use crate::{KafkaMessage, metrics, telemetry};

/// A manager's parts over Kafka.
pub(crate) struct Kafka {
    cluster: Arc<Cluster>,
    publisher: Arc<Publisher>,
    client_id: String,
    shutdown_timeout: Duration,
    consumer: OnceLock<Consumer>,
}

impl Kafka {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        publisher: Arc<Publisher>,
        client_id: String,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            cluster,
            publisher,
            client_id,
            shutdown_timeout,
            consumer: OnceLock::new(),
        }
    }

    /// A typed publish, copied straight into its partition's batch, in a
    /// `publish` span when tracing is on.
    pub(super) async fn publish_typed<M: KafkaMessage>(
        &self,
        msg: &M,
    ) -> Result<Delivery, PublishError> {
        let publisher = &self.publisher;
        let delivered = if telemetry::enabled() {
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
        } else {
            let trace = TraceHeaders::of(&tracing::Span::none());
            publisher.publish_typed(msg, &trace).await
        };
        metrics::published(&delivered, || publisher.topic_names().topic_of::<M>());
        delivered
    }

    /// The bulk path, in one `publish` span naming its count.
    pub(super) async fn publish_batch<M: KafkaMessage>(
        &self,
        msgs: &[M],
    ) -> Vec<Result<Delivery, PublishError>> {
        let publisher = &self.publisher;
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

    async fn publish_encoded(&self, mut message: EncodedMessage) -> Result<Delivery, PublishError> {
        let topic = message.topic.clone();
        let delivered = if telemetry::enabled() {
            let span = telemetry::publish_span(&message.topic);
            TraceHeaders::of(&span).write_into(&mut message.headers);
            let key = message
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            let delivered = self
                .publisher
                .publish(message)
                .instrument(span.clone())
                .await;
            if let Ok(d) = &delivered {
                telemetry::published(&span, key.as_deref(), d.partition, d.offset);
            }
            delivered
        } else {
            TraceHeaders::of(&tracing::Span::none()).write_into(&mut message.headers);
            self.publisher.publish(message).await
        };
        metrics::published(&delivered, || topic);
        delivered
    }

    async fn shutdown_now(&self) -> Result<(), ShutdownError> {
        let timeout = self.shutdown_timeout;
        if let Some(consumer) = self.consumer.get() {
            let failure = consumer.failure();
            if !consumer.shutdown(timeout).await {
                self.publisher.close(timeout).await;
                return Err(ShutdownError::HandlersInFlight { timeout });
            }
            if let Some(reason) = failure {
                self.publisher.close(timeout).await;
                return Err(ShutdownError::ConsumerFailed { reason });
            }
        }
        match self.publisher.close(timeout).await {
            0 => {
                tracing::info!("kavari shut down");
                Ok(())
            }
            in_flight => Err(ShutdownError::PublishesInFlight { in_flight, timeout }),
        }
    }
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kavari")
            .field("bootstrap", &self.cluster.bootstrap())
            .field("consumer", &self.consumer.get())
            .finish_non_exhaustive()
    }
}

impl Backend for Kafka {
    fn topic_names(&self) -> &TopicNames {
        self.publisher.topic_names()
    }

    fn direct(&self) -> Option<&Kafka> {
        Some(self)
    }

    fn publish(&self, message: EncodedMessage) -> BoxFuture<'_, Result<Delivery, PublishError>> {
        self.publish_encoded(message).boxed()
    }

    fn publish_stats(&self) -> PublishStats {
        self.publisher.stats()
    }

    fn start(
        &self,
        registry: Registry,
        config: ConsumerConfig,
    ) -> BoxFuture<'_, Result<(), StartError>> {
        let started = Consumer::start(
            registry,
            config,
            Arc::clone(&self.cluster),
            Arc::clone(&self.publisher) as Arc<dyn crate::dead_letter::Writer>,
            &self.client_id,
        )
        .map(|consumer| {
            // Set once: the manager's lifecycle lets one start() through.
            let _ = self.consumer.set(consumer);
        });
        futures::future::ready(started).boxed()
    }

    fn wait(&self) -> BoxFuture<'_, Result<(), ShutdownError>> {
        async move {
            match self.consumer.get() {
                Some(c) => c
                    .stopped()
                    .await
                    .map_err(|reason| ShutdownError::ConsumerFailed { reason }),
                None => Ok(()),
            }
        }
        .boxed()
    }

    fn health(&self) -> Health {
        self.consumer
            .get()
            .map_or_else(Health::not_started, Consumer::health)
    }

    fn bootstrap_servers(&self) -> &[String] {
        self.cluster.bootstrap()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ShutdownError>> {
        self.shutdown_now().boxed()
    }
}
