//! A worker carrying out what the application asked of its partition:
//! waiting while it is paused, moving to where it was sought.

use std::time::Duration;

use kavari_wire::fetcher::PartitionFeed;
use tokio::sync::watch;

use super::Worker;
use crate::consume::steering::{Steering, orders};
use crate::stop::until_stopped;

impl Worker {
    /// Carries out what the application asked of the partition: returns a
    /// seek's offset; while the partition is paused, waits (committing
    /// `position` every `tick`, so a failed commit is tried again) until it
    /// is resumed or sought, or stops.
    pub(super) async fn obey(
        &mut self,
        steer: &mut watch::Receiver<Steering>,
        position: i64,
        tick: Duration,
    ) -> Option<i64> {
        let mut waited = false;
        loop {
            let now = orders(&self.shared.steering, steer, &self.tp);
            if now.seek.is_some() || !now.paused {
                if waited {
                    tracing::info!(partition = %self.tp, offset = position, "resumed");
                }
                return now.seek;
            }
            if !waited {
                waited = true;
                tracing::info!(partition = %self.tp, offset = position, "paused");
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                biased;
                _ = until_stopped(&mut stop) => return None,
                changed = steer.changed() => if changed.is_err() {
                    return None;
                },
                _ = tokio::time::sleep(tick) => self.commit(position).await,
            }
        }
    }

    /// Obeys (see [`Self::obey`]) until no seek is left; each seek moves
    /// the position there and fetches the partition from it.
    pub(super) async fn steer(
        &mut self,
        steer: &mut watch::Receiver<Steering>,
        position: &mut i64,
        feed: &mut PartitionFeed,
        tick: Duration,
    ) {
        while let Some(to) = self.obey(steer, *position, tick).await {
            self.move_to(to, position, feed);
        }
    }

    /// Goes on from `to`: the records fetched before are dropped with the
    /// old feed.
    pub(super) fn move_to(&mut self, to: i64, position: &mut i64, feed: &mut PartitionFeed) {
        tracing::info!(partition = %self.tp, from = *position, to, "sought");
        *position = to;
        // The epoch of a record before `to` does not say where `to` is.
        self.epoch = None;
        *feed = self.shared.fetcher.subscribe_at(self.tp.clone(), to, None);
        self.update(|h| h.position = Some(to));
    }
}
