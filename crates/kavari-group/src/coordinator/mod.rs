//! The member's state machine: one task owns the membership and moves through
//! find-coordinator → join → sync → heartbeat, logging each move with why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use kavari_wire::backoff::Backoff;
use membership::Membership;

use crate::api::{GroupApi, JoinParams, SyncParams};
use crate::assignor::{Assignor, MemberSubscription, RebalanceProtocol};
use crate::member_task::MemberTask;
use crate::protocol::{Assignment, Subscription};
use crate::{
    Generation, GroupConfig, GroupError, GroupEvent, MemberPhase, MemberState, RevokeAck,
    TopicPartition,
};

/// Requests from the member's handle.
#[derive(Debug)]
pub(crate) enum Command {
    /// Rejoin the group (asked for by the user of the member).
    Rejoin(String),
    /// A commit sent under `generation` was refused as stale: rejoin only
    /// if that is still this member's generation. A commit of the
    /// generation a rebalance has since replaced says nothing about the new
    /// one, and rejoining for it would start another rebalance.
    CommitRefused { generation: i32, reason: String },
    /// Leave the group at once, giving up every partition without a
    /// revocation (a handler is stuck past `max_handler_time`, so the
    /// partitions must move now), then join again as a new member.
    StepAside(String),
    /// Give up partitions (committing through the runtime), leave, stop.
    Leave(oneshot::Sender<()>),
    /// Heartbeat now, answering once done (the consumer protocol's answer
    /// to a commit refused for a stale member epoch); the classic member
    /// answers at once.
    Heartbeat(oneshot::Sender<()>),
}

/// Where the member stands in the group: what its loop does next. The
/// phase others see is derived from it ([`Coordinator::publish`]); only the
/// steps inside a join (awaiting the assignment, revoking) and the leave
/// are published by the code doing them.
#[derive(Debug)]
enum State {
    /// No coordinator known: find it, then join for `rejoin` if set, else
    /// go on heartbeating in the current generation.
    FindCoordinator { rejoin: Option<String> },
    /// Join the group (JoinGroup, SyncGroup) for `reason`.
    Join { reason: String },
    /// In a generation, heartbeating.
    Stable,
    /// Give up the partitions, leave (LeaveGroup only if `coordinator` is
    /// known) and stop, then answer `done`.
    Leave {
        done: Option<oneshot::Sender<()>>,
        coordinator: bool,
    },
}

/// How the heartbeat loop ended.
enum StableExit {
    /// The state moved on (the session expired).
    Continue,
    Rejoin(String),
    StepAside(String),
    Error(GroupError),
    Leave(Option<oneshot::Sender<()>>),
}

/// How often an unreachable coordinator is logged again, with the count of
/// attempts, after the first line.
const UNREACHABLE_REMINDER: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) struct Coordinator<A: GroupApi> {
    api: Arc<A>,
    config: Arc<GroupConfig>,
    membership: Membership,
    owned: BTreeSet<TopicPartition>,
    protocol: RebalanceProtocol,
    events: mpsc::UnboundedSender<GroupEvent>,
    /// What the member's handle sees.
    snapshot: watch::Sender<MemberState>,
    commands: mpsc::UnboundedReceiver<Command>,
    backoff: Backoff,
    /// What the member does next.
    state: State,
    last_heartbeat_ok: Instant,
    joins: u64,
    /// Since when no coordinator has answered (for `give_up_after`).
    unreachable_since: Option<Instant>,
    /// Failed coordinator lookups since the last success, and when they
    /// were last logged: one line when the coordinator becomes unreachable,
    /// then a reminder at most every [`UNREACHABLE_REMINDER`].
    failed_lookups: u32,
    unreachable_logged: Option<Instant>,
    /// As the group's leader: the partition counts the last assignment was
    /// made for, and when to look them up again (`metadata_max_age`).
    watched: Option<Watched>,
}

/// What the leader assigned over, to notice when it changes.
struct Watched {
    topics: Vec<String>,
    counts: BTreeMap<String, i32>,
    next_check: Instant,
}

impl<A: GroupApi> Coordinator<A> {
    pub(crate) fn new(
        api: Arc<A>,
        config: Arc<GroupConfig>,
        events: mpsc::UnboundedSender<GroupEvent>,
        state: watch::Sender<MemberState>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        let backoff = Backoff::new(config.retry_backoff, config.retry_backoff_max);
        Self {
            api,
            config,
            membership: Membership::New,
            owned: BTreeSet::new(),
            protocol: RebalanceProtocol::Eager,
            events,
            snapshot: state,
            commands,
            backoff,
            state: State::FindCoordinator {
                rejoin: Some("first join".into()),
            },
            last_heartbeat_ok: Instant::now(),
            joins: 0,
            unreachable_since: None,
            failed_lookups: 0,
            unreachable_logged: None,
            watched: None,
        }
    }

    /// Publishes the phase of what the member does next.
    fn publish(&self) {
        self.set_phase(match self.state {
            State::FindCoordinator { .. } => MemberPhase::Reconnecting,
            State::Join { .. } => MemberPhase::Joining,
            State::Stable => MemberPhase::Stable,
            State::Leave { .. } => MemberPhase::Leaving,
        });
    }

    /// Joins again for `reason` once the current step is over (the first
    /// reason given is kept); nothing while leaving.
    fn rejoin_for(&mut self, reason: String) {
        match &mut self.state {
            State::FindCoordinator { rejoin: r @ None } => *r = Some(reason),
            State::Stable => self.state = State::Join { reason },
            State::FindCoordinator { rejoin: Some(_) }
            | State::Join { .. }
            | State::Leave { .. } => {}
        }
    }

    /// The coordinator moved or cannot be reached: find it before anything
    /// else, keeping a pending rejoin.
    fn coordinator_lost(&mut self) {
        let rejoin = match std::mem::replace(&mut self.state, State::Stable) {
            State::FindCoordinator { rejoin } => rejoin,
            State::Join { reason } => Some(reason),
            State::Stable => None,
            leave @ State::Leave { .. } => {
                self.state = leave;
                return;
            }
        };
        self.state = State::FindCoordinator { rejoin };
    }

    /// Leaves next, answering `done` once left.
    fn leave_next(&mut self, done: Option<oneshot::Sender<()>>) {
        let coordinator = !matches!(self.state, State::FindCoordinator { .. });
        self.state = State::Leave { done, coordinator };
    }

    fn set_phase(&self, phase: MemberPhase) {
        let state = MemberState {
            phase,
            generation: self.membership.generation().cloned(),
            assignment: self.owned.iter().cloned().collect(),
            joins: self.joins,
        };
        self.snapshot.send_replace(state);
    }

    /// Runs until closed or failed.
    pub(crate) async fn run(mut self) {
        let ran = self.run_inner().await;
        self.end(ran);
    }

    async fn run_inner(&mut self) -> Result<(), GroupError> {
        loop {
            self.publish();
            match &mut self.state {
                State::FindCoordinator { .. } => self.find_coordinator().await?,
                State::Join { reason } => {
                    let reason = reason.clone();
                    if let Err(e) = self.join(&reason).await
                        && self.on_error(e)?
                    {
                        self.pause().await;
                    }
                }
                State::Stable => match self.stable().await {
                    StableExit::Continue => {}
                    StableExit::Leave(done) => self.leave_next(done),
                    StableExit::Rejoin(reason) => self.state = State::Join { reason },
                    StableExit::StepAside(reason) => self.step_aside(reason).await,
                    StableExit::Error(e) => {
                        if self.on_error(e)? {
                            self.pause().await;
                        }
                    }
                },
                State::Leave { done, coordinator } => {
                    let (done, coordinator) = (done.take(), *coordinator);
                    return self.leave(done, coordinator).await;
                }
            }
        }
    }

    /// Looks the coordinator up; on success goes on with what waited for it.
    async fn find_coordinator(&mut self) -> Result<(), GroupError> {
        self.expire_session_if_silent();
        match self.api.find_coordinator().await {
            Ok(()) => {
                tracing::info!(group = %self.group(), why = "coordinator found", "connected to the group coordinator");
                self.unreachable_since = None;
                self.failed_lookups = 0;
                self.unreachable_logged = None;
                // Finding the coordinator is not progress yet: a coordinator
                // that answers every SyncGroup with garbage would make the
                // member rejoin at the first backoff step for ever. The
                // backoff resets once a join completes.
                if let State::FindCoordinator { rejoin } = &mut self.state {
                    self.state = match rejoin.take() {
                        Some(reason) => State::Join { reason },
                        None => State::Stable,
                    };
                }
                Ok(())
            }
            Err(e) if e.is_fatal() => Err(e),
            Err(e) => {
                let since = *self.unreachable_since.get_or_insert_with(Instant::now);
                if let Some(limit) = self.config.give_up_after
                    && since.elapsed() >= limit
                {
                    return Err(GroupError::Fatal(format!(
                        "gave up: no group coordinator reachable for {:?} (give_up_after); last error: {e}",
                        since.elapsed()
                    )));
                }
                self.failed_lookups += 1;
                let due = self
                    .unreachable_logged
                    .is_none_or(|at| at.elapsed() >= UNREACHABLE_REMINDER);
                if due {
                    self.unreachable_logged = Some(Instant::now());
                    tracing::warn!(
                        group = %self.group(), error = %e, attempts = self.failed_lookups,
                        unreachable_for = ?since.elapsed(),
                        "no group coordinator reachable; retrying with backoff"
                    );
                }
                self.pause().await;
                Ok(())
            }
        }
    }

    /// Classifies an error; `Ok(true)` means back off before the next try.
    fn on_error(&mut self, e: GroupError) -> Result<bool, GroupError> {
        if e.is_fatal() {
            return Err(e);
        }
        let group = self.config.group_id.clone();
        if e.needs_new_coordinator() {
            tracing::warn!(%group, error = %e, why = "coordinator moved or unreachable", "finding the coordinator again");
            self.coordinator_lost();
            return Ok(true);
        }
        match e.response_error() {
            Some(ResponseError::RebalanceInProgress) => {
                tracing::info!(%group, why = "rebalance in progress", "rejoining");
                self.rejoin_for("rebalance in progress".into());
                Ok(false)
            }
            Some(ResponseError::UnknownMemberId) => {
                tracing::warn!(%group, member = %self.membership.member_id(), why = "unknown member id", "rejoining as a new member");
                self.lose("the coordinator forgot this member");
                self.membership.forget();
                self.rejoin_for("unknown member id".into());
                Ok(false)
            }
            Some(ResponseError::IllegalGeneration) => {
                tracing::warn!(%group, why = "illegal generation", "rejoining");
                self.lose("the generation is gone");
                self.rejoin_for("illegal generation".into());
                Ok(false)
            }
            Some(ResponseError::CoordinatorLoadInProgress) => {
                tracing::info!(%group, why = "coordinator loading", "backing off");
                Ok(true)
            }
            _ => {
                tracing::warn!(%group, error = %e, "group request failed; backing off");
                if self.membership.generation().is_none() {
                    self.rejoin_for(format!("after error: {e}"));
                }
                Ok(true)
            }
        }
    }

    /// Waits one backoff step, or until a Leave comes.
    async fn pause(&mut self) {
        let deadline = Instant::now() + self.backoff.next();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Rejoin(reason)) => self.rejoin_for(reason),
                    Some(Command::CommitRefused { generation, reason }) => {
                        if let Some(reason) = self.stale_commit_rejoin(generation, reason) {
                            self.rejoin_for(reason);
                        }
                    }
                    // Not in a generation: nothing to give up.
                    Some(Command::StepAside(_) | Command::Heartbeat(_)) => {}
                    Some(Command::Leave(done)) => return self.leave_next(Some(done)),
                    None => return self.leave_next(None),
                }
            }
        }
    }

    /// One heartbeat, waited for no longer than the session has left (the
    /// request timeout may be longer): `None` when it ran out. A success
    /// counts from when it was sent, as the coordinator counts from when it
    /// received it, so this member gives its partitions up no later than
    /// the coordinator can hand them to another.
    async fn heartbeat_within_session(&mut self, g: &Generation) -> Option<Result<(), GroupError>> {
        let sent = Instant::now();
        let session_end = self.last_heartbeat_ok + self.config.session_timeout;
        let answer = tokio::time::timeout_at(session_end, self.api.heartbeat(g))
            .await
            .ok()?;
        if answer.is_ok() {
            self.last_heartbeat_ok = sent;
        }
        Some(answer)
    }

    /// A reason to rejoin for a commit refused under `generation`, when
    /// that is still this member's generation; `None` for a commit of a
    /// generation already replaced (logged, then ignored).
    fn stale_commit_rejoin(&self, generation: i32, reason: String) -> Option<String> {
        let current = self.membership.generation().map(|g| g.generation_id);
        if current == Some(generation) {
            return Some(reason);
        }
        tracing::debug!(
            group = %self.group(), generation, current = ?current, reason,
            "a commit of an earlier generation was refused; no rejoin for it"
        );
        None
    }

    /// Without a successful heartbeat for a whole session timeout, the
    /// coordinator has dropped this member: its partitions are someone
    /// else's now.
    fn expire_session_if_silent(&mut self) {
        if self.membership.generation().is_some()
            && self.last_heartbeat_ok.elapsed() >= self.config.session_timeout
        {
            tracing::warn!(group = %self.group(), why = "session timeout without a heartbeat", "partitions lost");
            self.lose("the session timed out");
            self.rejoin_for("session expired".into());
        }
    }

    /// Asks the runtime to release `partitions` and waits for it (at most
    /// the rebalance timeout), heartbeating meanwhile so the session lives.
    async fn revoke(&mut self, partitions: Vec<TopicPartition>) {
        if partitions.is_empty() {
            return;
        }
        self.set_phase(MemberPhase::Rebalancing);
        tracing::info!(group = %self.group(), count = partitions.len(), "revoking partitions");
        let (ack, mut rx) = RevokeAck::new();
        for tp in &partitions {
            self.owned.remove(tp);
        }
        self.emit(GroupEvent::Revoking { partitions, ack });
        let deadline = Instant::now() + self.config.rebalance_timeout;
        loop {
            let beat = Instant::now() + self.config.heartbeat_interval;
            tokio::select! {
                _ = &mut rx => return,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(group = %self.group(), "revocation not acknowledged within the rebalance timeout; going on");
                    return;
                }
                _ = tokio::time::sleep_until(beat) => {
                    if let Some(g) = self.membership.generation().cloned() {
                        // Errors (a rebalance in progress) are expected here.
                        let _ = self.heartbeat_within_session(&g).await;
                    }
                }
            }
        }
    }

    /// As the leader, looks the subscribed topics up again: a reason to
    /// rebalance when a partition count changed since the assignment.
    async fn partitions_changed(&mut self) -> Option<String> {
        let watched = self.watched.as_mut()?;
        watched.next_check = Instant::now() + self.config.metadata_max_age;
        let topics = watched.topics.clone();
        match self.api.partition_counts(&topics).await {
            Ok(counts) => {
                let watched = self.watched.as_mut()?;
                if counts == watched.counts {
                    return None;
                }
                let why = format!(
                    "partition counts changed from {:?} to {counts:?}",
                    watched.counts
                );
                Some(why)
            }
            Err(e) => {
                tracing::warn!(group = %self.group(), error = %e, "looking up the subscribed topics failed; trying again after metadata_max_age");
                None
            }
        }
    }

    /// Heartbeats until the group needs this member to do something else.
    async fn stable(&mut self) -> StableExit {
        loop {
            let next = Instant::now() + self.config.heartbeat_interval;
            let metadata_check = self.watched.as_ref().map(|w| w.next_check);
            tokio::select! {
                _ = until(metadata_check) => {
                    if let Some(why) = self.partitions_changed().await {
                        tracing::info!(group = %self.group(), why, "rebalancing for the new partitions");
                        return StableExit::Rejoin(why);
                    }
                }
                _ = tokio::time::sleep_until(next) => {
                    let Some(g) = self.membership.generation().cloned() else {
                        return StableExit::Rejoin("no generation".into());
                    };
                    match self.heartbeat_within_session(&g).await {
                        Some(Ok(())) => {}
                        Some(Err(e)) if e.needs_rejoin() || e.is_fatal() || e.needs_new_coordinator() => {
                            return StableExit::Error(e);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(group = %self.group(), error = %e, "heartbeat failed");
                        }
                        None => {
                            tracing::warn!(group = %self.group(), "no heartbeat answer within the session timeout");
                        }
                    }
                    self.expire_session_if_silent();
                    if !matches!(self.state, State::Stable) {
                        return StableExit::Continue;
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Rejoin(reason)) => return StableExit::Rejoin(reason),
                    Some(Command::CommitRefused { generation, reason }) => {
                        if let Some(reason) = self.stale_commit_rejoin(generation, reason) {
                            return StableExit::Rejoin(reason);
                        }
                    }
                    Some(Command::StepAside(reason)) => return StableExit::StepAside(reason),
                    Some(Command::Heartbeat(_)) => {}
                    Some(Command::Leave(done)) => return StableExit::Leave(Some(done)),
                    None => return StableExit::Leave(None),
                }
            }
        }
    }

    /// Gives every partition up as lost (the runtime stops its workers
    /// without committing), sends LeaveGroup so the coordinator hands them
    /// to other members now, and joins again as a new member.
    async fn step_aside(&mut self, reason: String) {
        tracing::warn!(group = %self.group(), why = %reason, "leaving the group so the partitions move");
        let generation = self.membership.generation().cloned();
        self.lose(&reason);
        if let Some(g) = generation
            && self.config.group_instance_id.is_none()
            && let Err(e) = self.api.leave_group(&g).await
        {
            tracing::warn!(group = %self.group(), error = %e, "LeaveGroup failed; the coordinator drops the member after the session timeout");
        }
        self.membership.forget();
        self.state = State::Join {
            reason: format!("rejoining after stepping aside: {reason}"),
        };
    }

    /// Releases partitions (the runtime commits), leaves (dynamic members
    /// only: a static member keeps its place for the session timeout).
    async fn leave(
        &mut self,
        done: Option<oneshot::Sender<()>>,
        coordinator: bool,
    ) -> Result<(), GroupError> {
        let owned: Vec<_> = self.owned.iter().cloned().collect();
        self.revoke(owned).await;
        let member_id = self.membership.member_id();
        if self.config.group_instance_id.is_none() && !member_id.is_empty() && coordinator {
            let g = Generation {
                generation_id: self.membership.generation_id(),
                member_id: member_id.to_string(),
                group_instance_id: None,
            };
            if let Err(e) = self.api.leave_group(&g).await {
                tracing::warn!(group = %self.group(), error = %e, "LeaveGroup failed; the coordinator drops the member after the session timeout");
            }
        }
        self.membership.leave_generation();
        if let Some(done) = done {
            let _ = done.send(());
        }
        Ok(())
    }
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

mod join;
mod membership;
#[cfg(test)]
mod scripted;

impl<A: GroupApi> MemberTask for Coordinator<A> {
    fn group(&self) -> &str {
        &self.config.group_id
    }

    fn events(&self) -> &mpsc::UnboundedSender<GroupEvent> {
        &self.events
    }

    fn lose(&mut self, why: &str) {
        let partitions: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
        self.membership.leave_generation();
        self.report_lost(partitions, why);
    }

    fn show_phase(&mut self, phase: MemberPhase) {
        self.set_phase(phase);
    }
}

#[cfg(test)]
mod tests;
