//! [`FetchSession`]: an incremental fetch session with one broker
//! (KIP-227). The first Fetch names every partition and asks the broker for
//! a session; each later one names only the partitions whose position
//! changed, and the ones to drop, and the broker answers only for
//! partitions with news (records, an error, a moved watermark). A consumer
//! of many partitions then sends and reads a few bytes a round instead of
//! every partition's, however idle.
//!
//! The broker may refuse a session (its cache is full: the answer's
//! session id is 0) and may drop one (restarted, evicted). Any doubt about
//! what the broker holds (`FETCH_SESSION_ID_NOT_FOUND`,
//! `INVALID_FETCH_SESSION_EPOCH`, a failed request) ends the session here
//! too, and the next Fetch is a full one again; the two session errors are
//! retried at once with a full Fetch, so they cost a round trip, never a
//! record.

use std::collections::HashMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::protocol::Encodable;

use super::{FetchLimits, FetchPosition, PartitionResponse, fetch_request, send_fetch};
use crate::connection::Connection;
use crate::{TopicPartition, WireError};

/// The first version with sessions.
const SESSIONS_FROM: i16 = 7;

/// A session's epoch that asks the broker for a new one (with a full
/// request).
const NEW_SESSION: i32 = 0;

/// A fetch session with one broker: what the broker holds of this
/// client's partitions, and the session's id and epoch. One per broker; a
/// fresh one starts with a full Fetch.
#[derive(Debug, Default)]
pub struct FetchSession {
    /// The broker's id for the session; 0 without one.
    id: i32,
    /// The epoch the next incremental request carries.
    epoch: i32,
    /// The partitions the broker's session holds, as last sent.
    sent: HashMap<TopicPartition, Sent>,
    /// The encoded size of the last request.
    last_request_bytes: usize,
}

/// A partition as the broker's session holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    offset: i64,
    leader_epoch: i32,
    max_bytes: i32,
}

impl Sent {
    fn of(p: &FetchPosition, limits: &FetchLimits) -> Self {
        Self {
            offset: p.offset,
            leader_epoch: p.leader_epoch,
            max_bytes: limits.partition_max_bytes,
        }
    }
}

impl FetchSession {
    /// No session yet: the first Fetch is a full one.
    pub fn new() -> Self {
        Self::default()
    }

    /// The broker's session id (0: none, the next Fetch is full).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The epoch the next incremental Fetch carries.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The encoded size of the last Fetch request sent, in bytes (its
    /// header aside).
    pub fn last_request_bytes(&self) -> usize {
        self.last_request_bytes
    }

    /// Fetches `positions` (all led by the broker behind `conn`) in this
    /// session: the partitions whose position changed are sent, those
    /// gone from `positions` are dropped from the session, and the answer
    /// holds the partitions with news. A broker before Fetch v7 gets a
    /// full request each time.
    pub async fn fetch(
        &mut self,
        conn: &Connection,
        positions: &[FetchPosition],
        limits: &FetchLimits,
    ) -> Result<Vec<PartitionResponse>, WireError> {
        let version = conn.version::<FetchRequest>()?;
        if version < SESSIONS_FROM {
            self.end();
            return super::fetch(conn, positions, limits).await;
        }
        match self.round(conn, positions, limits, version).await {
            Err(e) if is_session_error(&e) => {
                tracing::debug!(broker = %conn.address(), error = %e, "fetch session lost; fetching in full");
                self.round(conn, positions, limits, version).await
            }
            other => other,
        }
    }

    /// One Fetch: full without a session, incremental in one.
    async fn round(
        &mut self,
        conn: &Connection,
        positions: &[FetchPosition],
        limits: &FetchLimits,
        version: i16,
    ) -> Result<Vec<PartitionResponse>, WireError> {
        let incremental = self.id != 0;
        let (send, forget): (Vec<&FetchPosition>, Vec<&TopicPartition>) = if incremental {
            let send = positions
                .iter()
                .filter(|p| self.sent.get(&p.partition) != Some(&Sent::of(p, limits)))
                .collect();
            let forget = self
                .sent
                .keys()
                .filter(|tp| !positions.iter().any(|p| &p.partition == *tp))
                .collect();
            (send, forget)
        } else {
            (positions.iter().collect(), Vec::new())
        };
        let epoch = if incremental { self.epoch } else { NEW_SESSION };
        let request = fetch_request(send.iter().copied(), &forget, limits, self.id, epoch);
        self.last_request_bytes = request.compute_size(version).unwrap_or(0);
        let answer = send_fetch(conn, &request, version, limits).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                // What the broker holds is not known any more.
                self.end();
                return Err(e);
            }
        };
        if answer.session_id == 0 {
            // No session granted: the next request is full again.
            self.end();
            return Ok(answer.partitions);
        }
        if incremental {
            let gone: Vec<TopicPartition> = forget.into_iter().cloned().collect();
            for tp in gone {
                self.sent.remove(&tp);
            }
        } else {
            self.sent.clear();
        }
        for p in send {
            self.sent.insert(p.partition.clone(), Sent::of(p, limits));
        }
        self.id = answer.session_id;
        self.epoch = next_epoch(epoch);
        Ok(answer.partitions)
    }

    /// Ends the session on this side: the next Fetch is full.
    fn end(&mut self) {
        self.id = 0;
        self.epoch = NEW_SESSION;
        self.sent.clear();
    }
}

/// The epoch after `epoch`: 1 after the one that created the session,
/// and back to 1 after `i32::MAX` (0 would ask for a new session).
fn next_epoch(epoch: i32) -> i32 {
    match epoch.checked_add(1) {
        Some(next) if next > 0 => next,
        _ => 1,
    }
}

/// The broker does not know the session or its epoch.
fn is_session_error(e: &WireError) -> bool {
    matches!(
        e.response_error(),
        Some(ResponseError::FetchSessionIdNotFound | ResponseError::InvalidFetchSessionEpoch)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_start_at_one_and_never_ask_for_a_new_session() {
        assert_eq!(next_epoch(NEW_SESSION), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}
