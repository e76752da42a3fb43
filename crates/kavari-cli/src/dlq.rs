//! `kavari dlq list DLQ_TOPIC`: dead letters counted by original topic,
//! message type and error, with the first and last offsets of each.

use std::collections::BTreeMap;
use std::time::Duration;

use kavari_wire::cluster::Cluster;
use serde_json::json;

use crate::value::header;
use crate::{Failure, records};

/// Dead-letter commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Count the dead letters of a topic by original topic, message type and
    /// error (one JSON object per group, most first).
    List {
        /// The dead-letter topic (`<topic>.dlq`).
        topic: String,
    },
}

/// One group of dead letters.
#[derive(Debug, Default)]
struct Group {
    count: u64,
    /// (partition, offset) of the first and the last.
    first: Option<(i32, i64)>,
    last: Option<(i32, i64)>,
}

pub(crate) async fn run(cluster: &Cluster, command: Command) -> Result<(), Failure> {
    let Command::List { topic } = command;
    let mut positions = records::start(cluster, &topic, None, true).await?;
    let ends = records::ends(cluster, &topic, &positions).await?;
    let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
    // The topic a dead letter came from: its header, or the name without
    // the suffix for dead letters written by a publisher.
    let fallback = topic.strip_suffix(".dlq").unwrap_or(&topic).to_string();
    while positions
        .iter()
        .any(|p| p.offset < ends.get(&p.partition).copied().unwrap_or(0))
    {
        for (partition, record) in
            records::poll(cluster, &topic, &mut positions, Duration::from_millis(200)).await?
        {
            let key = (
                header(&record, "original_topic")
                    .unwrap_or(&fallback)
                    .to_string(),
                header(&record, "msg_type").unwrap_or("").to_string(),
                header(&record, "original_error").unwrap_or("").to_string(),
            );
            let g = groups.entry(key).or_default();
            g.count += 1;
            g.first.get_or_insert((partition, record.offset));
            g.last = Some((partition, record.offset));
        }
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.count));
    for ((original_topic, msg_type, error), g) in rows {
        let at = |p: Option<(i32, i64)>| {
            p.map(|(partition, offset)| json!({"partition": partition, "offset": offset}))
        };
        println!(
            "{}",
            json!({
                "original_topic": original_topic,
                "msg_type": msg_type,
                "original_error": error,
                "count": g.count,
                "first": at(g.first),
                "last": at(g.last),
            })
        );
    }
    Ok(())
}
