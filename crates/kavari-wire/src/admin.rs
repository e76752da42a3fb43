//! Administration requests: creating topics (for dead-letter topics and
//! tools), adding partitions to one, electing partition leaders, deleting
//! topics and reading their configs (for tools and the test kit), sent to
//! the cluster's controller as Kafka's admin client does.

use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::protocol::StrBytes;

use crate::WireError;
use crate::cluster::Cluster;
use crate::topic_name;

/// A connection to the controller, and the request timeout in
/// milliseconds, which admin requests hand the broker to wait within.
async fn controller(
    cluster: &Cluster,
) -> Result<(std::sync::Arc<crate::connection::Connection>, i32), WireError> {
    let conn = cluster.controller().await?;
    let timeout_ms = i32::try_from(cluster.request_timeout().as_millis()).unwrap_or(i32::MAX);
    Ok((conn, timeout_ms))
}

/// A topic to create.
#[derive(Debug, Clone, Copy)]
pub struct NewTopic<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its partition count.
    pub partitions: i32,
    /// Copies of each partition; -1 takes the broker's
    /// `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic configs (`cleanup.policy`, `retention.ms`, …).
    pub configs: &'a [(&'a str, &'a str)],
}

/// Creates `topic`: `Ok(true)` when created, `Ok(false)` when it existed
/// already. A refusal (an invalid name, a partition count or replication
/// factor the cluster cannot take, no authorization) is an error with the
/// broker's code and message.
pub async fn create_topic(cluster: &Cluster, topic: &NewTopic<'_>) -> Result<bool, WireError> {
    let (conn, timeout_ms) = controller(cluster).await?;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name(topic.name))
                .with_num_partitions(topic.partitions)
                .with_replication_factor(topic.replication_factor)
                .with_configs(
                    topic
                        .configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string((*k).to_string()))
                                .with_value(Some(StrBytes::from_string((*v).to_string())))
                        })
                        .collect(),
                ),
        ]);
    let resp = conn.send(&req).await?;
    let result = resp
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == topic.name)
        .ok_or_else(|| WireError::Malformed {
            what: "CreateTopics response",
            detail: format!("no answer for topic {}", topic.name),
        })?;
    match result.error_code.err() {
        None => Ok(true),
        Some(ResponseError::TopicAlreadyExists) => Ok(false),
        Some(e) => Err(WireError::broker(
            "CreateTopics",
            e,
            Some(match &result.error_message {
                Some(m) => format!("topic {}: {}", topic.name, m.as_str()),
                None => format!("topic {}", topic.name),
            }),
        )),
    }
}

/// Grows `topic` to `total` partitions (CreatePartitions). Kafka never
/// takes partitions away: a `total` at or below the current count is the
/// broker's error (INVALID_PARTITIONS), with its message.
pub async fn create_partitions(
    cluster: &Cluster,
    topic: &str,
    total: i32,
) -> Result<(), WireError> {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
    let (conn, timeout_ms) = controller(cluster).await?;
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total)
                // The broker places the new partitions (an empty list would
                // ask for none).
                .with_assignments(None),
        ]);
    let resp: CreatePartitionsResponse = conn.send(&req).await?;
    let result = resp
        .results
        .iter()
        .find(|r| r.name.0.as_str() == topic)
        .ok_or_else(|| WireError::Malformed {
            what: "CreatePartitions response",
            detail: format!("no answer for topic {topic}"),
        })?;
    match result.error_code.err() {
        None => Ok(()),
        Some(e) => Err(WireError::broker(
            "CreatePartitions",
            e,
            Some(format!(
                "topic {topic} to {total} partitions: {}",
                result.error_message.as_ref().map_or("", |m| m.as_str())
            )),
        )),
    }
}

/// Which replica an [`elect_leaders`] request makes leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Election {
    /// The preferred replica (the first of the partition's replica list),
    /// if it is in sync: how a leader moves back after a node returns.
    Preferred,
    /// Any live replica, in sync or not: may lose records the old leader
    /// had acknowledged (an unclean election, which truncates logs).
    Unclean,
}

/// Asks the cluster to elect leaders for `partitions` of `topic`
/// (ElectLeaders, KIP-460). A partition whose leader is already the one
/// the election would choose counts as done. A partition the cluster
/// refuses is an error with its code and message.
pub async fn elect_leaders(
    cluster: &Cluster,
    election: Election,
    topic: &str,
    partitions: &[i32],
) -> Result<(), WireError> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
    let (conn, timeout_ms) = controller(cluster).await?;
    let req = ElectLeadersRequest::default()
        .with_election_type(match election {
            Election::Preferred => 0,
            Election::Unclean => 1,
        })
        .with_timeout_ms(timeout_ms)
        .with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions.to_vec()),
        ]));
    let resp: ElectLeadersResponse = conn.send(&req).await?;
    if let Some(e) = resp.error_code.err() {
        return Err(WireError::broker("ElectLeaders", e, None));
    }
    for result in &resp.replica_election_results {
        for p in &result.partition_result {
            match p.error_code.err() {
                None | Some(ResponseError::ElectionNotNeeded) => {}
                Some(e) => {
                    return Err(WireError::broker(
                        "ElectLeaders",
                        e,
                        Some(format!(
                            "{}/{}: {}",
                            result.topic.0.as_str(),
                            p.partition_id,
                            p.error_message.as_ref().map_or("", |m| m.as_str())
                        )),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Deletes `topic`: `Ok(true)` when deleted, `Ok(false)` when there was no
/// such topic. A refusal (no authorization, deletion disabled) is an error
/// with the broker's code and message.
pub async fn delete_topic(cluster: &Cluster, topic: &str) -> Result<bool, WireError> {
    use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
    let (conn, timeout_ms) = controller(cluster).await?;
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topic_names(vec![topic_name(topic)]);
    let resp: DeleteTopicsResponse = conn.send(&req).await?;
    let result = resp
        .responses
        .iter()
        .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| WireError::Malformed {
            what: "DeleteTopics response",
            detail: format!("no answer for topic {topic}"),
        })?;
    match result.error_code.err() {
        None => Ok(true),
        Some(ResponseError::UnknownTopicOrPartition) => Ok(false),
        Some(e) => Err(WireError::broker(
            "DeleteTopics",
            e,
            Some(format!(
                "topic {topic}: {}",
                result.error_message.as_ref().map_or("", |m| m.as_str())
            )),
        )),
    }
}

/// One config of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Its name (`retention.ms`, …).
    pub name: String,
    /// Its value; `None` when the broker hides it (a sensitive one).
    pub value: Option<String>,
    /// Set on the topic itself, rather than the broker's or Kafka's default.
    pub set_on_topic: bool,
}

/// Every config of `topic`, by name, as the cluster reads it (DescribeConfigs).
pub async fn topic_configs(cluster: &Cluster, topic: &str) -> Result<Vec<TopicConfig>, WireError> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    /// DescribeConfigs' resource type of a topic, and the config source of
    /// a value set on the topic itself.
    const TOPIC: i8 = 2;
    const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    let conn = cluster.any_broker().await?;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None),
    ]);
    let resp: DescribeConfigsResponse = conn.send(&req).await?;
    let result = resp
        .results
        .iter()
        .find(|r| r.resource_name.as_str() == topic)
        .ok_or_else(|| WireError::Malformed {
            what: "DescribeConfigs response",
            detail: format!("no answer for topic {topic}"),
        })?;
    if let Some(e) = result.error_code.err() {
        return Err(WireError::broker(
            "DescribeConfigs",
            e,
            Some(format!(
                "topic {topic}: {}",
                result.error_message.as_ref().map_or("", |m| m.as_str())
            )),
        ));
    }
    let mut configs: Vec<TopicConfig> = result
        .configs
        .iter()
        .map(|c| TopicConfig {
            name: c.name.to_string(),
            value: c.value.as_ref().map(ToString::to_string),
            set_on_topic: c.config_source == DYNAMIC_TOPIC_CONFIG,
        })
        .collect();
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(configs)
}

/// Sets `name` to `value` in the configs of consumer or share group
/// `group` (IncrementalAlterConfigs on the group resource, Kafka 4.0 on):
/// e.g. `share.auto.offset.reset` = `earliest`, for a share group to start
/// at the partitions' beginnings.
pub async fn set_group_config(
    cluster: &Cluster,
    group: &str,
    name: &str,
    value: &str,
) -> Result<(), WireError> {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    /// The resource type of a group, and the operation that sets a value.
    const GROUP: i8 = 32;
    const SET: i8 = 0;
    let conn = cluster.any_broker().await?;
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(GROUP)
            .with_resource_name(StrBytes::from_string(group.to_string()))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(name.to_string()))
                    .with_config_operation(SET)
                    .with_value(Some(StrBytes::from_string(value.to_string()))),
            ]),
    ]);
    let resp = conn.send(&req).await?;
    for r in &resp.responses {
        if let Some(e) = r.error_code.err() {
            return Err(WireError::broker(
                "IncrementalAlterConfigs",
                e,
                Some(format!(
                    "group {group}, {name}={value}: {}",
                    r.error_message.as_ref().map_or("", |m| m.as_str())
                )),
            ));
        }
    }
    Ok(())
}
