//! [`GroupConfig`]: a member's settings, with Kafka's names in the docs.

use std::sync::Arc;
use std::time::Duration;

use crate::GroupError;
use crate::assignor::{Assignor, CooperativeStickyAssignor, RangeAssignor};

/// Which group protocol a member speaks (Kafka's `group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GroupProtocol {
    /// JoinGroup and SyncGroup, the group's leader assigning with the
    /// client-side [`assignors`](GroupConfig::assignors): Kafka's `classic`.
    #[default]
    Classic,
    /// KIP-848's ConsumerGroupHeartbeat: the broker assigns (with the
    /// [`remote_assignor`](GroupConfig::remote_assignor)) and moves only
    /// the partitions that change, with no group-wide barrier: Kafka's
    /// `consumer`, on Kafka 4.0 and later.
    Consumer,
}

impl std::str::FromStr for GroupProtocol {
    type Err = GroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(Self::Classic),
            "consumer" => Ok(Self::Consumer),
            _ => Err(GroupError::Fatal(format!(
                "group protocol {s:?}: expected classic or consumer"
            ))),
        }
    }
}

/// How a member joins and stays in its group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Bootstrap brokers, `host:port`.
    pub bootstrap: Vec<String>,
    /// The group (Kafka's `group.id`).
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Sent to the broker as `client.id`. Default: `kavari`.
    pub client_id: String,
    /// Static membership (Kafka's `group.instance.id`): a member restarted
    /// within the session timeout gets its partitions back with no
    /// rebalance. Default: none (a dynamic member).
    pub group_instance_id: Option<String>,
    /// Kafka's `session.timeout.ms`: the coordinator drops a member it has
    /// not heard from for this long. Default: 10 s.
    pub session_timeout: Duration,
    /// Kafka's `max.poll.interval.ms` as the rebalance timeout: how long the
    /// coordinator waits for members to rejoin, and how long a revocation
    /// may take. Default: 60 s.
    pub rebalance_timeout: Duration,
    /// Kafka's `heartbeat.interval.ms`. Default: 3 s.
    pub heartbeat_interval: Duration,
    /// Kafka's `request.timeout.ms` for every request but JoinGroup.
    /// Default: 30 s.
    pub request_timeout: Duration,
    /// Kafka's `retry.backoff.ms`: the first wait after a failure; it
    /// doubles with jitter up to `retry_backoff_max`. Default: 100 ms.
    pub retry_backoff: Duration,
    /// Kafka's `retry.backoff.max.ms`. Default: 10 s.
    pub retry_backoff_max: Duration,
    /// Give up when no coordinator could be reached for this long: the
    /// member fails with [`GroupError::Fatal`] (and reports it) instead of
    /// retrying forever. Default: none (retry forever).
    pub give_up_after: Option<Duration>,
    /// Kafka's `partition.assignment.strategy`, in preference order.
    /// Default: `range`, then `cooperative-sticky`, as the Java client.
    pub assignors: Vec<Arc<dyn Assignor>>,
    /// Kafka's `metadata.max.age.ms`: how often the group's leader looks
    /// the subscribed topics up again, and rebalances when a partition
    /// count changed (partitions added, or a subscribed topic created).
    /// Default: 5 min.
    pub metadata_max_age: Duration,
    /// The group protocol (Kafka's `group.protocol`). Default: classic.
    pub protocol: GroupProtocol,
    /// Under the consumer protocol, the broker's assignor by name
    /// (`uniform`, `range`: Kafka's `group.remote.assignor`). Default: the
    /// broker's.
    pub remote_assignor: Option<String>,
    /// Under the consumer protocol, topics are subscribed by this regular
    /// expression (the broker's RE2/J syntax) as well as by `topics`: a
    /// matching topic created later is assigned too. Default: none.
    pub topic_regex: Option<String>,
    /// The member's rack (Kafka's `client.rack`): in its subscription
    /// under the classic protocol and in its heartbeats under the consumer
    /// and share protocols, for assignors that keep a member's partitions
    /// on replicas in its rack. Default: none.
    pub client_rack: Option<String>,
}

impl GroupConfig {
    /// A dynamic member of `group_id` consuming `topics`, with defaults.
    pub fn new(
        bootstrap: impl IntoIterator<Item = impl Into<String>>,
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            client_id: "kavari".into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
            give_up_after: None,
            assignors: vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)],
            metadata_max_age: Duration::from_secs(300),
            protocol: GroupProtocol::Classic,
            remote_assignor: None,
            topic_regex: None,
            client_rack: None,
        }
    }

    /// Rejects settings that cannot work, in one place.
    pub fn validate(&self) -> Result<(), GroupError> {
        let bad = |m: &str| Err(GroupError::Fatal(format!("invalid group config: {m}")));
        if self.bootstrap.is_empty() {
            return bad("no bootstrap servers");
        }
        if self.group_id.is_empty() {
            return bad("empty group id");
        }
        if self.topics.is_empty() && self.topic_regex.is_none() {
            return bad("no topics");
        }
        if self.protocol == GroupProtocol::Classic
            && (self.remote_assignor.is_some() || self.topic_regex.is_some())
        {
            return bad("remote_assignor and topic_regex need the consumer group protocol");
        }
        if self.assignors.is_empty() {
            return bad("no assignors");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            return bad("heartbeat_interval must be above zero and below session_timeout");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be above zero");
        }
        if self.metadata_max_age.is_zero() {
            return bad("metadata_max_age must be above zero");
        }
        if self.group_instance_id.as_deref() == Some("") {
            return bad("an empty group_instance_id");
        }
        Ok(())
    }
}
