//! The steps of a publish before its answer: place the record (its topic's
//! route, the partitioner's partition) and append it to the partition's
//! open batch, waiting for the topic's partitions or for room when it must.
//! A typed message and an encoded one take the same steps ([`Source`]):
//! the typed one is encoded into a per-thread scratch buffer and copied
//! straight into its batch.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use kavari_wire::record_batch::write::{Headers, Record};
use tokio::time::Instant;

use super::batcher::Batcher;
use super::config::ProducerConfig;
use super::outcome::BatchOutcome;
use super::topics::{TopicRoute, Topics};
use super::{Offset, ProduceError, ProduceErrorKind, PublishError};
use crate::codec::{self, EncodedMessage};
use crate::message::KafkaMessage;
use crate::partitioner::RoundRobin;
use crate::trace_context::TraceHeaders;

/// What a publish appends: a record (written to the batch through a
/// [`Visit`]), its topic, and the encoded message the slow paths keep
/// (retries, dead letter, hand-back).
pub(super) trait Source {
    /// Why the record could not be made (encoding a typed message).
    type Error: Unencodable;

    /// The topic, as the manager maps it.
    fn topic(&self, config: &ProducerConfig) -> Cow<'static, str>;

    /// Hands the record to `visit`.
    fn visit<V: Visit>(&self, visit: V) -> Result<V::Out, Self::Error>;

    /// The record as an encoded message.
    fn encoded(self, config: &ProducerConfig) -> Result<EncodedMessage, codec::EncodeError>;
}

/// A record that could not be made, as a publish's error.
pub(super) trait Unencodable {
    fn into_error(self) -> PublishError;
}

impl Unencodable for Infallible {
    fn into_error(self) -> PublishError {
        match self {}
    }
}

impl Unencodable for codec::EncodeError {
    fn into_error(self) -> PublishError {
        self.into()
    }
}

/// Does something with a record, whatever its headers' type.
pub(super) trait Visit {
    type Out;
    fn record<H: Headers + ?Sized>(self, record: &Record<'_, H>) -> Self::Out;
}

impl EncodedMessage {
    /// The record as a batch writes it.
    pub(crate) fn record(&self) -> Record<'_, BTreeMap<String, Vec<u8>>> {
        Record {
            key: self.key.as_deref(),
            value: &self.value,
            headers: &self.headers,
        }
    }
}

impl Source for EncodedMessage {
    type Error = Infallible;

    fn topic(&self, _: &ProducerConfig) -> Cow<'static, str> {
        self.topic.clone()
    }

    fn visit<V: Visit>(&self, visit: V) -> Result<V::Out, Infallible> {
        Ok(visit.record(&self.record()))
    }

    fn encoded(self, _: &ProducerConfig) -> Result<EncodedMessage, codec::EncodeError> {
        Ok(self)
    }
}

/// A typed message with the trace context to send along. The common case
/// allocates nothing: the value is encoded into a per-thread scratch buffer
/// and copied straight into its partition's batch, and the envelope headers
/// are constants.
pub(super) struct Typed<'m, M> {
    pub(super) msg: &'m M,
    pub(super) trace: &'m TraceHeaders,
}

impl<M: KafkaMessage> Source for Typed<'_, M> {
    type Error = codec::EncodeError;

    fn topic(&self, config: &ProducerConfig) -> Cow<'static, str> {
        config.topic_names.topic_of::<M>()
    }

    fn visit<V: Visit>(&self, visit: V) -> Result<V::Out, codec::EncodeError> {
        let envelope = codec::envelope_headers::<M>();
        // The envelope's names sort before the trace context's.
        let traced: Vec<(&str, &[u8])>;
        let headers: &[(&str, &[u8])] = if self.trace.is_empty() {
            &envelope
        } else {
            traced = envelope.into_iter().chain(self.trace.pairs()).collect();
            &traced
        };
        codec::with_record(self.msg, |key, value| {
            visit.record(&Record {
                key,
                value,
                headers,
            })
        })
    }

    fn encoded(self, config: &ProducerConfig) -> Result<EncodedMessage, codec::EncodeError> {
        let mut message = codec::encode(self.msg)?;
        message.topic = config.topic_names.topic_of::<M>();
        self.trace.write_into(&mut message.headers);
        Ok(message)
    }
}

/// A record appended to a batch, waiting for the batch's answer.
pub(super) struct Enqueued {
    partition: i32,
    outcome: Arc<BatchOutcome>,
    index: usize,
}

impl Enqueued {
    /// Where the record landed, once its batch is answered. (The topic is
    /// the caller's: this future is in every publish in flight, so it holds
    /// no more than it must.) The batch is answered by its deadline
    /// (`expiry.rs`).
    pub(super) async fn landed(self) -> Result<(i32, Offset), ProduceError> {
        let offset = self.outcome.offset(self.index).await?;
        Ok((self.partition, offset))
    }
}

/// What one bulk call remembers between its messages.
#[derive(Default)]
pub(super) struct Bulk {
    /// The last topic's route: a bulk call is usually of one topic.
    last_route: Option<(Cow<'static, str>, Arc<TopicRoute>)>,
    /// The partitions appended to, to flush at the end.
    touched: Vec<Arc<Batcher>>,
}

impl Bulk {
    fn route(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        match &self.last_route {
            Some((t, route)) if t == topic && !route.is_stale() => Some(Arc::clone(route)),
            _ => None,
        }
    }

    /// Remembers `batcher` to flush at the end of the call.
    fn touch(&mut self, batcher: &Arc<Batcher>) {
        if !self.touched.iter().any(|t| Arc::ptr_eq(t, batcher)) {
            self.touched.push(Arc::clone(batcher));
        }
    }

    /// Sends what the call appended without waiting out the linger:
    /// nothing more is coming from it.
    pub(super) fn flush(&self) {
        for batcher in &self.touched {
            batcher.flush();
        }
    }
}

/// Places a record and appends it if its partition has room now (a bulk
/// call's `bulk` remembers the partition to flush).
struct Append<'a, 'b> {
    appender: &'a Appender<'a>,
    route: &'a TopicRoute,
    topic: &'a str,
    enforce_size: bool,
    deadline: Instant,
    bulk: Option<&'b mut Bulk>,
}

/// A record appended, or `None` when its partition is full; with the
/// partition's batcher.
type Appended<'r> = Result<(Option<Enqueued>, &'r Arc<Batcher>), ProduceError>;

impl<'a> Visit for Append<'a, '_> {
    type Out = Appended<'a>;

    fn record<H: Headers + ?Sized>(self, record: &Record<'_, H>) -> Appended<'a> {
        let a = self.appender;
        a.config.check_size(record.size(), self.enforce_size)?;
        let (partition, batcher) = a.place(self.route, self.topic, record.key)?;
        let appended = batcher
            .try_append(record, self.deadline)?
            .map(|(outcome, index)| Enqueued {
                partition,
                outcome,
                index,
            });
        if let (Some(_), Some(b)) = (&appended, self.bulk) {
            b.touch(batcher);
        }
        Ok((appended, batcher))
    }
}

/// Refuses a record over `max_message_bytes` (when `.1`).
struct CheckSize<'a>(&'a ProducerConfig, bool);

impl Visit for CheckSize<'_> {
    type Out = Result<(), ProduceError>;

    fn record<H: Headers + ?Sized>(self, record: &Record<'_, H>) -> Self::Out {
        self.0.check_size(record.size(), self.1)
    }
}

/// A publish whose `delivery_timeout` ran out before its record found its
/// partition's leader or room in its queue: it was not sent.
fn not_enqueued(topic: &str) -> ProduceError {
    ProduceError::new(
        ProduceErrorKind::Timeout,
        true,
        format!(
            "delivery_timeout ran out before {topic} had a leader known or room for the record"
        ),
    )
}

/// What placing and appending a record needs of the publisher.
pub(super) struct Appender<'a> {
    pub(super) topics: &'a Arc<Topics>,
    pub(super) config: &'a ProducerConfig,
    pub(super) round_robin: &'a RoundRobin,
}

impl Appender<'_> {
    /// Places `source`'s record and appends it to its partition's open
    /// batch, unless finding its partition or room there takes until
    /// `deadline`. In a bulk call, `bulk` keeps the last route and the
    /// batchers touched. The outer error is the record's own (it cannot be
    /// encoded), the inner one the attempt's.
    pub(super) async fn append<S: Source>(
        &self,
        source: &S,
        enforce_size: bool,
        mut bulk: Option<&mut Bulk>,
        deadline: Instant,
    ) -> Result<Result<Enqueued, ProduceError>, S::Error> {
        let topic = source.topic(self.config);
        let cached = match bulk.as_deref_mut() {
            Some(b) => b.route(&topic),
            None => self.topics.fresh(&topic),
        };
        if let Some(route) = cached {
            let append = self.to(&route, &topic, enforce_size, deadline, bulk.as_deref_mut());
            match source.visit(append)? {
                Ok((Some(enqueued), _)) => return Ok(Ok(enqueued)),
                Ok((None, _)) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
        // Boxed: the common case does not wait, and every publish in
        // flight holds this future.
        Box::pin(self.append_waiting(source, topic, enforce_size, bulk, deadline)).await
    }

    /// Appends `source`'s record once its topic's partitions are known and
    /// its partition has room, or fails at `deadline`.
    async fn append_waiting<S: Source>(
        &self,
        source: &S,
        topic: Cow<'static, str>,
        enforce_size: bool,
        mut bulk: Option<&mut Bulk>,
        deadline: Instant,
    ) -> Result<Result<Enqueued, ProduceError>, S::Error> {
        // Too large is known before the topic is.
        if let Err(e) = source.visit(CheckSize(self.config, enforce_size))? {
            return Ok(Err(e));
        }
        let route = match self.topics.route_by(&topic, deadline).await {
            Ok(Some(route)) => route,
            Ok(None) => return Ok(Err(not_enqueued(&topic))),
            Err(e) => return Ok(Err(e)),
        };
        if let Some(b) = bulk.as_deref_mut() {
            b.last_route = Some((topic.clone(), Arc::clone(&route)));
        }
        // The partition found full: its room is awaited from the next try
        // on (registered before the try, so room made in between counts).
        let mut full: Option<&Arc<Batcher>> = None;
        loop {
            let room = full.map(|b| b.room());
            let append = self.to(&route, &topic, enforce_size, deadline, bulk.as_deref_mut());
            match source.visit(append)? {
                Ok((Some(enqueued), _)) => return Ok(Ok(enqueued)),
                Ok((None, batcher)) => full = Some(batcher),
                Err(e) => return Ok(Err(e)),
            }
            if let Some(room) = room
                && tokio::time::timeout_at(deadline, room).await.is_err()
            {
                return Ok(Err(not_enqueued(&topic)));
            }
        }
    }

    /// The append of one record to `route`'s partitions.
    fn to<'a, 'b>(
        &'a self,
        route: &'a TopicRoute,
        topic: &'a str,
        enforce_size: bool,
        deadline: Instant,
        bulk: Option<&'b mut Bulk>,
    ) -> Append<'a, 'b> {
        Append {
            appender: self,
            route,
            topic,
            enforce_size,
            deadline,
            bulk,
        }
    }

    /// The partition for `key` (`Partitioner::choose`) and its batcher.
    fn place<'r>(
        &self,
        route: &'r TopicRoute,
        topic: &str,
        key: Option<&[u8]>,
    ) -> Result<(i32, &'r Arc<Batcher>), ProduceError> {
        let partitions = route.partitions();
        let partition = self
            .config
            .partitioner
            .choose(key, partitions, self.round_robin);
        let batcher = route.batcher(partition).ok_or_else(|| {
            ProduceError::new(
                ProduceErrorKind::UnknownTopic,
                true,
                format!("partition {partition} of {topic} is not known"),
            )
        })?;
        Ok((partition, batcher))
    }
}
