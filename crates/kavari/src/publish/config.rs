//! Producer settings.

use std::time::Duration;

use kavari_wire::Compression;

use super::{ProduceError, ProduceErrorKind};

/// How the publisher batches and sends.
#[derive(Debug, Clone)]
pub(crate) struct ProducerConfig {
    pub(crate) linger: Duration,
    pub(crate) delivery_timeout: Duration,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) compression: Compression,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_capacity_bytes: usize,
    pub(crate) buffer_memory: usize,
    pub(crate) metadata_max_idle: Duration,
    pub(crate) dlq_suffix: Option<String>,
    pub(crate) create_dead_letter_topics: bool,
    pub(crate) partitioner: crate::partitioner::Partitioner,
    pub(crate) topic_names: crate::topic_names::TopicNames,
    pub(crate) idempotence: super::producer_ids::Idempotence,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(120),
            max_batch_bytes: 512 * 1024,
            max_message_bytes: 1024 * 1024,
            compression: Compression::None,
            queue_capacity: 65_536,
            queue_capacity_bytes: 32 * 1024 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            metadata_max_idle: Duration::from_secs(300),
            dlq_suffix: Some(".dlq".to_string()),
            create_dead_letter_topics: true,
            partitioner: crate::partitioner::Partitioner::Murmur2,
            topic_names: Default::default(),
            idempotence: Default::default(),
        }
    }
}

impl ProducerConfig {
    /// Refuses a record of `size` bytes above `max_message_bytes` (when
    /// `enforce`: dead letters are exempt).
    pub(crate) fn check_size(&self, size: usize, enforce: bool) -> Result<(), ProduceError> {
        if enforce && size > self.max_message_bytes {
            return Err(ProduceError::new(
                ProduceErrorKind::MessageTooLarge,
                false,
                format!(
                    "message of {size} bytes exceeds max_message_bytes {} (Kafka's max.request.size)",
                    self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }
}
