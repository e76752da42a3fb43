//! A manager's in-memory side: publishing onto the broker's log, and the
//! consumer once started.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::InMemoryBroker;
use super::consumer::{MemoryConsumer, Writer};
use crate::KafkaMessage;
use crate::codec::{self, EncodedMessage};
use crate::consume::{ConsumerConfig, StartError};
use crate::health::{Health, HealthState};
use crate::partitioner::RoundRobin;
use crate::publish::{Delivery, Offset, ProduceError, ProducerConfig, PublishError, PublishStats};
use crate::registry::Registry;

/// The test kit's backend of one manager.
pub(crate) struct Memory {
    producer: ProducerConfig,
    writer: Arc<Writer>,
    consumer: OnceLock<Arc<MemoryConsumer>>,
    closed: AtomicBool,
    published: AtomicU64,
    dead_lettered: AtomicU64,
}

impl Memory {
    pub(crate) fn new(broker: &InMemoryBroker, producer: ProducerConfig) -> Self {
        Self {
            writer: Arc::new(Writer {
                log: Arc::clone(&broker.log),
                consumers: Arc::clone(&broker.consumers),
                partitioner: producer.partitioner,
                round_robin: RoundRobin::default(),
            }),
            producer,
            consumer: OnceLock::new(),
            closed: AtomicBool::new(false),
            published: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        }
    }

    pub(crate) fn topic_of<M: KafkaMessage>(&self) -> Cow<'static, str> {
        self.producer.topic_names.topic_of::<M>()
    }

    pub(crate) async fn publish_typed<M: KafkaMessage>(
        &self,
        msg: &M,
    ) -> Result<Delivery, PublishError> {
        let mut message = codec::encode(msg)?;
        message.topic = self.topic_of::<M>();
        self.publish(message).await
    }

    pub(crate) async fn publish(&self, message: EncodedMessage) -> Result<Delivery, PublishError> {
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
            let log = &self.writer.log;
            log.create(&letter.topic, log.partitions(&message.topic));
            let topic = letter.topic.clone();
            let (partition, offset) = self.writer.append_and_deliver(letter).await;
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
        let (partition, offset) = self.writer.append_and_deliver(message).await;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(Delivery {
            topic,
            partition,
            offset: Offset::At(offset),
        })
    }

    pub(crate) async fn start(
        &self,
        registry: Registry,
        config: ConsumerConfig,
    ) -> Result<(), StartError> {
        let consumer = MemoryConsumer::start(
            &self.writer,
            registry,
            config,
            self.producer.dlq_suffix.clone(),
        )
        .await;
        // Set once: the manager's lifecycle let one start() through.
        let _ = self.consumer.set(consumer);
        Ok(())
    }

    pub(crate) async fn wait(&self) {
        if let Some(consumer) = self.consumer.get() {
            consumer.stopped().await;
        }
    }

    pub(crate) fn health(&self) -> Health {
        match self.consumer.get() {
            Some(consumer) => consumer.health(),
            None => Health {
                state: HealthState::NotStarted,
                ready: true,
                generation: None,
                partitions: Vec::new(),
            },
        }
    }

    pub(crate) fn stats(&self) -> PublishStats {
        PublishStats {
            records_acknowledged: self.published.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            ..PublishStats::default()
        }
    }

    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(consumer) = self.consumer.get() {
            consumer.stop();
        }
    }
}
