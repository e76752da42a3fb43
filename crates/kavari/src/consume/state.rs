//! [`ConsumeState`]: what the consumer runtime's tasks share (the
//! registry, the fetch engine, the group member, the dead-letter writer,
//! each partition's health), and the fetch engine's settings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kavari_group::{GroupMember, TopicPartition};
use kavari_wire::fetch::FetchLimits;
use kavari_wire::fetcher::{Fetcher, FetcherConfig};
use kavari_wire::log_rate::LogRate;

use super::config::ConsumerConfig;
use super::steering::Steering;
use super::writer::Writer;
use crate::health::PartitionHealth;
use crate::registry::Registry;

/// Everything the runtime's tasks share.
pub(crate) struct ConsumeState {
    pub(crate) registry: Registry,
    pub(crate) config: ConsumerConfig,
    pub(crate) group_id: String,
    pub(crate) fetcher: Fetcher,
    /// Writes dead letters (the manager's publisher).
    pub(crate) dead_letters: Arc<dyn Writer>,
    pub(crate) member: GroupMember,
    pub(super) partitions: Mutex<BTreeMap<TopicPartition, PartitionHealth>>,
    /// Poison records are logged once per partition and interval.
    pub(super) poison_log: LogRate<TopicPartition>,
    /// What the application asked of the partitions (pause, seek).
    pub(super) steering: tokio::sync::watch::Sender<Steering>,
    /// Exactly-once handling, when on: records commit in transactions.
    pub(super) exactly_once: Option<ExactlyOnce>,
}

/// Exactly-once handling's transactions.
pub(crate) struct ExactlyOnce {
    pub(crate) transactions: std::sync::Arc<dyn crate::transaction::Transactions>,
    /// How topics are named, for the handlers' publishes.
    pub(crate) names: crate::topic_names::TopicNames,
}

impl ExactlyOnce {
    /// Opens a transaction for the next records.
    pub(super) async fn begin(
        &self,
    ) -> Result<crate::transaction::Transaction, crate::transaction::TransactionError> {
        let session = self.transactions.begin().await?;
        Ok(crate::transaction::Transaction::new(
            session,
            self.names.clone(),
        ))
    }
}

impl ConsumeState {
    pub(crate) fn update_partition(
        &self,
        tp: &TopicPartition,
        f: impl FnOnce(&mut PartitionHealth),
    ) {
        let mut map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(tp.clone()).or_insert_with(|| PartitionHealth {
            topic: tp.topic.clone(),
            partition: tp.partition,
            committed: None,
            position: None,
            high_watermark: None,
            lag: None,
            last_progress: None,
            dead_lettered: 0,
            skipped: 0,
            paused: false,
            in_flight: 0,
            in_flight_since: None,
            error: None,
        });
        let in_flight = entry.in_flight;
        f(entry);
        if let Some(lag) = entry.lag {
            crate::metrics::lag(&tp.topic, tp.partition, lag);
        }
        if entry.in_flight != in_flight {
            crate::metrics::in_flight(&tp.topic, tp.partition, entry.in_flight);
        }
    }

    pub(super) fn forget_partition(&self, tp: &TopicPartition) {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tp);
    }
}

/// The fetch engine's settings, from the consumer's.
pub(super) fn fetcher_config(config: &ConsumerConfig) -> FetcherConfig {
    let partition_max = usize::try_from(config.max_partition_fetch_bytes).unwrap_or(1);
    FetcherConfig {
        limits: FetchLimits {
            max_wait: config.fetch_max_wait,
            min_bytes: config.fetch_min_bytes,
            max_bytes: config.fetch_max_bytes,
            partition_max_bytes: config.max_partition_fetch_bytes,
            isolation: config.isolation,
        },
        reset: config.auto_offset_reset.spec(),
        // Two fetches' worth: the next answer arrives while the last one is
        // handled. With one, a partition's next fetch waited for its handling
        // to free room, and consuming ran at 0.6 of this (kavari-load).
        partition_buffer_bytes: partition_max.saturating_mul(2),
        total_buffer_bytes: config.queued_max_bytes,
        // A batch is at most the broker's message.max.bytes compressed; its
        // records may decompress to more, never past the fetch's own bound.
        max_batch_bytes: usize::try_from(config.fetch_max_bytes)
            .unwrap_or(0)
            .max(partition_max)
            .saturating_mul(4)
            .max(64 * 1024 * 1024),
    }
}
