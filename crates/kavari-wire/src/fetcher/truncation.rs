//! Finding a log truncated under a position (KIP-320): after a
//! partition's leader changes, and before the first Fetch of a position
//! whose record's epoch is known (a committed offset's), the new leader is
//! asked where that epoch ends in its log (OffsetForLeaderEpoch). Before
//! the position means an unclean election truncated the log: fetching goes
//! on where the new log diverges, by the reset policy when the leader
//! cannot say, and stops the partition when there is no policy.

use super::*;

/// The partitions to check with their leader before fetching: with the
/// epoch of the record before their position known (fetched, or
/// committed), not yet fetched or checked under the leader epoch metadata
/// gives now. By leader.
pub(super) fn due(
    shared: &FetchState,
    wanted: &[(TopicPartition, i64)],
    leaders: &HashMap<TopicPartition, (i32, i32)>,
) -> BTreeMap<i32, Vec<(EpochCheck, i64)>> {
    let feeds = shared.feeds();
    let mut checks: BTreeMap<i32, Vec<(EpochCheck, i64)>> = BTreeMap::new();
    for (tp, offset) in wanted {
        let (Some(feed), Some(&(leader, current))) = (feeds.get(tp), leaders.get(tp)) else {
            continue;
        };
        if feed.epoch >= 0 && current >= 0 && current != feed.checked_under {
            checks.entry(leader).or_default().push((
                EpochCheck {
                    partition: tp.clone(),
                    current_leader_epoch: current,
                    leader_epoch: feed.epoch,
                },
                *offset,
            ));
        }
    }
    checks
}

/// Asks each leader where the epoch of each partition's last record ends
/// in its log (OffsetForLeaderEpoch): at or past the position, the
/// position holds; before it, the log was truncated under the consumer
/// and fetching goes on where the new log diverges (KIP-320), with a
/// warning, or by the reset policy when the leader cannot say where. True
/// when a check failed and should be retried after a pause.
pub(super) async fn check(
    shared: &FetchState,
    checks: BTreeMap<i32, Vec<(EpochCheck, i64)>>,
    stale: &mut bool,
) -> bool {
    let mut trouble = false;
    for (leader, checks) in checks {
        let asked: Vec<EpochCheck> = checks.iter().map(|(c, _)| c.clone()).collect();
        let answers = match shared.cluster.broker_on(leader, Lane::Fetch).await {
            Ok(conn) => epoch_ends(&conn, &asked).await,
            Err(e) => Err(e),
        };
        let answers = match answers {
            Ok(a) => a,
            Err(WireError::UnsupportedVersion { .. }) => {
                // A broker without OffsetForLeaderEpoch v2: the positions
                // cannot be checked, and fetching goes on as before.
                let mut feeds = shared.feeds();
                for (check, _) in &checks {
                    if let Some(feed) = feeds.get_mut(&check.partition) {
                        feed.checked_under = check.current_leader_epoch;
                    }
                }
                continue;
            }
            Err(e) => {
                if let Some(n) = shared.log.admit(("leader epoch", leader)) {
                    tracing::warn!(broker = leader, error = %e, failures = n, "checking positions after a leader change failed; retrying");
                }
                *stale = true;
                trouble = true;
                continue;
            }
        };
        for ((check, position), (_, answer)) in checks.into_iter().zip(answers) {
            trouble |= settle(shared, &check, position, answer, stale).await;
        }
    }
    trouble
}

/// Acts on one partition's OffsetForLeaderEpoch answer; true when it
/// calls for a pause.
async fn settle(
    shared: &FetchState,
    check: &EpochCheck,
    position: i64,
    answer: Result<EpochEnd, WireError>,
    stale: &mut bool,
) -> bool {
    let tp = &check.partition;
    let end = match answer {
        Ok(end) => end,
        Err(e) => {
            let code = e.response_error();
            *stale |= code.is_some_and(needs_metadata_refresh);
            tracing::debug!(partition = %tp, error = %e, "leader epoch check refused; refreshing metadata");
            return true;
        }
    };
    let known = end.end_offset >= 0 && end.leader_epoch >= 0;
    if known && end.end_offset >= position {
        let mut feeds = shared.feeds();
        if let Some(feed) = feeds.get_mut(tp).filter(|f| f.offset == position) {
            feed.checked_under = check.current_leader_epoch;
        }
        return false;
    }
    // Truncated under the position: where to go on.
    let to = if known {
        tracing::warn!(
            partition = %tp, offset = position, diverged_at = end.end_offset,
            "the log was truncated under the consumer (an unclean leader election?): records it read are gone; going on where the new log diverges"
        );
        Ok(Some(end.end_offset))
    } else {
        match shared.config.reset {
            Some(spec) => {
                tracing::warn!(partition = %tp, offset = position, ?spec, "the log was truncated under the consumer and its leader cannot say where it diverges; applying auto_offset_reset");
                shared.offset_for(tp, spec).await.map(Some)
            }
            None => Ok(None),
        }
    };
    let mut feeds = shared.feeds();
    let Some(feed) = feeds.get_mut(tp).filter(|f| f.offset == position) else {
        return false;
    };
    match to {
        Ok(Some(to)) if shared.config.reset.is_some() => {
            feed.offset = to;
            feed.epoch = end.leader_epoch;
            feed.checked_under = check.current_leader_epoch;
            let _ = feed.tx.send(FetchEvent::Reset {
                from: position,
                to,
                cause: ResetCause::Truncated,
            });
            false
        }
        Ok(_) => {
            tracing::error!(partition = %tp, offset = position, "the log was truncated under the consumer and auto_offset_reset is Error; the partition stops");
            feed.stopped = true;
            let _ = feed.tx.send(FetchEvent::Failed(WireError::LogTruncated {
                partition: tp.to_string(),
                offset: position,
                diverged_at: known.then_some(end.end_offset),
            }));
            false
        }
        Err(e) => {
            if let Some(n) = shared.log.admit(("offset reset", -1)) {
                tracing::warn!(partition = %tp, error = %e, failures = n, "offset reset failed; retrying");
            }
            true
        }
    }
}
