//! A scripted coordinator for the state machine's tests: answers queued
//! per request, every call recorded, and a harness that runs a member on it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::CommitOffset;
use crate::api::JoinResult;
use crate::assignor::{CooperativeStickyAssignor, RangeAssignor};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Call {
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
pub(super) struct Script {
    pub(super) find: VecDeque<Result<(), GroupError>>,
    pub(super) join: VecDeque<Result<JoinResult, GroupError>>,
    pub(super) sync: VecDeque<Result<Bytes, GroupError>>,
    pub(super) heartbeat: VecDeque<Result<(), GroupError>>,
    /// Heartbeats get no answer at all (a coordinator that went silent).
    pub(super) silent: bool,
    pub(super) counts: BTreeMap<String, i32>,
    pub(super) calls: Vec<Call>,
}

#[derive(Default)]
pub(super) struct ScriptedApi(Mutex<Script>);

impl ScriptedApi {
    pub(super) fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap()
    }
    pub(super) fn calls(&self) -> Vec<Call> {
        self.script().calls.clone()
    }
    pub(super) fn joins(&self) -> Vec<Call> {
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
    async fn partition_counts(&self, _: &[String]) -> Result<BTreeMap<String, i32>, GroupError> {
        Ok(self.script().counts.clone())
    }
    async fn offset_commit(
        &self,
        _: &Generation,
        _: &BTreeMap<TopicPartition, CommitOffset>,
    ) -> Result<(), GroupError> {
        Ok(())
    }
    async fn offset_fetch(
        &self,
        _: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<CommitOffset>>, GroupError> {
        Ok(BTreeMap::new())
    }
}

pub(super) fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

pub(super) fn err(e: ResponseError) -> GroupError {
    GroupError::broker("test", e, None)
}

pub(super) fn joined(
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

pub(super) fn join_error(e: ResponseError, member: &str) -> Result<JoinResult, GroupError> {
    Ok(JoinResult {
        error: Some(e),
        member_id: member.into(),
        ..Default::default()
    })
}

pub(super) fn assignment(ps: &[i32]) -> Result<Bytes, GroupError> {
    Ok(Assignment {
        partitions: ps.iter().map(|p| tp(*p)).collect(),
        user_data: None,
    }
    .encode())
}

pub(super) struct Harness {
    pub(super) api: Arc<ScriptedApi>,
    pub(super) events: mpsc::UnboundedReceiver<GroupEvent>,
    pub(super) state: watch::Receiver<MemberState>,
    pub(super) commands: mpsc::UnboundedSender<Command>,
}

pub(super) fn start(api: ScriptedApi, tweak: impl FnOnce(&mut GroupConfig)) -> Harness {
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
    pub(super) async fn event(&mut self) -> GroupEvent {
        tokio::time::timeout(Duration::from_secs(600), self.events.recv())
            .await
            .expect("an event in time")
            .expect("the member is alive")
    }
    pub(super) async fn assigned(&mut self) -> (Vec<TopicPartition>, Vec<TopicPartition>, i32) {
        match self.event().await {
            GroupEvent::Assigned {
                added,
                assignment,
                generation,
            } => (added, assignment, generation.generation_id),
            other => panic!("expected Assigned, got {other:?}"),
        }
    }
    pub(super) async fn wait_phase(&mut self, phase: MemberPhase) -> MemberState {
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
