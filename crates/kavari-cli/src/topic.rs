//! `kavari topic create` and `kavari topic list`.

use kavari_wire::admin::{NewTopic, create_topic};
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
    }
    Ok(())
}
