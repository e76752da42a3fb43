//! `kavari group list`: the cluster's groups. `kavari group describe
//! GROUP`: members, assignor, and per partition the committed offset, the
//! end and the lag. `kavari group reset-offsets`: a stopped group's
//! offsets moved, shown first and written with `--execute`.

use std::collections::BTreeMap;

use kavari_group::admin::{ToolOffset, commit, describe_group, list_groups};
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
    /// The cluster's groups: id, state and protocol type, one per line.
    List,
    /// A group's state, assignor, members and lag per partition.
    Describe {
        /// The group id.
        group: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move a group's committed offsets on a topic: shows the change, and
    /// makes it with `--execute`. The group's consumers must be stopped
    /// (the coordinator takes no commit from outside while it has members).
    ResetOffsets {
        /// The group id.
        group: String,
        /// The topic whose partitions move.
        #[arg(long)]
        topic: String,
        /// Where to: each partition's first record kept.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// Where to: each partition's end (skip everything waiting).
        #[arg(long, group = "target")]
        to_latest: bool,
        /// Where to: this offset in every partition (within the log).
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        /// Where to: the first record at or after this time (RFC 3339,
        /// `2026-12-01T08:00:00Z`), or the end when there is none.
        #[arg(long, group = "target")]
        to_datetime: Option<String>,
        /// Commit the new offsets (without it, only show them).
        #[arg(long)]
        execute: bool,
    },
}

pub(crate) async fn run(cluster: &Cluster, command: Command) -> Result<(), Failure> {
    match command {
        Command::List => {
            for g in list_groups(cluster).await? {
                let kind = if g.protocol_type.is_empty() {
                    "offsets only"
                } else {
                    g.protocol_type.as_str()
                };
                out!("{}\t{}\t{kind}", g.group_id, g.state);
            }
            Ok(())
        }
        Command::Describe { group, json } => describe(cluster, &group, json).await,
        Command::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            execute,
        } => {
            let target = match (to_offset, to_datetime) {
                (Some(offset), _) => Target::Offset(offset),
                (_, Some(at)) => Target::Spec(OffsetSpec::Time(
                    chrono::DateTime::parse_from_rfc3339(&at)
                        .map_err(|e| Failure(format!("--to-datetime {at:?}: {e}")))?
                        .timestamp_millis(),
                )),
                _ if to_latest => Target::Spec(OffsetSpec::Latest),
                _ if to_earliest => Target::Spec(OffsetSpec::Earliest),
                _ => {
                    return Err(Failure(
                        "say where to: --to-earliest, --to-latest, --to-offset or --to-datetime"
                            .into(),
                    ));
                }
            };
            reset_offsets(cluster, &group, &topic, target, execute).await
        }
    }
}

/// Where `reset-offsets` moves each partition.
#[derive(Debug, Clone, Copy)]
enum Target {
    Spec(OffsetSpec),
    Offset(i64),
}

async fn reset_offsets(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    target: Target,
    execute: bool,
) -> Result<(), Failure> {
    let d = describe_group(cluster, group).await?;
    if !d.members.is_empty() {
        return Err(Failure(format!(
            "group {group} has {} member(s) ({}): stop its consumers before moving its offsets",
            d.members.len(),
            d.state
        )));
    }
    let meta = cluster
        .topic(topic)
        .await?
        .ok_or_else(|| Failure(format!("topic {topic} does not exist")))?;
    let mut moves = BTreeMap::new();
    for p in &meta.partitions {
        let tp = TopicPartition::new(topic, p.partition);
        let leader = p
            .leader
            .ok_or_else(|| Failure(format!("{tp} has no leader")))?;
        let conn = cluster.broker(leader).await?;
        let bound = |spec| list_offset(&conn, &tp, spec, Isolation::ReadUncommitted);
        let (start, end) = (
            bound(OffsetSpec::Earliest).await?,
            bound(OffsetSpec::Latest).await?,
        );
        let to = match target {
            Target::Offset(offset) => offset.clamp(start, end),
            Target::Spec(spec) => match bound(spec).await? {
                // No record that late: the end.
                -1 => end,
                offset => offset,
            },
        };
        let now = d
            .committed
            .iter()
            .find(|(c, _)| *c == tp)
            .map(|(_, c)| c.offset);
        moves.insert(tp, (now, to));
    }
    let verb = if execute { "moved" } else { "would move" };
    for (tp, (now, to)) in &moves {
        let now = now.map_or_else(|| "none".to_string(), |n| n.to_string());
        out!("{tp}\t{now} -> {to}");
    }
    if execute {
        let offsets = moves
            .iter()
            .map(|(tp, (_, to))| (tp.clone(), ToolOffset::from(*to)))
            .collect();
        commit(cluster, group, &offsets).await?;
    }
    out!(
        "{verb} {} partition(s) of {topic} for group {group}{}",
        moves.len(),
        if execute {
            ""
        } else {
            " (add --execute to do it)"
        }
    );
    Ok(())
}

async fn describe(cluster: &Cluster, group: &str, json: bool) -> Result<(), Failure> {
    let d = describe_group(cluster, group).await?;
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
                    "rack": m.rack,
                    "assignment": m.assignment.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "member_epoch": m.target.as_ref().map(|t| t.0),
                    "target_assignment": m.target.as_ref().map(|t| {
                        t.1.iter().map(ToString::to_string).collect::<Vec<_>>()
                    }),
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
                "group_protocol": match (d.epochs.is_some(), d.protocol_type.as_str()) {
                    (true, "share") => "share",
                    (true, _) => "consumer",
                    (false, _) => "classic",
                },
                "group_epoch": d.epochs.map(|e| e.0),
                "assignment_epoch": d.epochs.map(|e| e.1),
                "assignor": d.assignor,
                "members": members,
                "partitions": partitions,
            })
        );
        return Ok(());
    }
    match d.epochs {
        Some((group_epoch, assignment_epoch)) if d.protocol_type == "share" => out!(
            "share group {} ({}), epoch {group_epoch}, assignment epoch {assignment_epoch}, assignor {:?}; \
             the committed column is each share partition's start offset",
            d.group_id,
            d.state,
            d.assignor
        ),
        Some((group_epoch, assignment_epoch)) => out!(
            "group {} ({}), consumer protocol, epoch {group_epoch}, assignment epoch {assignment_epoch}, assignor {:?}",
            d.group_id,
            d.state,
            d.assignor
        ),
        None => out!(
            "group {} ({}), assignor {:?}",
            d.group_id,
            d.state,
            d.assignor
        ),
    }
    out!("{} member(s)", d.members.len());
    let list = |tps: &[TopicPartition]| {
        tps.iter()
            .map(TopicPartition::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for m in &d.members {
        let target = match &m.target {
            Some((epoch, target)) => format!(" epoch {epoch} target [{}]", list(target)),
            None => String::new(),
        };
        let rack = match &m.rack {
            Some(rack) => format!(" rack {rack}"),
            None => String::new(),
        };
        out!(
            "  {} {} {}{rack} [{}]{target}",
            m.member_id,
            m.client_id,
            m.client_host,
            list(&m.assignment)
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
