//! [`Health`]: what a readiness probe and an operator need to see. It
//! serializes (serde) so a service can return it as JSON:
//!
//! ```json
//! {"state":"running","ready":true,"generation":3,"partitions":[{"topic":"orders",
//!  "partition":0,"committed":42,"position":42,"high_watermark":42,"lag":0,
//!  "last_progress":"2026-11-28T10:00:00.000Z","dead_lettered":0,"skipped":0,"error":null}]}
//! ```
//!
//! A failed state is `{"failed":"the reason"}`.

use std::time::SystemTime;

use serde::Serialize;

/// The manager's overall state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthState {
    /// `start()` has not been called (publishing works without it).
    NotStarted,
    /// Started; the group member has not contacted Kafka yet.
    Starting,
    /// Looking for the group coordinator (Kafka may be unreachable).
    Connecting,
    /// Joining the group for the first time.
    Joining,
    /// Joined and fetching: ready.
    Running,
    /// A rebalance is under way.
    Rebalancing,
    /// Lost the coordinator after having joined; reconnecting.
    Reconnecting,
    /// Shutting down.
    Stopping,
    /// Shut down.
    Stopped,
    /// Stopped for good (a fatal group error, or `give_up_after` ran out);
    /// the reason says why. The one state a liveness probe should fail on.
    Failed(String),
}

/// One assigned partition's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionHealth {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The last committed offset (next to read), if any.
    pub committed: Option<i64>,
    /// The next offset to handle.
    pub position: Option<i64>,
    /// The high watermark of the partition's latest fetch answer (fetching
    /// runs ahead of handling, so it is as fresh as the last Fetch round,
    /// and never older than `position`); `None` before the first answer.
    pub high_watermark: Option<i64>,
    /// `high_watermark - position`: records written and not yet handled.
    /// The metric `kavari_consumer_lag` shows the same value.
    pub lag: Option<i64>,
    /// When a message of this partition was last handled (RFC 3339 in
    /// UTC, milliseconds, when serialized).
    #[serde(serialize_with = "rfc3339")]
    pub last_progress: Option<SystemTime>,
    /// Records of the partition written to the dead-letter topic instead
    /// of handled (poison, or a handler that failed for good) since this
    /// member got the partition.
    pub dead_lettered: u64,
    /// Records of the partition left unhandled by a `Skip` policy since
    /// this member got the partition (each also logged, and counted in
    /// `kavari_skipped_total`).
    pub skipped: u64,
    /// The application paused the partition ([`Kavari::pause`](crate::Kavari::pause)):
    /// no record of it is handed to handlers until it is resumed.
    pub paused: bool,
    /// Records of the partition being handled now: under a concurrent
    /// [`ProcessingOrder`](crate::ProcessingOrder), those taken and not
    /// finished (running, or waiting for an earlier record of their key);
    /// one at a time, 1 while a record has taken longer than a commit
    /// interval. Followed with the position, every 200 ms or so.
    pub in_flight: usize,
    /// When the oldest of them was taken (RFC 3339 in UTC, milliseconds,
    /// when serialized): how long the partition has waited on a record.
    #[serde(serialize_with = "rfc3339")]
    pub in_flight_since: Option<SystemTime>,
    /// Why the partition cannot move on, if it cannot: `blocked at offset
    /// N: …` while it waits at a record (a dead letter that cannot be
    /// written, a `Block` policy), or the fault that stopped fetching it (a
    /// batch that does not read, a refusal), with when it is fetched again
    /// (1 s, doubling to a minute while the fault stays).
    pub error: Option<String>,
}

/// A snapshot for readiness probes and dashboards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The overall state.
    pub state: HealthState,
    /// Ready: joined and fetching with no blocked partition (or not
    /// consuming at all). What a readiness probe should report; a liveness
    /// probe should fail only on [`HealthState::Failed`] (see the README's
    /// "Health and Kubernetes probes").
    pub ready: bool,
    /// The group generation, when in one.
    pub generation: Option<i32>,
    /// Every assigned partition (of a consumer group).
    pub partitions: Vec<PartitionHealth>,
    /// The share group member, when the manager's subscriptions are a
    /// share group's (`share_group`).
    pub share: Option<ShareHealth>,
}

/// A share group member (KIP-932): its partitions, shared with the
/// group's other members, and what became of the records it acquired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareHealth {
    /// The share group.
    pub group: String,
    /// The member id it made for itself.
    pub member_id: String,
    /// Its partitions now: (topic, partition).
    pub partitions: Vec<(String, i32)>,
    /// Records acquired (each delivery counts).
    pub acquired: u64,
    /// Accepted: handled.
    pub accepted: u64,
    /// Released for another delivery (a retriable error).
    pub released: u64,
    /// Rejected: poison, or a final failure (dead-lettered first by the
    /// failure policy).
    pub rejected: u64,
    /// Acquired and not finished yet.
    pub in_flight: u64,
}

impl Health {
    /// A manager whose consumer has not started (or has nothing to
    /// consume): ready, with no partitions.
    pub(crate) fn not_started() -> Self {
        Health {
            state: HealthState::NotStarted,
            ready: true,
            generation: None,
            partitions: Vec::new(),
            share: None,
        }
    }
}

fn rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(
            &chrono::DateTime::<chrono::Utc>::from(*t)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a service's health endpoint returns.
    #[test]
    fn health_serializes_as_plain_json() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        let health = Health {
            state: HealthState::Running,
            ready: true,
            generation: Some(3),
            partitions: vec![PartitionHealth {
                topic: "orders".into(),
                partition: 0,
                committed: Some(42),
                position: Some(43),
                high_watermark: Some(50),
                lag: Some(7),
                last_progress: Some(at),
                dead_lettered: 2,
                skipped: 0,
                paused: true,
                in_flight: 3,
                in_flight_since: Some(at),
                error: None,
            }],
            share: None,
        };
        let json = serde_json::to_value(&health).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "state": "running",
                "ready": true,
                "generation": 3,
                "partitions": [{
                    "topic": "orders", "partition": 0, "committed": 42, "position": 43,
                    "high_watermark": 50, "lag": 7,
                    "last_progress": "2026-11-18T11:06:40.123Z",
                    "dead_lettered": 2, "skipped": 0, "paused": true,
                    "in_flight": 3, "in_flight_since": "2026-11-18T11:06:40.123Z",
                    "error": null
                }],
                "share": null
            })
        );
        let failed = serde_json::to_value(HealthState::Failed("gone".into())).expect("serializes");
        assert_eq!(failed, serde_json::json!({"failed": "gone"}));
    }
}
