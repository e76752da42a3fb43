//! The handler registry: which handlers run for a record, by topic and the
//! `msg_type` header, with the payload decoded into each handler's type.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::batch::{BatchError, BatchHandler, BatchLimits};
use crate::codec::{self, DecodeError};
use crate::context::MessageContext;
use crate::handler::MessageHandler;
use crate::handler_error::HandlerError;
use crate::message::KafkaMessage;
use kavari_wire::record_batch::read::FetchedRecord;

/// Why `subscribe` refused a handler.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The same handler type is already subscribed to this message type.
    #[error("handler {handler} is already subscribed to {msg_type}")]
    Duplicate {
        /// The message type's name.
        msg_type: &'static str,
        /// The handler's Rust type.
        handler: &'static str,
    },
    /// Two Rust types claim one `msg_type` name on one topic.
    #[error("{rust_type} and {other} both use msg_type {msg_type:?} on topic {topic}")]
    NameCollision {
        /// The topic.
        topic: String,
        /// The shared name.
        msg_type: &'static str,
        /// The type being subscribed.
        rust_type: &'static str,
        /// The type registered before.
        other: &'static str,
    },
    /// Subscriptions are fixed once the consumer has started.
    #[error("subscribe after start: subscribe every handler before calling start()")]
    AlreadyStarted,
    /// A message type takes either record handlers or one batch handler,
    /// not both (its records would be committed twice over).
    #[error(
        "{msg_type} on topic {topic} has {has}; a type takes record handlers or one batch handler"
    )]
    BatchAndRecordHandlers {
        /// The topic.
        topic: String,
        /// The message type's name.
        msg_type: &'static str,
        /// What it has already.
        has: &'static str,
    },
    /// Batch handlers need `ProcessingOrder::Partition`: a batch is the
    /// unit that runs, in offset order.
    #[error("subscribe_batch needs ProcessingOrder::Partition (the builder sets {order})")]
    BatchNeedsPartitionOrder {
        /// The order the builder sets.
        order: String,
    },
    /// Under exactly-once handling a record's transaction holds one
    /// handler's publishes: a type takes one record handler, and no batch
    /// handler.
    #[error("exactly_once takes one record handler per message type ({msg_type} has {has})")]
    ExactlyOnceOneHandler {
        /// The message type's name.
        msg_type: &'static str,
        /// What it has already, or asked for.
        has: &'static str,
    },
    /// `subscribe_batch` with `max_records` 0 or a zero `max_wait`.
    #[error("subscribe_batch needs max_records and max_wait above zero")]
    EmptyBatch,
    /// Subscribed handlers run in a consumer group, and the builder has no
    /// `group_id`.
    #[error("subscribe needs a consumer group: set group_id (or share_group) on the builder")]
    NoGroupId,
    /// Batch handlers need a consumer group: a share group acknowledges
    /// records one by one.
    #[error("subscribe_batch needs a consumer group: share_group acknowledges records one by one")]
    SharedBatches,
}

/// What a handler run ended in.
pub(crate) enum Outcome {
    Ok,
    /// The value is not a valid `M`: the record is poison, for every
    /// handler of the type alike.
    Undecodable(DecodeError),
    Failed(HandlerError),
    Panicked(String),
}

/// A handler with its message type erased: decodes, then calls.
pub(crate) trait ErasedHandler: Send + Sync {
    fn name(&self) -> &'static str;
    fn call<'a>(&'a self, value: &'a [u8], ctx: &'a MessageContext) -> BoxFuture<'a, Outcome>;
}

struct Typed<M, F> {
    provider: F,
    handler_name: &'static str,
    _m: std::marker::PhantomData<fn() -> M>,
}

impl<M, H, F> ErasedHandler for Typed<M, F>
where
    M: KafkaMessage,
    H: MessageHandler<M>,
    F: Fn() -> Arc<H> + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.handler_name
    }

    fn call<'a>(&'a self, value: &'a [u8], ctx: &'a MessageContext) -> BoxFuture<'a, Outcome> {
        async move {
            // Decoded per handler: each takes its message by value.
            let content_type = ctx.headers.get(codec::CONTENT_TYPE_HEADER);
            let msg = match codec::decode_with_content_type::<M>(
                content_type.map(Vec::as_slice),
                value,
            ) {
                Ok(m) => m,
                Err(e) => return Outcome::Undecodable(e),
            };
            let handler = (self.provider)();
            let run = std::panic::AssertUnwindSafe(handler.handle(msg, ctx)).catch_unwind();
            match run.await {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(e)) => Outcome::Failed(e),
                Err(panic) => Outcome::Panicked(panic_message(&*panic)),
            }
        }
        .boxed()
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_string()
    }
}

/// What a batch handler run ended in, for one record handed to it.
pub(crate) enum ItemOutcome {
    Ok,
    /// The value is not a valid `M`: poison; it never reached the handler.
    Undecodable(DecodeError),
    Failed(HandlerError),
}

/// A batch handler, its message type erased.
pub(crate) trait ErasedBatchHandler: Send + Sync {
    fn name(&self) -> &'static str;
    /// Decodes the records' values and hands the decodable ones over in
    /// one batch; one outcome per record, in order.
    fn call<'a>(
        &'a self,
        items: Vec<(&'a [u8], MessageContext)>,
    ) -> BoxFuture<'a, Vec<ItemOutcome>>;
}

struct TypedBatch<M, H> {
    handler: Arc<H>,
    handler_name: &'static str,
    _m: std::marker::PhantomData<fn() -> M>,
}

impl<M, H> ErasedBatchHandler for TypedBatch<M, H>
where
    M: KafkaMessage,
    H: BatchHandler<M>,
{
    fn name(&self) -> &'static str {
        self.handler_name
    }

    fn call<'a>(
        &'a self,
        items: Vec<(&'a [u8], MessageContext)>,
    ) -> BoxFuture<'a, Vec<ItemOutcome>> {
        async move {
            let mut outcomes: Vec<ItemOutcome> = Vec::with_capacity(items.len());
            // Which record each message of the batch is.
            let mut index = Vec::with_capacity(items.len());
            let mut batch = Vec::with_capacity(items.len());
            for (i, (value, ctx)) in items.into_iter().enumerate() {
                let content_type = ctx.headers.get(codec::CONTENT_TYPE_HEADER);
                match codec::decode_with_content_type::<M>(content_type.map(Vec::as_slice), value) {
                    Ok(m) => {
                        outcomes.push(ItemOutcome::Ok);
                        index.push(i);
                        batch.push((m, ctx));
                    }
                    Err(e) => outcomes.push(ItemOutcome::Undecodable(e)),
                }
            }
            if batch.is_empty() {
                return outcomes;
            }
            let run = std::panic::AssertUnwindSafe(self.handler.handle(batch)).catch_unwind();
            let error = match run.await {
                Ok(Ok(())) => return outcomes,
                Ok(Err(e)) => e,
                Err(panic) => BatchError::all(panic_message(&*panic)),
            };
            match error.all {
                Some(e) => {
                    // Each record's dead letter tells the one error.
                    let why = format!("{e:#}");
                    for &i in &index {
                        let each = HandlerError::new(why.clone());
                        outcomes[i] = ItemOutcome::Failed(if e.is_retriable() {
                            each
                        } else {
                            each.no_retry()
                        });
                    }
                }
                None => {
                    for (at, e) in error.failed {
                        match index.get(at) {
                            Some(&i) => outcomes[i] = ItemOutcome::Failed(e),
                            None => tracing::warn!(
                                handler = self.handler_name,
                                index = at,
                                batch = index.len(),
                                "a batch handler named a record past its batch; ignored"
                            ),
                        }
                    }
                }
            }
            outcomes
        }
        .boxed()
    }
}

/// A batch subscription: the handler and how its batches are collected.
pub(crate) struct BatchSubscription {
    pub(crate) handler: Arc<dyn ErasedBatchHandler>,
    pub(crate) limits: BatchLimits,
}

/// The handlers of one message type on one topic.
pub(crate) struct TypeEntry {
    rust_type: TypeId,
    rust_name: &'static str,
    handlers: Vec<(TypeId, Arc<dyn ErasedHandler>)>,
    batch: Option<BatchSubscription>,
}

impl TypeEntry {
    pub(crate) fn handlers(&self) -> impl Iterator<Item = &Arc<dyn ErasedHandler>> {
        self.handlers.iter().map(|(_, h)| h)
    }

    /// The batch handler, for a type subscribed in batches.
    pub(crate) fn batch(&self) -> Option<&BatchSubscription> {
        self.batch.as_ref()
    }
}

/// How a record routes.
pub(crate) enum Route<'a> {
    /// A subscribed type, with these handlers (the value is decoded by each).
    Handlers(&'a TypeEntry),
    /// Cannot be handled: no type header, an unknown type, no value.
    Poison(DecodeError),
}

/// Topic → msg_type → handlers. Names are kept as bytes: a record's
/// header is looked up as it came, with no UTF-8 check per record.
#[derive(Default)]
pub(crate) struct Registry {
    topics: BTreeMap<String, BTreeMap<&'static [u8], TypeEntry>>,
    /// Some type is subscribed in batches.
    batches: bool,
}

impl Registry {
    /// The entry of `M` on `topic`, made when missing; refused when another
    /// Rust type has `M`'s name there.
    fn entry<M: KafkaMessage>(&mut self, topic: &str) -> Result<&mut TypeEntry, SubscribeError> {
        let by_name = self.topics.entry(topic.to_string()).or_default();
        let entry = match by_name.entry(M::NAME.as_bytes()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(TypeEntry {
                rust_type: TypeId::of::<M>(),
                rust_name: std::any::type_name::<M>(),
                handlers: Vec::new(),
                batch: None,
            }),
        };
        if entry.rust_type != TypeId::of::<M>() {
            return Err(SubscribeError::NameCollision {
                topic: topic.to_string(),
                msg_type: M::NAME,
                rust_type: std::any::type_name::<M>(),
                other: entry.rust_name,
            });
        }
        Ok(entry)
    }

    /// Subscribes a batch handler to `M` on `topic`.
    pub(crate) fn add_batch<M, H>(
        &mut self,
        topic: &str,
        handler: H,
        limits: BatchLimits,
    ) -> Result<(), SubscribeError>
    where
        M: KafkaMessage,
        H: BatchHandler<M>,
    {
        if limits.max_records == 0 || limits.max_wait.is_zero() {
            return Err(SubscribeError::EmptyBatch);
        }
        let entry = self.entry::<M>(topic)?;
        let has = if entry.batch.is_some() {
            "a batch handler"
        } else if !entry.handlers.is_empty() {
            "record handlers"
        } else {
            ""
        };
        if !has.is_empty() {
            return Err(SubscribeError::BatchAndRecordHandlers {
                topic: topic.to_string(),
                msg_type: M::NAME,
                has,
            });
        }
        entry.batch = Some(BatchSubscription {
            handler: Arc::new(TypedBatch::<M, H> {
                handler: Arc::new(handler),
                handler_name: std::any::type_name::<H>(),
                _m: std::marker::PhantomData,
            }),
            limits,
        });
        self.batches = true;
        Ok(())
    }

    /// Whether `msg_type` has handlers on `topic` already.
    pub(crate) fn has_handlers(&self, topic: &str, msg_type: &str) -> bool {
        self.topics
            .get(topic)
            .and_then(|t| t.get(msg_type.as_bytes()))
            .is_some_and(|e| !e.handlers.is_empty() || e.batch.is_some())
    }

    /// Whether some type is subscribed in batches.
    pub(crate) fn has_batches(&self) -> bool {
        self.batches
    }

    /// The batch subscription a record of `topic` belongs to (by its
    /// `msg_type` header, the last when repeated), if any.
    pub(crate) fn batch_of(&self, topic: &str, record: &FetchedRecord) -> Option<&TypeEntry> {
        if !self.batches {
            return None;
        }
        let msg_type = record
            .headers
            .iter()
            .filter(|(name, _)| *name == codec::MSG_TYPE_HEADER.as_bytes())
            .last()
            .and_then(|(_, value)| value);
        let entry = self.topics.get(topic)?.get(msg_type?)?;
        entry.batch.is_some().then_some(entry)
    }

    /// Subscribes a handler to `M` on `topic` (`M::TOPIC` as the manager
    /// maps it).
    pub(crate) fn add<M, H, F>(&mut self, topic: &str, provider: F) -> Result<(), SubscribeError>
    where
        M: KafkaMessage,
        H: MessageHandler<M>,
        F: Fn() -> Arc<H> + Send + Sync + 'static,
    {
        let entry = self.entry::<M>(topic)?;
        if entry.batch.is_some() {
            return Err(SubscribeError::BatchAndRecordHandlers {
                topic: topic.to_string(),
                msg_type: M::NAME,
                has: "a batch handler",
            });
        }
        let handler_type = TypeId::of::<H>();
        if entry.handlers.iter().any(|(t, _)| *t == handler_type) {
            return Err(SubscribeError::Duplicate {
                msg_type: M::NAME,
                handler: std::any::type_name::<H>(),
            });
        }
        let erased = Typed::<M, F> {
            provider,
            handler_name: std::any::type_name::<H>(),
            _m: std::marker::PhantomData,
        };
        entry.handlers.push((handler_type, Arc::new(erased)));
        Ok(())
    }

    /// The topics with at least one handler.
    pub(crate) fn topics(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Routes a record of `topic` by its headers.
    pub(crate) fn route(
        &self,
        topic: &str,
        headers: &BTreeMap<String, Vec<u8>>,
        value: Option<&[u8]>,
    ) -> Route<'_> {
        let Some(name) = headers.get(codec::MSG_TYPE_HEADER) else {
            return Route::Poison(DecodeError::MissingType);
        };
        let Some(entry) = self.topics.get(topic).and_then(|t| t.get(name.as_slice())) else {
            // Only now is the name read as text, for the error.
            return Route::Poison(match std::str::from_utf8(name) {
                Ok(name) => DecodeError::WrongType {
                    expected: "a subscribed type",
                    found: name.to_string(),
                },
                Err(_) => DecodeError::HeaderNotUtf8 {
                    header: codec::MSG_TYPE_HEADER,
                },
            });
        };
        if value.is_none() {
            return Route::Poison(DecodeError::MissingValue);
        }
        Route::Handlers(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "orders")]
    struct Placed {
        id: u32,
    }

    #[derive(Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "orders", name = "Placed")]
    struct Impostor {
        id: u32,
    }

    #[derive(Serialize, Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "orders")]
    struct Cancelled {
        id: u32,
    }

    #[derive(Default)]
    struct Count(AtomicU32);
    impl MessageHandler<Placed> for Count {
        async fn handle(&self, m: Placed, _: &MessageContext) -> Result<(), HandlerError> {
            self.0.fetch_add(m.id, Ordering::SeqCst);
            Ok(())
        }
    }
    struct Panics;
    impl MessageHandler<Placed> for Panics {
        async fn handle(&self, _: Placed, _: &MessageContext) -> Result<(), HandlerError> {
            panic!("boom")
        }
    }

    fn ctx() -> MessageContext {
        MessageContext::new("orders", 0, 0)
    }

    #[test]
    fn duplicates_and_name_collisions_are_refused() {
        let mut r = Registry::default();
        let count = Arc::new(Count::default());
        let c = Arc::clone(&count);
        r.add::<Placed, Count, _>(Placed::TOPIC, move || Arc::clone(&c))
            .unwrap();
        let c = Arc::clone(&count);
        assert!(matches!(
            r.add::<Placed, Count, _>(Placed::TOPIC, move || Arc::clone(&c)),
            Err(SubscribeError::Duplicate { .. })
        ));
        r.add::<Placed, Panics, _>(Placed::TOPIC, || Arc::new(Panics))
            .unwrap();
        struct ImpostorHandler;
        impl MessageHandler<Impostor> for ImpostorHandler {
            async fn handle(&self, _: Impostor, _: &MessageContext) -> Result<(), HandlerError> {
                Ok(())
            }
        }
        assert!(matches!(
            r.add::<Impostor, ImpostorHandler, _>(Impostor::TOPIC, || Arc::new(ImpostorHandler)),
            Err(SubscribeError::NameCollision { .. })
        ));
        assert_eq!(r.topics(), ["orders"]);
    }

    #[tokio::test]
    async fn routes_by_header_and_catches_panics() {
        let mut r = Registry::default();
        let count = Arc::new(Count::default());
        let c = Arc::clone(&count);
        r.add::<Placed, Count, _>(Placed::TOPIC, move || Arc::clone(&c))
            .unwrap();
        r.add::<Placed, Panics, _>(Placed::TOPIC, || Arc::new(Panics))
            .unwrap();
        let e = codec::encode(&Placed { id: 7 }).unwrap();
        let Route::Handlers(entry) = r.route("orders", &e.headers, Some(&e.value)) else {
            panic!("a subscribed type routes to its handlers");
        };
        let mut outcomes = Vec::new();
        for h in entry.handlers() {
            outcomes.push(h.call(&e.value, &ctx()).await);
        }
        assert!(matches!(outcomes[0], Outcome::Ok));
        assert!(matches!(&outcomes[1], Outcome::Panicked(m) if m.contains("boom")));
        assert_eq!(count.0.load(Ordering::SeqCst), 7);

        // Unknown type, missing header, garbage bytes: poison, never a panic.
        let other = codec::encode(&Cancelled { id: 1 }).unwrap();
        assert!(matches!(
            r.route("orders", &other.headers, Some(&other.value)),
            Route::Poison(DecodeError::WrongType { found, .. }) if found == "Cancelled"
        ));
        assert!(matches!(
            r.route("orders", &BTreeMap::new(), Some(&e.value)),
            Route::Poison(DecodeError::MissingType)
        ));
        let mut not_text = e.headers.clone();
        not_text.insert(codec::MSG_TYPE_HEADER.to_string(), b"\xff\xfe".to_vec());
        assert!(matches!(
            r.route("orders", &not_text, Some(&e.value)),
            Route::Poison(DecodeError::HeaderNotUtf8 { .. })
        ));
        // Bytes that do not decode: each handler reports them undecodable.
        let Route::Handlers(entry) = r.route("orders", &e.headers, Some(b"\xc1\xc1")) else {
            panic!("the header names a subscribed type");
        };
        let first = entry.handlers().next().unwrap();
        assert!(matches!(
            first.call(b"\xc1\xc1", &ctx()).await,
            Outcome::Undecodable(_)
        ));
        assert!(matches!(
            r.route("orders", &e.headers, None),
            Route::Poison(_)
        ));
        assert!(matches!(
            r.route("other-topic", &e.headers, Some(&e.value)),
            Route::Poison(_)
        ));
    }
}
