//! [`Kafka`]: the manager's backend over a Kafka cluster: the publisher
//! and the consumer once started.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kavari_wire::cluster::Cluster;
use tokio::sync::watch;

use super::backend::Backend;
use super::{ShutdownError, traced};
use crate::codec::EncodedMessage;
use crate::consume::{Consumer, ConsumerConfig, ExactlyOnce, StartError, Steer, Writer, Writing};
use crate::health::Health;
use crate::publish::{Delivery, ProduceError, PublishError, PublishStats, Publisher};
use crate::registry::Registry;
use crate::share::ShareConsumer;
use crate::topic_names::TopicNames;
use crate::transaction::{TransactionalProducer, Transactions};

/// A manager's parts over Kafka.
pub(crate) struct Kafka {
    cluster: Arc<Cluster>,
    publisher: Arc<Publisher>,
    transactions: Option<Arc<TransactionalProducer>>,
    /// Exactly-once handling's transactional producer, when on.
    exactly_once: Option<Arc<TransactionalProducer>>,
    client_id: String,
    shutdown_timeout: Duration,
    consumer: OnceLock<Consumer>,
    /// The share group member, when the subscriptions are shared.
    share: OnceLock<ShareConsumer>,
}

impl Kafka {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        publisher: Arc<Publisher>,
        transactions: Option<Arc<TransactionalProducer>>,
        exactly_once: Option<Arc<TransactionalProducer>>,
        client_id: String,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            cluster,
            publisher,
            transactions,
            exactly_once,
            client_id,
            shutdown_timeout,
            consumer: OnceLock::new(),
            share: OnceLock::new(),
        }
    }

    async fn shutdown_now(&self) -> Result<(), ShutdownError> {
        let timeout = self.shutdown_timeout;
        if let Some(share) = self.share.get()
            && !share.shutdown(timeout).await
        {
            self.publisher.close(timeout).await;
            return Err(ShutdownError::HandlersInFlight { timeout });
        }
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

    fn direct(&self) -> Option<&Publisher> {
        Some(&self.publisher)
    }

    fn publish(&self, message: EncodedMessage) -> BoxFuture<'_, Result<Delivery, PublishError>> {
        traced::publish_encoded(&self.publisher, message).boxed()
    }

    fn publish_stats(&self) -> PublishStats {
        self.publisher.stats()
    }

    fn start(
        &self,
        registry: Registry,
        config: ConsumerConfig,
    ) -> BoxFuture<'_, Result<(), StartError>> {
        if let Some(group) = config.share_group.clone() {
            let dead_letters = Arc::new(DeadLetters(Arc::clone(&self.publisher)));
            return async move {
                let share = ShareConsumer::start(
                    Arc::clone(&self.cluster),
                    group,
                    registry,
                    config,
                    dead_letters,
                )
                .await?;
                let _ = self.share.set(share);
                Ok(())
            }
            .boxed();
        }
        let exactly_once = self.exactly_once.as_ref().map(|t| ExactlyOnce {
            transactions: Arc::clone(t) as Arc<dyn Transactions>,
            names: self.publisher.topic_names().clone(),
        });
        let started = Consumer::start(
            registry,
            config,
            Arc::clone(&self.cluster),
            Arc::new(DeadLetters(Arc::clone(&self.publisher))),
            exactly_once,
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
            if let Some(share) = self.share.get() {
                return share
                    .wait()
                    .await
                    .map_err(|reason| ShutdownError::ConsumerFailed { reason });
            }
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
        if let Some(share) = self.share.get() {
            return share.health();
        }
        self.consumer
            .get()
            .map_or_else(Health::not_started, Consumer::health)
    }

    fn steer(&self) -> Option<&dyn Steer> {
        self.consumer.get().map(|c| c as &dyn Steer)
    }

    fn transactions(&self) -> Option<&dyn Transactions> {
        self.transactions.as_deref().map(|t| t as &dyn Transactions)
    }

    fn bootstrap_servers(&self) -> &[String] {
        self.cluster.bootstrap()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ShutdownError>> {
        self.shutdown_now().boxed()
    }
}

/// The consumer's dead letters, written by the publisher.
struct DeadLetters(Arc<Publisher>);

impl Writer for DeadLetters {
    fn suffix(&self) -> Option<&str> {
        self.0.dlq_suffix()
    }

    fn write_until_written<'a>(
        &'a self,
        letter: EncodedMessage,
        source: &'a str,
        stop: watch::Receiver<bool>,
        blocked: &'a (dyn Fn(Option<&ProduceError>) + Send + Sync),
    ) -> Writing<'a> {
        Box::pin(self.0.produce_until_written(letter, source, stop, blocked))
    }
}
