//! `kavari topic create`, `list`, `describe` and `delete`.

use kavari_wire::admin::{NewTopic, create_topic, delete_topic, topic_configs};
use kavari_wire::cluster::Cluster;

use crate::Failure;
use crate::output::out;

/// Topic commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create a topic (an existing one is left as it is, and said so).
    Create {
        /// The topic's name.
        name: String,
        /// How many partitions.
        #[arg(long)]
        partitions: i32,
        /// Replicas of each partition (default: the broker's).
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// A topic setting, `key=value` (repeatable).
        #[arg(long = "config", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// List the topics with their partition counts, one per line.
    List,
    /// A topic's partitions (leader, replicas, in-sync replicas) and the
    /// configs set on it (`--all-configs`: every config, defaults too).
    Describe {
        /// The topic's name.
        name: String,
        /// Show every config, not only those set on the topic.
        #[arg(long)]
        all_configs: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic and every record in it (a missing one is said so).
    Delete {
        /// The topic's name.
        name: String,
    },
}

pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

pub(crate) async fn run(cluster: &Cluster, command: Command) -> Result<(), Failure> {
    match command {
        Command::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs: Vec<(&str, &str)> = configs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let created = create_topic(
                cluster,
                &NewTopic {
                    name: &name,
                    partitions,
                    replication_factor,
                    configs: &configs,
                },
            )
            .await?;
            if created {
                out!("created {name} with {partitions} partitions");
            } else {
                out!("{name} exists already");
            }
        }
        Command::List => {
            let mut topics = cluster.all_topics().await?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                out!("{}\t{}", t.name, t.partitions.len());
            }
        }
        Command::Describe {
            name,
            all_configs,
            json,
        } => describe(cluster, &name, all_configs, json).await?,
        Command::Delete { name } => {
            if delete_topic(cluster, &name).await? {
                out!("deleted {name}");
            } else {
                return Err(Failure(format!("topic {name} does not exist")));
            }
        }
    }
    Ok(())
}

async fn describe(
    cluster: &Cluster,
    name: &str,
    all_configs: bool,
    json: bool,
) -> Result<(), Failure> {
    let meta = cluster
        .topic(name)
        .await?
        .ok_or_else(|| Failure(format!("topic {name} does not exist")))?;
    let configs: Vec<_> = topic_configs(cluster, name)
        .await?
        .into_iter()
        .filter(|c| all_configs || c.set_on_topic)
        .collect();
    if json {
        let partitions: Vec<_> = meta
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "partition": p.partition,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "in_sync": p.in_sync,
                })
            })
            .collect();
        let configs: serde_json::Map<String, serde_json::Value> = configs
            .iter()
            .map(|c| (c.name.clone(), c.value.clone().into()))
            .collect();
        out!(
            "{}",
            serde_json::json!({"topic": name, "partitions": partitions, "configs": configs})
        );
        return Ok(());
    }
    out!("topic {name}: {} partition(s)", meta.partitions.len());
    out!(
        "{:>9}  {:>6}  {:<16}  in sync",
        "partition",
        "leader",
        "replicas"
    );
    let ids = |ids: &[i32]| {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    for p in &meta.partitions {
        let leader = p.leader.map_or_else(|| "none".into(), |l| l.to_string());
        out!(
            "{:>9}  {leader:>6}  {:<16}  {}",
            p.partition,
            ids(&p.replicas),
            ids(&p.in_sync)
        );
    }
    for c in &configs {
        out!("{}={}", c.name, c.value.as_deref().unwrap_or("(hidden)"));
    }
    Ok(())
}
