//! The in-memory consumer: delivers each subscribed partition's records in
//! order through the consumer's own delivery (routing, retries, dead
//! letters, failure policies), right after they are published. A share
//! group's records go through the share member's own delivery instead: a
//! failed delivery is released and delivered again, up to the delivery
//! limit, as the broker does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use kavari_group::TopicPartition;
use tokio::sync::watch;

use super::log::Log;
use crate::codec::EncodedMessage;
use crate::consume::{
    ConsumerConfig, ControlError, Disposition, HandlerClock, OffsetReset, Orders, POISON_LOG_EVERY,
    Runtime, SeekTo, Steer, Steering, Target, Writer, Writing, deliver, deliver_batch,
};
use crate::context::MessageContext;
use crate::health::{Health, HealthState, PartitionHealth};
use crate::partitioner::Partitioner;
use crate::partitioner::RoundRobin;
use crate::publish::ProduceError;
use crate::registry::Registry;
use crate::share::{Ack, Deliverer, ShareCounts};
use kavari_wire::list_offsets::OffsetSpec;
use kavari_wire::log_rate::LogRate;
use kavari_wire::record_batch::read::FetchedRecord;

/// The consumers started on a broker.
#[derive(Debug, Default)]
pub(crate) struct MemoryConsumers(Mutex<Vec<Weak<MemoryConsumer>>>);

impl MemoryConsumers {
    fn add(&self, consumer: &Arc<MemoryConsumer>) {
        let mut consumers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        consumers.retain(|c| c.strong_count() > 0);
        consumers.push(Arc::downgrade(consumer));
    }

    /// The running consumers subscribed to `topic`.
    fn of(&self, topic: &str) -> Vec<Arc<MemoryConsumer>> {
        let consumers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        consumers
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| c.subscribes(topic))
            .collect()
    }
}

/// Where a manager writes: the broker's log and consumers, and how it
/// places records on partitions.
#[derive(Debug)]
pub(crate) struct Destination {
    pub(crate) log: Arc<Log>,
    pub(crate) consumers: Arc<MemoryConsumers>,
    pub(crate) partitioner: Partitioner,
    pub(crate) round_robin: RoundRobin,
}

impl Destination {
    /// Appends `message` to the partition its key picks, then delivers the
    /// partition to every consumer subscribed to the topic.
    pub(crate) async fn append_and_deliver(&self, message: EncodedMessage) -> (i32, i64) {
        let partition = self.place(&message);
        let offset = self.append_to(message, partition).await;
        (partition, offset)
    }

    /// Appends a dead letter of a record of `source`, and delivers it: its
    /// topic is created, as the publisher creates it, with its source's
    /// partitions.
    async fn append_dead_letter(&self, letter: EncodedMessage, source: &str) -> (i32, i64) {
        self.log.create(&letter.topic, self.log.partitions(source));
        self.append_and_deliver(letter).await
    }

    /// The partition `message`'s key picks.
    pub(crate) fn place(&self, message: &EncodedMessage) -> i32 {
        let partitions = u32::try_from(self.log.partitions(&message.topic)).unwrap_or(1);
        self.partitioner
            .choose(message.key.as_deref(), partitions, &self.round_robin)
    }

    /// Appends `message` to `partition`, then delivers the partition to
    /// every consumer subscribed to the topic; returns its offset.
    pub(crate) async fn append_to(&self, message: EncodedMessage, partition: i32) -> i64 {
        let offset = self.log.append(&message, partition);
        let tp = TopicPartition::new(message.topic.as_ref(), partition);
        for consumer in self.consumers.of(&message.topic) {
            consumer.catch_up(tp.clone()).await;
        }
        offset
    }
}

tokio::task_local! {
    /// Set while a record is delivered: a publish from inside a handler
    /// must not wait for a partition an outer delivery is working through.
    static DELIVERING: ();
}

pub(crate) struct MemoryConsumer {
    registry: Arc<Registry>,
    config: ConsumerConfig,
    /// A share group's delivery and counts, when the subscriptions are a
    /// share group's.
    share: Option<(Deliverer, ShareCounts)>,
    group_id: String,
    dlq_suffix: Option<String>,
    topics: Vec<String>,
    log: Arc<Log>,
    /// Where dead letters go.
    destination: Arc<Destination>,
    stop: watch::Sender<bool>,
    notes: Mutex<BTreeMap<TopicPartition, Notes>>,
    poison_log: LogRate<TopicPartition>,
    /// What the application asked of the partitions (pause, seek).
    steering: Mutex<Steering>,
}

/// What health shows of a partition besides its offsets.
#[derive(Debug, Clone, Default)]
struct Notes {
    /// Why it waits at a record.
    blocked: Option<String>,
    dead_lettered: u64,
    skipped: u64,
}

impl MemoryConsumer {
    fn note(&self, tp: &TopicPartition, f: impl FnOnce(&mut Notes)) {
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        f(notes.entry(tp.clone()).or_default());
    }

    /// Starts delivering `registry`'s topics (created with one partition
    /// when missing) from the group's committed offsets, or where
    /// `auto_offset_reset` says; what is there already is delivered before
    /// this returns.
    pub(crate) async fn start(
        destination: &Arc<Destination>,
        registry: Registry,
        config: ConsumerConfig,
        dlq_suffix: Option<String>,
    ) -> Arc<MemoryConsumer> {
        // A share group's members share its one position per partition:
        // each record goes to one of them.
        let group_id = config
            .share_group
            .clone()
            .or_else(|| config.group_id.clone())
            .unwrap_or_default();
        let topics = registry.topics();
        let registry = Arc::new(registry);
        let share = config.share_group.as_ref().map(|group| {
            let deliverer = Deliverer {
                registry: Arc::clone(&registry),
                config: config.clone(),
                group: group.clone(),
                dead_letters: Arc::new(MemoryDeadLetters {
                    destination: Arc::clone(destination),
                    suffix: dlq_suffix.clone(),
                }),
            };
            (deliverer, ShareCounts::default())
        });
        let consumer = Arc::new(MemoryConsumer {
            registry,
            config,
            share,
            group_id,
            dlq_suffix,
            topics,
            log: Arc::clone(&destination.log),
            destination: Arc::clone(destination),
            stop: watch::channel(false).0,
            notes: Mutex::default(),
            poison_log: LogRate::new(POISON_LOG_EVERY),
            steering: Mutex::default(),
        });
        destination.consumers.add(&consumer);
        for tp in consumer.partitions() {
            consumer.cursor(&tp);
        }
        for tp in consumer.partitions() {
            Arc::clone(&consumer).catch_up(tp).await;
        }
        consumer
    }

    pub(crate) fn subscribes(&self, topic: &str) -> bool {
        !*self.stop.borrow() && self.topics.iter().any(|t| t == topic)
    }

    /// Every partition of the subscribed topics.
    fn partitions(&self) -> Vec<TopicPartition> {
        self.topics
            .iter()
            .flat_map(|t| {
                (0..self.log.partitions(t)).map(move |p| TopicPartition::new(t, p as i32))
            })
            .collect()
    }

    fn cursor(&self, tp: &TopicPartition) -> Arc<super::log::Cursor> {
        let start = match self.config.auto_offset_reset {
            OffsetReset::Latest => self.log.end(tp),
            OffsetReset::Earliest | OffsetReset::Error => 0,
        };
        self.log.cursor(&self.group_id, tp, start)
    }

    /// Delivers `tp`'s records from the group's position to its end. From
    /// inside a handler, a partition another delivery holds is left to it:
    /// that delivery goes on to the end, so the record is delivered after
    /// the current one, as Kafka would.
    pub(crate) fn catch_up(self: Arc<Self>, tp: TopicPartition) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let cursor = self.cursor(&tp);
            let nested = DELIVERING.try_with(|()| ()).is_ok();
            let stop = self.stop.subscribe();
            let clock = HandlerClock::default();
            loop {
                let guard = if nested {
                    match cursor.delivering.try_lock() {
                        Ok(guard) => guard,
                        Err(_) => return,
                    }
                } else {
                    cursor.delivering.lock().await
                };
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    let orders = self.orders(&tp);
                    if let Some(to) = orders.seek {
                        cursor.advance(to);
                    }
                    if orders.paused {
                        return;
                    }
                    let next = cursor.next();
                    let Some(record) = self.log.record(&tp, next) else {
                        break;
                    };
                    if let Some(entry) = self.registry.batch_of(&tp.topic, &record)
                        && let Some(subscription) = entry.batch()
                    {
                        // What is there now, without waiting for more.
                        let mut batch = vec![record];
                        while batch.len() < subscription.limits.max_records {
                            let at = next + batch.len() as i64;
                            match self.log.record(&tp, at) {
                                Some(r)
                                    if self
                                        .registry
                                        .batch_of(&tp.topic, &r)
                                        .is_some_and(|e| std::ptr::eq(e, entry)) =>
                                {
                                    batch.push(r)
                                }
                                _ => break,
                            }
                        }
                        let after = next + batch.len() as i64;
                        let delivered = DELIVERING
                            .scope(
                                (),
                                deliver_batch(
                                    self.as_ref(),
                                    &tp.topic,
                                    tp.partition,
                                    subscription,
                                    batch,
                                    &stop,
                                    &clock,
                                ),
                            )
                            .await;
                        match delivered {
                            Ok(()) if self.seeking(&tp) => {}
                            Ok(()) => cursor.advance(after),
                            Err(_) => return,
                        }
                        continue;
                    }
                    if let Some((share, counts)) = &self.share {
                        let delivered = DELIVERING
                            .scope((), deliver_shared(share, counts, &tp, &record, &stop))
                            .await;
                        match delivered {
                            Ok(()) if self.seeking(&tp) => {}
                            Ok(()) => cursor.advance(next + 1),
                            Err(Stopping) => return,
                        }
                        continue;
                    }
                    let mut ctx = MessageContext::new(tp.topic.clone(), tp.partition, next);
                    let delivered = DELIVERING
                        .scope(
                            (),
                            deliver(
                                self.as_ref(),
                                &tp.topic,
                                tp.partition,
                                &mut ctx,
                                record,
                                &stop,
                                &clock,
                            ),
                        )
                        .await;
                    match delivered {
                        // A seek asked meanwhile is carried out above.
                        Ok(_) if self.seeking(&tp) => {}
                        Ok(_) => cursor.advance(next + 1),
                        // Stopping: the record stays uncommitted.
                        Err(_) => return,
                    }
                }
                drop(guard);
                // A record appended by a publish that found the partition
                // held, after this delivery's last look, is delivered now.
                if cursor.next() >= self.log.end(&tp)
                    || *stop.borrow()
                    || self.orders_for(&tp).paused
                {
                    return;
                }
            }
        })
    }

    /// The orders for `tp`, taking its seek out.
    fn orders(&self, tp: &TopicPartition) -> Orders {
        let mut steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        Orders {
            seek: steering.seeks.remove(tp),
            paused: steering.paused.contains(tp),
        }
    }

    /// The orders for `tp`, leaving its seek for the delivery to carry out.
    fn orders_for(&self, tp: &TopicPartition) -> Orders {
        let steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        Orders {
            seek: steering.seeks.get(tp).copied(),
            paused: steering.paused.contains(tp),
        }
    }

    fn seeking(&self, tp: &TopicPartition) -> bool {
        self.orders_for(tp).seek.is_some()
    }

    /// Refuses partitions the consumer does not deliver.
    fn owned(&self, partitions: &[TopicPartition]) -> Result<(), ControlError> {
        if *self.stop.borrow() {
            return Err(ControlError::NotRunning);
        }
        let owned = self.partitions();
        match partitions.iter().find(|tp| !owned.contains(tp)) {
            Some(tp) => Err(ControlError::NotOwned(tp.clone())),
            None => Ok(()),
        }
    }

    /// Pauses or resumes `partitions`; what a resume frees is delivered by
    /// a task of its own.
    fn pause_now(
        self: &Arc<Self>,
        partitions: &[TopicPartition],
        paused: bool,
    ) -> Result<(), ControlError> {
        self.owned(partitions)?;
        let mut steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        for tp in partitions {
            if paused {
                steering.paused.insert(tp.clone());
            } else if steering.paused.remove(tp)
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                runtime.spawn(Arc::clone(self).catch_up(tp.clone()));
            }
        }
        Ok(())
    }

    /// Moves `tp`'s position, then delivers from there (unless paused or
    /// delivered by a handler up the stack, which goes on from there).
    async fn seek_now(
        self: Arc<Self>,
        tp: TopicPartition,
        to: SeekTo,
    ) -> Result<i64, ControlError> {
        self.owned(std::slice::from_ref(&tp))?;
        let end = self.log.end(&tp);
        let offset = match to.target()? {
            Target::At(offset) => offset,
            Target::Find(OffsetSpec::Earliest) => 0,
            Target::Find(OffsetSpec::Latest) => end,
            Target::Find(OffsetSpec::Time(ms)) => (0..end)
                .find(|o| {
                    self.log
                        .record(&tp, *o)
                        .is_some_and(|r| r.timestamp_ms >= ms)
                })
                .unwrap_or(end),
        };
        self.steering
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seeks
            .insert(tp.clone(), offset);
        Arc::clone(&self).catch_up(tp).await;
        Ok(offset)
    }

    pub(crate) fn health(&self) -> Health {
        let stopped = *self.stop.borrow();
        let notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        let partitions = self
            .partitions()
            .into_iter()
            .map(|tp| {
                let position = self.log.committed(&self.group_id, &tp);
                let end = self.log.end(&tp);
                let note = notes.get(&tp).cloned().unwrap_or_default();
                let paused = self.orders_for(&tp).paused;
                PartitionHealth {
                    error: note.blocked,
                    dead_lettered: note.dead_lettered,
                    skipped: note.skipped,
                    topic: tp.topic,
                    partition: tp.partition,
                    committed: position,
                    position,
                    high_watermark: Some(end),
                    lag: position.map(|p| (end - p).max(0)),
                    last_progress: None,
                    paused,
                    in_flight: 0,
                    in_flight_since: None,
                }
            })
            .collect::<Vec<_>>();
        Health {
            ready: !stopped && partitions.iter().all(|p| p.error.is_none()),
            state: if stopped {
                HealthState::Stopped
            } else {
                HealthState::Running
            },
            generation: Some(1),
            share: self.share.as_ref().map(|(share, counts)| {
                counts.health(
                    share.group.clone(),
                    "in-memory".into(),
                    partitions
                        .iter()
                        .map(|p| (p.topic.clone(), p.partition))
                        .collect(),
                )
            }),
            partitions,
        }
    }

    /// Stops delivering: a record waiting (`Block`) or between retries is
    /// left uncommitted.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub(crate) async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Delivery stopped: the record stays where it is.
struct Stopping;

/// A share group's delivery of `record`, as the broker and a share member
/// do it together: handed to the handlers with its delivery count, and
/// each released delivery counted and delivered again, up to the
/// configured delivery limit; a record released at its last delivery is
/// archived, as the broker archives it.
async fn deliver_shared(
    share: &Deliverer,
    counts: &ShareCounts,
    tp: &TopicPartition,
    record: &FetchedRecord,
    stop: &watch::Receiver<bool>,
) -> Result<(), Stopping> {
    for delivery in 1..=share.config.share_delivery_limit {
        counts.acquired();
        let ack = share
            .deliver(&tp.topic, tp.partition, record, delivery, stop)
            .await;
        counts.finished(ack);
        match ack {
            Ack::Release if *stop.borrow() => return Err(Stopping),
            Ack::Release => {}
            Ack::Accept | Ack::Reject | Ack::Gap => return Ok(()),
        }
    }
    Ok(())
}

/// Where a share group's dead letters go in memory: appended, and
/// delivered, as a published record.
struct MemoryDeadLetters {
    destination: Arc<Destination>,
    suffix: Option<String>,
}

impl Writer for MemoryDeadLetters {
    fn suffix(&self) -> Option<&str> {
        self.suffix.as_deref()
    }

    fn write_until_written<'a>(
        &'a self,
        letter: EncodedMessage,
        source: &'a str,
        _stop: watch::Receiver<bool>,
        _blocked: &'a (dyn Fn(Option<&ProduceError>) + Send + Sync),
    ) -> Writing<'a> {
        Box::pin(async move {
            let topic = letter.topic.clone();
            let (partition, offset) = self.destination.append_dead_letter(letter, source).await;
            Ok(crate::publish::Delivery {
                topic,
                partition,
                offset: crate::publish::Offset::At(offset),
            })
        })
    }
}

impl Steer for Arc<MemoryConsumer> {
    fn pause(&self, partitions: &[TopicPartition], paused: bool) -> Result<(), ControlError> {
        self.pause_now(partitions, paused)
    }

    fn seek<'a>(
        &'a self,
        partition: &'a TopicPartition,
        to: SeekTo,
    ) -> BoxFuture<'a, Result<i64, ControlError>> {
        Box::pin(Arc::clone(self).seek_now(partition.clone(), to))
    }
}

impl Runtime for MemoryConsumer {
    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    fn group_id(&self) -> &str {
        &self.group_id
    }

    fn dlq_suffix(&self) -> Option<&str> {
        self.dlq_suffix.as_deref()
    }

    fn report_blocked(&self, tp: &TopicPartition, error: Option<String>) {
        self.note(tp, |n| n.blocked = error);
    }

    fn poison_log(&self) -> &LogRate<TopicPartition> {
        &self.poison_log
    }

    fn count_unhandled(&self, tp: &TopicPartition, disposition: Disposition) {
        self.note(tp, |n| {
            disposition.count(&mut n.dead_lettered, &mut n.skipped)
        });
    }

    async fn write_dead_letter(
        &self,
        message: EncodedMessage,
        source: &str,
        _stop: watch::Receiver<bool>,
        _blocked: &(dyn Fn(Option<&ProduceError>) + Send + Sync),
    ) -> Result<(), ProduceError> {
        self.destination.append_dead_letter(message, source).await;
        Ok(())
    }
}
