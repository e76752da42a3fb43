//! The engine's loop: each round, the partitions with room in their
//! buffers, one Fetch per leader, and each partition's answer handed over
//! to its feed.

use std::collections::HashSet;

use super::*;

/// Partitions' leaders and epochs, from the last metadata answer.
type Leaders = HashMap<TopicPartition, (i32, i32)>;

/// The engine's loop; it ends when the [`Fetcher`] is dropped (aborted).
pub(super) async fn run(shared: Arc<FetchState>) {
    let mut leaders: Leaders = HashMap::new();
    let mut stale = true;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    // One incremental fetch session per broker (KIP-227).
    let mut sessions: HashMap<i32, FetchSession> = HashMap::new();
    // While a partition is left out for its full buffer and will soon want
    // fetching again, partitions at their end are
    // not long-polled: the broker would hold the request for max_wait, and
    // the busy partition with it. The loop waits here instead, for the busy
    // one (a wake) or until the others are due (a short wait, doubling up to
    // max_wait), and then asks without a wait.
    let mut short_wait = SHORT_WAIT;
    let mut poll_due: Option<tokio::time::Instant> = None;
    loop {
        let Ready {
            wanted,
            at_end,
            caught_up,
            pending,
        } = ready(&shared);
        if wanted.is_empty() {
            let wake = shared.wake.notified();
            let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
            continue;
        }
        let limits = if pending && caught_up {
            let due = *poll_due.get_or_insert_with(|| tokio::time::Instant::now() + short_wait);
            let wake = shared.wake.notified();
            if tokio::time::timeout_at(due, wake).await.is_ok() {
                continue;
            }
            short_wait = short_wait
                .saturating_mul(2)
                .min(shared.config.limits.max_wait);
            poll_due = None;
            FetchLimits {
                max_wait: Duration::ZERO,
                ..shared.config.limits
            }
        } else {
            short_wait = SHORT_WAIT;
            poll_due = None;
            shared.config.limits
        };
        if stale || wanted.iter().any(|(tp, _)| !leaders.contains_key(tp)) {
            match refresh(&shared, &wanted).await {
                Ok(l) => {
                    leaders = l;
                    stale = false;
                }
                Err(e) => {
                    if let Some(n) = shared.log.admit(("metadata", -1)) {
                        tracing::warn!(error = %e, failures = n, "fetch: metadata lookup failed; retrying");
                    }
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            }
        }
        // A partition whose leader changed since it was last fetched is
        // checked for a log truncated under it before it is fetched again.
        let checks = truncation::due(&shared, &wanted, &leaders);
        if !checks.is_empty() {
            if truncation::check(&shared, checks, &mut stale).await {
                tokio::time::sleep(backoff.next()).await;
            }
            continue;
        }
        let mut by_broker: BTreeMap<i32, Vec<FetchPosition>> = BTreeMap::new();
        for (tp, offset) in wanted {
            if let Some(&(leader, epoch)) = leaders.get(&tp) {
                by_broker.entry(leader).or_default().push(FetchPosition {
                    partition: tp,
                    offset,
                    leader_epoch: epoch,
                });
            }
        }
        if by_broker.is_empty() {
            // Subscribed partitions without a leader now.
            stale = true;
            tokio::time::sleep(backoff.next()).await;
            continue;
        }
        // A round ends when every broker answered: a broker whose
        // partitions are all at their end would hold its request for
        // max_wait, and the brokers with records to fetch with it. It is
        // asked without a wait while another broker has records.
        let idle =
            |positions: &[FetchPosition]| positions.iter().all(|p| at_end.contains(&p.partition));
        let busy = by_broker.values().any(|positions| !idle(positions));
        let rounds = by_broker.into_iter().map(|(broker, positions)| {
            let shared = Arc::clone(&shared);
            let mut session = sessions.remove(&broker).unwrap_or_default();
            let limits = if busy && idle(&positions) {
                FetchLimits {
                    max_wait: Duration::ZERO,
                    ..limits
                }
            } else {
                limits
            };
            async move {
                let started = std::time::Instant::now();
                let answer = async {
                    let conn = shared.cluster.broker_on(broker, Lane::Fetch).await?;
                    session.fetch(&conn, &positions, &limits).await
                }
                .await;
                tracing::trace!(
                    broker,
                    partitions = positions.len(),
                    session = session.id(),
                    request_bytes = session.last_request_bytes(),
                    took = ?started.elapsed(),
                    bytes = answer.as_ref().map_or(0, |ps| ps.iter().map(|p| p.records.len()).sum::<usize>()),
                    "fetch round"
                );
                (broker, positions, answer, session)
            }
        });
        let mut trouble = false;
        for (broker, positions, answer, session) in join_all(rounds).await {
            sessions.insert(broker, session);
            match answer {
                Ok(parts) => {
                    for part in parts {
                        let asked = positions
                            .iter()
                            .find(|p| p.partition == part.partition)
                            .map(|p| (p.offset, p.leader_epoch));
                        if let Some((asked, under)) = asked {
                            trouble |= hand_over(&shared, part, asked, under, &mut stale).await;
                        }
                    }
                }
                Err(e) => {
                    if let Some(n) = shared.log.admit(("fetch", broker)) {
                        tracing::warn!(broker, error = %e, partitions = positions.len(), failures = n, "fetch failed; retrying");
                    }
                    stale = true;
                    trouble = true;
                }
            }
        }
        if trouble {
            tokio::time::sleep(backoff.next()).await;
        } else {
            backoff.reset();
        }
    }
}

/// The first wait of a round while a full partition has more at the broker.
const SHORT_WAIT: Duration = Duration::from_millis(5);

/// What the next round may fetch.
struct Ready {
    /// Partitions to fetch now, with their offsets: subscribed, not
    /// stopped, with room in their buffer, while the total has room.
    wanted: Vec<(TopicPartition, i64)>,
    /// The wanted partitions at their end (as far as their last answer
    /// told).
    at_end: HashSet<TopicPartition>,
    /// Every wanted partition is at its end (as far as its last answer
    /// told): the broker would hold the request.
    caught_up: bool,
    /// A partition left out will soon want fetching: its buffer is full
    /// and the broker has more for it.
    pending: bool,
}

fn ready(shared: &FetchState) -> Ready {
    let config = &shared.config;
    if shared.buffered_total.load(Ordering::Acquire) >= config.total_buffer_bytes {
        return Ready {
            wanted: Vec::new(),
            at_end: HashSet::new(),
            caught_up: false,
            pending: true,
        };
    }
    let feeds = shared.feeds();
    let mut ready = Ready {
        wanted: Vec::new(),
        at_end: HashSet::new(),
        caught_up: true,
        pending: false,
    };
    for (tp, f) in feeds.iter().filter(|(_, f)| !f.stopped) {
        if f.buffered.load(Ordering::Acquire) < config.partition_buffer_bytes {
            ready.wanted.push((tp.clone(), f.offset));
            let at_end = f.end >= 0 && f.offset >= f.end;
            if at_end {
                ready.at_end.insert(tp.clone());
            }
            ready.caught_up &= at_end;
        } else {
            ready.pending |= f.end > f.offset;
        }
    }
    ready
}

async fn refresh(
    shared: &FetchState,
    wanted: &[(TopicPartition, i64)],
) -> Result<Leaders, WireError> {
    let mut topics: Vec<&str> = wanted.iter().map(|(tp, _)| tp.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let mut leaders = HashMap::new();
    for t in shared.cluster.topics(&topics).await? {
        for p in t.partitions {
            if let Some(leader) = p.leader {
                leaders.insert(
                    TopicPartition::new(t.name.clone(), p.partition),
                    (leader, p.leader_epoch),
                );
            }
        }
    }
    Ok(leaders)
}

/// Hands one partition's answer to its feed; true when the answer calls
/// for a pause (an error that a retry may clear).
async fn hand_over(
    shared: &FetchState,
    part: PartitionResponse,
    asked: i64,
    under: i32,
    stale: &mut bool,
) -> bool {
    let tp = part.partition.clone();
    let config = &shared.config;
    match part.error {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            let outcome = match config.reset {
                Some(spec) => {
                    tracing::warn!(partition = %tp, offset = asked, ?spec, "offset out of range; applying auto_offset_reset");
                    shared.offset_for(&tp, spec).await.map(Some)
                }
                None => Ok(None),
            };
            let mut feeds = shared.feeds();
            let Some(feed) = feeds.get_mut(&tp).filter(|f| f.offset == asked) else {
                return false;
            };
            return match outcome {
                Ok(Some(to)) => {
                    feed.offset = to;
                    let _ = feed.tx.send(FetchEvent::Reset {
                        from: asked,
                        to,
                        cause: ResetCause::OutOfRange,
                    });
                    false
                }
                Ok(None) => {
                    feed.stopped = true;
                    let _ = feed.tx.send(FetchEvent::Failed(WireError::broker(
                        "Fetch",
                        ResponseError::OffsetOutOfRange,
                        Some(format!(
                            "offset {asked} of {tp} is out of range and auto_offset_reset is Error"
                        )),
                    )));
                    false
                }
                Err(e) => {
                    if let Some(n) = shared.log.admit(("offset reset", -1)) {
                        tracing::warn!(partition = %tp, error = %e, failures = n, "offset reset failed; retrying");
                    }
                    true
                }
            };
        }
        Some(code) if needs_metadata_refresh(code) || is_retriable_code(code) => {
            tracing::debug!(partition = %tp, ?code, "fetch: partition error; refreshing metadata");
            *stale |= needs_metadata_refresh(code);
            return true;
        }
        Some(code) => {
            let mut feeds = shared.feeds();
            if let Some(feed) = feeds.get_mut(&tp).filter(|f| f.offset == asked) {
                tracing::error!(partition = %tp, ?code, "fetch refused; the partition stops");
                feed.stopped = true;
                let _ = feed.tx.send(FetchEvent::Failed(WireError::broker(
                    "Fetch",
                    code,
                    Some(tp.to_string()),
                )));
            }
            return false;
        }
    }
    let extracted = part.extract(asked, config.limits.isolation);
    let mut feeds = shared.feeds();
    // Revoked, re-subscribed or moved meanwhile: this answer is stale.
    let Some(feed) = feeds.get_mut(&tp).filter(|f| f.offset == asked) else {
        return false;
    };
    feed.checked_under = under;
    if let Ok(ex) = &extracted
        && ex.last_epoch >= 0
    {
        feed.epoch = ex.last_epoch;
    }
    feed.end = match config.limits.isolation {
        Isolation::ReadCommitted if part.last_stable_offset >= 0 => part.last_stable_offset,
        _ => part.high_watermark,
    };
    let known = feed
        .high_watermark
        .swap(part.high_watermark, Ordering::AcqRel);
    match extracted {
        // Bytes that hold no record at or past the offset (a batch cut
        // short, the same old batch again): a broker that keeps answering
        // so would be asked again at once, thousands of times a second.
        // The round backs off instead.
        Ok(ex) if ex.next_offset <= asked && !part.records.is_empty() => {
            if let Some(n) = shared.log.admit(("no progress", -1)) {
                tracing::warn!(
                    partition = %tp, offset = asked, bytes = part.records.len(), answers = n,
                    "fetch answers hold bytes but no record at or past the offset; backing off"
                );
            }
            return true;
        }
        Ok(ex) if ex.batches.is_empty() && part.high_watermark == known => {
            feed.offset = ex.next_offset;
        }
        Ok(ex) => {
            feed.offset = ex.next_offset;
            feed.buffered.fetch_add(ex.bytes, Ordering::AcqRel);
            shared.buffered_total.fetch_add(ex.bytes, Ordering::AcqRel);
            let _ = feed.tx.send(FetchEvent::Records {
                batches: ex.batches,
                from: ex.from,
                bytes: ex.bytes,
                high_watermark: part.high_watermark,
            });
        }
        Err(e) => {
            tracing::error!(partition = %tp, offset = asked, error = %e, "a record batch cannot be read; the partition stops");
            feed.stopped = true;
            let _ = feed.tx.send(FetchEvent::Failed(e));
        }
    }
    false
}
