//! [`Consumer`]: the runtime. It starts the group member, reacts to its
//! events (assigned, revoking, lost) by starting and stopping one worker
//! per partition, and shuts them down in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kavari_group::{GroupConfig, GroupEvent, GroupMember, MemberPhase, TopicPartition};
use kavari_wire::cluster::Cluster;

use kavari_wire::fetcher::Fetcher;
use kavari_wire::list_offsets::OffsetSpec;
use kavari_wire::log_rate::LogRate;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::config::ConsumerConfig;
use super::state::{ConsumeState, ExactlyOnce, fetcher_config};
use super::steering::{ControlError, SeekTo, Steer, Steering, Target};
use super::writer::Writer;
use super::{runtime, start, worker};
use crate::health::{Health, HealthState, PartitionHealth};
use crate::registry::Registry;

/// Why `start()` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Subscriptions need a consumer group (`subscribe` refuses them
    /// already when the builder has no `group_id`).
    #[error("handlers are subscribed but no group_id is set on the builder")]
    NoGroupId,
    /// `start()` was called twice.
    #[error("the consumer is already started")]
    AlreadyStarted,
    /// The group member refused the configuration.
    #[error("invalid consumer group configuration")]
    Group(#[source] kavari_group::GroupError),
}

/// A partition's worker. Dropping it aborts the task: when the runtime is
/// aborted (a shutdown that ran out of time), no worker outlives it to
/// handle or commit anything after `shutdown()` returned.
struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The assignment that started it, and (until its lookup answers) where
    /// to hand the worker its start.
    assignment: u64,
    begin: Option<oneshot::Sender<start::Begin>>,
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The running consumer, held by the manager.
pub(crate) struct Consumer {
    shared: Arc<ConsumeState>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.shared.group_id)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn start(
        registry: Registry,
        config: ConsumerConfig,
        cluster: Arc<Cluster>,
        dead_letters: Arc<dyn Writer>,
        exactly_once: Option<ExactlyOnce>,
        client_id: &str,
    ) -> Result<Self, StartError> {
        let group_id = config.group_id.clone().ok_or(StartError::NoGroupId)?;
        let mut group = GroupConfig::new(
            cluster.bootstrap().to_vec(),
            group_id.clone(),
            registry.topics(),
        );
        group.client_id = client_id.to_string();
        group.group_instance_id = config.group_instance_id.clone();
        group.session_timeout = config.session_timeout;
        group.heartbeat_interval = config.heartbeat_interval;
        group.rebalance_timeout = config.rebalance_timeout;
        group.request_timeout = cluster.request_timeout();
        group.give_up_after = config.give_up_after;
        group.metadata_max_age = config.metadata_max_age;
        if let Some(assignors) = &config.assignors {
            group.assignors = assignors.clone();
        }
        group.protocol = config.group_protocol;
        group.remote_assignor = config.remote_assignor.clone();
        group.client_rack = config.client_rack.clone();
        let (member, events) =
            GroupMember::start_on(group, Arc::clone(&cluster)).map_err(StartError::Group)?;
        let fetcher = Fetcher::new(cluster, fetcher_config(&config));
        let shared = Arc::new(ConsumeState {
            registry,
            config,
            group_id,
            fetcher,
            dead_letters,
            member,
            partitions: Mutex::new(BTreeMap::new()),
            poison_log: LogRate::new(runtime::POISON_LOG_EVERY),
            steering: watch::Sender::new(Steering::default()),
            exactly_once,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(runtime(Arc::clone(&shared), events, shutdown_rx));
        Ok(Self {
            shared,
            shutdown,
            task: Mutex::new(Some(task)),
        })
    }

    /// Stops fetching, lets handlers in flight finish, commits, leaves the
    /// group; bounded by `timeout`. False when the timeout ran out.
    pub(crate) async fn shutdown(&self, timeout: Duration) -> bool {
        self.shutdown.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut task) = task else { return true };
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                tracing::error!(
                    ?timeout,
                    "consumer shutdown timed out; stopping its tasks without a final commit"
                );
                // The member first, so no commit goes out; then the runtime,
                // whose workers are aborted as it drops them.
                self.shared.member.abort();
                task.abort();
                let _ = task.await;
                false
            }
        }
    }

    /// Resolves when the consumer has stopped: `Ok` after a clean leave,
    /// the reason when it failed.
    pub(crate) async fn stopped(&self) -> Result<(), String> {
        let mut state = self.shared.member.watch_state();
        let result = state
            .wait_for(|s| matches!(s.phase, MemberPhase::Closed | MemberPhase::Failed(_)))
            .await
            .map(|s| s.phase.clone());
        match result {
            Ok(MemberPhase::Failed(why)) => Err(why),
            _ => Ok(()),
        }
    }

    /// The failure reason, if the consumer has failed.
    pub(crate) fn failure(&self) -> Option<String> {
        match self.shared.member.state().phase {
            MemberPhase::Failed(why) => Some(why),
            _ => None,
        }
    }

    /// Pauses (or resumes) `partitions`: their workers hand no record to
    /// handlers until resumed. Every partition must be owned now.
    fn pause_now(&self, partitions: &[TopicPartition], paused: bool) -> Result<(), ControlError> {
        self.owned(partitions)?;
        self.shared.steering.send_if_modified(|s| {
            let mut changed = false;
            for tp in partitions {
                changed |= if paused {
                    s.paused.insert(tp.clone())
                } else {
                    s.paused.remove(tp)
                };
            }
            changed
        });
        Ok(())
    }

    /// Moves `partition`'s position: its worker goes on from there once the
    /// records it is handling finish. Returns the offset it moves to.
    async fn seek_now(&self, partition: &TopicPartition, to: SeekTo) -> Result<i64, ControlError> {
        self.owned(std::slice::from_ref(partition))?;
        let offset = match to.target()? {
            Target::At(offset) => offset,
            Target::Find(spec) => {
                let lookup = |source| ControlError::Lookup {
                    partition: partition.clone(),
                    source,
                };
                let fetcher = &self.shared.fetcher;
                match fetcher.offset_for(partition, spec).await.map_err(lookup)? {
                    // No record that late: the log end.
                    -1 => fetcher
                        .offset_for(partition, OffsetSpec::Latest)
                        .await
                        .map_err(lookup)?,
                    found => found,
                }
            }
        };
        // Owned still: the lookup took a while.
        self.owned(std::slice::from_ref(partition))?;
        self.shared.steering.send_modify(|s| {
            s.seeks.insert(partition.clone(), offset);
        });
        tracing::info!(%partition, offset, ?to, "seeking");
        Ok(offset)
    }

    /// Refuses partitions this member does not own now.
    fn owned(&self, partitions: &[TopicPartition]) -> Result<(), ControlError> {
        if *self.shutdown.borrow() {
            return Err(ControlError::NotRunning);
        }
        let owned = self
            .shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match partitions.iter().find(|tp| !owned.contains_key(*tp)) {
            Some(tp) => Err(ControlError::NotOwned(tp.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn health(&self) -> Health {
        let member = self.shared.member.state();
        let state = match &member.phase {
            MemberPhase::Unjoined => HealthState::Starting,
            MemberPhase::Reconnecting if member.joins == 0 => HealthState::Connecting,
            MemberPhase::Reconnecting => HealthState::Reconnecting,
            MemberPhase::Joining | MemberPhase::AwaitingSync if member.joins == 0 => {
                HealthState::Joining
            }
            MemberPhase::Joining | MemberPhase::AwaitingSync | MemberPhase::Rebalancing => {
                HealthState::Rebalancing
            }
            MemberPhase::Stable => HealthState::Running,
            MemberPhase::Leaving => HealthState::Stopping,
            MemberPhase::Closed => HealthState::Stopped,
            MemberPhase::Failed(why) => HealthState::Failed(why.clone()),
            _ => HealthState::Reconnecting,
        };
        let state = if *self.shutdown.borrow() && state != HealthState::Stopped {
            HealthState::Stopping
        } else {
            state
        };
        let paused = &self.shared.steering.borrow().paused;
        let partitions: Vec<PartitionHealth> = self
            .shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(tp, h)| PartitionHealth {
                paused: paused.contains(tp),
                ..h.clone()
            })
            .collect();
        // A partition that cannot move on (a batch that does not decode, an
        // offset out of range with no reset) makes the manager not ready.
        let blocked = partitions
            .iter()
            .any(|p: &PartitionHealth| p.error.is_some());
        Health {
            ready: state == HealthState::Running && !blocked,
            state,
            generation: member.generation.map(|g| g.generation_id),
            partitions,
            share: None,
        }
    }
}

impl Steer for Consumer {
    fn pause(&self, partitions: &[TopicPartition], paused: bool) -> Result<(), ControlError> {
        self.pause_now(partitions, paused)
    }

    fn seek<'a>(
        &'a self,
        partition: &'a TopicPartition,
        to: SeekTo,
    ) -> futures::future::BoxFuture<'a, Result<i64, ControlError>> {
        futures::FutureExt::boxed(self.seek_now(partition, to))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // The last manager handle is gone: the runtime leaves the group in
        // the background (it must not block a drop).
        self.shutdown.send_replace(true);
    }
}

async fn runtime(
    shared: Arc<ConsumeState>,
    mut events: mpsc::UnboundedReceiver<GroupEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut workers: HashMap<TopicPartition, WorkerHandle> = HashMap::new();
    let mut closing = false;
    // Each assignment's start lookup (polled here, so the runtime alone
    // subscribes partitions and never for a worker that was replaced).
    let mut lookups = FuturesUnordered::new();
    let mut assignments = 0u64;
    loop {
        tokio::select! {
            Some((assignment, found)) = lookups.next(), if !lookups.is_empty() => {
                begin(&shared, &mut workers, assignment, found);
            }
            event = events.recv() => match event {
                None => break, // the member has left or failed
                Some(GroupEvent::Assigned { added, generation, .. }) => {
                    tracing::info!(generation = generation.generation_id, count = added.len(), "partitions assigned");
                    crate::metrics::rebalanced(&shared.group_id);
                    assignments += 1;
                    for tp in &added {
                        let (stop, stop_rx) = watch::channel(false);
                        let (begin, begin_rx) = oneshot::channel();
                        shared.update_partition(tp, |_| {});
                        let task = tokio::spawn(worker::run(Arc::clone(&shared), tp.clone(), stop_rx, begin_rx));
                        // A worker this replaces is aborted as it drops.
                        workers.insert(tp.clone(), WorkerHandle { stop, task, assignment: assignments, begin: Some(begin) });
                    }
                    // A pause stays on the partitions this member keeps.
                    let owned: Vec<TopicPartition> = shared.partitions.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
                    shared.steering.send_if_modified(|s| {
                        let before = s.paused.len();
                        s.paused.retain(|tp| owned.contains(tp));
                        s.seeks.retain(|tp, _| owned.contains(tp));
                        s.paused.len() != before
                    });
                    let shared = Arc::clone(&shared);
                    let assignment = assignments;
                    lookups.push(async move { (assignment, start::look_up(&shared, &added).await) });
                }
                Some(GroupEvent::Revoking { partitions, ack }) => {
                    stop_workers(&shared, &mut workers, &partitions, shared.config.rebalance_timeout).await;
                    ack.done();
                }
                Some(GroupEvent::Lost { partitions }) => {
                    for tp in &partitions {
                        // Dropped: aborted.
                        workers.remove(tp);
                        shared.forget_partition(tp);
                    }
                }
                Some(GroupEvent::Failed(e)) => {
                    tracing::error!(error = %e, "the consumer group member failed; consumption stopped");
                    workers.clear();
                }
                Some(_) => {}
            },
            changed = shutdown.changed(), if !closing => {
                let _ = changed;
                if *shutdown.borrow() || changed.is_err() {
                    closing = true;
                    // Leaving revokes every partition through this loop
                    // (Revoking events), which commits them.
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move { shared.member.close().await });
                }
            }
        }
    }
    workers.clear();
}

/// Hands the workers of `assignment` still waiting their start: those the
/// lookup placed subscribe together; the others find their start themselves.
fn begin(
    shared: &ConsumeState,
    workers: &mut HashMap<TopicPartition, WorkerHandle>,
    assignment: u64,
    mut found: HashMap<TopicPartition, start::Position>,
) {
    let mut placed = Vec::new();
    for (tp, w) in workers
        .iter_mut()
        .filter(|(_, w)| w.assignment == assignment)
    {
        // Dropped unplaced: the worker looks on its own.
        if let Some(begin) = w.begin.take()
            && let Some(position) = found.remove(tp)
        {
            placed.push((tp.clone(), position, begin));
        }
    }
    let feeds = shared.fetcher.subscribe_all(
        placed
            .iter()
            .map(|(tp, p, _)| (tp.clone(), p.start, p.leader_epoch)),
    );
    for ((_, position, begin), feed) in placed.into_iter().zip(feeds) {
        // A worker already gone drops its feed, which unsubscribes it.
        let _ = begin.send(start::Begin { position, feed });
    }
}

/// Stops the partitions' workers: each finishes its message in flight and
/// commits. One that does not finish within `timeout` is aborted
/// uncommitted (its messages come again to the next owner).
async fn stop_workers(
    shared: &ConsumeState,
    workers: &mut HashMap<TopicPartition, WorkerHandle>,
    partitions: &[TopicPartition],
    timeout: Duration,
) {
    let mut stopping = Vec::new();
    for tp in partitions {
        if let Some(w) = workers.remove(tp) {
            w.stop.send_replace(true);
            stopping.push((tp.clone(), w));
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    // Each handle is kept until its task ended, or dropped (aborting it).
    for (tp, mut w) in stopping {
        if tokio::time::timeout_at(deadline, &mut w.task)
            .await
            .is_err()
        {
            tracing::warn!(partition = %tp, "handler did not finish within the timeout; abandoned uncommitted");
        }
        drop(w);
        shared.forget_partition(&tp);
    }
}
