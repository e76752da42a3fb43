//! [`Kavari`]: the manager a service holds to publish (and subscribe).

mod backend;
mod kafka;
mod traced;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use backend::Backend;
pub(crate) use kafka::Kafka;

use crate::batch::{BatchHandler, BatchLimits};
use crate::codec;
use crate::consume::ProcessingOrder;
use crate::consume::{ConsumerConfig, ControlError, SeekTo, StartError};
use crate::handler::MessageHandler;
use crate::handler_error::HandlerError;
use crate::health::Health;
use crate::message::KafkaMessage;
use crate::publish::{Delivery, PublishError, PublishStats};
use crate::registry::{Registry, SubscribeError};
use crate::transaction::{Transaction, TransactionError};
use kavari_group::TopicPartition;

/// Why `shutdown()` did not finish cleanly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Publishes were still in flight when the shutdown timeout ran out. They
    /// still return their own result to their callers.
    #[error("{in_flight} publish(es) still in flight after the shutdown timeout of {timeout:?}")]
    PublishesInFlight {
        /// How many.
        in_flight: usize,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The consumer had stopped with this error before the shutdown.
    #[error("the consumer failed: {reason}")]
    ConsumerFailed {
        /// Why it failed.
        reason: String,
    },
    /// Handlers were still running when the shutdown timeout ran out; their
    /// messages were not committed and will be delivered again.
    #[error(
        "handlers still running after the shutdown timeout of {timeout:?}; their messages will be redelivered"
    )]
    HandlersInFlight {
        /// The timeout that ran out.
        timeout: Duration,
    },
}

/// The Kavari manager: cheap to clone, shared by every part of a service.
#[derive(Clone)]
pub struct Kavari {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Box<dyn Backend>,
    consumer_config: ConsumerConfig,
    lifecycle: Mutex<Lifecycle>,
}

/// Where a manager is in its life; `start()` moves it on once, the one
/// place that says `AlreadyStarted`.
enum Lifecycle {
    /// Taking subscriptions.
    Subscribing(Registry),
    /// `start()` took them: the consumer runs (or there was nothing to
    /// consume).
    Started,
}

impl std::fmt::Debug for Kavari {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.backend.fmt(f)
    }
}

impl Kavari {
    /// A manager on `backend`.
    pub(crate) fn new(backend: Box<dyn Backend>, consumer_config: ConsumerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                consumer_config,
                lifecycle: Mutex::new(Lifecycle::Subscribing(Registry::default())),
            }),
        }
    }

    fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    fn lifecycle(&self) -> std::sync::MutexGuard<'_, Lifecycle> {
        self.inner
            .lifecycle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// `M`'s topic as this manager maps it.
    fn topic_of<M: KafkaMessage>(&self) -> std::borrow::Cow<'static, str> {
        self.backend().topic_names().topic_of::<M>()
    }

    /// Has `handler` receive every `M` on `M::TOPIC` (as mapped by
    /// [`topic_prefix`](crate::KavariBuilder::topic_prefix) and
    /// [`topic_for`](crate::KavariBuilder::topic_for)) once the consumer
    /// starts. Several handlers may take one type, and several types may
    /// share a topic (the `msg_type` header picks the type). Subscribing the
    /// same handler type twice for `M`, a type whose `msg_type` name
    /// another type on the topic already uses, or subscribing on a manager
    /// built without a `group_id`, is an error.
    pub fn subscribe<M, H>(&self, handler: H) -> Result<(), SubscribeError>
    where
        M: KafkaMessage,
        H: MessageHandler<M>,
    {
        let handler = Arc::new(handler);
        self.register::<M, H, _>(move || Arc::clone(&handler))
    }

    /// Like [`subscribe`](Self::subscribe), with a provider that builds a
    /// handler for every delivery (dependency injection, as the Python
    /// library's consumer provider).
    pub fn subscribe_with<M, H>(
        &self,
        provider: impl Fn() -> H + Send + Sync + 'static,
    ) -> Result<(), SubscribeError>
    where
        M: KafkaMessage,
        H: MessageHandler<M>,
    {
        self.register::<M, H, _>(move || Arc::new(provider()))
    }

    /// Has `handler` receive the `M`s of each partition of `M::TOPIC` in
    /// batches, for bulk work (one insert of many rows): up to
    /// `max_records` consecutive records of one partition, or as many as
    /// came within `max_wait` of the first. A record of another type
    /// closes the batch before it, so records stay in offset order. The
    /// batch is committed as a whole once handled; the records a
    /// [`BatchError`](crate::BatchError) names are retried in a batch of
    /// their own by the delivery retry policy, then dead-lettered, skipped
    /// or blocked on one by one, by `on_handler_failure`: the others are
    /// not handled again. A type takes one batch handler and no record
    /// handlers; batches need [`ProcessingOrder::Partition`](crate::ProcessingOrder::Partition).
    pub fn subscribe_batch<M, H>(
        &self,
        max_records: usize,
        max_wait: Duration,
        handler: H,
    ) -> Result<(), SubscribeError>
    where
        M: KafkaMessage,
        H: BatchHandler<M>,
    {
        if self.inner.consumer_config.exactly_once.is_some() {
            return Err(SubscribeError::ExactlyOnceOneHandler {
                msg_type: M::NAME,
                has: "a batch handler asked for",
            });
        }
        if self.inner.consumer_config.share_group.is_some() {
            return Err(SubscribeError::SharedBatches);
        }
        let order = self.inner.consumer_config.order;
        if order != ProcessingOrder::Partition {
            return Err(SubscribeError::BatchNeedsPartitionOrder {
                order: format!("{order:?}"),
            });
        }
        let limits = BatchLimits {
            max_records,
            max_wait,
        };
        self.with_registry(
            |r, topic| r.add_batch::<M, H>(topic, handler, limits),
            &self.topic_of::<M>(),
        )
    }

    fn register<M, H, F>(&self, provider: F) -> Result<(), SubscribeError>
    where
        M: KafkaMessage,
        H: MessageHandler<M>,
        F: Fn() -> Arc<H> + Send + Sync + 'static,
    {
        let exactly_once = self.inner.consumer_config.exactly_once.is_some();
        let add = |r: &mut Registry, topic: &str| {
            if exactly_once && r.has_handlers(topic, M::NAME) {
                return Err(SubscribeError::ExactlyOnceOneHandler {
                    msg_type: M::NAME,
                    has: "a handler already",
                });
            }
            r.add::<M, H, F>(topic, provider)
        };
        self.with_registry(add, &self.topic_of::<M>())
    }

    /// Adds to the subscriptions, before the consumer starts.
    fn with_registry(
        &self,
        add: impl FnOnce(&mut Registry, &str) -> Result<(), SubscribeError>,
        topic: &str,
    ) -> Result<(), SubscribeError> {
        let config = &self.inner.consumer_config;
        if config.group_id.is_none() && config.share_group.is_none() {
            return Err(SubscribeError::NoGroupId);
        }
        let mut lifecycle = self.lifecycle();
        match &mut *lifecycle {
            Lifecycle::Subscribing(r) => add(r, topic),
            Lifecycle::Started => Err(SubscribeError::AlreadyStarted),
        }
    }

    /// Starts the consumer runtime in the background: it joins the group,
    /// consumes every subscribed topic and keeps going through outages and
    /// rebalances. It returns at once, also while Kafka is unreachable;
    /// [`health`](Self::health) says when it is ready. Without subscriptions
    /// it does nothing.
    pub async fn start(&self) -> Result<(), StartError> {
        let taken = std::mem::replace(&mut *self.lifecycle(), Lifecycle::Started);
        let Lifecycle::Subscribing(registry) = taken else {
            return Err(StartError::AlreadyStarted);
        };
        if registry.is_empty() {
            return Ok(());
        }
        let config = self.inner.consumer_config.clone();
        self.backend().start(registry, config).await
    }

    /// Waits until the consumer runtime stops: `Ok` after `shutdown()`, the
    /// reason when it failed (a fatal group error, or `give_up_after`). With
    /// no consumer started it returns at once.
    pub async fn wait(&self) -> Result<(), ShutdownError> {
        self.backend().wait().await
    }

    /// A snapshot for readiness probes: the overall state and, per assigned
    /// partition, committed offset, position, high watermark, lag and last
    /// progress.
    pub fn health(&self) -> Health {
        self.backend().health()
    }

    /// Stops handing records of `topic`'s `partitions` to handlers, as
    /// Kafka's `pause`: a record being handled finishes, the next waits
    /// until [`resume`](Self::resume) (fetching stops once the partition's
    /// buffer is full). Meanwhile the member stays in its group, commits
    /// what was handled, and a rebalance keeps the pause on the partitions
    /// this member keeps. `topic` is the topic's name on the cluster (as
    /// `health()` lists it, after any [`topic_prefix`](crate::KavariBuilder::topic_prefix)).
    /// A partition this member does not own now is refused
    /// ([`ControlError::NotOwned`](crate::ControlError::NotOwned)), and so is
    /// the whole call.
    pub fn pause(&self, topic: &str, partitions: &[i32]) -> Result<(), ControlError> {
        self.steer()?.pause(&partitions_of(topic, partitions), true)
    }

    /// Hands records of paused partitions to handlers again, from where
    /// they stopped. Resuming a partition that is not paused does nothing.
    pub fn resume(&self, topic: &str, partitions: &[i32]) -> Result<(), ControlError> {
        self.steer()?
            .pause(&partitions_of(topic, partitions), false)
    }

    /// Moves the position of a partition this member owns, as Kafka's
    /// `seek`: to an offset, to the first record at or after a time
    /// (ListOffsets by timestamp; the log end when none is that late), or
    /// to either end. Records being handled finish first (under a
    /// concurrent [`ProcessingOrder`](crate::ProcessingOrder), those
    /// waiting for their key are dropped), then handling goes on from the
    /// new position, which the next commit records: a seek back handles
    /// records again, a seek forward skips them for the group. A paused
    /// partition stays paused. Returns the offset it moved to.
    ///
    /// Offline, with the group stopped, `kavari group reset-offsets` does
    /// the same for every partition of a topic.
    pub async fn seek(&self, topic: &str, partition: i32, to: SeekTo) -> Result<i64, ControlError> {
        let tp = TopicPartition::new(topic, partition);
        self.steer()?.seek(&tp, to).await
    }

    /// The running consumer's pause and seek.
    fn steer(&self) -> Result<&dyn crate::consume::Steer, ControlError> {
        self.backend().steer().ok_or(ControlError::NotRunning)
    }

    /// Runs `body` in a transaction (the builder's `transactional_id`):
    /// what it publishes through the [`Transaction`](crate::Transaction) it
    /// gets lands together when it returns `Ok`, and is aborted when it
    /// returns `Err` or panics (the panic goes on after the abort):
    /// read_committed readers (Kavari's default) see all of it or none.
    /// Transactions of one manager run one after another.
    ///
    /// ```no_run
    /// # use kavari::{Kavari, KafkaMessage};
    /// # #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
    /// # #[kavari(topic = "orders")]
    /// # struct OrderBilled { #[kavari(key)] id: String }
    /// # async fn run(manager: Kavari) -> Result<(), kavari::TransactionError> {
    /// manager
    ///     .transaction(|tx| async move {
    ///         tx.publish(&OrderBilled { id: "o-1".into() }).await?;
    ///         tx.publish(&OrderBilled { id: "o-2".into() }).await?;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, F, Fut>(&self, body: F) -> Result<T, TransactionError>
    where
        F: FnOnce(Transaction) -> Fut,
        Fut: Future<Output = Result<T, HandlerError>>,
    {
        let backend = self.backend();
        match backend.transactions() {
            Some(transactions) => {
                crate::transaction::run(transactions, backend.topic_names(), body).await
            }
            None => Err(TransactionError::NotTransactional),
        }
    }

    /// The bootstrap servers this manager connects to.
    pub fn bootstrap_servers(&self) -> &[String] {
        self.backend().bootstrap_servers()
    }

    /// Publishes `msg` to `M::TOPIC` (as mapped by the builder's
    /// [`topic_prefix`](crate::KavariBuilder::topic_prefix) and
    /// [`topic_for`](crate::KavariBuilder::topic_for)), keyed by its partition key, with the
    /// `msg_type` and `content-type` headers. Concurrent publishes to one
    /// partition share a produce request. On failure it retries by the
    /// publishing retry policy, then writes the message to the dead-letter
    /// topic ([`PublishError::DeadLettered`]), and when that fails too, hands
    /// the encoded record back ([`PublishError::Failed`]). It returns by
    /// [`delivery_timeout`](crate::KavariBuilder::delivery_timeout) plus the request
    /// timeout whatever the brokers do; a record sent and never answered
    /// may be in the topic, and is handed back as
    /// [`PublishError::Unconfirmed`] rather than dead-lettered.
    ///
    /// Publishing is idempotent by default
    /// ([`enable_idempotence`](crate::KavariBuilder::enable_idempotence)): a
    /// successful publish is in the log once, and publishes to one
    /// partition land in the order they were appended, retries included
    /// (the offset is [`Offset::Duplicate`](crate::Offset::Duplicate) when
    /// the broker reports the batch as one it already holds). Across a process restart delivery is at least
    /// once. With idempotence off, a publish whose answer was lost is
    /// retried and may land twice, after those that succeeded meanwhile.
    ///
    /// The common case allocates nothing: the value is encoded into a
    /// per-thread buffer and copied straight into the partition's open
    /// batch. The message is encoded again (into an
    /// [`EncodedMessage`](codec::EncodedMessage)) only when the publish must
    /// wait (the topic's partitions are not known yet, or the partition
    /// holds `max_queued_per_partition` unsent records) or its first attempt
    /// failed (retries, the dead letter and the hand-back need it).
    pub async fn publish<M: KafkaMessage>(&self, msg: &M) -> Result<Delivery, PublishError> {
        match self.backend().direct() {
            Some(publisher) => traced::publish_typed(publisher, msg).await,
            None => self.publish_encoded(self.encode(msg)?).await,
        }
    }

    /// `msg` encoded for its topic as this manager maps it.
    fn encode<M: KafkaMessage>(&self, msg: &M) -> Result<codec::EncodedMessage, PublishError> {
        let mut message = codec::encode(msg)?;
        message.topic = self.topic_of::<M>();
        Ok(message)
    }

    /// Publishes every message and returns each one's result, in order:
    /// the bulk path. All are appended to their partitions' batches before
    /// any answer is awaited, so they travel in as few requests as the batch
    /// size allows, without a future per message; those whose first attempt
    /// failed are retried and dead-lettered as [`publish`](Self::publish)
    /// does. It runs in one `publish` span (with
    /// `messaging.batch.message_count`) whose trace context every message
    /// carries.
    pub async fn publish_batch<M: KafkaMessage>(
        &self,
        msgs: &[M],
    ) -> Vec<Result<Delivery, PublishError>> {
        if let Some(publisher) = self.backend().direct() {
            return traced::publish_batch(publisher, msgs).await;
        }
        let mut delivered = Vec::with_capacity(msgs.len());
        for msg in msgs {
            delivered.push(self.publish(msg).await);
        }
        delivered
    }

    /// Publishes an already encoded record (for example one handed back by
    /// [`PublishError::Failed`]).
    pub async fn publish_encoded(
        &self,
        message: codec::EncodedMessage,
    ) -> Result<Delivery, PublishError> {
        self.backend().publish(message).await
    }

    /// The publisher's counters.
    pub fn publish_stats(&self) -> PublishStats {
        self.backend().publish_stats()
    }

    /// Shuts down: stops fetching, lets handlers in flight finish, commits,
    /// leaves the group, then refuses new publishes and flushes the ones in
    /// flight; each step bounded by the shutdown timeout. Idempotent.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        self.backend().shutdown().await
    }
}

/// `topic`'s `partitions`, as the group names them.
fn partitions_of(topic: &str, partitions: &[i32]) -> Vec<TopicPartition> {
    partitions
        .iter()
        .map(|p| TopicPartition::new(topic, *p))
        .collect()
}
