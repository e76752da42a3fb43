//! Typed handlers: what a service implements to receive messages.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::KafkaMessage;

/// Handles every message of type `M` on `M::TOPIC`.
///
/// ```
/// use kavari::{HandlerError, KafkaMessage, MessageContext, MessageHandler};
///
/// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
/// #[kavari(topic = "orders")]
/// struct OrderPlaced { #[kavari(key)] order_id: String }
///
/// struct Billing;
///
/// impl MessageHandler<OrderPlaced> for Billing {
///     async fn handle(&self, msg: OrderPlaced, ctx: &MessageContext) -> Result<(), HandlerError> {
///         if msg.order_id.is_empty() {
///             // Retrying cannot fix this: straight to the dead-letter topic.
///             return Err(HandlerError::permanent("order without an id"));
///         }
///         println!("{} at {}/{}@{}", msg.order_id, ctx.topic, ctx.partition, ctx.offset);
///         Ok(())
///     }
/// }
/// ```
pub trait MessageHandler<M: KafkaMessage>: Send + Sync + 'static {
    /// Handles one message. `Ok` lets its offset be committed; an error is
    /// retried by the delivery retry policy, then dead-lettered.
    fn handle(
        &self,
        msg: M,
        ctx: &MessageContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Where a message came from, and which attempt this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContext {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key, when it is UTF-8.
    pub key: Option<String>,
    /// Every record header.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// The record's timestamp.
    pub timestamp: DateTime<Utc>,
    /// 1 on the first delivery to this handler, then 2, 3, … on retries.
    pub attempt: u32,
}

impl MessageContext {
    /// A context for `topic`/`partition` at `offset`: no key, no headers,
    /// stamped now, first attempt. For calling a handler in its own unit
    /// tests; set the public fields for anything else.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
            attempt: 1,
        }
    }
}

/// A handler's failure. Any `std::error::Error` converts into one with `?`.
pub struct HandlerError {
    message: String,
    retriable: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl HandlerError {
    /// A failure that may pass on retry.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retriable: true,
            source: None,
        }
    }

    /// A failure retrying cannot fix: the message goes to the dead-letter
    /// topic at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retriable: false,
            ..Self::new(message)
        }
    }

    /// Marks this error as not worth retrying.
    pub fn no_retry(mut self) -> Self {
        self.retriable = false;
        self
    }

    /// Whether the delivery retry policy applies.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// The underlying error, when converted from one.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        Self {
            message: e.to_string(),
            retriable: true,
            source: Some(Box::new(e)),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .field("retriable", &self.retriable)
            .finish()
    }
}
