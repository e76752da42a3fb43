//! [`ShareMember`]: a member of a share group (KIP-932). It heartbeats
//! (ShareGroupHeartbeat) at the interval the broker sets and follows the
//! partitions the broker assigns it; those partitions are shared with the
//! group's other members, so there is nothing to revoke or commit: the
//! records are acquired and acknowledged one by one through ShareFetch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ShareGroupHeartbeatRequest;
use kavari_wire::backoff::Backoff;
use kavari_wire::cluster::Cluster;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::{GroupApi, KafkaGroupApi, check, s};
use crate::{GroupError, TopicPartition};

/// How a share member joins its group.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    /// The share group (Kafka's `group.id`).
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Kafka's `retry.backoff.ms`, doubling to `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// Kafka's `retry.backoff.max.ms`.
    pub retry_backoff_max: Duration,
    /// The member's rack (Kafka's `client.rack`), in its heartbeats.
    /// Default: none.
    pub client_rack: Option<String>,
}

impl ShareConfig {
    /// A member of `group_id` consuming `topics`, with defaults.
    pub fn new(
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
            client_rack: None,
        }
    }
}

/// What a share member knows now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareState {
    /// Its partitions, each with its topic's id (ShareFetch names topics
    /// by id).
    pub assignment: BTreeMap<TopicPartition, Uuid>,
    /// Its member epoch; 0 before it joined.
    pub epoch: i32,
    /// Why it stopped for good, if it did.
    pub failed: Option<String>,
}

/// A member of a share group: its membership runs on a task of its own.
/// Dropping the handle stops it without leaving (the broker drops it after
/// the session timeout); [`close`](Self::close) leaves.
#[derive(Debug)]
pub struct ShareMember {
    member_id: String,
    state: watch::Receiver<ShareState>,
    leave: tokio::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    task: tokio::task::AbortHandle,
}

impl ShareMember {
    /// Starts joining `config.group_id` through `cluster`'s connections.
    pub fn start_on(config: ShareConfig, cluster: Arc<Cluster>) -> Result<Self, GroupError> {
        if config.group_id.is_empty() || config.topics.is_empty() {
            return Err(GroupError::Fatal(
                "invalid share group config: a group id and topics are needed".into(),
            ));
        }
        let api = Arc::new(KafkaGroupApi::new(config.group_id.clone(), cluster));
        let member_id = Uuid::from_bytes(rand::random()).to_string();
        let (state_tx, state) = watch::channel(ShareState::default());
        let (leave_tx, leave_rx) = oneshot::channel();
        let run = Heartbeats {
            backoff: Backoff::new(config.retry_backoff, config.retry_backoff_max),
            api,
            config,
            member_id: member_id.clone(),
            state: state_tx,
            names: HashMap::new(),
        };
        let task = tokio::spawn(run.run(leave_rx)).abort_handle();
        Ok(Self {
            member_id,
            state,
            leave: tokio::sync::Mutex::new(Some(leave_tx)),
            task,
        })
    }

    /// The member id it made for itself: ShareFetch and ShareAcknowledge
    /// carry it.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// What it knows now, and every change.
    pub fn watch(&self) -> watch::Receiver<ShareState> {
        self.state.clone()
    }

    /// Leaves the group (a heartbeat at epoch -1) and stops.
    pub async fn close(&self) {
        let Some(leave) = self.leave.lock().await.take() else {
            return;
        };
        let (done, left) = oneshot::channel();
        if leave.send(done).is_ok() {
            let _ = left.await;
        }
    }
}

impl Drop for ShareMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The member's task.
struct Heartbeats {
    api: Arc<KafkaGroupApi>,
    config: ShareConfig,
    member_id: String,
    state: watch::Sender<ShareState>,
    backoff: Backoff,
    /// Topic names by id, from metadata.
    names: HashMap<Uuid, String>,
}

/// What one heartbeat brought.
struct Beat {
    epoch: i32,
    interval: Duration,
    assignment: Option<Vec<(Uuid, Vec<i32>)>>,
}

impl Heartbeats {
    fn group(&self) -> &str {
        &self.config.group_id
    }

    async fn run(mut self, mut leave: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut coordinator = false;
        let mut epoch = 0;
        let mut target: Option<Vec<(Uuid, Vec<i32>)>> = None;
        let done = loop {
            if !coordinator {
                match self.api.find_coordinator().await {
                    Ok(()) => coordinator = true,
                    Err(e) if e.is_fatal() => break self.fail(e),
                    Err(e) => {
                        tracing::warn!(group = %self.group(), error = %e, "no share group coordinator reachable; retrying with backoff");
                    }
                }
            }
            let mut wait = self.backoff.next();
            if coordinator {
                match self.beat(epoch).await {
                    Ok(beat) => {
                        self.backoff.reset();
                        epoch = beat.epoch;
                        wait = beat.interval;
                        if beat.assignment.is_some() {
                            target = beat.assignment;
                        }
                        self.state.send_modify(|s| s.epoch = epoch);
                    }
                    Err(e) => match e.response_error() {
                        Some(ResponseError::UnknownMemberId | ResponseError::FencedMemberEpoch) => {
                            tracing::warn!(group = %self.group(), error = %e, "fenced by the share coordinator; rejoining");
                            epoch = 0;
                            target = None;
                            self.state.send_modify(|s| {
                                s.assignment.clear();
                                s.epoch = 0;
                            });
                            continue;
                        }
                        _ if e.needs_new_coordinator() => coordinator = false,
                        _ if is_fatal(&e) => break self.fail(e),
                        _ => {
                            tracing::warn!(group = %self.group(), error = %e, "share group heartbeat failed");
                        }
                    },
                }
            }
            if let Some(target) = &target {
                self.follow(target).await;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(Instant::now() + wait) => {}
                done = &mut leave => break done.ok(),
            }
        };
        if epoch > 0
            && coordinator
            && let Err(e) = self.beat(-1).await
        {
            tracing::debug!(group = %self.group(), error = %e, "leaving the share group failed; the session timeout removes the member");
        }
        self.state.send_modify(|s| s.assignment.clear());
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    fn fail(&self, e: GroupError) -> Option<oneshot::Sender<()>> {
        tracing::error!(group = %self.group(), error = %e, "share group member failed");
        self.state.send_modify(|s| {
            s.assignment.clear();
            s.failed = Some(e.to_string());
        });
        None
    }

    /// Publishes `target` as the assignment, naming its topics (those
    /// metadata does not know yet wait for a later heartbeat).
    async fn follow(&mut self, target: &[(Uuid, Vec<i32>)]) {
        if target.iter().any(|(id, _)| !self.names.contains_key(id)) {
            match self.api.topic_names(&self.config.topics, false).await {
                Ok(names) => self.names.extend(names),
                Err(e) => {
                    tracing::warn!(group = %self.group(), error = %e, "looking the assigned topics up failed; trying again at the next heartbeat");
                }
            }
        }
        let assignment: BTreeMap<TopicPartition, Uuid> = target
            .iter()
            .filter_map(|(id, ps)| Some((self.names.get(id)?, id, ps)))
            .flat_map(|(name, id, ps)| {
                ps.iter()
                    .map(move |p| (TopicPartition::new(name.clone(), *p), *id))
            })
            .collect();
        self.state.send_if_modified(|s| {
            if s.assignment == assignment {
                return false;
            }
            tracing::info!(group = %self.config.group_id, partitions = assignment.len(), "share partitions assigned");
            s.assignment = assignment;
            true
        });
    }

    async fn beat(&self, epoch: i32) -> Result<Beat, GroupError> {
        let link = self.api.link().await?;
        let req = ShareGroupHeartbeatRequest::default()
            .with_group_id(self.api.group())
            .with_member_id(s(&self.member_id))
            .with_member_epoch(epoch)
            .with_rack_id(self.config.client_rack.as_deref().map(s))
            .with_subscribed_topic_names(Some(
                self.config
                    .topics
                    .iter()
                    .map(|t| kavari_wire::topic_name(t))
                    .collect(),
            ));
        let resp = self.api.on_error(link.control.send(&req).await).await?;
        self.api
            .on_error(check(
                "ShareGroupHeartbeat",
                resp.error_code,
                resp.error_message.as_ref(),
            ))
            .await?;
        Ok(Beat {
            epoch: resp.member_epoch,
            interval: crate::consumer_protocol::heartbeat_interval(resp.heartbeat_interval_ms),
            assignment: resp.assignment.map(|a| {
                a.topic_partitions
                    .into_iter()
                    .map(|t| (t.topic_id, t.partitions))
                    .collect()
            }),
        })
    }
}

/// What makes a share member stop for good.
fn is_fatal(e: &GroupError) -> bool {
    e.is_fatal()
        || matches!(
            e.response_error(),
            Some(
                ResponseError::InvalidRequest
                    | ResponseError::TopicAuthorizationFailed
                    | ResponseError::UnsupportedVersion
            )
        )
}
