//! One task per assigned partition: fetch from the committed offset, handle
//! in offset order, commit the contiguous watermark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kavari_group::TopicPartition;
use rskafka::client::error::{Error as RsError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::dispatch::{Disposition, deliver};
use super::{OffsetReset, Shared};

/// Runs the partition until `stop` turns true; commits what it handled.
pub(crate) async fn run(shared: Arc<Shared>, tp: TopicPartition, stop: watch::Receiver<bool>) {
    let mut worker = Worker {
        shared,
        tp,
        stop,
        committed: None,
        start: 0,
    };
    worker.run().await;
}

struct Worker {
    shared: Arc<Shared>,
    tp: TopicPartition,
    stop: watch::Receiver<bool>,
    committed: Option<i64>,
    start: i64,
}

enum Fetched {
    /// One fetch's records, holding `permits` of the buffer.
    Batch {
        records: Vec<RecordAndOffset>,
        permits: usize,
    },
    /// The fetcher hit an error it cannot get past (OffsetReset::Error).
    Failed(String),
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn update(&self, f: impl FnOnce(&mut crate::PartitionHealth)) {
        self.shared.update_partition(&self.tp, f);
    }

    async fn run(&mut self) {
        let Some((client, start)) = self.start().await else {
            return;
        };
        // Fetched batches travel whole; a semaphore of `max_buffered_records`
        // permits bounds the records fetched but not yet handled.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let buffered = Arc::new(Semaphore::new(
            self.shared.config.max_buffered_records.max(1),
        ));
        let fetcher = tokio::spawn(fetch_loop(
            Arc::clone(&self.shared),
            self.tp.clone(),
            client,
            start,
            tx,
            Arc::clone(&buffered),
        ));
        let mut position = start;
        let mut last_commit = Instant::now();
        let every_message = self.shared.config.commit_interval.is_zero();
        let tick = if every_message {
            Duration::from_millis(500)
        } else {
            self.shared.config.commit_interval
        };
        'partition: loop {
            let mut stop = self.stop.clone();
            let next = tokio::select! {
                biased;
                _ = until_stopped(&mut stop) => break,
                r = rx.recv() => r,
                _ = tokio::time::sleep(tick) => {
                    self.commit(position).await;
                    last_commit = Instant::now();
                    continue;
                }
            };
            let (records, permits) = match next {
                Some(Fetched::Batch { records, permits }) => (records, permits),
                Some(Fetched::Failed(why)) => {
                    self.update(|h| h.error = Some(why));
                    break;
                }
                None => break,
            };
            for rec in records {
                if self.stopping() {
                    break 'partition; // the rest is not handled, nor committed
                }
                // A handler runs to its end even when a stop arrives
                // meanwhile: the shutdown waits for it (bounded), commits it.
                let offset = rec.offset;
                match deliver(
                    &self.shared,
                    &self.tp.topic,
                    self.tp.partition,
                    rec,
                    &self.stop,
                )
                .await
                {
                    Ok(d) => {
                        position = offset + 1;
                        if d != Disposition::Handled {
                            tracing::debug!(partition = %self.tp, offset, ?d, "record not handled normally");
                        }
                    }
                    Err(_undelivered) => break 'partition,
                }
                if every_message || last_commit.elapsed() >= self.shared.config.commit_interval {
                    self.commit(position).await;
                    last_commit = Instant::now();
                }
            }
            buffered.add_permits(permits);
            // Health is shared: updated once per fetched batch.
            self.update(|h| {
                h.position = Some(position);
                h.last_progress = Some(SystemTime::now());
                if let Some(hw) = h.high_watermark {
                    h.lag = Some((hw - position).max(0));
                }
            });
        }
        fetcher.abort();
        self.commit(position).await;
    }

    /// The committed offset, or the reset policy's; retried until stopped.
    async fn start(&mut self) -> Option<(Arc<PartitionClient>, i64)> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stopping() {
                return None;
            }
            match self.try_start().await {
                Ok(Some(started)) => return Some(started),
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(partition = %self.tp, error = %e, "cannot start the partition yet; retrying");
                    self.update(|h| h.error = Some(e.clone()));
                }
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(jittered(backoff)) => {}
                _ = until_stopped(&mut stop) => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn try_start(&mut self) -> Result<Option<(Arc<PartitionClient>, i64)>, String> {
        let committed = self
            .shared
            .member
            .committed(std::slice::from_ref(&self.tp))
            .await
            .map_err(|e| format!("reading the committed offset: {e}"))?
            .get(&self.tp)
            .copied()
            .flatten();
        let client = partition_client(&self.shared, &self.tp).await?;
        let start = match committed {
            Some(o) => o,
            None => match reset_offset(&self.shared, &client).await? {
                Some(o) => o,
                None => {
                    let why = format!(
                        "{} has no committed offset and auto_offset_reset is Error",
                        self.tp
                    );
                    tracing::error!(partition = %self.tp, "{why}");
                    self.update(|h| h.error = Some(why));
                    return Ok(None);
                }
            },
        };
        self.committed = committed;
        self.start = start;
        self.update(|h| {
            h.committed = committed;
            h.position = Some(start);
            h.error = None;
        });
        tracing::info!(partition = %self.tp, offset = start, committed = ?committed, "consuming");
        Ok(Some((client, start)))
    }

    async fn commit(&mut self, position: i64) {
        // Nothing new handled: nothing to commit (an unread partition keeps
        // no committed offset, so `auto_offset_reset` still applies to it).
        if self.committed == Some(position) || (self.committed.is_none() && position == self.start)
        {
            return;
        }
        let offsets = BTreeMap::from([(self.tp.clone(), position)]);
        match self.shared.member.commit(&offsets).await {
            Ok(()) => {
                self.committed = Some(position);
                self.update(|h| h.committed = Some(position));
            }
            Err(e) => {
                // A stale generation makes the member rejoin; the partition
                // is about to be revoked or lost, and its next owner starts
                // from the last good commit.
                tracing::warn!(partition = %self.tp, offset = position, error = %e, "commit failed");
            }
        }
    }
}

/// `d` scaled by a random factor in [0.8, 1.2], so partitions that failed
/// together do not retry together.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across awaits.
    let _ = stop.wait_for(|s| *s).await.map(drop);
}

async fn partition_client(
    shared: &Shared,
    tp: &TopicPartition,
) -> Result<Arc<PartitionClient>, String> {
    let client = shared.client.get().await.map_err(|e| e.to_string())?;
    let timeout = shared.client.request_timeout();
    match tokio::time::timeout(
        timeout,
        client.partition_client(tp.topic.clone(), tp.partition, UnknownTopicHandling::Retry),
    )
    .await
    {
        Ok(Ok(pc)) => Ok(Arc::new(pc)),
        Ok(Err(e)) => {
            shared
                .client
                .invalidate(&client, "partition client failed")
                .await;
            Err(format!("connecting to the leader of {tp}: {e}"))
        }
        Err(_) => {
            shared
                .client
                .invalidate(&client, "partition client timed out")
                .await;
            Err(format!(
                "connecting to the leader of {tp}: timed out after {timeout:?}"
            ))
        }
    }
}

/// The offset `auto_offset_reset` starts from; `None` for `Error`.
async fn reset_offset(shared: &Shared, client: &PartitionClient) -> Result<Option<i64>, String> {
    let at = match shared.config.auto_offset_reset {
        OffsetReset::Earliest => OffsetAt::Earliest,
        OffsetReset::Latest => OffsetAt::Latest,
        OffsetReset::Error => return Ok(None),
    };
    let timeout = shared.client.request_timeout();
    match tokio::time::timeout(timeout, client.get_offset(at)).await {
        Ok(Ok(o)) => Ok(Some(o)),
        Ok(Err(e)) => Err(format!("looking up the {at:?} offset: {e}")),
        Err(_) => Err(format!("looking up the {at:?} offset: timed out")),
    }
}

/// Fetches ahead of the handler into a bounded channel (backpressure: at
/// most `max_buffered_records` records wait).
async fn fetch_loop(
    shared: Arc<Shared>,
    tp: TopicPartition,
    mut client: Arc<PartitionClient>,
    mut offset: i64,
    tx: mpsc::UnboundedSender<Fetched>,
    buffered: Arc<Semaphore>,
) {
    let max_buffered = shared.config.max_buffered_records.max(1);
    let max_wait = i32::try_from(shared.config.fetch_max_wait.as_millis()).unwrap_or(i32::MAX);
    let max_bytes = shared.config.fetch_max_bytes.max(1);
    let timeout = shared.client.request_timeout() + shared.config.fetch_max_wait;
    let mut backoff = Duration::from_millis(100);
    loop {
        let fetched = tokio::time::timeout(
            timeout,
            client.fetch_records(offset, 1..max_bytes, max_wait),
        )
        .await;
        let error = match fetched {
            Ok(Ok((records, high_watermark))) => {
                backoff = Duration::from_millis(100);
                shared.update_partition(&tp, |h| {
                    h.high_watermark = Some(high_watermark);
                    h.lag = h.position.map(|p| (high_watermark - p).max(0));
                });
                // Compressed batches may start before the offset asked.
                let records: Vec<_> = records.into_iter().filter(|r| r.offset >= offset).collect();
                let Some(last) = records.last() else { continue };
                offset = last.offset + 1;
                // A batch larger than the whole buffer takes all of it.
                let permits = records.len().min(max_buffered);
                let Ok(permit) = Arc::clone(&buffered)
                    .acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
                    .await
                else {
                    return;
                };
                permit.forget(); // returned by the worker once handled
                if tx.send(Fetched::Batch { records, permits }).is_err() {
                    return; // the worker stopped
                }
                continue;
            }
            Ok(Err(RsError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            })) => {
                tracing::warn!(partition = %tp, offset, "offset out of range (retention?); applying auto_offset_reset");
                match reset_offset(&shared, &client).await {
                    Ok(Some(o)) => {
                        offset = o;
                        continue;
                    }
                    Ok(None) => {
                        let _ = tx.send(Fetched::Failed(format!(
                            "offset {offset} of {tp} is out of range and auto_offset_reset is Error"
                        )));
                        return;
                    }
                    Err(e) => e,
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("fetch timed out after {timeout:?}"),
        };
        tracing::warn!(partition = %tp, offset, error = %error, "fetch failed; retrying");
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if let Ok(pc) = partition_client(&shared, &tp).await {
            client = pc;
        }
        if tx.is_closed() {
            return;
        }
    }
}
