//! What the publisher, its partitions and its sinks share, and each
//! partition's produce state while a publisher's handle or unsent batches
//! keep it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use kavari_wire::cluster::{Cluster, TopicMetadata};
use tokio::sync::watch;

use super::ProduceError;
use super::batcher::{Batcher, ProduceCounters, Queue};
use super::config::ProducerConfig;
use super::expiry::Expiry;
use super::partition::Partition;
use super::producer_ids::ProducerIds;
use super::sinks::Sinks;
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
    /// The sink of each broker led partitions are sent through.
    pub(super) sinks: Sinks,
    /// Each partition's state while it lives: a publisher's new handle on
    /// a partition whose state is still sending reuses it.
    partitions: Mutex<HashMap<(String, i32), Weak<Partition>>>,
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
            sinks: Sinks::default(),
            partitions: Mutex::new(HashMap::new()),
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

    /// A publishers' handle on `topic`/`partition`, whose leader the
    /// metadata named (`None`: not known). Its produce state is made (and
    /// handed to its leader's sink) unless it still lives.
    pub(super) fn batcher(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        leader: Option<i32>,
    ) -> Batcher {
        let mut live = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let key = (topic.to_string(), partition);
        if let Some(p) = live.get(&key).and_then(Weak::upgrade) {
            return Batcher::new(p, Arc::clone(&self.config), self.expiry.clone());
        }
        let sequence = self
            .ids
            .as_ref()
            .map(|ids| ids.saved(topic, partition))
            .unwrap_or_default();
        let queue = Queue::new(
            topic.to_string(),
            partition,
            &self.config,
            Arc::clone(&self.counters),
        );
        let p = Arc::new(Partition::new(queue, sequence));
        live.insert(key, Arc::downgrade(&p));
        let batcher = Batcher::new(
            Arc::clone(&p),
            Arc::clone(&self.config),
            self.expiry.clone(),
        );
        drop(live);
        match leader {
            Some(id) => self.adopt(id, p),
            None => self.locate(p),
        }
        batcher
    }

    /// Ends `p`'s state if nothing is left of it (no publisher's handle,
    /// nothing unsent or unanswered); false when it goes on.
    pub(super) fn retire(&self, p: &Arc<Partition>) -> bool {
        let mut live = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if !p.is_finished() {
            return false;
        }
        let key = (p.queue.topic.clone(), p.queue.partition);
        let ours = live
            .get(&key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(p)));
        if ours {
            live.remove(&key);
        }
        if let Some(ids) = &self.ids {
            ids.save(&p.queue.topic, p.queue.partition, p.sequence());
        }
        true
    }
}
