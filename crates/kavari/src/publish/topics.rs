//! Partition counts per topic (cached, refreshed after errors) and the
//! batcher of each partition, started when the partition is first
//! published to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::time::Instant;

use super::batcher::Batcher;
use super::lookup::Lookup;
use super::producing::Producing;
use super::sinks::Sinks;
use super::{ProduceError, ProduceErrorKind};
use kavari_wire::cluster::TopicMetadata;

/// The most partitions a topic may have here: a Metadata answer claiming
/// more is not believed (Kafka's own guidance is thousands per broker; a
/// partition costs a batcher once published to).
pub(crate) const MAX_PARTITIONS: usize = 100_000;

/// A topic's partition count and one batcher per partition.
#[derive(Debug)]
pub(crate) struct TopicRoute {
    topic: String,
    /// Each partition's batcher, once published to: a topic of many
    /// partitions costs a slot per partition until then.
    batchers: Vec<OnceLock<Arc<Batcher>>>,
    /// Each partition's leader as the metadata named it.
    leaders: Vec<Option<i32>>,
    sinks: Arc<Sinks>,
    /// Set after an unknown-topic error: the next publish asks the cluster
    /// again (partitions may have been added), keeping these batchers.
    stale: AtomicBool,
    /// The sweep round of the last publish to the topic.
    used_in: AtomicU64,
}

impl TopicRoute {
    /// Whether the next publish should ask the cluster again.
    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    pub(crate) fn partitions(&self) -> u32 {
        u32::try_from(self.batchers.len()).unwrap_or(u32::MAX)
    }

    /// The batcher of `partition`, made on first use; `None` for a
    /// partition the topic does not have.
    pub(crate) fn batcher(&self, partition: i32) -> Option<&Arc<Batcher>> {
        let at = usize::try_from(partition).ok()?;
        let slot = self.batchers.get(at)?;
        Some(slot.get_or_init(|| {
            Arc::new(self.sinks.batcher(
                &self.topic,
                partition,
                self.leaders.get(at).copied().flatten(),
            ))
        }))
    }
}

#[derive(Debug)]
pub(crate) struct Topics {
    producing: Arc<Producing>,
    sinks: Arc<Sinks>,
    routes: Mutex<HashMap<String, Arc<TopicRoute>>>,
    /// Counts sweeps for idle routes (every half `metadata_max_idle`).
    round: AtomicU64,
    /// The lookup under way of each topic: thousands of concurrent first
    /// publishes to a topic share one request (and one timer) instead of
    /// each sending its own.
    lookups: Mutex<HashMap<String, Arc<Lookup<Arc<TopicRoute>>>>>,
}

impl Topics {
    pub(crate) fn new(producing: Arc<Producing>) -> Self {
        Self {
            sinks: Arc::new(Sinks::new(Arc::clone(&producing))),
            producing,
            routes: Mutex::new(HashMap::new()),
            round: AtomicU64::new(0),
            lookups: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        let route = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()?;
        let round = self.round.load(Ordering::Relaxed);
        if route.used_in.load(Ordering::Relaxed) != round {
            route.used_in.store(round, Ordering::Relaxed);
        }
        Some(route)
    }

    /// How many topics have a route (and batchers) now.
    pub(crate) fn cached_topics(&self) -> usize {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Forgets the routes no publish used for a whole `metadata_max_idle`
    /// (two sweep rounds): their batchers send what they hold and end, and
    /// a later publish looks the topic up again. A topic published once
    /// does not hold tasks and buffers for the manager's life.
    fn evict_idle(&self) {
        let round = self.round.fetch_add(1, Ordering::Relaxed) + 1;
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|topic, r| {
                let keep = r.used_in.load(Ordering::Relaxed) + 2 > round;
                if !keep {
                    tracing::debug!(topic, "forgetting an idle topic's route");
                }
                keep
            });
    }

    /// Sweeps idle routes every half `metadata_max_idle` while `topics`
    /// lives.
    pub(crate) fn sweep_idle(topics: Weak<Topics>, every: std::time::Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await; // the first tick is at once
            loop {
                tick.tick().await;
                match topics.upgrade() {
                    Some(t) => t.evict_idle(),
                    None => return,
                }
            }
        });
    }

    /// The cached route for `topic`, unless it is stale.
    pub(crate) fn fresh(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        self.cached(topic).filter(|r| !r.is_stale())
    }

    /// The route for `topic`, from the cache or from the lookup every
    /// publish waiting for it shares; `Ok(None)` when `deadline` comes
    /// first.
    pub(crate) async fn route_by(
        self: &Arc<Self>,
        topic: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<TopicRoute>>, ProduceError> {
        if let Some(r) = self.fresh(topic) {
            return Ok(Some(r));
        }
        self.lookup_of(topic).answer(deadline).await.transpose()
    }

    /// The lookup of `topic` under way, or a new one.
    fn lookup_of(self: &Arc<Self>, topic: &str) -> Arc<Lookup<Arc<TopicRoute>>> {
        let mut lookups = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = lookups.get(topic)
            && !l.is_answered()
        {
            return Arc::clone(l);
        }
        let lookup = Arc::new(Lookup::default());
        lookups.insert(topic.to_string(), Arc::clone(&lookup));
        let (topics, topic, running) = (Arc::clone(self), topic.to_string(), Arc::clone(&lookup));
        tokio::spawn(async move {
            running.run(&topic, topics.look_up(&topic)).await;
            let mut lookups = topics.lookups.lock().unwrap_or_else(|p| p.into_inner());
            if lookups
                .get(&topic)
                .is_some_and(|l| Arc::ptr_eq(l, &running))
            {
                lookups.remove(&topic);
            }
        });
        lookup
    }

    /// Asks the cluster for `topic`'s partitions and sets up its route.
    async fn look_up(&self, topic: &str) -> Result<Arc<TopicRoute>, ProduceError> {
        if let Some(r) = self.fresh(topic) {
            return Ok(r); // a lookup that just ended found it
        }
        let meta = self.metadata(topic).await?;
        let partitions = meta.partitions.len();
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let existing = routes.get(topic).cloned();
        let route = match existing {
            // Another caller raced us here; keep its batchers.
            Some(r) if r.batchers.len() >= partitions && !r.stale.load(Ordering::Relaxed) => r,
            old => {
                let mut batchers = old.map(|r| r.batchers.clone()).unwrap_or_default();
                batchers.resize_with(partitions.max(batchers.len()), OnceLock::new);
                let r = Arc::new(TopicRoute {
                    topic: topic.to_string(),
                    batchers,
                    leaders: meta.partitions.iter().map(|p| p.leader).collect(),
                    sinks: Arc::clone(&self.sinks),
                    stale: AtomicBool::new(false),
                    used_in: AtomicU64::new(self.round.load(Ordering::Relaxed)),
                });
                routes.insert(topic.to_string(), Arc::clone(&r));
                r
            }
        };
        Ok(route)
    }

    /// Forgets the cached partition count, so the next publish asks the
    /// cluster again (after an unknown-topic error, partitions may have been
    /// added). Batchers of known partitions are kept.
    pub(crate) fn refresh_later(&self, topic: &str) {
        if let Some(r) = self.cached(topic) {
            r.stale.store(true, Ordering::Relaxed);
        }
    }

    /// Closes every batcher: each sends what it holds, then ends.
    pub(crate) fn close(&self) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// How many partitions `topic` has, asked of the cluster (no route or
    /// batchers are set up for it).
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<usize, ProduceError> {
        Ok(self.metadata(topic).await?.partitions.len())
    }

    /// Creates `topic` with `partitions` and the broker's default
    /// replication: `Ok(true)` when created, `Ok(false)` when it existed.
    pub(crate) async fn create(
        &self,
        topic: &str,
        partitions: usize,
    ) -> Result<bool, ProduceError> {
        let new = kavari_wire::admin::NewTopic {
            name: topic,
            partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
            replication_factor: -1,
            configs: &[],
        };
        kavari_wire::admin::create_topic(&self.producing.cluster, &new)
            .await
            .map_err(|e| ProduceError::from_wire(&format!("creating topic {topic}"), &e))
    }

    /// The topic's partitions and their leaders, from a Metadata request.
    async fn metadata(&self, topic: &str) -> Result<TopicMetadata, ProduceError> {
        let what = format!("looking up the partitions of {topic}");
        let Some(meta) = self.producing.topic_metadata(topic, &what).await? else {
            return Err(ProduceError::new(
                ProduceErrorKind::UnknownTopic,
                true,
                format!("topic {topic} does not exist (create it first)"),
            ));
        };
        if let Some(e) = meta.error {
            return Err(ProduceError::from_code(&what, e, None));
        }
        // Partition ids run from 0; a gap would misroute keys.
        let dense = meta
            .partitions
            .iter()
            .enumerate()
            .all(|(i, p)| usize::try_from(p.partition) == Ok(i));
        if meta.partitions.len() > MAX_PARTITIONS {
            return Err(ProduceError::new(
                ProduceErrorKind::Broker,
                true,
                format!(
                    "{what}: the cluster lists {} partitions, more than the {MAX_PARTITIONS} a topic may have here",
                    meta.partitions.len()
                ),
            ));
        }
        if meta.partitions.is_empty() || !dense {
            return Err(ProduceError::new(
                ProduceErrorKind::UnknownTopic,
                true,
                format!(
                    "{what}: the cluster lists partitions {:?}",
                    meta.partitions
                        .iter()
                        .map(|p| p.partition)
                        .collect::<Vec<_>>()
                ),
            ));
        }
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::publish::ProducerConfig;

    /// A topic of the most partitions taken costs a slot per partition;
    /// a partition gets its queue and produce state once published to, once.
    #[tokio::test]
    async fn a_partition_gets_a_batcher_once_published_to() {
        let cluster = Arc::new(kavari_wire::cluster::Cluster::new(
            vec!["127.0.0.1:1".into()],
            "kavari".into(),
            Duration::from_secs(1),
        ));
        let (_closing, closing) = tokio::sync::watch::channel(false);
        let producing = Arc::new(Producing::new(
            cluster,
            Arc::new(ProducerConfig::default()),
            Arc::default(),
            Arc::new(crate::retry::NoRetry),
            closing,
        ));
        let route = TopicRoute {
            topic: "t".into(),
            batchers: (0..MAX_PARTITIONS).map(|_| OnceLock::new()).collect(),
            leaders: vec![None; MAX_PARTITIONS],
            sinks: Arc::new(Sinks::new(producing)),
            stale: AtomicBool::new(false),
            used_in: AtomicU64::new(0),
        };
        let started = || route.batchers.iter().filter(|s| s.get().is_some()).count();
        assert_eq!(started(), 0, "no batcher before a publish");
        let last = i32::try_from(MAX_PARTITIONS - 1).expect("fits");
        for p in [7, 7, last] {
            assert!(route.batcher(p).is_some(), "partition {p}");
        }
        assert_eq!(started(), 2);
        assert!(route.batcher(last + 1).is_none(), "past the last partition");
        assert!(route.batcher(-1).is_none(), "a negative partition");
    }
}
