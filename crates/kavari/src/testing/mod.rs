//! An in-memory broker for unit tests (feature `testing`): managers built
//! on it publish and deliver inside the process, with no Kafka, so a
//! service's handlers and publishing code run in a plain `#[tokio::test]`.
//!
//! A manager built with [`InMemoryBroker::manager`] is a real [`Kavari`]:
//! the code under test keeps taking a `Kavari`. What it does is what a
//! manager over Kafka does, minus the network:
//!
//! - `publish` encodes with the real codec (headers included), picks the
//!   partition with the builder's partitioner, appends the record (a
//!   topic that does not exist is created with one partition; create more
//!   with [`create_topic`](InMemoryBroker::create_topic)), then delivers
//!   it to every started manager subscribed to the topic before it
//!   returns: when `publish(..).await` is back, the handlers have run.
//!   A publish from inside a handler returns at once; its record is
//!   delivered right after the current one.
//! - Delivery is the consumer's own: routing by `msg_type`, the delivery
//!   retry policy (its waits are real sleeps: `tokio::time::pause()` in
//!   the test skips them), dead letters on `<topic><suffix>` with the
//!   consumer's headers, `on_poison` and `on_handler_failure`, a
//!   [`MessageContext`](crate::MessageContext) with the record's topic,
//!   partition, offset, key, headers and timestamp.
//! - A record too large for `max_message_bytes` is dead-lettered as the
//!   publisher does; nothing else fails a publish, except after
//!   `shutdown()`.
//! - Each consumer group has one position per partition, kept by the
//!   broker: a manager started again with the same group goes on where
//!   the last one stopped, two managers of one group share the records,
//!   two groups each get all of them. `start()` delivers what was
//!   published before it (from the start, or from the end with
//!   `OffsetReset::Latest`) before it returns.
//! - `Block` waits at a failing record as it would over Kafka: the publish
//!   that delivers it waits too, until `shutdown()`.
//! - Managers of a share group (`share_group`) deliver as a share member
//!   does with the broker: each record to one member of the group; a
//!   retriable failure releases it and it is delivered again at once with
//!   the next `delivery_count`, up to the delivery limit (5), where it is
//!   given up by the failure policy (dead-lettered by default); health's
//!   `share` counts what was acquired, accepted, released and rejected.
//!
//! ```
//! use kavari::testing::InMemoryBroker;
//! use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler, NoRetry};
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, KafkaMessage)]
//! #[kavari(topic = "orders")]
//! struct OrderPlaced {
//!     #[kavari(key)]
//!     order_id: String,
//!     amount_cents: u64,
//! }
//!
//! struct Billing;
//!
//! impl MessageHandler<OrderPlaced> for Billing {
//!     async fn handle(&self, order: OrderPlaced, _: &MessageContext) -> Result<(), HandlerError> {
//!         if order.amount_cents == 0 {
//!             return Err(HandlerError::permanent("nothing to bill"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let broker = InMemoryBroker::new();
//! // The service's own configuration; the bootstrap servers are not used.
//! let manager = broker.manager(
//!     Kavari::builder("kafka:9092").group_id("billing").delivery_retry_policy(NoRetry),
//! )?;
//! manager.subscribe::<OrderPlaced, _>(Billing)?;
//! manager.start().await?;
//!
//! manager.publish(&OrderPlaced { order_id: "o-1".into(), amount_cents: 1250 }).await?;
//! manager.publish(&OrderPlaced { order_id: "o-2".into(), amount_cents: 0 }).await?;
//!
//! // Both were published and delivered; o-2's handler failed for good.
//! assert_eq!(broker.published::<OrderPlaced>()?.len(), 2);
//! let dead = broker.dead_letters::<OrderPlaced>()?;
//! assert_eq!(dead[0].message.order_id, "o-2");
//! assert!(dead[0].error.contains("nothing to bill"));
//! manager.shutdown().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod consumer;
mod log;
mod memory;
mod transactions;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kavari_group::TopicPartition;
use kavari_wire::record_batch::read::FetchedRecord;

use crate::builder::ConfigError;
use crate::builder::KavariBuilder;
use crate::codec::{self, DecodeError};
use crate::dead_letter::{
    ATTEMPTS_HEADER, ORIGINAL_ERROR_HEADER, ORIGINAL_OFFSET_HEADER, ORIGINAL_PARTITION_HEADER,
    ORIGINAL_TOPIC_HEADER,
};
use crate::manager::Kavari;
use crate::message::KafkaMessage;

pub(crate) use memory::Memory;

/// A broker in this process. Cheap to clone: clones share the topics.
#[derive(Debug, Clone, Default)]
pub struct InMemoryBroker {
    log: Arc<log::Log>,
    consumers: Arc<consumer::MemoryConsumers>,
    /// The newest epoch of each transactional id.
    transactional_ids: transactions::Epochs,
}

impl InMemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A manager on this broker, configured by `builder` (retry and
    /// failure policies, group, topic names, dead-letter suffix,
    /// partitioner, `max_message_bytes`; the connection settings are not
    /// used). Its options are checked as `build()` checks them.
    pub fn manager(&self, builder: KavariBuilder) -> Result<Kavari, ConfigError> {
        let (producer, consumer, transactions) = builder.into_checked_configs()?;
        let memory = Memory::new(self, producer, transactions);
        Ok(Kavari::new(Box::new(memory), consumer))
    }

    /// Creates `topic` with `partitions` (at least one); false when it
    /// exists already (its partition count stays).
    pub fn create_topic(&self, topic: &str, partitions: u32) -> bool {
        self.log.create(topic, partitions as usize)
    }

    /// Every record of `topic`, by partition, then offset.
    pub fn records(&self, topic: &str) -> Vec<TestRecord> {
        self.log
            .records(topic)
            .into_iter()
            .map(|(partition, r)| TestRecord::new(topic, partition, r))
            .collect()
    }

    /// The `M`s on `M::TOPIC`, by partition, then offset (records of other
    /// types on the topic are left out). For a topic a manager renames
    /// (`topic_prefix`, `topic_for`), decode [`records`](Self::records).
    pub fn published<M: KafkaMessage>(&self) -> Result<Vec<M>, DecodeError> {
        self.records(M::TOPIC)
            .iter()
            .filter(|r| r.msg_type() == Some(M::NAME))
            .map(TestRecord::decode)
            .collect()
    }

    /// The dead letters of `M` on `<M::TOPIC>.dlq` (the default suffix),
    /// from publishing and from handlers.
    pub fn dead_letters<M: KafkaMessage>(&self) -> Result<Vec<DeadLetter<M>>, DecodeError> {
        self.records(&format!("{}.dlq", M::TOPIC))
            .into_iter()
            .filter(|r| r.msg_type() == Some(M::NAME))
            .map(DeadLetter::new)
            .collect()
    }

    /// The offset `group` goes on from in `topic`/`partition`: its
    /// committed offset.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.log
            .committed(group, &TopicPartition::new(topic, partition))
    }
}

/// A record as the broker holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// When it was published.
    pub timestamp: DateTime<Utc>,
    /// The key; `None` when null.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers by name.
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl TestRecord {
    fn new(topic: &str, partition: i32, r: FetchedRecord) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            offset: r.offset,
            timestamp: DateTime::from_timestamp_millis(r.timestamp_ms).unwrap_or_default(),
            key: r.key.map(|k| k.to_vec()),
            value: r.value.map(|v| v.to_vec()),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        v.unwrap_or_default().to_vec(),
                    )
                })
                .collect(),
        }
    }

    /// A header as text (`None` when missing or not UTF-8).
    pub fn header(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.headers.get(name)?).ok()
    }

    /// The key as text (`None` when null or not UTF-8).
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(self.key.as_deref()?).ok()
    }

    /// The `msg_type` header.
    pub fn msg_type(&self) -> Option<&str> {
        self.header(codec::MSG_TYPE_HEADER)
    }

    /// The record as an `M`, as a consumer decodes it.
    pub fn decode<M: KafkaMessage>(&self) -> Result<M, DecodeError> {
        codec::decode(&self.headers, self.value.as_deref())
    }
}

/// A dead letter, decoded, with why it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter<M> {
    /// The message.
    pub message: M,
    /// Why (`original_error`): the handler's error chain, the decoding
    /// error, or the publish error.
    pub error: String,
    /// Where it was read from (`original_topic`); `None` for a publish
    /// that failed.
    pub original_topic: Option<String>,
    /// Its partition there (`original_partition`).
    pub original_partition: Option<i32>,
    /// Its offset there (`original_offset`).
    pub original_offset: Option<i64>,
    /// The handler attempts made (`attempts`; 0 for a record that could not
    /// be decoded).
    pub attempts: Option<u32>,
    /// The dead letter's own record.
    pub record: TestRecord,
}

impl<M: KafkaMessage> DeadLetter<M> {
    fn new(record: TestRecord) -> Result<Self, DecodeError> {
        fn number<T: std::str::FromStr>(record: &TestRecord, name: &str) -> Option<T> {
            record.header(name)?.parse().ok()
        }
        Ok(Self {
            message: record.decode()?,
            error: record
                .header(ORIGINAL_ERROR_HEADER)
                .unwrap_or_default()
                .to_string(),
            original_topic: record.header(ORIGINAL_TOPIC_HEADER).map(str::to_string),
            original_partition: number(&record, ORIGINAL_PARTITION_HEADER),
            original_offset: number(&record, ORIGINAL_OFFSET_HEADER),
            attempts: number(&record, ATTEMPTS_HEADER),
            record,
        })
    }
}
