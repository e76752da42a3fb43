//! A manager's in-memory side: publishing onto the broker's log, and the
//! consumer once started.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::InMemoryBroker;
use super::consumer::{Destination, MemoryConsumer};
use super::transactions::MemoryTransactions;
use crate::codec::EncodedMessage;
use crate::consume::{ConsumerConfig, StartError, Steer};
use crate::health::Health;
use crate::manager::Backend;
use crate::manager::ShutdownError;
use crate::partitioner::RoundRobin;
use crate::publish::{Delivery, Offset, ProduceError, ProducerConfig, PublishError, PublishStats};
use crate::registry::Registry;
use crate::topic_names::TopicNames;
use crate::transaction::{TransactionSettings, Transactions};

/// The test kit's backend of one manager.
pub(crate) struct Memory {
    producer: ProducerConfig,
    destination: Arc<Destination>,
    transactions: Option<MemoryTransactions>,
    consumer: OnceLock<Arc<MemoryConsumer>>,
    closed: AtomicBool,
    published: AtomicU64,
    dead_lettered: AtomicU64,
}

impl Memory {
    pub(crate) fn new(
        broker: &InMemoryBroker,
        producer: ProducerConfig,
        transactions: Option<TransactionSettings>,
    ) -> Self {
        let destination = Arc::new(Destination {
            log: Arc::clone(&broker.log),
            consumers: Arc::clone(&broker.consumers),
            partitioner: producer.partitioner,
            round_robin: RoundRobin::default(),
        });
        let transactions = transactions.map(|t| {
            MemoryTransactions::new(
                Arc::clone(&destination),
                t.transactional_id,
                Arc::clone(&broker.transactional_ids),
            )
        });
        Self {
            destination,
            transactions,
            producer,
            consumer: OnceLock::new(),
            closed: AtomicBool::new(false),
            published: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        }
    }

    async fn append(&self, message: EncodedMessage) -> Result<Delivery, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Failed {
                cause: ProduceError::shutting_down(),
                attempts: 0,
                dlq_error: None,
                message: Box::new(message),
            });
        }
        let producer = &self.producer;
        if let Err(cause) = producer.check_size(message.size(), true) {
            let Some(suffix) = &producer.dlq_suffix else {
                return Err(PublishError::Failed {
                    cause,
                    attempts: 1,
                    dlq_error: None,
                    message: Box::new(message),
                });
            };
            let letter = crate::publish::letter_of(&message, suffix, &cause);
            let log = &self.destination.log;
            log.create(&letter.topic, log.partitions(&message.topic));
            let topic = letter.topic.clone();
            let (partition, offset) = self.destination.append_and_deliver(letter).await;
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
            return Err(PublishError::DeadLettered {
                dlq: Delivery {
                    topic,
                    partition,
                    offset: Offset::At(offset),
                },
                cause,
            });
        }
        let topic = message.topic.clone();
        let (partition, offset) = self.destination.append_and_deliver(message).await;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(Delivery {
            topic,
            partition,
            offset: Offset::At(offset),
        })
    }

    async fn start_consumer(&self, registry: Registry, config: ConsumerConfig) {
        let consumer = MemoryConsumer::start(
            &self.destination,
            registry,
            config,
            self.producer.dlq_suffix.clone(),
        )
        .await;
        // Set once: the manager's lifecycle let one start() through.
        let _ = self.consumer.set(consumer);
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kavari").field("in_memory", &true).finish()
    }
}

impl Backend for Memory {
    fn topic_names(&self) -> &TopicNames {
        &self.producer.topic_names
    }

    fn publish(&self, message: EncodedMessage) -> BoxFuture<'_, Result<Delivery, PublishError>> {
        self.append(message).boxed()
    }

    fn publish_stats(&self) -> PublishStats {
        PublishStats {
            records_acknowledged: self.published.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            ..PublishStats::default()
        }
    }

    fn start(
        &self,
        registry: Registry,
        config: ConsumerConfig,
    ) -> BoxFuture<'_, Result<(), StartError>> {
        self.start_consumer(registry, config).map(Ok).boxed()
    }

    fn wait(&self) -> BoxFuture<'_, Result<(), ShutdownError>> {
        async move {
            if let Some(consumer) = self.consumer.get() {
                consumer.stopped().await;
            }
            Ok(())
        }
        .boxed()
    }

    fn health(&self) -> Health {
        self.consumer
            .get()
            .map_or_else(Health::not_started, |c| c.health())
    }

    fn steer(&self) -> Option<&dyn Steer> {
        self.consumer.get().map(|c| c as &dyn Steer)
    }

    fn transactions(&self) -> Option<&dyn Transactions> {
        self.transactions.as_ref().map(|t| t as &dyn Transactions)
    }

    fn bootstrap_servers(&self) -> &[String] {
        &[]
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ShutdownError>> {
        self.closed.store(true, Ordering::Release);
        if let Some(consumer) = self.consumer.get() {
            consumer.stop();
        }
        futures::future::ready(Ok(())).boxed()
    }
}
