//! A share member's counts of records: acquired, and what became of them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::acks::Ack;
use crate::health::ShareHealth;

/// Records a share member acquired, accepted, released and rejected.
#[derive(Debug, Default)]
pub(crate) struct ShareCounts {
    acquired: AtomicU64,
    accepted: AtomicU64,
    released: AtomicU64,
    rejected: AtomicU64,
}

impl ShareCounts {
    pub(crate) fn acquired(&self) {
        self.acquired.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, ack: Ack) {
        let count = match ack {
            Ack::Accept => &self.accepted,
            Ack::Release => &self.released,
            Ack::Reject => &self.rejected,
            Ack::Gap => return,
        };
        count.fetch_add(1, Ordering::Relaxed);
        crate::metrics::share_record(match ack {
            Ack::Accept => "accepted",
            Ack::Release => "released",
            _ => "rejected",
        });
    }

    /// (acquired, accepted, released, rejected) now.
    pub(crate) fn now(&self) -> (u64, u64, u64, u64) {
        (
            self.acquired.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
            self.released.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// Health's view of a member of `group` holding `partitions`, with
    /// these counts.
    pub(crate) fn health(
        &self,
        group: String,
        member_id: String,
        partitions: Vec<(String, i32)>,
    ) -> ShareHealth {
        let (acquired, accepted, released, rejected) = self.now();
        ShareHealth {
            group,
            member_id,
            partitions,
            acquired,
            accepted,
            released,
            rejected,
            in_flight: acquired.saturating_sub(accepted + released + rejected),
        }
    }
}
