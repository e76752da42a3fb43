//! The consumer group protocol's request (ConsumerGroupHeartbeat) and the
//! topic ids its assignments name, over the group's coordinator link.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use uuid::Uuid;

use crate::GroupError;
use crate::api::{KafkaGroupApi, check, s};

/// What a member says in a heartbeat. Everything is sent every time (the
/// protocol allows leaving unchanged fields out; sending them is valid).
#[derive(Debug, Clone)]
pub(crate) struct Beat<'a> {
    pub(crate) member_id: &'a str,
    /// 0 to join, -1 to leave, -2 for a static member leaving for now.
    pub(crate) epoch: i32,
    pub(crate) instance_id: Option<&'a str>,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) topics: &'a [String],
    pub(crate) regex: Option<&'a str>,
    pub(crate) assignor: Option<&'a str>,
    /// The member's rack (`client.rack`).
    pub(crate) rack: Option<&'a str>,
    /// The partitions the member owns now, by topic id.
    pub(crate) owned: Vec<(Uuid, Vec<i32>)>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BeatAnswer {
    pub(crate) member_id: Option<String>,
    pub(crate) epoch: i32,
    pub(crate) interval: Duration,
    /// The member's whole assignment, when it changed.
    pub(crate) assignment: Option<Vec<(Uuid, Vec<i32>)>>,
}

/// The heartbeat interval a coordinator of the consumer or share protocol
/// set; a broker that says nothing sensible gets the Java default (5 s).
pub(crate) fn heartbeat_interval(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).ok().filter(|ms| *ms > 0).unwrap_or(5_000))
}

impl KafkaGroupApi {
    /// Sends one ConsumerGroupHeartbeat; a refusal is an error with the
    /// broker's message.
    pub(crate) async fn consumer_heartbeat(&self, b: &Beat<'_>) -> Result<BeatAnswer, GroupError> {
        let link = self.link().await?;
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(self.group())
            .with_member_id(s(b.member_id))
            .with_member_epoch(b.epoch)
            .with_instance_id(b.instance_id.map(s))
            .with_rebalance_timeout_ms(
                i32::try_from(b.rebalance_timeout.as_millis()).unwrap_or(i32::MAX),
            )
            .with_subscribed_topic_names(Some(
                b.topics
                    .iter()
                    .map(|t| kavari_wire::topic_name(t))
                    .collect(),
            ))
            .with_subscribed_topic_regex(b.regex.map(s))
            .with_server_assignor(b.assignor.map(s))
            .with_rack_id(b.rack.map(s))
            .with_topic_partitions(Some(
                b.owned
                    .iter()
                    .map(|(id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(*id)
                            .with_partitions(ps.clone())
                    })
                    .collect(),
            ));
        let resp = self.on_error(link.control.send(&req).await).await?;
        self.on_error(check(
            "ConsumerGroupHeartbeat",
            resp.error_code,
            resp.error_message.as_ref(),
        ))
        .await?;
        Ok(BeatAnswer {
            member_id: resp.member_id.map(|m| m.as_str().to_string()),
            epoch: resp.member_epoch,
            interval: heartbeat_interval(resp.heartbeat_interval_ms),
            assignment: resp.assignment.map(|a| {
                a.topic_partitions
                    .into_iter()
                    .map(|t| (t.topic_id, t.partitions))
                    .collect()
            }),
        })
    }

    /// Topic names by id: of `topics`, or of every topic the cluster has
    /// when `all` (a regex subscription may name any).
    pub(crate) async fn topic_names(
        &self,
        topics: &[String],
        all: bool,
    ) -> Result<HashMap<Uuid, String>, GroupError> {
        let metadata = if all {
            self.cluster.all_topics().await?
        } else {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            self.cluster.topics(&names).await?
        };
        Ok(metadata
            .into_iter()
            .filter_map(|t| Some((t.id?, t.name)))
            .collect())
    }
}
