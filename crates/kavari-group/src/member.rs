//! [`GroupMember`]: the handle a consumer runtime holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kavari_wire::ResponseError;
use kavari_wire::cluster::Cluster;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::KafkaGroupApi;
use crate::consumer_protocol::ConsumerMember;
use crate::coordinator::{Command, Coordinator};
use crate::offsets::{KafkaOffsetStore, OffsetStore};
use crate::{
    CommitOffset, Generation, GroupConfig, GroupError, GroupEvent, GroupProtocol, MemberPhase,
    MemberState, TopicPartition,
};

/// How long a commit refused for a stale member epoch waits for the
/// heartbeat that brings the new one.
const STALE_EPOCH_WAIT: Duration = Duration::from_secs(5);

/// A member of a Kafka consumer group. Its membership runs on a task of its
/// own (joining, heartbeating, rebalancing), independent of message handling;
/// changes arrive as [`GroupEvent`]s.
///
/// Dropping the handle leaves the group, as [`close`](Self::close) does.
#[derive(Debug)]
pub struct GroupMember {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<MemberState>,
    store: KafkaOffsetStore,
    task: tokio::task::AbortHandle,
}

impl GroupMember {
    /// Starts joining `config.group_id` over connections of its own;
    /// returns the handle and its events. Must be called inside a tokio
    /// runtime.
    pub fn start(
        config: GroupConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<GroupEvent>), GroupError> {
        let cluster = Arc::new(Cluster::new(
            config.bootstrap.clone(),
            config.client_id.clone(),
            config.request_timeout,
        ));
        Self::start_on(config, cluster)
    }

    /// Starts joining `config.group_id` through `cluster`'s connections,
    /// shared with the application's producer and fetcher (the
    /// coordinator still gets two connections of its own: JoinGroup and
    /// SyncGroup may wait a whole rebalance). `config.bootstrap` is unused.
    pub fn start_on(
        config: GroupConfig,
        cluster: Arc<Cluster>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<GroupEvent>), GroupError> {
        config.validate()?;
        let api = Arc::new(KafkaGroupApi::new(config.group_id.clone(), cluster));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(MemberState {
            phase: MemberPhase::Unjoined,
            generation: None,
            assignment: Vec::new(),
            joins: 0,
        });
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let task = match config.protocol {
            GroupProtocol::Classic => {
                let coordinator = Coordinator::new(
                    Arc::clone(&api),
                    Arc::new(config),
                    events_tx,
                    state_tx,
                    commands_rx,
                );
                tokio::spawn(coordinator.run()).abort_handle()
            }
            GroupProtocol::Consumer => {
                let member = ConsumerMember::new(
                    Arc::clone(&api),
                    Arc::new(config),
                    events_tx,
                    state_tx,
                    commands_rx,
                );
                tokio::spawn(member.run()).abort_handle()
            }
        };
        Ok((
            Self {
                commands: commands_tx,
                state: state_rx,
                store: KafkaOffsetStore { api },
                task,
            },
            events_rx,
        ))
    }

    /// The member's state now.
    pub fn state(&self) -> MemberState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<MemberState> {
        self.state.clone()
    }

    /// Waits until `pred` holds for the state, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&MemberState) -> bool,
    ) -> Option<MemberState> {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, async {
            rx.wait_for(|s| pred(s)).await.ok().map(|s| s.clone())
        })
        .await
        .ok()
        .flatten()
    }

    /// The generation the member is in now; refused between generations.
    fn generation(&self) -> Result<Generation, GroupError> {
        let state = self.state.borrow();
        match &state.generation {
            Some(g) => Ok(g.clone()),
            None => Err(GroupError::NotInGeneration(phase_name(&state.phase))),
        }
    }

    /// The group's offset store.
    pub fn offsets(&self) -> &KafkaOffsetStore {
        &self.store
    }

    /// Commits `offsets` (next offset to read, per partition) under the
    /// current generation and returns the broker's answer; the caller does
    /// not retry a refusal. A commit refused as stale makes the member
    /// rejoin only while that generation is still its own: during a
    /// rebalance (`REBALANCE_IN_PROGRESS`) or after one replaced it, the
    /// rebalance settles the membership, and rejoining again would start
    /// another.
    pub async fn commit(
        &self,
        offsets: &BTreeMap<TopicPartition, CommitOffset>,
    ) -> Result<(), GroupError> {
        let generation = self.generation()?;
        let mut result = self.store.commit(offsets, &generation).await;
        if result.as_ref().err().and_then(GroupError::response_error)
            == Some(ResponseError::StaleMemberEpoch)
        {
            // The consumer protocol moved the member's epoch on before its
            // heartbeat said so: a heartbeat now, then once more with the
            // epoch it brings.
            let (done, beaten) = oneshot::channel();
            if self.commands.send(Command::Heartbeat(done)).is_ok() {
                let _ = tokio::time::timeout(STALE_EPOCH_WAIT, beaten).await;
            }
            if let Ok(g) = self.generation() {
                result = self.store.commit(offsets, &g).await;
            }
        }
        if let Err(e) = &result
            && e.needs_rejoin()
            && e.response_error() != Some(ResponseError::RebalanceInProgress)
        {
            let _ = self.commands.send(Command::CommitRefused {
                generation: generation.generation_id,
                reason: format!("commit failed: {e}"),
            });
        }
        result
    }

    /// Commits `offsets` in the open transaction of `producer` (its
    /// transactional id's coordinator must have the group added first:
    /// AddOffsetsToTxn), under the current generation: they take effect
    /// when the transaction commits, and never when it aborts. A member the
    /// group moved past is refused (KIP-447), as by [`commit`](Self::commit).
    pub async fn commit_in_transaction(
        &self,
        transactional_id: &str,
        producer: kavari_wire::producer_id::ProducerIdentity,
        offsets: &BTreeMap<TopicPartition, CommitOffset>,
    ) -> Result<(), GroupError> {
        let generation = self.generation()?;
        if offsets.is_empty() {
            return Ok(());
        }
        self.store
            .api
            .txn_offset_commit(&generation, transactional_id, producer, offsets)
            .await
    }

    /// The group's committed offsets for `partitions`, with their leader
    /// epochs (`None`: nothing committed).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<CommitOffset>>, GroupError> {
        self.store.committed(partitions).await
    }

    /// Leaves the group at once, giving up every partition as lost (no
    /// revocation: a `Lost` event), so the coordinator hands them to other
    /// members now; then joins again as a new member. For a consumer whose
    /// handler is stuck (the `max.poll.interval.ms` rule).
    pub fn step_aside(&self, reason: impl Into<String>) {
        let _ = self.commands.send(Command::StepAside(reason.into()));
    }

    /// Asks the member to rejoin the group.
    pub fn request_rejoin(&self, reason: impl Into<String>) {
        let _ = self.commands.send(Command::Rejoin(reason.into()));
    }

    /// Releases every partition (a `Revoking` event the runtime acknowledges
    /// after committing), sends LeaveGroup for a dynamic member, and stops.
    /// Idempotent.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl GroupMember {
    /// Stops the member at once, as a killed process would: no revocation,
    /// no LeaveGroup, no commit; its connections close. The coordinator
    /// drops it after the session timeout. A shutdown that ran out of time
    /// ends the member so; tests of crash recovery do too.
    pub fn abort(&self) {
        self.task.abort();
    }
}

fn phase_name(phase: &MemberPhase) -> &'static str {
    match phase {
        MemberPhase::Unjoined => "unjoined",
        MemberPhase::Reconnecting => "reconnecting",
        MemberPhase::Joining => "joining",
        MemberPhase::AwaitingSync => "awaiting sync",
        MemberPhase::Stable => "stable",
        MemberPhase::Rebalancing => "rebalancing",
        MemberPhase::Leaving => "leaving",
        MemberPhase::Closed => "closed",
        MemberPhase::Failed(_) => "failed",
    }
}
