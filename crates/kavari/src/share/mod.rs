//! Share groups (KIP-932) as typed subscriptions: with the builder's
//! `share_group`, the manager's subscriptions are a share group's. Its
//! members receive records of the same partitions, each acquired for the
//! broker's lock duration and acknowledged one by one: a handler's `Ok`
//! accepts, a retriable error releases the record for another delivery, a
//! final failure or poison rejects it (dead-lettered first by the
//! failure policies). Order is not kept.

mod acks;
mod deliver;
mod session;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kavari_group::TopicPartition;
use kavari_group::share::{ShareConfig, ShareMember};
use kavari_wire::cluster::Cluster;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::consume::{ConsumerConfig, OffsetReset, StartError, Writer};
use crate::health::{Health, HealthState};
use crate::registry::Registry;
pub(crate) use acks::Ack;
pub(crate) use deliver::Deliverer;
use session::Session;
pub(crate) use stats::ShareCounts;

/// A running share group member and its sessions.
pub(crate) struct ShareConsumer {
    member: Arc<ShareMember>,
    group: String,
    counts: Arc<ShareCounts>,
    stop: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for ShareConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareConsumer")
            .field("group", &self.group)
            .field("member_id", &self.member.member_id())
            .finish_non_exhaustive()
    }
}

impl ShareConsumer {
    /// Joins `group` and starts handing its records to the handlers. The
    /// group starts where `auto_offset_reset` says (Kafka's group config
    /// `share.auto.offset.reset`, set first; a cluster that refuses it
    /// keeps its own, with a warning).
    pub(crate) async fn start(
        cluster: Arc<Cluster>,
        group: String,
        registry: Registry,
        config: ConsumerConfig,
        dead_letters: Arc<dyn Writer>,
    ) -> Result<Self, StartError> {
        let reset = match config.auto_offset_reset {
            OffsetReset::Earliest => Some("earliest"),
            OffsetReset::Latest => Some("latest"),
            OffsetReset::Error => None,
        };
        if let Some(reset) = reset
            && let Err(e) = kavari_wire::admin::set_group_config(
                &cluster,
                &group,
                "share.auto.offset.reset",
                reset,
            )
            .await
        {
            tracing::warn!(group, error = %e, "could not set the share group's share.auto.offset.reset; it starts where the cluster says");
        }
        let mut share = ShareConfig::new(&group, registry.topics());
        share.client_rack = config.client_rack.clone();
        let member =
            ShareMember::start_on(share, Arc::clone(&cluster)).map_err(StartError::Group)?;
        let member = Arc::new(member);
        let max_in_flight = config.order.max_in_flight();
        let deliverer = Arc::new(Deliverer {
            registry: Arc::new(registry),
            config,
            group: group.clone(),
            dead_letters,
        });
        let counts = Arc::new(ShareCounts::default());
        let (stop, stop_rx) = watch::channel(false);
        let placing = Placing {
            cluster,
            member: Arc::clone(&member),
            deliverer,
            counts: Arc::clone(&counts),
            stop: stop_rx,
            max_in_flight,
        };
        let task = tokio::spawn(placing.run());
        Ok(Self {
            member,
            group,
            counts,
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// Stops fetching, lets the running handlers finish (at most
    /// `timeout`), closes the sessions (releasing what is still acquired,
    /// so other members get it at once) and leaves the group. False when
    /// handlers were still running at the timeout.
    pub(crate) async fn shutdown(&self, timeout: Duration) -> bool {
        self.stop.send_replace(true);
        let mut finished = true;
        if let Some(task) = self.task.lock().await.take() {
            finished = tokio::time::timeout(timeout, task).await.is_ok();
        }
        self.member.close().await;
        finished
    }

    /// Waits until the member stops: `Err` with the reason when it failed.
    pub(crate) async fn wait(&self) -> Result<(), String> {
        let mut state = self.member.watch();
        let mut stopped = self.stop.subscribe();
        loop {
            if let Some(why) = state.borrow().failed.clone() {
                return Err(why);
            }
            if *stopped.borrow() {
                return Ok(());
            }
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return Ok(()) },
                _ = stopped.changed() => {}
            }
        }
    }

    pub(crate) fn health(&self) -> Health {
        let state = self.member.watch().borrow().clone();
        let stopping = *self.stop.borrow();
        let health_state = match (&state.failed, stopping) {
            (Some(why), _) => HealthState::Failed(why.clone()),
            (None, true) => HealthState::Stopping,
            (None, false) if state.epoch == 0 => HealthState::Joining,
            (None, false) => HealthState::Running,
        };
        Health {
            ready: health_state == HealthState::Running,
            state: health_state,
            generation: (state.epoch > 0).then_some(state.epoch),
            partitions: Vec::new(),
            share: Some(
                self.counts.health(
                    self.group.clone(),
                    self.member.member_id().to_string(),
                    state
                        .assignment
                        .keys()
                        .map(|tp| (tp.topic.clone(), tp.partition))
                        .collect(),
                ),
            ),
        }
    }
}

/// Places the member's partitions with the brokers that lead them, one
/// session each, and again whenever the assignment or a leader moves.
struct Placing {
    cluster: Arc<Cluster>,
    member: Arc<ShareMember>,
    deliverer: Arc<Deliverer>,
    counts: Arc<ShareCounts>,
    stop: watch::Receiver<bool>,
    max_in_flight: usize,
}

impl Placing {
    async fn run(mut self) {
        let mut assignment = self.member.watch();
        let (moved_tx, mut moved) = mpsc::unbounded_channel();
        let mut sessions: HashMap<i32, watch::Sender<BTreeMap<TopicPartition, Uuid>>> =
            HashMap::new();
        let mut running = Vec::new();
        loop {
            let wanted = assignment.borrow_and_update().assignment.clone();
            let by_leader = self.leaders(&wanted).await;
            // A partition without a known leader is placed again shortly.
            let placed: usize = by_leader.values().map(BTreeMap::len).sum();
            let retry = (placed < wanted.len()).then(|| Duration::from_secs(1));
            for (broker, tx) in &sessions {
                tx.send_if_modified(|p| {
                    let now = by_leader.get(broker).cloned().unwrap_or_default();
                    (*p != now).then(|| *p = now).is_some()
                });
            }
            for (broker, partitions) in by_leader {
                if sessions.contains_key(&broker) {
                    continue;
                }
                let (tx, rx) = watch::channel(partitions);
                let session = Session {
                    cluster: Arc::clone(&self.cluster),
                    broker,
                    member_id: self.member.member_id().to_string(),
                    deliverer: Arc::clone(&self.deliverer),
                    partitions: rx,
                    stop: self.stop.clone(),
                    counts: Arc::clone(&self.counts),
                    max_in_flight: self.max_in_flight,
                    moved: moved_tx.clone(),
                };
                running.push(tokio::spawn(session.run()));
                sessions.insert(broker, tx);
            }
            tokio::select! {
                changed = assignment.changed() => if changed.is_err() { break },
                Some(()) = moved.recv() => {
                    // Leaders moved: look them up again (a moment later,
                    // so the cluster's metadata has them).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while moved.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
                _ = self.stop.changed() => break,
            }
        }
        // The sessions see the stop too: they finish their handlers and
        // close.
        for session in running {
            let _ = session.await;
        }
    }

    /// `wanted` by the broker leading each partition now.
    async fn leaders(
        &self,
        wanted: &BTreeMap<TopicPartition, Uuid>,
    ) -> BTreeMap<i32, BTreeMap<TopicPartition, Uuid>> {
        let topics: Vec<&str> = {
            let mut t: Vec<&str> = wanted.keys().map(|tp| tp.topic.as_str()).collect();
            t.dedup();
            t
        };
        let metadata = match self.cluster.topics(&topics).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "looking the share partitions' leaders up failed; trying again at the next change");
                return BTreeMap::new();
            }
        };
        let mut out: BTreeMap<i32, BTreeMap<TopicPartition, Uuid>> = BTreeMap::new();
        for (tp, id) in wanted {
            let leader = metadata
                .iter()
                .find(|t| t.name == tp.topic)
                .and_then(|t| t.partitions.iter().find(|p| p.partition == tp.partition))
                .and_then(|p| p.leader);
            if let Some(leader) = leader {
                out.entry(leader).or_default().insert(tp.clone(), *id);
            }
        }
        out
    }
}
