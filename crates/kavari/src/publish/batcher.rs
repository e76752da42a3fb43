//! One task per partition that gathers concurrent publishes into one produce
//! request: it waits at most `linger` after the first record, and sends at
//! once when `max_batch_bytes` is reached.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::ProduceError;
use super::config::ProducerConfig;
use crate::client::ClientHandle;

/// A record waiting for its batch, and where to send its offset.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: Record,
    pub(crate) size: usize,
    pub(crate) reply: oneshot::Sender<Result<i64, ProduceError>>,
}

/// Counters shared by every batcher of a publisher.
#[derive(Debug, Default)]
pub(crate) struct ProduceCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
}

pub(crate) struct Batcher {
    topic: String,
    partition: i32,
    client: Arc<ClientHandle>,
    config: Arc<ProducerConfig>,
    counters: Arc<ProduceCounters>,
    partition_client: Option<Arc<PartitionClient>>,
}

impl Batcher {
    pub(crate) fn spawn(
        topic: String,
        partition: i32,
        client: Arc<ClientHandle>,
        config: Arc<ProducerConfig>,
        counters: Arc<ProduceCounters>,
    ) -> mpsc::Sender<Pending> {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let batcher = Self {
            topic,
            partition,
            client,
            config,
            counters,
            partition_client: None,
        };
        tokio::spawn(batcher.run(rx));
        tx
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        let mut carry: Option<Pending> = None;
        loop {
            let first = match carry.take() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(p) => p,
                    None => return, // every sender is gone: the publisher closed
                },
            };
            let mut bytes = first.size;
            let mut batch = vec![first];
            let deadline = Instant::now() + self.config.linger;
            while bytes < self.config.max_batch_bytes {
                let next = if self.config.linger.is_zero() {
                    rx.try_recv().ok()
                } else {
                    tokio::select! {
                        biased;
                        p = rx.recv() => p,
                        _ = tokio::time::sleep_until(deadline) => None,
                    }
                };
                let Some(p) = next else { break };
                if bytes + p.size > self.config.max_batch_bytes {
                    carry = Some(p);
                    break;
                }
                bytes += p.size;
                batch.push(p);
            }
            self.send(batch).await;
        }
    }

    async fn send(&mut self, batch: Vec<Pending>) {
        let (records, replies): (Vec<Record>, Vec<_>) =
            batch.into_iter().map(|p| (p.record, p.reply)).unzip();
        let count = records.len();
        let result = self.produce(records).await;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(offsets) if offsets.len() == count => {
                self.counters
                    .records
                    .fetch_add(count as u64, Ordering::Relaxed);
                for (reply, offset) in replies.into_iter().zip(offsets) {
                    let _ = reply.send(Ok(offset));
                }
            }
            Ok(offsets) => {
                self.counters
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                let e = ProduceError::new(
                    super::ProduceErrorKind::Broker,
                    true,
                    format!(
                        "produce to {}/{} answered {} offsets for {count} records",
                        self.topic,
                        self.partition,
                        offsets.len()
                    ),
                );
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                self.counters
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(topic = %self.topic, partition = self.partition, error = %e, "produce failed");
                if e.kind() != super::ProduceErrorKind::MessageTooLarge {
                    // Rebuild the partition client next time: the leader
                    // may have moved or the connection died.
                    self.partition_client = None;
                }
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    async fn produce(&mut self, records: Vec<Record>) -> Result<Vec<i64>, ProduceError> {
        let timeout = self.client.request_timeout();
        let pc = self.partition_client().await?;
        let what = format!("producing to {}/{}", self.topic, self.partition);
        match tokio::time::timeout(timeout, pc.produce(records, self.config.compression.into()))
            .await
        {
            Ok(Ok(offsets)) => Ok(offsets),
            Ok(Err(e)) => Err(ProduceError::from_rskafka(&what, &e)),
            Err(_) => Err(ProduceError::timeout(&what, timeout)),
        }
    }

    async fn partition_client(&mut self) -> Result<Arc<PartitionClient>, ProduceError> {
        if let Some(pc) = &self.partition_client {
            return Ok(Arc::clone(pc));
        }
        let client = self.client.get().await?;
        let what = format!("finding the leader of {}/{}", self.topic, self.partition);
        let timeout = self.client.request_timeout();
        let pc = match tokio::time::timeout(
            timeout,
            client.partition_client(
                self.topic.clone(),
                self.partition,
                UnknownTopicHandling::Error,
            ),
        )
        .await
        {
            Ok(Ok(pc)) => Arc::new(pc),
            Ok(Err(e)) => {
                let err = ProduceError::from_rskafka(&what, &e);
                if err.kind() == super::ProduceErrorKind::Connection {
                    self.client
                        .invalidate(&client, "partition leader unreachable")
                        .await;
                }
                return Err(err);
            }
            Err(_) => {
                self.client
                    .invalidate(&client, "partition leader lookup timed out")
                    .await;
                return Err(ProduceError::timeout(&what, timeout));
            }
        };
        self.partition_client = Some(Arc::clone(&pc));
        Ok(pc)
    }
}

/// Waits for a batcher's answer; a batcher that went away counts as a
/// connection failure, so the retry policy applies.
pub(crate) async fn await_reply(
    rx: oneshot::Receiver<Result<i64, ProduceError>>,
) -> Result<i64, ProduceError> {
    rx.await.unwrap_or_else(|_| {
        Err(ProduceError::new(
            super::ProduceErrorKind::Connection,
            true,
            "the partition's batcher stopped before answering",
        ))
    })
}
