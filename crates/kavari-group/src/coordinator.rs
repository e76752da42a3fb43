//! The member's state machine: one task owns the membership and moves through
//! find-coordinator → join → sync → heartbeat, logging each move with why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use kavari_wire::backoff::Backoff;

use crate::api::{GroupApi, JoinParams, SyncParams};
use crate::assignor::{Assignor, MemberSubscription, RebalanceProtocol};
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
    /// Give up partitions (committing through the runtime), leave, stop.
    Leave(oneshot::Sender<()>),
}

/// How the heartbeat loop ended.
enum StableExit {
    Rejoin(String),
    Error(GroupError),
    Leave(Option<oneshot::Sender<()>>),
}

/// How often an unreachable coordinator is logged again, with the count of
/// attempts, after the first line.
const UNREACHABLE_REMINDER: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) struct Coordinator<A: GroupApi> {
    api: Arc<A>,
    config: Arc<GroupConfig>,
    member_id: String,
    generation: Option<Generation>,
    owned: BTreeSet<TopicPartition>,
    protocol: RebalanceProtocol,
    events: mpsc::UnboundedSender<GroupEvent>,
    state: watch::Sender<MemberState>,
    commands: mpsc::UnboundedReceiver<Command>,
    backoff: Backoff,
    need_coordinator: bool,
    rejoin: Option<String>,
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
            member_id: String::new(),
            generation: None,
            owned: BTreeSet::new(),
            protocol: RebalanceProtocol::Eager,
            events,
            state,
            commands,
            backoff,
            need_coordinator: true,
            rejoin: Some("first join".into()),
            last_heartbeat_ok: Instant::now(),
            joins: 0,
            unreachable_since: None,
            failed_lookups: 0,
            unreachable_logged: None,
            watched: None,
        }
    }

    fn group(&self) -> &str {
        &self.config.group_id
    }

    fn set_phase(&self, phase: MemberPhase) {
        let state = MemberState {
            phase,
            generation: self.generation.clone(),
            assignment: self.owned.iter().cloned().collect(),
            joins: self.joins,
        };
        self.state.send_replace(state);
    }

    fn emit(&self, event: GroupEvent) {
        // No receiver: the runtime went away; the member still behaves.
        let _ = self.events.send(event);
    }

    /// Runs until closed or failed.
    pub(crate) async fn run(mut self) {
        match self.run_inner().await {
            Ok(()) => {
                tracing::info!(group = %self.group(), "left the group");
                self.set_phase(MemberPhase::Closed);
            }
            Err(e) => {
                tracing::error!(group = %self.group(), error = %e, "group member failed");
                if !self.owned.is_empty() {
                    self.lose("the member failed");
                }
                self.set_phase(MemberPhase::Failed(e.to_string()));
                self.emit(GroupEvent::Failed(e));
            }
        }
    }

    async fn run_inner(&mut self) -> Result<(), GroupError> {
        loop {
            if self.need_coordinator {
                self.set_phase(MemberPhase::Reconnecting);
                self.expire_session_if_silent();
                match self.api.find_coordinator().await {
                    Ok(()) => {
                        tracing::info!(group = %self.group(), why = "coordinator found", "connected to the group coordinator");
                        self.need_coordinator = false;
                        self.unreachable_since = None;
                        self.failed_lookups = 0;
                        self.unreachable_logged = None;
                        self.backoff.reset();
                    }
                    Err(e) if e.is_fatal() => return Err(e),
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
                        if let Some(done) = self.pause().await {
                            return self.leave(done).await;
                        }
                        continue;
                    }
                }
            }
            if let Some(reason) = self.rejoin.clone() {
                match self.join(&reason).await {
                    Ok(second_round) => {
                        self.backoff.reset();
                        self.rejoin = second_round;
                    }
                    Err(e) => {
                        if self.on_error(e)?
                            && let Some(done) = self.pause().await
                        {
                            return self.leave(done).await;
                        }
                    }
                }
                continue;
            }
            match self.stable().await {
                StableExit::Leave(done) => return self.leave(done).await,
                StableExit::Rejoin(reason) => self.rejoin = Some(reason),
                StableExit::Error(e) => {
                    if self.on_error(e)?
                        && let Some(done) = self.pause().await
                    {
                        return self.leave(done).await;
                    }
                }
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
            self.need_coordinator = true;
            return Ok(true);
        }
        match e.response_error() {
            Some(ResponseError::RebalanceInProgress) => {
                tracing::info!(%group, why = "rebalance in progress", "rejoining");
                self.rejoin = Some("rebalance in progress".into());
                Ok(false)
            }
            Some(ResponseError::UnknownMemberId) => {
                tracing::warn!(%group, member = %self.member_id, why = "unknown member id", "rejoining as a new member");
                self.lose("the coordinator forgot this member");
                self.member_id.clear();
                self.rejoin = Some("unknown member id".into());
                Ok(false)
            }
            Some(ResponseError::IllegalGeneration) => {
                tracing::warn!(%group, why = "illegal generation", "rejoining");
                self.lose("the generation is gone");
                self.rejoin = Some("illegal generation".into());
                Ok(false)
            }
            Some(ResponseError::CoordinatorLoadInProgress) => {
                tracing::info!(%group, why = "coordinator loading", "backing off");
                Ok(true)
            }
            _ => {
                tracing::warn!(%group, error = %e, "group request failed; backing off");
                if self.generation.is_none() && self.rejoin.is_none() {
                    self.rejoin = Some(format!("after error: {e}"));
                }
                Ok(true)
            }
        }
    }

    /// Waits one backoff step; returns a Leave command's reply if one came.
    async fn pause(&mut self) -> Option<Option<oneshot::Sender<()>>> {
        let deadline = Instant::now() + self.backoff.next();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Rejoin(reason)) => {
                        if self.rejoin.is_none() {
                            self.rejoin = Some(reason);
                        }
                    }
                    Some(Command::CommitRefused { generation, reason }) => {
                        if let Some(reason) = self.stale_commit_rejoin(generation, reason)
                            && self.rejoin.is_none()
                        {
                            self.rejoin = Some(reason);
                        }
                    }
                    Some(Command::Leave(done)) => return Some(Some(done)),
                    None => return Some(None),
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
        let current = self.generation.as_ref().map(|g| g.generation_id);
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
        if self.generation.is_some()
            && self.last_heartbeat_ok.elapsed() >= self.config.session_timeout
        {
            tracing::warn!(group = %self.group(), why = "session timeout without a heartbeat", "partitions lost");
            self.lose("the session timed out");
            if self.rejoin.is_none() {
                self.rejoin = Some("session expired".into());
            }
        }
    }

    fn lose(&mut self, why: &str) {
        let partitions: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
        self.generation = None;
        if !partitions.is_empty() {
            tracing::warn!(group = %self.group(), why, count = partitions.len(), "partitions lost");
            self.emit(GroupEvent::Lost { partitions });
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
                    if let Some(g) = self.generation.clone() {
                        // Errors (a rebalance in progress) are expected here.
                        let _ = self.heartbeat_within_session(&g).await;
                    }
                }
            }
        }
    }

    /// JoinGroup and SyncGroup; returns a reason to rejoin at once when a
    /// cooperative rebalance needs its second round.
    async fn join(&mut self, reason: &str) -> Result<Option<String>, GroupError> {
        if self.protocol == RebalanceProtocol::Eager && !self.owned.is_empty() {
            let all = self.owned.iter().cloned().collect();
            self.revoke(all).await;
        }
        self.set_phase(MemberPhase::Joining);
        tracing::info!(group = %self.group(), why = reason, "joining");
        let subscription = Subscription {
            topics: self.config.topics.clone(),
            user_data: None,
            owned_partitions: self.owned.iter().cloned().collect(),
            generation: self.generation.as_ref().map_or(-1, |g| g.generation_id),
            rack_id: None,
        }
        .encode();
        let protocols = self
            .config
            .assignors
            .iter()
            .map(|a| (a.name().to_string(), subscription.clone()))
            .collect::<Vec<_>>();
        let mut attempt = 0;
        let joined = loop {
            attempt += 1;
            let resp = self
                .api
                .join_group(JoinParams {
                    member_id: self.member_id.clone(),
                    group_instance_id: self.config.group_instance_id.clone(),
                    session_timeout: self.config.session_timeout,
                    rebalance_timeout: self.config.rebalance_timeout,
                    protocols: protocols.clone(),
                    reason: reason.to_string(),
                })
                .await?;
            match resp.error {
                None => break resp,
                Some(ResponseError::MemberIdRequired) if attempt < 3 => {
                    tracing::debug!(group = %self.group(), member = %resp.member_id, "rejoining with the member id the coordinator gave");
                    self.member_id = resp.member_id;
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    return Err(GroupError::broker(
                        "JoinGroup",
                        ResponseError::UnknownMemberId,
                        None,
                    ));
                }
                Some(e) => return Err(GroupError::broker("JoinGroup", e, None)),
            }
        };
        self.member_id = joined.member_id.clone();
        let generation = Generation {
            generation_id: joined.generation,
            member_id: joined.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
        };
        let protocol_name = joined.protocol_name.clone().ok_or_else(|| {
            GroupError::malformed("JoinGroup", "no protocol name in a successful response")
        })?;
        let assignor = self
            .config
            .assignors
            .iter()
            .find(|a| a.name() == protocol_name)
            .cloned()
            .ok_or_else(|| {
                GroupError::Fatal(format!(
                    "the group chose assignor {protocol_name:?}, which this member does not offer"
                ))
            })?;
        self.set_phase(MemberPhase::AwaitingSync);
        self.watched = None;
        let assignments = if joined.leader == joined.member_id {
            let (assignments, watched) = self.lead(assignor.as_ref(), &joined.members).await?;
            self.watched = Some(watched);
            assignments
        } else {
            Vec::new()
        };
        let bytes = self
            .api
            .sync_group(SyncParams {
                generation: generation.clone(),
                protocol_name,
                assignments,
            })
            .await?;
        let assignment = Assignment::decode(&bytes)
            .map_err(|e| GroupError::malformed("SyncGroup assignment", e.to_string()))?;
        let new: BTreeSet<TopicPartition> = assignment
            .partitions
            .into_iter()
            .filter(|tp| self.config.topics.contains(&tp.topic))
            .collect();
        self.protocol = assignor.rebalance_protocol();
        self.generation = Some(generation.clone());
        self.last_heartbeat_ok = Instant::now();
        self.joins += 1;
        let revoked: Vec<_> = self.owned.difference(&new).cloned().collect();
        let added: Vec<_> = new.difference(&self.owned).cloned().collect();
        let second_round = if revoked.is_empty() {
            None
        } else {
            // Cooperative: give up what moves, then rejoin so the group can
            // hand it to its new owner.
            self.revoke(revoked).await;
            Some("cooperative rebalance: partitions released".to_string())
        };
        self.owned = new;
        tracing::info!(
            group = %self.group(), generation = generation.generation_id, member = %generation.member_id,
            assigned = self.owned.len(), added = added.len(), "joined"
        );
        self.set_phase(MemberPhase::Stable);
        self.emit(GroupEvent::Assigned {
            added,
            assignment: self.owned.iter().cloned().collect(),
            generation,
        });
        Ok(second_round)
    }

    /// The leader's work: decode subscriptions, look up partitions, assign;
    /// with what was assigned over, to watch.
    async fn lead(
        &self,
        assignor: &dyn Assignor,
        members: &[(String, Option<String>, Bytes)],
    ) -> Result<(Vec<(String, Bytes)>, Watched), GroupError> {
        let members: Vec<MemberSubscription> = members
            .iter()
            .map(|(id, instance, meta)| {
                let subscription = Subscription::decode(meta).unwrap_or_else(|e| {
                    // One member's bad metadata must not stop the group: it
                    // gets nothing this generation.
                    tracing::warn!(group = %self.group(), member = %id, error = %e, "undecodable subscription");
                    Subscription::default()
                });
                MemberSubscription {
                    member_id: id.clone(),
                    group_instance_id: instance.clone(),
                    subscription,
                }
            })
            .collect();
        let topics: Vec<String> = members
            .iter()
            .flat_map(|m| m.subscription.topics.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let counts = self.api.partition_counts(&topics).await?;
        let mut assignment = assignor.assign(&members, &counts);
        if assignor.rebalance_protocol() == RebalanceProtocol::Cooperative {
            withhold_moving_partitions(&members, &mut assignment);
        }
        tracing::info!(group = %self.group(), members = members.len(), topics = topics.len(), assignor = assignor.name(), "assigned partitions as leader");
        let assignments = assignment
            .into_iter()
            .map(|(member, partitions)| {
                let bytes = Assignment {
                    partitions,
                    user_data: None,
                }
                .encode();
                (member, bytes)
            })
            .collect();
        let watched = Watched {
            topics,
            counts,
            next_check: Instant::now() + self.config.metadata_max_age,
        };
        Ok((assignments, watched))
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
        self.set_phase(MemberPhase::Stable);
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
                    let Some(g) = self.generation.clone() else {
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
                    if let Some(reason) = self.rejoin.take() {
                        return StableExit::Rejoin(reason);
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Rejoin(reason)) => return StableExit::Rejoin(reason),
                    Some(Command::CommitRefused { generation, reason }) => {
                        if let Some(reason) = self.stale_commit_rejoin(generation, reason) {
                            return StableExit::Rejoin(reason);
                        }
                    }
                    Some(Command::Leave(done)) => return StableExit::Leave(Some(done)),
                    None => return StableExit::Leave(None),
                }
            }
        }
    }

    /// Releases partitions (the runtime commits), leaves (dynamic members
    /// only: a static member keeps its place for the session timeout).
    async fn leave(&mut self, done: Option<oneshot::Sender<()>>) -> Result<(), GroupError> {
        self.set_phase(MemberPhase::Leaving);
        let owned: Vec<_> = self.owned.iter().cloned().collect();
        self.revoke(owned).await;
        if self.config.group_instance_id.is_none()
            && !self.member_id.is_empty()
            && !self.need_coordinator
        {
            let g = Generation {
                generation_id: self.generation.as_ref().map_or(-1, |g| g.generation_id),
                member_id: self.member_id.clone(),
                group_instance_id: None,
            };
            if let Err(e) = self.api.leave_group(&g).await {
                tracing::warn!(group = %self.group(), error = %e, "LeaveGroup failed; the coordinator drops the member after the session timeout");
            }
        }
        self.generation = None;
        if let Some(done) = done {
            let _ = done.send(());
        }
        Ok(())
    }
}

/// Cooperative rebalancing (KIP-429): a partition moving from one member to
/// another is left out of this generation; its owner revokes it, rejoins, and
/// the next generation hands it over.
pub(crate) fn withhold_moving_partitions(
    members: &[MemberSubscription],
    assignment: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    let mut owner: BTreeMap<&TopicPartition, Option<&str>> = BTreeMap::new();
    for m in members {
        for tp in &m.subscription.owned_partitions {
            owner
                .entry(tp)
                .and_modify(|o| *o = None) // claimed twice: nobody's
                .or_insert(Some(m.member_id.as_str()));
        }
    }
    for (member, partitions) in assignment.iter_mut() {
        partitions.retain(|tp| match owner.get(tp) {
            Some(Some(o)) => *o == member.as_str(),
            _ => true,
        });
    }
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The state machine driven by scripted coordinator answers, on a paused
    //! clock: every error code DESIGN.md names, and what the member does next.

    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::api::JoinResult;
    use crate::assignor::{CooperativeStickyAssignor, RangeAssignor};

    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Find,
        Join {
            member_id: String,
            owned: Vec<TopicPartition>,
            reason: String,
        },
        Sync {
            generation: i32,
            assignments: Vec<(String, Vec<TopicPartition>)>,
        },
        Heartbeat {
            generation: i32,
        },
        Leave {
            member_id: String,
        },
    }

    #[derive(Default)]
    struct Script {
        find: VecDeque<Result<(), GroupError>>,
        join: VecDeque<Result<JoinResult, GroupError>>,
        sync: VecDeque<Result<Bytes, GroupError>>,
        heartbeat: VecDeque<Result<(), GroupError>>,
        /// Heartbeats get no answer at all (a coordinator that went silent).
        silent: bool,
        counts: BTreeMap<String, i32>,
        calls: Vec<Call>,
    }

    #[derive(Default)]
    struct ScriptedApi(Mutex<Script>);

    impl ScriptedApi {
        fn script(&self) -> std::sync::MutexGuard<'_, Script> {
            self.0.lock().unwrap()
        }
        fn calls(&self) -> Vec<Call> {
            self.script().calls.clone()
        }
        fn joins(&self) -> Vec<Call> {
            self.calls()
                .into_iter()
                .filter(|c| matches!(c, Call::Join { .. }))
                .collect()
        }
    }

    impl GroupApi for ScriptedApi {
        async fn find_coordinator(&self) -> Result<(), GroupError> {
            let mut s = self.script();
            s.calls.push(Call::Find);
            s.find.pop_front().unwrap_or(Ok(()))
        }
        async fn join_group(&self, p: JoinParams) -> Result<JoinResult, GroupError> {
            let next = {
                let mut s = self.script();
                let sub = Subscription::decode(&p.protocols[0].1).unwrap();
                s.calls.push(Call::Join {
                    member_id: p.member_id.clone(),
                    owned: sub.owned_partitions,
                    reason: p.reason.clone(),
                });
                s.join.pop_front()
            };
            match next {
                Some(r) => r,
                None => std::future::pending().await, // the group never answers
            }
        }
        async fn sync_group(&self, p: SyncParams) -> Result<Bytes, GroupError> {
            let mut s = self.script();
            let assignments = p
                .assignments
                .iter()
                .map(|(m, b)| (m.clone(), Assignment::decode(b).unwrap().partitions))
                .collect();
            s.calls.push(Call::Sync {
                generation: p.generation.generation_id,
                assignments,
            });
            s.sync.pop_front().unwrap_or_else(|| Ok(Bytes::new()))
        }
        async fn heartbeat(&self, g: &Generation) -> Result<(), GroupError> {
            let answer = {
                let mut s = self.script();
                s.calls.push(Call::Heartbeat {
                    generation: g.generation_id,
                });
                (!s.silent).then(|| s.heartbeat.pop_front().unwrap_or(Ok(())))
            };
            match answer {
                Some(a) => a,
                None => std::future::pending().await,
            }
        }
        async fn leave_group(&self, g: &Generation) -> Result<(), GroupError> {
            self.script().calls.push(Call::Leave {
                member_id: g.member_id.clone(),
            });
            Ok(())
        }
        async fn partition_counts(
            &self,
            _: &[String],
        ) -> Result<BTreeMap<String, i32>, GroupError> {
            Ok(self.script().counts.clone())
        }
        async fn offset_commit(
            &self,
            _: &Generation,
            _: &BTreeMap<TopicPartition, i64>,
        ) -> Result<(), GroupError> {
            Ok(())
        }
        async fn offset_fetch(
            &self,
            _: &[TopicPartition],
        ) -> Result<BTreeMap<TopicPartition, Option<i64>>, GroupError> {
            Ok(BTreeMap::new())
        }
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn err(e: ResponseError) -> GroupError {
        GroupError::broker("test", e, None)
    }

    fn joined(
        member: &str,
        generation: i32,
        leader: &str,
        protocol: &str,
    ) -> Result<JoinResult, GroupError> {
        let sub = Subscription {
            topics: vec!["t".into()],
            generation: -1,
            ..Default::default()
        };
        Ok(JoinResult {
            error: None,
            generation,
            protocol_name: Some(protocol.into()),
            leader: leader.into(),
            member_id: member.into(),
            members: if leader == member {
                vec![(member.to_string(), None, sub.encode())]
            } else {
                Vec::new()
            },
        })
    }

    fn join_error(e: ResponseError, member: &str) -> Result<JoinResult, GroupError> {
        Ok(JoinResult {
            error: Some(e),
            member_id: member.into(),
            ..Default::default()
        })
    }

    fn assignment(ps: &[i32]) -> Result<Bytes, GroupError> {
        Ok(Assignment {
            partitions: ps.iter().map(|p| tp(*p)).collect(),
            user_data: None,
        }
        .encode())
    }

    struct Harness {
        api: Arc<ScriptedApi>,
        events: mpsc::UnboundedReceiver<GroupEvent>,
        state: watch::Receiver<MemberState>,
        commands: mpsc::UnboundedSender<Command>,
    }

    fn start(api: ScriptedApi, tweak: impl FnOnce(&mut GroupConfig)) -> Harness {
        let api = Arc::new(api);
        api.script().counts = BTreeMap::from([("t".to_string(), 2)]);
        let mut config = GroupConfig::new(["broker:9092"], "g", ["t"]);
        config.assignors = vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)];
        tweak(&mut config);
        let (etx, events) = mpsc::unbounded_channel();
        let (stx, state) = watch::channel(MemberState {
            phase: MemberPhase::Unjoined,
            generation: None,
            assignment: Vec::new(),
            joins: 0,
        });
        let (commands, crx) = mpsc::unbounded_channel();
        tokio::spawn(Coordinator::new(Arc::clone(&api), Arc::new(config), etx, stx, crx).run());
        Harness {
            api,
            events,
            state,
            commands,
        }
    }

    impl Harness {
        async fn event(&mut self) -> GroupEvent {
            tokio::time::timeout(Duration::from_secs(600), self.events.recv())
                .await
                .expect("an event in time")
                .expect("the member is alive")
        }
        async fn assigned(&mut self) -> (Vec<TopicPartition>, Vec<TopicPartition>, i32) {
            match self.event().await {
                GroupEvent::Assigned {
                    added,
                    assignment,
                    generation,
                } => (added, assignment, generation.generation_id),
                other => panic!("expected Assigned, got {other:?}"),
            }
        }
        async fn wait_phase(&mut self, phase: MemberPhase) -> MemberState {
            tokio::time::timeout(
                Duration::from_secs(600),
                self.state.wait_for(|s| s.phase == phase),
            )
            .await
            .expect("phase in time")
            .expect("state")
            .clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn member_id_required_then_the_leader_assigns_and_syncs() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join
                .push_back(join_error(ResponseError::MemberIdRequired, "m1"));
            s.join.push_back(joined("m1", 1, "m1", "range"));
            s.sync.push_back(assignment(&[0, 1]));
        }
        let mut h = start(api, |_| {});
        let (added, all, generation) = h.assigned().await;
        assert_eq!(
            (added.clone(), all, generation),
            (vec![tp(0), tp(1)], vec![tp(0), tp(1)], 1)
        );
        let joins = h.api.joins();
        assert!(matches!(&joins[0], Call::Join { member_id, .. } if member_id.is_empty()));
        assert!(matches!(&joins[1], Call::Join { member_id, .. } if member_id == "m1"));
        let sync = h
            .api
            .calls()
            .into_iter()
            .find(|c| matches!(c, Call::Sync { .. }))
            .unwrap();
        assert_eq!(
            sync,
            Call::Sync {
                generation: 1,
                assignments: vec![("m1".into(), vec![tp(0), tp(1)])]
            },
            "the leader ran range over the member's subscription"
        );
        let state = h.wait_phase(MemberPhase::Stable).await;
        assert_eq!(state.generation.unwrap().member_id, "m1");
        // Heartbeats run on their own timer.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let beats = h
            .api
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Heartbeat { generation: 1 }))
            .count();
        assert!(beats >= 3, "{beats} heartbeats in 10 s at a 3 s interval");
    }

    /// The leader looks the topics up every `metadata_max_age`; partitions
    /// added since the assignment make it rebalance, and the next
    /// assignment covers them. A follower does not look.
    #[tokio::test(start_paused = true)]
    async fn the_leader_rebalances_when_partitions_are_added() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m1", "range"));
            s.sync.push_back(assignment(&[0, 1]));
            s.join.push_back(joined("m1", 2, "m1", "range"));
            s.sync.push_back(assignment(&[0, 1, 2]));
        }
        let mut h = start(api, |c| c.metadata_max_age = Duration::from_secs(60));
        h.assigned().await;
        // Unchanged counts: no rebalance at the first look.
        tokio::time::sleep(Duration::from_secs(70)).await;
        assert_eq!(h.api.joins().len(), 1);
        h.api.script().counts.insert("t".into(), 3);
        match h.event().await {
            GroupEvent::Revoking { ack, .. } => ack.done(),
            other => panic!("expected Revoking, got {other:?}"),
        }
        let (_, all, generation) = h.assigned().await;
        assert_eq!((all, generation), (vec![tp(0), tp(1), tp(2)], 2));
        let joins = h.api.joins();
        assert!(
            matches!(&joins[1], Call::Join { reason, .. } if reason.contains("partition counts changed")),
            "{joins:?}"
        );
        let syncs: Vec<_> = h
            .api
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Sync { assignments, .. } => Some(assignments),
                _ => None,
            })
            .collect();
        assert_eq!(
            syncs[1],
            vec![("m1".to_string(), vec![tp(0), tp(1), tp(2)])]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_does_not_watch_the_topics() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m0", "range"));
            s.sync.push_back(assignment(&[0]));
        }
        let mut h = start(api, |c| c.metadata_max_age = Duration::from_secs(60));
        h.assigned().await;
        h.api.script().counts.insert("t".into(), 3);
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert_eq!(
            h.api.joins().len(),
            1,
            "the leader's job, not this member's"
        );
    }

    /// A coordinator that stops answering (the request timeout, 30 s, is
    /// longer than the session, 10 s): the member gives its partitions up
    /// within the session timeout of its last good heartbeat, before the
    /// coordinator can hand them to another member.
    #[tokio::test(start_paused = true)]
    async fn a_silent_coordinator_loses_the_partitions_within_the_session_timeout() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m1", "range"));
            s.sync.push_back(assignment(&[0, 1]));
        }
        let mut h = start(api, |_| {});
        h.assigned().await;
        let last_answer = Instant::now();
        h.api.script().silent = true;
        match h.event().await {
            GroupEvent::Lost { partitions } => assert_eq!(partitions, [tp(0), tp(1)]),
            other => panic!("expected Lost, got {other:?}"),
        }
        let after = last_answer.elapsed();
        assert!(after <= Duration::from_secs(10), "lost after {after:?}");
    }

    /// Cooperative-sticky: a commit sent under generation 1 is refused
    /// (ILLEGAL_GENERATION) while the rebalance to generation 2 is under
    /// way; its refusal reaches the member after generation 2 began and
    /// must not start a third. A refusal of the current generation still
    /// makes it rejoin.
    #[tokio::test(start_paused = true)]
    async fn a_stale_generation_commit_does_not_start_another_rebalance() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join
                .push_back(joined("m1", 1, "m1", "cooperative-sticky"));
            s.sync.push_back(assignment(&[0, 1]));
            s.heartbeat
                .push_back(Err(err(ResponseError::RebalanceInProgress)));
            s.join
                .push_back(joined("m1", 2, "m1", "cooperative-sticky"));
            s.sync.push_back(assignment(&[0, 1]));
            s.join
                .push_back(joined("m1", 3, "m1", "cooperative-sticky"));
            s.sync.push_back(assignment(&[0, 1]));
        }
        let mut h = start(api, |c| {
            c.assignors = vec![Arc::new(CooperativeStickyAssignor)]
        });
        assert_eq!(h.assigned().await.2, 1);
        assert_eq!(h.assigned().await.2, 2);
        h.commands
            .send(Command::CommitRefused {
                generation: 1,
                reason: "commit failed: illegal generation".into(),
            })
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            h.api.joins().len(),
            2,
            "no rebalance for a replaced generation"
        );
        h.commands
            .send(Command::CommitRefused {
                generation: 2,
                reason: "commit failed: illegal generation".into(),
            })
            .unwrap();
        assert_eq!(
            h.assigned().await.2,
            3,
            "the current generation's refusal rejoins"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rebalance_in_progress_revokes_everything_then_rejoins_eagerly() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m0", "range"));
            s.sync.push_back(assignment(&[0, 1]));
            s.heartbeat
                .push_back(Err(err(ResponseError::RebalanceInProgress)));
            s.join.push_back(joined("m1", 2, "m0", "range"));
            s.sync.push_back(assignment(&[1]));
        }
        let mut h = start(api, |_| {});
        h.assigned().await;
        match h.event().await {
            GroupEvent::Revoking { partitions, ack } => {
                assert_eq!(partitions, [tp(0), tp(1)], "eager: everything goes");
                // Not rejoined before the ack.
                tokio::time::sleep(Duration::from_secs(1)).await;
                assert_eq!(h.api.joins().len(), 1);
                ack.done();
            }
            other => panic!("expected Revoking, got {other:?}"),
        }
        let (added, all, generation) = h.assigned().await;
        assert_eq!((added, all, generation), (vec![tp(1)], vec![tp(1)], 2));
        let joins = h.api.joins();
        assert!(matches!(&joins[1], Call::Join { member_id, reason, .. }
            if member_id == "m1" && reason == "rebalance in progress"));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_member_id_loses_partitions_and_rejoins_as_new() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m0", "range"));
            s.sync.push_back(assignment(&[0]));
            s.heartbeat
                .push_back(Err(err(ResponseError::UnknownMemberId)));
        }
        let mut h = start(api, |_| {});
        h.assigned().await;
        match h.event().await {
            GroupEvent::Lost { partitions } => assert_eq!(partitions, [tp(0)]),
            other => panic!("expected Lost, got {other:?}"),
        }
        h.wait_phase(MemberPhase::Joining).await;
        let joins = h.api.joins();
        assert!(matches!(&joins[1], Call::Join { member_id, .. } if member_id.is_empty()));
    }

    #[tokio::test(start_paused = true)]
    async fn illegal_generation_loses_partitions_and_rejoins_with_the_same_id() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m0", "range"));
            s.sync.push_back(assignment(&[0]));
            s.heartbeat
                .push_back(Err(err(ResponseError::IllegalGeneration)));
        }
        let mut h = start(api, |_| {});
        h.assigned().await;
        assert!(matches!(h.event().await, GroupEvent::Lost { .. }));
        h.wait_phase(MemberPhase::Joining).await;
        assert!(matches!(&h.api.joins()[1], Call::Join { member_id, .. } if member_id == "m1"));
    }

    #[tokio::test(start_paused = true)]
    async fn not_coordinator_finds_it_again_and_keeps_the_generation() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m0", "range"));
            s.sync.push_back(assignment(&[0]));
            s.heartbeat
                .push_back(Err(err(ResponseError::NotCoordinator)));
            s.find.push_back(Ok(()));
            s.find
                .push_back(Err(err(ResponseError::CoordinatorNotAvailable)));
        }
        let mut h = start(api, |_| {});
        h.assigned().await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let calls = h.api.calls();
        let finds = calls.iter().filter(|c| **c == Call::Find).count();
        assert_eq!(
            finds, 3,
            "first find, then a failed and a good re-find: {calls:?}"
        );
        assert_eq!(
            h.api.joins().len(),
            1,
            "no rejoin: the generation is still good"
        );
        let last = calls.last().unwrap();
        assert_eq!(*last, Call::Heartbeat { generation: 1 });
        assert_eq!(h.state.borrow().phase, MemberPhase::Stable);
    }

    #[tokio::test(start_paused = true)]
    async fn coordinator_load_in_progress_backs_off_then_joins() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join
                .push_back(join_error(ResponseError::CoordinatorLoadInProgress, ""));
            s.join
                .push_back(join_error(ResponseError::CoordinatorLoadInProgress, ""));
            s.join.push_back(joined("m1", 1, "m1", "range"));
            s.sync.push_back(assignment(&[0, 1]));
        }
        let started = Instant::now();
        let mut h = start(api, |c| c.retry_backoff = Duration::from_secs(1));
        h.assigned().await;
        // Two backoffs: about 1 s and 2 s, each within ±20 %.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(2400), "waited {waited:?}");
        assert_eq!(h.api.joins().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fenced_instance_id_is_fatal_and_reported() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m0", "range"));
            s.sync.push_back(assignment(&[0]));
            s.heartbeat
                .push_back(Err(err(ResponseError::FencedInstanceId)));
        }
        let mut h = start(api, |c| c.group_instance_id = Some("pod-1".into()));
        h.assigned().await;
        assert!(matches!(h.event().await, GroupEvent::Lost { .. }));
        match h.event().await {
            GroupEvent::Failed(e) => {
                assert_eq!(e.response_error(), Some(ResponseError::FencedInstanceId))
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        let state = h.state.borrow().clone();
        assert!(matches!(state.phase, MemberPhase::Failed(_)), "{state:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_coordinator_fails_the_member_after_give_up_after() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            for _ in 0..1_000 {
                s.find
                    .push_back(Err(GroupError::Wire(kavari_wire::WireError::Connection {
                        address: "broker:9092".into(),
                        detail: "connection refused".into(),
                    })));
            }
        }
        let started = Instant::now();
        let mut h = start(api, |c| c.give_up_after = Some(Duration::from_secs(30)));
        match h.event().await {
            GroupEvent::Failed(GroupError::Fatal(why)) => assert!(why.contains("gave up"), "{why}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(45),
            "{waited:?}"
        );
        assert!(matches!(h.state.borrow().phase, MemberPhase::Failed(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn inconsistent_group_protocol_is_fatal() {
        let api = ScriptedApi::default();
        api.script()
            .join
            .push_back(join_error(ResponseError::InconsistentGroupProtocol, ""));
        let mut h = start(api, |_| {});
        match h.event().await {
            GroupEvent::Failed(e) => assert_eq!(
                e.response_error(),
                Some(ResponseError::InconsistentGroupProtocol)
            ),
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cooperative_revokes_only_what_moves_then_rejoins_for_the_second_round() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join
                .push_back(joined("m1", 1, "m0", "cooperative-sticky"));
            s.sync.push_back(assignment(&[0, 1]));
            s.heartbeat
                .push_back(Err(err(ResponseError::RebalanceInProgress)));
            s.join
                .push_back(joined("m1", 2, "m0", "cooperative-sticky"));
            s.sync.push_back(assignment(&[0]));
            s.join
                .push_back(joined("m1", 3, "m0", "cooperative-sticky"));
            s.sync.push_back(assignment(&[0]));
        }
        let mut h = start(api, |_| {});
        h.assigned().await;
        // No revocation before rejoining: the join carries what it owns.
        match h.event().await {
            GroupEvent::Revoking { partitions, ack } => {
                assert_eq!(partitions, [tp(1)], "only the moving partition");
                ack.done();
            }
            other => panic!("expected Revoking, got {other:?}"),
        }
        let (added, all, generation) = h.assigned().await;
        assert_eq!((added, all, generation), (vec![], vec![tp(0)], 2));
        let (_, all, generation) = h.assigned().await;
        assert_eq!(
            (all, generation),
            (vec![tp(0)], 3),
            "second round joined at once"
        );
        let joins = h.api.joins();
        assert!(matches!(&joins[1], Call::Join { owned, .. } if *owned == [tp(0), tp(1)]));
        assert!(matches!(&joins[2], Call::Join { owned, .. } if *owned == [tp(0)]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_coordinator_expires_the_session_and_loses_partitions() {
        let api = ScriptedApi::default();
        {
            let mut s = api.script();
            s.join.push_back(joined("m1", 1, "m0", "range"));
            s.sync.push_back(assignment(&[0]));
            for _ in 0..10 {
                s.heartbeat
                    .push_back(Err(err(ResponseError::UnknownServerError)));
            }
        }
        let mut h = start(api, |c| c.session_timeout = Duration::from_secs(10));
        h.assigned().await;
        assert!(matches!(h.event().await, GroupEvent::Lost { .. }));
        h.wait_phase(MemberPhase::Joining).await;
    }

    #[tokio::test(start_paused = true)]
    async fn leave_revokes_then_sends_leave_group_only_for_dynamic_members() {
        for instance in [None, Some("pod-1".to_string())] {
            let api = ScriptedApi::default();
            {
                let mut s = api.script();
                s.join.push_back(joined("m1", 1, "m0", "range"));
                s.sync.push_back(assignment(&[0]));
            }
            let is_static = instance.is_some();
            let mut h = start(api, |c| c.group_instance_id = instance);
            h.assigned().await;
            let (tx, rx) = oneshot::channel();
            h.commands.send(Command::Leave(tx)).unwrap();
            assert!(matches!(h.event().await, GroupEvent::Revoking { .. }));
            rx.await.unwrap();
            let left = h.api.calls().contains(&Call::Leave {
                member_id: "m1".into(),
            });
            assert_eq!(left, !is_static, "static={is_static}");
            h.wait_phase(MemberPhase::Closed).await;
        }
    }

    #[test]
    fn withheld_partitions_are_those_changing_owner() {
        let sub = |owned: Vec<TopicPartition>| Subscription {
            topics: vec!["t".into()],
            owned_partitions: owned,
            generation: 1,
            ..Default::default()
        };
        let members = vec![
            MemberSubscription {
                member_id: "a".into(),
                group_instance_id: None,
                subscription: sub(vec![tp(0), tp(1)]),
            },
            MemberSubscription {
                member_id: "b".into(),
                group_instance_id: None,
                subscription: sub(vec![]),
            },
        ];
        let mut assignment = BTreeMap::from([
            ("a".to_string(), vec![tp(0)]),
            ("b".to_string(), vec![tp(1), tp(2)]),
        ]);
        withhold_moving_partitions(&members, &mut assignment);
        assert_eq!(assignment["a"], [tp(0)]);
        assert_eq!(assignment["b"], [tp(2)], "p1 waits for a to release it");
    }
}
