//! The engine's loop: each broker has at most one Fetch out, for the
//! partitions it leads that have room in their buffers; when its answer
//! comes, each partition's part is handed over to its feed and the broker
//! is asked again at once. A slow or idle broker holds no other broker's
//! partitions.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::*;

/// Partitions' leaders and epochs, from the last metadata answer.
type Leaders = HashMap<TopicPartition, (i32, i32)>;

/// One broker's Fetch, answered.
struct Answered {
    broker: i32,
    positions: Vec<FetchPosition>,
    answer: Result<Vec<PartitionResponse>, WireError>,
    session: FetchSession,
}

type Asking = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// A retried step's pause: closed for a backoff's delay after a failure,
/// open again after a success.
struct Pause {
    backoff: Backoff,
    until: Option<Instant>,
}

impl Pause {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            until: None,
        }
    }

    fn open(&self, now: Instant) -> bool {
        self.until.is_none_or(|at| now >= at)
    }

    fn failed(&mut self, now: Instant) {
        self.until = Some(now + self.backoff.next());
    }

    fn succeeded(&mut self) {
        self.backoff.reset();
        self.until = None;
    }
}

/// What the loop keeps of one broker.
struct BrokerFetch {
    /// Its incremental fetch session (KIP-227); `None` while a Fetch is
    /// out, which carries it.
    session: Option<FetchSession>,
    /// After a failed Fetch.
    pause: Pause,
    /// The next wait while its partitions are at their end and one it
    /// leads is left out for a full buffer (see [`Ready::pending`]).
    short_wait: Duration,
    /// When its partitions at their end are asked again, without a wait.
    poll_due: Option<Instant>,
}

impl BrokerFetch {
    fn new() -> Self {
        Self {
            session: Some(FetchSession::new()),
            pause: Pause::new(),
            short_wait: SHORT_WAIT,
            poll_due: None,
        }
    }
}

/// The engine's loop; it ends when the [`Fetcher`] is dropped (aborted).
pub(super) async fn run(shared: Arc<FetchState>) {
    let mut leaders: Leaders = HashMap::new();
    let mut stale = true;
    let mut metadata = Pause::new();
    let mut checks = Pause::new();
    let mut brokers: HashMap<i32, BrokerFetch> = HashMap::new();
    let mut asking: FuturesUnordered<Asking> = FuturesUnordered::new();
    // The partitions of the Fetches out: not asked for again until answered.
    let mut out: HashSet<TopicPartition> = HashSet::new();
    loop {
        let now = Instant::now();
        // The earliest time something waiting becomes due.
        let mut due: Option<Instant> = None;
        let mut due_at = |at: Option<Instant>| {
            if let Some(at) = at {
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        };
        let mut ready = ready(&shared, &out);
        let missing = ready.wanted.iter().any(|(tp, _)| !leaders.contains_key(tp));
        if (stale || missing) && !ready.wanted.is_empty() {
            if metadata.open(now) {
                match refresh(&shared, &ready.wanted).await {
                    Ok(l) => {
                        leaders = l;
                        stale = false;
                        // Partitions still without a leader: asked about
                        // again after a pause, not at once.
                        if ready.wanted.iter().any(|(tp, _)| !leaders.contains_key(tp)) {
                            metadata.failed(Instant::now());
                        } else {
                            metadata.succeeded();
                        }
                    }
                    Err(e) => {
                        if let Some(n) = shared.log.admit(("metadata", -1)) {
                            tracing::warn!(error = %e, failures = n, "fetch: metadata lookup failed; retrying");
                        }
                        metadata.failed(Instant::now());
                    }
                }
            }
            due_at(metadata.until);
        }
        // A partition whose leader changed since it was last fetched is
        // checked for a log truncated under it before it is fetched again.
        let to_check = truncation::due(&shared, &ready.wanted, &leaders);
        if !to_check.is_empty() {
            if checks.open(now) {
                if truncation::check(&shared, to_check, &mut stale).await {
                    checks.failed(Instant::now());
                    due_at(checks.until);
                } else {
                    checks.succeeded();
                }
                continue;
            }
            // Not fetched until checked.
            let unchecked: HashSet<&TopicPartition> = to_check
                .values()
                .flatten()
                .map(|(c, _)| &c.partition)
                .collect();
            ready.wanted.retain(|(tp, _)| !unchecked.contains(tp));
            due_at(checks.until);
        }
        let now = Instant::now();
        for (broker, positions) in by_leader(&ready, &leaders) {
            let state = brokers.entry(broker).or_insert_with(BrokerFetch::new);
            if !state.pause.open(now) {
                due_at(state.pause.until);
                continue;
            }
            let Some(mut session) = state.session.take() else {
                continue;
            };
            let limits = match limits_for(&shared, state, broker, &ready, &positions, &leaders, now)
            {
                Ok(limits) => limits,
                Err(wait_until) => {
                    state.session = Some(session);
                    due_at(Some(wait_until));
                    continue;
                }
            };
            out.extend(positions.iter().map(|p| p.partition.clone()));
            let shared = Arc::clone(&shared);
            asking.push(Box::pin(async move {
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
                    "fetch"
                );
                Answered {
                    broker,
                    positions,
                    answer,
                    session,
                }
            }));
        }
        // Wait for an answer, a wake (a buffer released, a partition
        // subscribed) or the next due time; at most a second, to look at
        // the partitions again.
        let deadline = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let wake = shared.wake.notified();
        let sleep = tokio::time::sleep_until(deadline);
        let mut wake = std::pin::pin!(wake);
        let mut sleep = std::pin::pin!(sleep);
        let answered = futures::future::poll_fn(|cx| {
            if let Poll::Ready(Some(answered)) = asking.poll_next_unpin(cx) {
                return Poll::Ready(Some(answered));
            }
            if wake.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        if let Some(answered) = answered {
            take_answer(&shared, answered, &mut brokers, &mut out, &mut stale).await;
        }
    }
}

/// The wanted partitions that have a leader, by leader.
fn by_leader(ready: &Ready, leaders: &Leaders) -> BTreeMap<i32, Vec<FetchPosition>> {
    let mut by_broker: BTreeMap<i32, Vec<FetchPosition>> = BTreeMap::new();
    for (tp, offset) in &ready.wanted {
        if let Some(&(leader, epoch)) = leaders.get(tp) {
            by_broker.entry(leader).or_default().push(FetchPosition {
                partition: tp.clone(),
                offset: *offset,
                leader_epoch: epoch,
            });
        }
    }
    by_broker
}

/// The limits of a broker's next Fetch, or when to ask it. While all its
/// wanted partitions are at their end and one it leads is left out for a
/// full buffer, a long poll would hold that one's next fetch for max_wait:
/// the broker is asked after a short wait instead (doubling up to
/// max_wait, or sooner when a buffer is released), and without a wait.
fn limits_for(
    shared: &FetchState,
    state: &mut BrokerFetch,
    broker: i32,
    ready: &Ready,
    positions: &[FetchPosition],
    leaders: &Leaders,
    now: Instant,
) -> Result<FetchLimits, Instant> {
    let limits = shared.config.limits;
    let caught_up = positions
        .iter()
        .all(|p| ready.at_end.contains(&p.partition));
    let pending = ready
        .pending
        .iter()
        .any(|tp| leaders.get(tp).is_some_and(|l| l.0 == broker));
    if !(caught_up && pending) {
        state.short_wait = SHORT_WAIT;
        state.poll_due = None;
        return Ok(limits);
    }
    let due = *state.poll_due.get_or_insert(now + state.short_wait);
    if now < due {
        return Err(due);
    }
    state.short_wait = state.short_wait.saturating_mul(2).min(limits.max_wait);
    state.poll_due = None;
    Ok(FetchLimits {
        max_wait: Duration::ZERO,
        ..limits
    })
}

/// Hands a broker's answer over, partition by partition; a failure pauses
/// that broker and asks for fresh metadata.
async fn take_answer(
    shared: &FetchState,
    answered: Answered,
    brokers: &mut HashMap<i32, BrokerFetch>,
    out: &mut HashSet<TopicPartition>,
    stale: &mut bool,
) {
    let Answered {
        broker,
        positions,
        answer,
        session,
    } = answered;
    for p in &positions {
        out.remove(&p.partition);
    }
    let mut trouble = false;
    match answer {
        Ok(parts) => {
            for part in parts {
                let asked = positions
                    .iter()
                    .find(|p| p.partition == part.partition)
                    .map(|p| (p.offset, p.leader_epoch));
                if let Some((asked, under)) = asked {
                    trouble |= hand_over(shared, part, asked, under, stale).await;
                }
            }
        }
        Err(e) => {
            if let Some(n) = shared.log.admit(("fetch", broker)) {
                tracing::warn!(broker, error = %e, partitions = positions.len(), failures = n, "fetch failed; retrying");
            }
            *stale = true;
            trouble = true;
        }
    }
    let state = brokers.entry(broker).or_insert_with(BrokerFetch::new);
    state.session = Some(session);
    if trouble {
        state.pause.failed(Instant::now());
    } else {
        state.pause.succeeded();
    }
}

/// The first wait of a broker's partitions at their end while one it leads
/// has a full buffer and more at the broker.
const SHORT_WAIT: Duration = Duration::from_millis(5);

/// What may be fetched now.
struct Ready {
    /// Partitions to fetch now, with their offsets: subscribed, not
    /// stopped, not in a Fetch out, with room in their buffer, while the
    /// total has room.
    wanted: Vec<(TopicPartition, i64)>,
    /// The wanted partitions at their end (as far as their last answer
    /// told): a broker asked only for these would hold the request.
    at_end: HashSet<TopicPartition>,
    /// Partitions left out that will soon want fetching: their buffer is
    /// full and the broker has more for them.
    pending: Vec<TopicPartition>,
}

fn ready(shared: &FetchState, out: &HashSet<TopicPartition>) -> Ready {
    let config = &shared.config;
    let mut ready = Ready {
        wanted: Vec::new(),
        at_end: HashSet::new(),
        pending: Vec::new(),
    };
    if shared.buffered_total.load(Ordering::Acquire) >= config.total_buffer_bytes {
        return ready;
    }
    let feeds = shared.feeds();
    for (tp, f) in feeds
        .iter()
        .filter(|(tp, f)| !f.stopped && !out.contains(*tp))
    {
        if f.buffered.load(Ordering::Acquire) < config.partition_buffer_bytes {
            ready.wanted.push((tp.clone(), f.offset));
            if f.end >= 0 && f.offset >= f.end {
                ready.at_end.insert(tp.clone());
            }
        } else if f.end > f.offset {
            ready.pending.push(tp.clone());
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
