//! `kavari group describe GROUP`: members, assignor, and per partition the
//! committed offset, the end and the lag.

use std::collections::BTreeMap;

use kavari_group::admin::describe_group;
use kavari_wire::TopicPartition;
use kavari_wire::cluster::Cluster;
use kavari_wire::fetch::Isolation;
use kavari_wire::list_offsets::{OffsetSpec, list_offset};
use serde_json::json;

use crate::Failure;
use crate::output::out;

/// Group commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// A group's state, assignor, members and lag per partition.
    Describe {
        /// The group id.
        group: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cluster: &Cluster, command: Command) -> Result<(), Failure> {
    let Command::Describe { group, json } = command;
    let d = describe_group(cluster, &group).await?;
    // Each committed partition's end (its high watermark) and lag.
    let mut rows = Vec::new();
    let mut leaders: BTreeMap<String, BTreeMap<i32, Option<i32>>> = BTreeMap::new();
    for (tp, committed) in &d.committed {
        if !leaders.contains_key(&tp.topic) {
            let meta = cluster.topic(&tp.topic).await?;
            let by_partition = meta
                .map(|m| {
                    m.partitions
                        .iter()
                        .map(|p| (p.partition, p.leader))
                        .collect()
                })
                .unwrap_or_default();
            leaders.insert(tp.topic.clone(), by_partition);
        }
        let leader = leaders
            .get(&tp.topic)
            .and_then(|l| l.get(&tp.partition).copied().flatten());
        let end = match leader {
            Some(id) => {
                let conn = cluster.broker(id).await?;
                Some(list_offset(&conn, tp, OffsetSpec::Latest, Isolation::ReadCommitted).await?)
            }
            None => None,
        };
        let owner = d
            .members
            .iter()
            .find(|m| m.assignment.contains(tp))
            .map(|m| m.member_id.clone());
        rows.push((tp.clone(), committed.offset, end, owner));
    }
    if json {
        let members: Vec<_> = d
            .members
            .iter()
            .map(|m| {
                json!({
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "assignment": m.assignment.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        let partitions: Vec<_> = rows
            .iter()
            .map(|(tp, committed, end, owner)| {
                json!({
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "committed": committed,
                    "end": end,
                    "lag": end.map(|e| (e - committed).max(0)),
                    "member": owner,
                })
            })
            .collect();
        out!(
            "{}",
            json!({
                "group": d.group_id,
                "state": d.state,
                "protocol_type": d.protocol_type,
                "assignor": d.assignor,
                "members": members,
                "partitions": partitions,
            })
        );
        return Ok(());
    }
    out!(
        "group {} ({}), assignor {:?}",
        d.group_id,
        d.state,
        d.assignor
    );
    out!("{} member(s)", d.members.len());
    for m in &d.members {
        let assigned: Vec<String> = m.assignment.iter().map(TopicPartition::to_string).collect();
        out!(
            "  {} {} {} [{}]",
            m.member_id,
            m.client_id,
            m.client_host,
            assigned.join(", ")
        );
    }
    out!(
        "{:<40} {:>10} {:>10} {:>8}  member",
        "partition",
        "committed",
        "end",
        "lag"
    );
    for (tp, committed, end, owner) in rows {
        let end_text = end.map_or_else(|| "?".to_string(), |e| e.to_string());
        let lag = end.map_or_else(|| "?".to_string(), |e| (e - committed).max(0).to_string());
        out!(
            "{:<40} {committed:>10} {end_text:>10} {lag:>8}  {}",
            tp.to_string(),
            owner.unwrap_or_default()
        );
    }
    Ok(())
}
