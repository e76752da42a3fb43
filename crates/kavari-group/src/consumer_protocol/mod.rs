//! A member of the consumer group protocol (KIP-848): one task heartbeats
//! (ConsumerGroupHeartbeat) at the interval the broker sets, reports the
//! partitions it owns, and reconciles them to the assignment the broker
//! computes: partitions taken away are revoked first (the runtime commits
//! them), then the new ones start. The same events as the classic
//! protocol's member reach the runtime.

mod api;
mod reconcile;

pub(crate) use api::heartbeat_interval;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

use kavari_wire::backoff::Backoff;

use crate::api::{GroupApi, KafkaGroupApi};
use crate::coordinator::Command;
use crate::member_task::MemberTask;
use crate::{
    Generation, GroupConfig, GroupError, GroupEvent, MemberPhase, MemberState, RevokeAck,
    TopicPartition,
};
use api::Beat;
use reconcile::Owned;

/// The epoch that joins the group, and those that leave it.
const JOIN: i32 = 0;
const LEAVE: i32 = -1;
const LEAVE_FOR_NOW: i32 = -2;

/// What makes the member stop for good: the group cannot take it as it is
/// configured, so trying again would not help.
fn is_fatal(e: &GroupError) -> bool {
    e.is_fatal()
        || matches!(
            e.response_error(),
            Some(
                ResponseError::UnreleasedInstanceId
                    | ResponseError::UnsupportedAssignor
                    | ResponseError::InvalidRequest
                    | ResponseError::InvalidRegularExpression
                    | ResponseError::TopicAuthorizationFailed
            )
        )
}

pub(crate) struct ConsumerMember {
    api: Arc<KafkaGroupApi>,
    config: Arc<GroupConfig>,
    events: mpsc::UnboundedSender<GroupEvent>,
    snapshot: watch::Sender<MemberState>,
    commands: mpsc::UnboundedReceiver<Command>,
    backoff: Backoff,
    /// Made by the member, kept for its whole life (v1 of the protocol).
    member_id: String,
    epoch: i32,
    owned: Owned,
    /// The broker's last assignment, by topic id, until reconciled.
    target: Option<Vec<(Uuid, Vec<i32>)>>,
    /// Topic names by id, from metadata.
    names: HashMap<Uuid, String>,
    interval: Duration,
    coordinator: bool,
    last_ok: Instant,
    joins: u64,
    phase: MemberPhase,
    /// The owned partitions changed: the broker hears of it at once.
    beat_now: bool,
    /// Who waits for the next heartbeat to be done.
    waiting: Vec<oneshot::Sender<()>>,
}

impl ConsumerMember {
    pub(crate) fn new(
        api: Arc<KafkaGroupApi>,
        config: Arc<GroupConfig>,
        events: mpsc::UnboundedSender<GroupEvent>,
        snapshot: watch::Sender<MemberState>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        let backoff = Backoff::new(config.retry_backoff, config.retry_backoff_max);
        let interval = config.heartbeat_interval;
        Self {
            api,
            config,
            events,
            snapshot,
            commands,
            backoff,
            member_id: Uuid::from_bytes(rand::random()).to_string(),
            epoch: JOIN,
            owned: Owned::new(),
            target: None,
            names: HashMap::new(),
            interval,
            coordinator: false,
            last_ok: Instant::now(),
            joins: 0,
            phase: MemberPhase::Unjoined,
            beat_now: false,
            waiting: Vec::new(),
        }
    }

    /// What commits carry: the member epoch in place of a generation.
    fn generation(&self) -> Option<Generation> {
        (self.epoch > 0).then(|| Generation {
            generation_id: self.epoch,
            member_id: self.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
        })
    }

    fn publish(&mut self, phase: MemberPhase) {
        self.phase = phase.clone();
        self.snapshot.send_replace(MemberState {
            phase,
            generation: self.generation(),
            assignment: self.owned.keys().cloned().collect(),
            joins: self.joins,
        });
    }

    /// Publishes the state again (epoch or partitions moved).
    fn republish(&mut self) {
        self.publish(self.phase.clone());
    }

    /// Runs until closed or failed.
    pub(crate) async fn run(mut self) {
        let ran = self.run_inner().await;
        self.end(ran);
    }

    async fn run_inner(&mut self) -> Result<(), GroupError> {
        self.publish(MemberPhase::Joining);
        loop {
            if !self.coordinator {
                self.publish(MemberPhase::Reconnecting);
                match self.api.find_coordinator().await {
                    Ok(()) => {
                        self.coordinator = true;
                        let phase = if self.epoch > 0 {
                            MemberPhase::Stable
                        } else {
                            MemberPhase::Joining
                        };
                        self.publish(phase);
                    }
                    Err(e) if e.is_fatal() => return Err(e),
                    Err(e) => {
                        tracing::warn!(group = %self.group(), error = %e, "no group coordinator reachable; retrying with backoff");
                        self.expire_if_silent();
                        if let Some(done) = self.pause().await {
                            return self.leave(done).await;
                        }
                        continue;
                    }
                }
            }
            let beaten = self.beat().await;
            for done in self.waiting.drain(..) {
                let _ = done.send(());
            }
            match beaten {
                Ok(()) => self.reconcile().await,
                Err(e) => {
                    if is_fatal(&e) {
                        return Err(e);
                    }
                    if self.on_error(e) {
                        if let Some(done) = self.pause().await {
                            return self.leave(done).await;
                        }
                        continue;
                    }
                }
            }
            // Heartbeat again at the interval, or at once when the owned
            // partitions changed.
            let next = if std::mem::take(&mut self.beat_now) {
                Instant::now()
            } else {
                Instant::now() + self.interval
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Leave(done)) => return self.leave(Some(done)).await,
                    None => return self.leave(None).await,
                    Some(Command::StepAside(reason)) => self.step_aside(&reason).await,
                    // The loop heartbeats next.
                    Some(Command::Heartbeat(done)) => self.waiting.push(done),
                    // A commit refused (a stale or fenced epoch): the next
                    // heartbeat tells the member where it stands.
                    Some(Command::CommitRefused { .. } | Command::Rejoin(_)) => {}
                },
            }
        }
    }

    /// One heartbeat with the member's state; takes the broker's answer.
    async fn beat(&mut self) -> Result<(), GroupError> {
        let epoch = self.epoch;
        let answer = self.send(epoch).await?;
        if let Some(id) = answer.member_id.filter(|id| !id.is_empty()) {
            self.member_id = id;
        }
        self.interval = answer.interval;
        let moved = answer.epoch != self.epoch;
        self.epoch = answer.epoch;
        if let Some(assignment) = answer.assignment {
            self.target = Some(assignment);
        }
        self.backoff.reset();
        if moved {
            tracing::debug!(group = %self.group(), member = %self.member_id, epoch = self.epoch, "member epoch");
            self.republish();
        }
        Ok(())
    }

    /// Sends a heartbeat at `epoch`; a success counts from when it was
    /// sent, as the coordinator counts from when it received it.
    async fn send(&mut self, epoch: i32) -> Result<api::BeatAnswer, GroupError> {
        let sent = Instant::now();
        let config = Arc::clone(&self.config);
        let beat = Beat {
            member_id: &self.member_id,
            epoch,
            instance_id: config.group_instance_id.as_deref(),
            rebalance_timeout: config.rebalance_timeout,
            topics: &config.topics,
            regex: config.topic_regex.as_deref(),
            assignor: config.remote_assignor.as_deref(),
            rack: config.client_rack.as_deref(),
            owned: reconcile::by_topic_id(&self.owned),
        };
        let answer = self.api.consumer_heartbeat(&beat).await;
        if answer.is_ok() {
            self.last_ok = sent;
        }
        answer
    }

    /// Reacts to a heartbeat's error; true means back off before the next.
    fn on_error(&mut self, e: GroupError) -> bool {
        match e.response_error() {
            Some(ResponseError::UnknownMemberId | ResponseError::FencedMemberEpoch) => {
                tracing::warn!(group = %self.group(), member = %self.member_id, epoch = self.epoch, error = %e, "fenced by the coordinator; rejoining");
                self.lose("the coordinator fenced this member");
                false
            }
            _ if e.needs_new_coordinator() => {
                tracing::warn!(group = %self.group(), error = %e, "finding the coordinator again");
                self.coordinator = false;
                self.expire_if_silent();
                true
            }
            _ => {
                tracing::warn!(group = %self.group(), error = %e, "heartbeat failed");
                self.expire_if_silent();
                true
            }
        }
    }

    /// Without a successful heartbeat for a session timeout, the
    /// coordinator has fenced this member: its partitions are another's.
    fn expire_if_silent(&mut self) {
        if self.last_ok.elapsed() >= self.config.session_timeout && self.epoch > 0 {
            self.lose("no heartbeat answer within the session timeout");
        }
    }

    /// Moves the owned partitions towards the broker's assignment: revokes
    /// first, then takes the new ones, and tells the broker at once.
    async fn reconcile(&mut self) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let mut plan = reconcile::plan(&self.owned, &target, &self.names);
        if !plan.unknown.is_empty() {
            let all = self.config.topic_regex.is_some();
            match self.api.topic_names(&self.config.topics, all).await {
                Ok(names) => self.names.extend(names),
                Err(e) => {
                    tracing::warn!(group = %self.group(), error = %e, "looking the assigned topics up failed; trying again at the next heartbeat");
                }
            }
            plan = reconcile::plan(&self.owned, &target, &self.names);
            if !plan.unknown.is_empty() {
                tracing::debug!(group = %self.group(), topics = ?plan.unknown, "assigned topics not in metadata yet; taken once they are");
            }
        }
        let changed = !plan.revoke.is_empty() || !plan.add.is_empty();
        if !plan.revoke.is_empty() {
            self.revoke(plan.revoke).await;
        }
        if !plan.add.is_empty() {
            let added: Vec<TopicPartition> = plan.add.iter().map(|(tp, _)| tp.clone()).collect();
            self.owned.extend(plan.add);
            self.joins += 1;
            self.publish(MemberPhase::Stable);
            tracing::info!(group = %self.group(), epoch = self.epoch, added = added.len(), owned = self.owned.len(), "partitions assigned");
            if let Some(generation) = self.generation() {
                self.emit(GroupEvent::Assigned {
                    added,
                    assignment: self.owned.keys().cloned().collect(),
                    generation,
                });
            }
        }
        if changed {
            // The broker learns what the member owns now.
            self.beat_now = true;
        } else if self.phase != MemberPhase::Stable && self.epoch > 0 {
            self.publish(MemberPhase::Stable);
        }
    }

    /// Asks the runtime to release `partitions` and waits for it (at most
    /// the rebalance timeout), heartbeating meanwhile so the session lives.
    async fn revoke(&mut self, partitions: Vec<TopicPartition>) {
        self.publish(MemberPhase::Rebalancing);
        tracing::info!(group = %self.group(), count = partitions.len(), "revoking partitions");
        let (ack, mut rx) = RevokeAck::new();
        self.emit(GroupEvent::Revoking {
            partitions: partitions.clone(),
            ack,
        });
        let deadline = Instant::now() + self.config.rebalance_timeout;
        loop {
            let beat = Instant::now() + self.interval;
            tokio::select! {
                _ = &mut rx => break,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(group = %self.group(), "revocation not acknowledged within the rebalance timeout; going on");
                    break;
                }
                _ = tokio::time::sleep_until(beat) => {
                    // Still owned until acknowledged; errors show next time.
                    let epoch = self.epoch;
                    let _ = self.send(epoch).await;
                }
            }
        }
        for tp in &partitions {
            self.owned.remove(tp);
        }
        self.republish();
    }

    /// Waits out the backoff, answering the commands that come meanwhile;
    /// `Some` when the member is asked to leave.
    async fn pause(&mut self) -> Option<Option<oneshot::Sender<()>>> {
        let deadline = Instant::now() + self.backoff.next();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Leave(done)) => return Some(Some(done)),
                    None => return Some(None),
                    Some(Command::StepAside(_)) => self.lose("stepped aside"),
                    Some(Command::Heartbeat(done)) => self.waiting.push(done),
                    Some(Command::CommitRefused { .. } | Command::Rejoin(_)) => {}
                },
            }
        }
    }

    /// Gives every partition up at once as lost, leaves the group so they
    /// move now, and joins again (a handler is stuck past
    /// `max_handler_time`).
    async fn step_aside(&mut self, reason: &str) {
        tracing::warn!(group = %self.group(), reason, "stepping aside: leaving the group and joining again");
        self.lose(reason);
        if let Err(e) = self.send(LEAVE).await {
            tracing::debug!(group = %self.group(), error = %e, "leaving failed; the session timeout moves the partitions");
        }
        self.epoch = JOIN;
    }

    /// Revokes every partition (the runtime commits), leaves (a static
    /// member for now: the broker keeps its partitions for it for the
    /// session timeout), then answers `done`.
    async fn leave(&mut self, done: Option<oneshot::Sender<()>>) -> Result<(), GroupError> {
        self.publish(MemberPhase::Leaving);
        let owned: Vec<TopicPartition> = self.owned.keys().cloned().collect();
        if !owned.is_empty() {
            self.revoke(owned).await;
        }
        if self.coordinator && self.epoch > 0 {
            let epoch = if self.config.group_instance_id.is_some() {
                LEAVE_FOR_NOW
            } else {
                LEAVE
            };
            if let Err(e) = self.send(epoch).await {
                tracing::warn!(group = %self.group(), error = %e, "leaving the group failed; the session timeout removes the member");
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
        Ok(())
    }
}

impl MemberTask for ConsumerMember {
    fn group(&self) -> &str {
        &self.config.group_id
    }

    fn events(&self) -> &mpsc::UnboundedSender<GroupEvent> {
        &self.events
    }

    /// Gives up every partition without a commit, and joins afresh.
    fn lose(&mut self, why: &str) {
        let partitions: Vec<TopicPartition> = std::mem::take(&mut self.owned).into_keys().collect();
        self.epoch = JOIN;
        self.target = None;
        self.report_lost(partitions, why);
        self.publish(MemberPhase::Joining);
    }

    fn show_phase(&mut self, phase: MemberPhase) {
        self.publish(phase);
    }
}
