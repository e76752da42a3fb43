//! Kavari: typed, reliable Kafka publish/subscribe in pure Rust (no
//! librdkafka, no C toolchain): publishing, fetching and the consumer group
//! speak the Kafka protocol over one pool of Kavari's own connections.
//!
//! Declare a message type once, then publish it:
//!
//! ```no_run
//! use kavari::{FibonacciRetryPolicy, KafkaMessage, Kavari};
//!
//! #[derive(Debug, serde::Serialize, serde::Deserialize, KafkaMessage)]
//! #[kavari(topic = "orders")]
//! pub struct OrderPlaced {
//!     #[kavari(key)]
//!     pub order_id: String,
//!     pub amount_cents: u64,
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = Kavari::builder("127.0.0.1:9092")
//!     .publishing_retry_policy(FibonacciRetryPolicy::new(10))
//!     .build()
//!     .await?;
//! let delivery = manager
//!     .publish(&OrderPlaced { order_id: "o-1".into(), amount_cents: 1250 })
//!     .await?;
//! println!("{}/{}@{}", delivery.topic, delivery.partition, delivery.offset);
//! manager.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! On the wire a message is MessagePack with named fields, with headers
//! `msg_type` (the type's name) and `content-type: application/msgpack`, and
//! the partition key as UTF-8; keys map to partitions by murmur2 as in the
//! Java client.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod builder;
pub mod codec;
mod consume;
mod context;
pub mod dead_letter;
mod env;
mod handler;
mod handler_error;
mod health;
mod manager;
mod message;
mod metrics;
mod partitioner;
mod publish;
mod registry;
mod retry;
mod share;
mod stop;
mod telemetry;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod topic_names;
mod trace_context;
mod transaction;

pub use batch::{BatchError, BatchHandler};
pub use builder::{ConfigError, KavariBuilder};
pub use consume::{ControlError, FailurePolicy, OffsetReset, ProcessingOrder, SeekTo, StartError};
pub use context::MessageContext;
pub use handler::MessageHandler;
pub use handler_error::{HandlerError, StdHandlerError};
pub use health::{Health, HealthState, PartitionHealth, ShareHealth};
/// Derives [`KafkaMessage`](trait@KafkaMessage): a type's topic, its
/// `msg_type` name and its partition key, from `#[kavari(...)]`
/// attributes. The type must also derive serde's `Serialize` and
/// `Deserialize` (the value is MessagePack with named fields).
///
/// ```
/// use kavari::KafkaMessage;
///
/// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
/// #[kavari(topic = "orders", name = "OrderPlaced")]
/// struct OrderPlacedV2 {
///     #[kavari(key)]
///     order_id: String,
///     amount_cents: u64,
/// }
///
/// let m = OrderPlacedV2 { order_id: "o-1".into(), amount_cents: 5 };
/// assert_eq!(OrderPlacedV2::TOPIC, "orders");
/// assert_eq!(OrderPlacedV2::NAME, "OrderPlaced");
/// assert_eq!(m.key().as_deref(), Some("o-1"));
/// ```
///
/// # On the type
///
/// - **`topic = "..."`** (required): the topic every message of the type is
///   published to and consumed from. Checked at compile time against
///   Kafka's rule (1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or
///   `..`). A manager can still move it:
///   [`KavariBuilder::topic_prefix`] and [`KavariBuilder::topic_for`].
/// - **`name = "..."`** (optional): the `msg_type` header value, which
///   picks the type when several share a topic. Default: the Rust type's
///   name without its module path (`r#` stripped). Set it to the class
///   name a Python service uses, or to keep the name when renaming the
///   Rust type.
/// - **`codec = "..."`** (optional): how the value is published.
///   `"msgpack"` (the default): MessagePack with named fields. `"json"`:
///   JSON, as the Python library writes dataclass payloads. `"text"`: for a
///   tuple struct with one field, that field's `Display` output, read back
///   with `FromStr` (the Python library's `str`, `int` and `float`
///   payloads). Whatever it says, consumers decode each record by its own
///   `content-type` ([`Codec`](codec::Codec)).
///
/// ```
/// use kavari::KafkaMessage;
/// use kavari::codec::Codec;
///
/// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
/// #[kavari(topic = "greetings", codec = "text")]
/// struct Greeting(String);
///
/// assert_eq!(Greeting::CODEC, Codec::Text);
/// ```
///
/// # On one field
///
/// - **`key`**: the field's `Display` output, in UTF-8, is the partition
///   key: messages with one key land on one partition, in order. At most
///   one field; it works on named and tuple fields
///   (`struct Metric(#[kavari(key)] u32, f64)`). A field declared as
///   `Option<T>` gives a null key when `None`.
/// - **No key field**: the key is null, and publishes spread round robin
///   over the partitions (no per-key order).
///
/// ```
/// use kavari::KafkaMessage;
///
/// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
/// #[kavari(topic = "customers")]
/// struct CustomerSeen {
///     #[kavari(key)]
///     customer_id: Option<u64>, // None: a null key
/// }
///
/// assert_eq!(CustomerSeen { customer_id: Some(7) }.key().as_deref(), Some("7"));
/// assert_eq!(CustomerSeen { customer_id: None }.key(), None);
/// ```
///
/// # Enums, unit and generic types
///
/// An enum is one message type: one topic, one `msg_type` name, its
/// variant in the value as serde represents it. Its key is always null
/// (`#[kavari(key)]` on a variant's field is a compile error); when
/// variants need a key, use a struct with the enum in a field, or
/// implement [`KafkaMessage`](trait@KafkaMessage) by hand. A unit struct
/// has a null key. A generic type gets its impl where the type is
/// `Serialize + DeserializeOwned + Send + Sync + 'static`.
///
/// ```
/// use kavari::KafkaMessage;
///
/// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
/// #[kavari(topic = "lifecycle")]
/// enum Lifecycle {
///     Started { at_ms: u64 },
///     Stopped,
/// }
///
/// assert_eq!(Lifecycle::NAME, "Lifecycle");
/// assert_eq!(Lifecycle::Stopped.key(), None);
/// ```
///
/// # Compile errors
///
/// A missing or invalid `topic`, an unknown attribute or codec, two key
/// fields, a key on a type that is not `Display` (the error points at the
/// field), `codec = "text"` on anything but a one-field tuple struct and a
/// union are refused at compile time.
pub use kavari_derive::KafkaMessage;
pub use kavari_wire::Security;
pub use kavari_wire::fetch::Isolation;
pub use kavari_wire::sasl::{OAuthToken, Sasl, TokenError, TokenProvider};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use kavari_wire::tls::{Tls, TlsBuilder, TlsConfigError};
pub use transaction::{Transaction, TransactionError};

/// The partition assignors a consumer group can use
/// ([`KavariBuilder::assignors`]), with the Java client's names.
pub mod assignor {
    pub use kavari_group::assignor::{
        Assignor, CooperativeStickyAssignor, GroupAssignment, MemberSubscription, RangeAssignor,
        RebalanceProtocol, RoundRobinAssignor,
    };
}
pub use kavari_group::{GroupProtocol, TopicPartition};
pub use manager::{Kavari, ShutdownError};
pub use message::KafkaMessage;
pub use partitioner::Partitioner;
pub use publish::{
    Compression, Delivery, Offset, ProduceError, ProduceErrorKind, PublishError, PublishStats,
};
pub use registry::SubscribeError;
pub use retry::{ExponentialRetryPolicy, FibonacciRetryPolicy, NoRetry, RetryPolicy};

/// The README's examples, compiled as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

// Lets the derive's absolute `::kavari::` paths resolve inside this crate's
// own tests.
extern crate self as kavari;

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;

#[doc(hidden)]
#[path = "derive_support.rs"]
pub mod __private;
