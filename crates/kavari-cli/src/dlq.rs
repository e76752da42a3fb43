//! `kavari dlq list DLQ_TOPIC`: dead letters counted by original topic,
//! message type and error, with the first and last offsets of each.
//! `kavari dlq replay DLQ_TOPIC`: each dead letter published again to its
//! original topic, its progress kept in a consumer group of its own.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use kavari::codec::{CONTENT_TYPE_HEADER, EncodedMessage, MSG_TYPE_HEADER};
use kavari::dead_letter::{ORIGINAL_ERROR_HEADER, ORIGINAL_TOPIC_HEADER, REPLAYED_FROM_HEADER};
use kavari_group::admin::{ToolOffset, commit, committed};
use kavari_wire::TopicPartition;
use kavari_wire::cluster::Cluster;
use kavari_wire::fetch::Isolation;
use kavari_wire::record_batch::read::FetchedRecord;
use serde_json::json;

use crate::connect::Settings;
use crate::output::out;
use crate::records::Position;
use crate::replay_progress::{Decision, PartitionRun, Progress};
use crate::value::header;
use crate::{Failure, records};

/// Dead-letter commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Count the dead letters of a topic by original topic, message type and
    /// kind of error (the error's text with every word that holds a digit,
    /// such as an id, left out), one JSON object per group, most first,
    /// with a sample of the errors' whole text.
    List {
        /// The dead-letter topic (`<topic>.dlq`).
        topic: String,
    },
    /// Publish each dead letter again to its original topic (or `--to`),
    /// with its key, value, `msg_type` and `content-type`, and a
    /// `kavari-replayed-from: DLQ/PARTITION@OFFSET` header. Progress is kept
    /// as the consumer group `kavari-replay.<DLQ>`: no run publishes a
    /// letter twice, and a letter `--where` passed over stays replayable
    /// (by another filter, or a run without one).
    Replay {
        /// The dead-letter topic.
        topic: String,
        /// Publish to this topic instead of each one's original topic.
        #[arg(long)]
        to: Option<String>,
        /// Only dead letters whose header HEADER is VALUE (repeatable; all
        /// must match).
        #[arg(long = "where", value_parser = crate::topic::key_value)]
        filters: Vec<(String, String)>,
        /// Print what would be published (JSON lines) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Forget the replay progress, so that every dead letter can be
        /// replayed again, and replay nothing.
        #[arg(long, conflicts_with_all = ["to", "filters", "dry_run"])]
        reset: bool,
    },
}

/// One group of dead letters.
#[derive(Debug, Default)]
struct Group {
    count: u64,
    /// The first one's whole error.
    sample: String,
    /// (partition, offset) of the first and the last.
    first: Option<(i32, i64)>,
    last: Option<(i32, i64)>,
}

pub(crate) async fn run(
    settings: &Settings,
    cluster: &Cluster,
    command: Command,
) -> Result<(), Failure> {
    match command {
        Command::List { topic } => list(cluster, &topic).await,
        Command::Replay { topic, reset, .. } if reset => reset_replay(cluster, &topic).await,
        Command::Replay {
            topic,
            to,
            filters,
            dry_run,
            ..
        } => replay(settings, cluster, &topic, to.as_deref(), &filters, dry_run).await,
    }
}

/// The topic a dead letter came from: its `original_topic` header, or the
/// dead-letter topic's name without the suffix (a publisher's dead letters
/// do not carry it).
fn original_topic<'a>(record: &'a FetchedRecord, dlq: &'a str) -> &'a str {
    header(record, ORIGINAL_TOPIC_HEADER).unwrap_or_else(|| dlq.strip_suffix(".dlq").unwrap_or(dlq))
}

/// An error's kind: its text with every word that holds a digit (an id, a
/// count, an offset) as `…`, so that errors naming different records
/// group together.
fn error_kind(error: &str) -> String {
    error
        .split(' ')
        .map(|word| {
            let core = word.trim_matches(|c: char| !c.is_alphanumeric());
            if core.chars().any(|c| c.is_ascii_digit()) {
                word.replacen(core, "…", 1)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a partition has records before its end as the command began.
fn unread(positions: &[Position], ends: &BTreeMap<i32, i64>) -> bool {
    positions
        .iter()
        .any(|p| p.offset < ends.get(&p.partition).copied().unwrap_or(0))
}

async fn list(cluster: &Cluster, topic: &str) -> Result<(), Failure> {
    let mut positions =
        records::start(cluster, topic, None, true, Isolation::ReadCommitted).await?;
    let ends = records::ends(cluster, topic, &positions).await?;
    let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
    while unread(&positions, &ends) {
        for (partition, record) in records::poll(
            cluster,
            topic,
            &mut positions,
            Duration::from_millis(200),
            Isolation::ReadCommitted,
        )
        .await?
        {
            let error = header(&record, ORIGINAL_ERROR_HEADER).unwrap_or("");
            let key = (
                original_topic(&record, topic).to_string(),
                header(&record, MSG_TYPE_HEADER).unwrap_or("").to_string(),
                error_kind(error),
            );
            let g = groups.entry(key).or_default();
            if g.count == 0 {
                g.sample = error.to_string();
            }
            g.count += 1;
            g.first.get_or_insert((partition, record.offset));
            g.last = Some((partition, record.offset));
        }
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.count));
    let at = |p: Option<(i32, i64)>| {
        p.map(|(partition, offset)| json!({"partition": partition, "offset": offset}))
    };
    for ((original_topic, msg_type, kind), g) in rows {
        out!(
            "{}",
            json!({
                "original_topic": original_topic,
                "msg_type": msg_type,
                "error_kind": kind,
                "original_error": g.sample,
                "count": g.count,
                "first": at(g.first),
                "last": at(g.last),
            })
        );
    }
    Ok(())
}

/// The group keeping `dlq`'s replay progress.
fn progress_group(dlq: &str) -> String {
    format!("kavari-replay.{dlq}")
}

/// Forgets `dlq`'s replay progress: every partition back to its first
/// letter, no filter remembered.
async fn reset_replay(cluster: &Cluster, dlq: &str) -> Result<(), Failure> {
    let group = progress_group(dlq);
    let positions = records::start(cluster, dlq, None, true, Isolation::ReadCommitted).await?;
    let offsets = positions
        .iter()
        .map(|p| (TopicPartition::new(dlq, p.partition), p.offset.into()))
        .collect();
    commit(cluster, &group, &offsets).await?;
    out!("replay progress of {dlq} reset (group {group}): every dead letter can be replayed again");
    Ok(())
}

async fn replay(
    settings: &Settings,
    cluster: &Cluster,
    topic: &str,
    to: Option<&str>,
    filters: &[(String, String)],
    dry_run: bool,
) -> Result<(), Failure> {
    let group = progress_group(topic);
    let mut done = committed(cluster, &group).await?;
    let mut positions =
        records::start(cluster, topic, None, true, Isolation::ReadCommitted).await?;
    let mut runs = BTreeMap::new();
    let mut earlier = 0;
    for p in &mut positions {
        let kept = done
            .remove(&TopicPartition::new(topic, p.partition))
            .unwrap_or_default();
        let progress = Progress::from_commit(kept.offset, &kept.metadata, &group)?;
        earlier += (progress.done_below - p.offset).max(0);
        p.offset = p.offset.max(progress.done_below);
        runs.insert(p.partition, PartitionRun::new(progress, filters));
    }
    let ends = records::ends(cluster, topic, &positions).await?;
    let to_do: i64 = positions
        .iter()
        .map(|p| (ends.get(&p.partition).copied().unwrap_or(0) - p.offset).max(0))
        .sum();
    // A replay's own dead letters would go back where they came from: off.
    let publisher = if dry_run {
        None
    } else {
        Some(
            settings
                .publisher()
                .dead_letter_suffix(None)
                .build()
                .await?,
        )
    };
    let progress = !dry_run && std::io::stderr().is_terminal();
    let (mut seen, mut replayed, mut passed_over) = (0u64, 0u64, 0u64);
    while unread(&positions, &ends) {
        let round = records::poll(
            cluster,
            topic,
            &mut positions,
            Duration::from_millis(200),
            Isolation::ReadCommitted,
        )
        .await?;
        for (partition, record) in &round {
            if record.offset >= ends.get(partition).copied().unwrap_or(0) {
                continue; // written after the replay began: the next run's
            }
            let Some(run) = runs.get_mut(partition) else {
                continue;
            };
            match run.decide(record.offset, |name| header(record, name)) {
                Decision::Earlier => {
                    earlier += 1;
                    continue;
                }
                Decision::PassedOver => {
                    seen += 1;
                    passed_over += 1;
                    continue;
                }
                Decision::Replay => seen += 1,
            }
            let message = republished(record, topic, *partition, to);
            match &publisher {
                None => out!("{}", dry_run_line(&message)),
                Some(p) => {
                    p.publish_encoded(message).await.map_err(|e| {
                        Failure(format!(
                            "replaying {topic}/{partition}@{}: {e}",
                            record.offset
                        ))
                    })?;
                }
            }
            replayed += 1;
        }
        if publisher.is_some() {
            // All read so far is decided and what was wanted is published:
            // remember it, up to each partition's end as it was when the
            // replay began.
            let mut offsets = BTreeMap::new();
            for p in &positions {
                let end = ends.get(&p.partition).copied().unwrap_or(p.offset);
                if let Some(run) = runs.get(&p.partition) {
                    let after = run.progress_at(p.offset.min(end));
                    let at = ToolOffset {
                        offset: after.done_below,
                        metadata: after.metadata()?,
                    };
                    offsets.insert(TopicPartition::new(topic, p.partition), at);
                }
            }
            commit(cluster, &group, &offsets).await?;
        }
        if progress {
            eprint!("\rreplayed {replayed} of {to_do}");
        }
    }
    if progress {
        eprintln!();
    }
    if let Some(p) = publisher {
        p.shutdown().await?;
    }
    let verb = if dry_run { "would replay" } else { "replayed" };
    let summary = format!(
        "{verb} {replayed} of {seen} dead letter(s) from {topic} \
         ({passed_over} passed over by --where, still replayable; \
         {earlier} replayed by earlier runs)"
    );
    // A dry run's stdout is the JSON lines; its summary goes to stderr.
    if dry_run {
        eprintln!("{summary}");
    } else {
        out!("{summary}");
    }
    Ok(())
}

/// The dead letter as it is published again.
fn republished(
    record: &FetchedRecord,
    dlq: &str,
    partition: i32,
    to: Option<&str>,
) -> EncodedMessage {
    let mut headers = BTreeMap::new();
    for name in [MSG_TYPE_HEADER, CONTENT_TYPE_HEADER] {
        if let Some((_, Some(v))) = record.headers.iter().find(|(k, _)| *k == name.as_bytes()) {
            headers.insert(name.to_string(), v.to_vec());
        }
    }
    headers.insert(
        REPLAYED_FROM_HEADER.to_string(),
        format!("{dlq}/{partition}@{}", record.offset).into_bytes(),
    );
    EncodedMessage {
        topic: to
            .unwrap_or_else(|| original_topic(record, dlq))
            .to_string()
            .into(),
        key: record.key.as_ref().map(|k| k.to_vec()),
        value: record
            .value
            .as_ref()
            .map(|v| v.to_vec())
            .unwrap_or_default(),
        headers,
    }
}

/// What `--dry-run` prints for a message it would publish.
fn dry_run_line(m: &EncodedMessage) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = m
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
        .collect();
    let content_type = m
        .headers
        .get("content-type")
        .and_then(|c| std::str::from_utf8(c).ok());
    json!({
        "topic": m.topic,
        "key": m.key.as_deref().map(String::from_utf8_lossy),
        "headers": headers,
        "value": crate::value::decode(&m.value, content_type),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_naming_different_records_are_one_kind() {
        let a = error_kind("Billing: order o-17 declined (attempt 3): card 4242 refused");
        let b = error_kind("Billing: order o-2 declined (attempt 1): card 1881 refused");
        assert_eq!(a, b);
        assert_eq!(a, "Billing: order … declined (attempt …): card … refused");
        assert_ne!(a, error_kind("Billing: order o-2 timed out"));
    }
}
