//! What the publisher, its partitions and its sinks share: the cluster,
//! the settings, the counters, the retry policy, the producer identity, the
//! shutdown signal and the delivery deadlines.

use std::sync::Arc;

use kavari_wire::cluster::{Cluster, TopicMetadata};
use tokio::sync::watch;

use super::ProduceError;
use super::batcher::ProduceCounters;
use super::config::ProducerConfig;
use super::expiry::Expiry;
use super::producer_ids::ProducerIds;
use crate::retry::RetryPolicy;

#[derive(Debug)]
pub(crate) struct Producing {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) config: Arc<ProducerConfig>,
    pub(crate) counters: Arc<ProduceCounters>,
    /// Retries of failed batches, when the partitions retry them
    /// (idempotent publishing); otherwise the publisher retries publishes.
    pub(crate) retry: Arc<dyn RetryPolicy>,
    /// The producer identity; `None` when idempotence is off.
    pub(crate) ids: Option<ProducerIds>,
    /// Turns true when shutdown begins: batches waiting to be sent again
    /// are given back at once.
    pub(crate) closing: watch::Receiver<bool>,
    /// Ends batches at their delivery deadline.
    pub(crate) expiry: Expiry,
}

impl Producing {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        config: Arc<ProducerConfig>,
        counters: Arc<ProduceCounters>,
        retry: Arc<dyn RetryPolicy>,
        closing: watch::Receiver<bool>,
    ) -> Self {
        let grace = cluster.request_timeout();
        Self {
            ids: ProducerIds::new(Arc::clone(&cluster), config.idempotence),
            cluster,
            config,
            counters,
            retry,
            closing,
            expiry: Expiry::start(grace),
        }
    }

    /// Whether shutdown began.
    pub(super) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// `topic`'s partitions and leaders as the cluster knows them (`None`:
    /// no such topic); a failed lookup is an error saying it happened while
    /// doing `what`.
    pub(crate) async fn topic_metadata(
        &self,
        topic: &str,
        what: &str,
    ) -> Result<Option<TopicMetadata>, ProduceError> {
        self.cluster
            .topic(topic)
            .await
            .map_err(|e| ProduceError::from_wire(what, &e))
    }
}
