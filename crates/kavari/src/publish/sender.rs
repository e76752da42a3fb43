//! A partition's sender task: it takes the batches its queue closes
//! (`batcher.rs`), hands each to the partition leader's connection (which
//! writes the batches handed to it together, one produce request for many
//! partitions), and settles the batch's publishes with the answer. Up to
//! [`MAX_IN_FLIGHT`] batches per partition travel at once. Idempotent (the
//! default), a failed batch is sent again before anything after it
//! (`sequenced.rs`); without idempotence its publishes retry behind later
//! ones, as with the Java producer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kavari_wire::cluster::{Cluster, TopicMetadata};
use kavari_wire::connection::Connection;
use kavari_wire::produce::PartitionProduce;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::batcher::{
    Batcher, MAX_IN_FLIGHT, OpenBatch, Outcome, ProduceCounters, Queue, next_batch,
};
use super::config::ProducerConfig;
use super::producer_ids::ProducerIds;
use super::{ProduceError, ProduceErrorKind};
use crate::retry::RetryPolicy;

/// Starts the sender of `topic`/`partition` (led by `leader`, when known)
/// and returns the handle publishers append through.
pub(crate) fn spawn(
    topic: String,
    partition: i32,
    leader: Option<i32>,
    producing: Arc<Producing>,
) -> Batcher {
    let (batcher, queue) = Batcher::new(
        topic,
        partition,
        Arc::clone(&producing.config),
        Arc::clone(&producing.counters),
        producing.expiry.clone(),
    );
    let sender = Sender {
        topic_name: TopicName(StrBytes::from_string(queue.topic.clone())),
        queue,
        round: leader.map(|id| producing.rounds.of(id)),
        producing,
        leader_id: leader,
        leader: None,
    };
    tokio::spawn(sender.run());
    batcher
}

/// What the publisher and every partition's sender share.
#[derive(Debug)]
pub(crate) struct Producing {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) config: Arc<ProducerConfig>,
    pub(crate) counters: Arc<ProduceCounters>,
    /// Retries of failed batches, when the senders retry them (idempotent
    /// publishing); otherwise the publisher retries publishes.
    pub(crate) retry: Arc<dyn RetryPolicy>,
    /// The producer identity; `None` when idempotence is off.
    pub(crate) ids: Option<ProducerIds>,
    /// Turns true when shutdown begins: batches waiting to be sent again
    /// are given back at once.
    pub(crate) closing: tokio::sync::watch::Receiver<bool>,
    /// Each broker's produce round.
    pub(crate) rounds: super::rounds::Rounds,
    /// Ends batches at their delivery deadline.
    pub(crate) expiry: super::expiry::Expiry,
}

impl Producing {
    /// `topic`'s partitions and leaders as the cluster knows them (`None`:
    /// no such topic); a failed lookup is an error saying it happened while
    /// doing `what`.
    pub(crate) async fn topic_metadata(
        &self,
        topic: &str,
        what: &str,
    ) -> Result<Option<TopicMetadata>, ProduceError> {
        self.cluster
            .topic(topic)
            .await
            .map_err(|e| ProduceError::from_wire(what, &e))
    }
}

/// Sends one partition's batches.
pub(super) struct Sender {
    pub(super) queue: Arc<Queue>,
    pub(super) topic_name: TopicName,
    pub(super) producing: Arc<Producing>,
    /// The partition's leader as last seen; `None` means ask the cluster.
    leader_id: Option<i32>,
    leader: Option<Arc<Connection>>,
    /// The produce round of the leader last seen.
    pub(super) round: Option<Arc<Notify>>,
}

impl Sender {
    async fn run(self) {
        if self.producing.ids.is_some() {
            self.run_idempotent().await;
        } else {
            self.run_at_least_once().await;
        }
    }

    /// Sends batches as they come, up to [`MAX_IN_FLIGHT`] at once; a failed
    /// batch's publishes retry (in new batches, behind later ones).
    async fn run_at_least_once(mut self) {
        let queue = Arc::clone(&self.queue);
        let linger = self.producing.config.linger;
        let mut in_flight = FuturesOrdered::new();
        loop {
            let round = self.round.clone();
            tokio::select! {
                // Answers first: they free room and settle publishes.
                biased;
                Some((sent, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(sent, result);
                }
                next = next_batch(&queue, linger, round.as_deref()), if in_flight.len() < MAX_IN_FLIGHT => {
                    let Some((batch, due)) = next else { break };
                    if due {
                        self.call_round();
                    }
                    if let Some(answer) = self.start(batch).await {
                        in_flight.push_back(answer);
                    }
                }
            }
        }
        while let Some((sent, result)) = in_flight.next().await {
            self.settle(sent, result);
        }
    }

    /// Writes `batch` as a produce request to the partition's leader and
    /// returns its answer to come; a batch that could not be written is
    /// settled at once.
    async fn start(&mut self, batch: OpenBatch) -> Option<InFlight> {
        let (sent, records) = match self.finish(batch) {
            Ok(finished) => finished,
            Err((sent, e)) => {
                self.settle(sent, Err(e));
                return None;
            }
        };
        let records = Bytes::from(records);
        let written = self.write(Bytes::clone(&records)).await;
        self.recycle(Vec::from(records));
        match written {
            Ok(answer) => Some(Box::pin(async move { (sent, answer.await) })),
            Err(e) => {
                self.settle(sent, Err(e));
                None
            }
        }
    }

    /// Writes `batch`'s header and compresses it.
    #[allow(clippy::result_large_err)]
    pub(super) fn finish(&self, batch: OpenBatch) -> Result<(Sent, Vec<u8>), (Sent, ProduceError)> {
        let sent = Sent {
            count: batch.records.len(),
            bytes: batch.records.size(),
            outcome: Arc::clone(&batch.outcome),
            first_at: batch.first_at,
        };
        tracing::trace!(partition = self.queue.partition, count = sent.count, bytes = sent.bytes, waited = ?batch.first_at.elapsed(), "sending batch");
        match batch.records.finish(self.producing.config.compression) {
            Ok(records) => Ok((sent, records)),
            Err(e) => {
                let e = ProduceError::new(
                    ProduceErrorKind::Broker,
                    false,
                    format!("cannot compress a batch for {}: {e}", self.queue.topic),
                );
                Err((sent, e))
            }
        }
    }

    /// Tells every other partition of the leader to send what it holds
    /// along with the batch due now.
    pub(super) fn call_round(&self) {
        if let Some(round) = &self.round {
            round.notify_waiters();
        }
    }

    /// Hands `records` to the partition's leader's connection, to be
    /// written in a produce request; returns the batch's answer to come:
    /// its base offset or its error.
    pub(super) async fn write(&mut self, records: Bytes) -> Result<Answer, ProduceError> {
        let counters = Arc::clone(&self.producing.counters);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let what = format!("producing to {}/{}", self.queue.topic, self.queue.partition);
        let conn = self.leader().await?;
        let timeout = self.producing.cluster.request_timeout();
        let produce = PartitionProduce {
            topic: self.topic_name.clone(),
            partition: self.queue.partition,
            acks: -1,
            timeout_ms: i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
            records,
        };
        let answer = conn
            .send_produce(produce)
            .await
            .map_err(|e| ProduceError::from_wire(&what, &e))?;
        if answer.first_in_request() {
            counters.requests.fetch_add(1, Ordering::Relaxed);
        }
        let (topic, partition) = (self.topic_name.clone(), self.queue.partition);
        Ok(Box::pin(async move {
            match answer.await {
                Ok(resp) => base_offset(&resp, &topic, partition, &what),
                Err(e) => Err(ProduceError::from_answer(&what, &e)),
            }
        }))
    }

    /// Keeps the record batch's buffer for the next batch, once it is
    /// written: fresh memory for every batch costs page faults.
    pub(super) fn recycle(&self, records: Vec<u8>) {
        self.queue.keep_spare(records);
    }

    /// Counts a failed produce request and forgets the leader unless the
    /// batch itself was at fault: it may have moved, or its connection died.
    pub(super) fn failed(&mut self, e: &ProduceError) {
        self.producing
            .counters
            .failed_requests
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(topic = %self.queue.topic, partition = self.queue.partition, error = %e, "produce failed");
        if e.kind() != ProduceErrorKind::MessageTooLarge {
            self.leader = None;
            self.leader_id = None;
            self.round = None;
        }
    }

    /// Hands a batch's result to its publishes, and adapts to the failure
    /// (counted with [`failed`](Self::failed) already when `counted`).
    pub(super) fn settle(&mut self, sent: Sent, result: Result<i64, ProduceError>) {
        self.settle_counted(sent, result, false);
    }

    pub(super) fn settle_counted(
        &mut self,
        sent: Sent,
        result: Result<i64, ProduceError>,
        counted: bool,
    ) {
        let Sent {
            count,
            bytes,
            outcome,
            ..
        } = sent;
        match &result {
            Ok(_) => {
                self.producing
                    .counters
                    .records
                    .fetch_add(count as u64, Ordering::Relaxed);
            }
            Err(e) => {
                if !counted {
                    self.failed(e);
                }
                if e.kind() == ProduceErrorKind::MessageTooLarge && count > 1 {
                    // The batch, not necessarily each record, was too large:
                    // send batches of half its size; the publishes retry.
                    // Relative to the batch, so the batches in flight with it
                    // that fail alike halve the limit once, not each again.
                    self.queue.limit_batch_bytes(bytes / 2);
                    outcome.finish(Err(ProduceError::new(
                        ProduceErrorKind::Broker,
                        true,
                        format!("{e} (a batch of {count}; retrying in smaller batches)"),
                    )));
                    return;
                }
            }
        }
        outcome.finish(result);
    }

    /// The connection to the partition's leader, asking the cluster who
    /// leads it when that is not known.
    async fn leader(&mut self) -> Result<Arc<Connection>, ProduceError> {
        if let Some(c) = &self.leader
            && !c.is_broken()
        {
            return Ok(Arc::clone(c));
        }
        let (topic, partition) = (&self.queue.topic, self.queue.partition);
        let id = match self.leader_id {
            Some(id) => id,
            None => {
                let what = format!("finding the leader of {topic}/{partition}");
                let meta = self.producing.topic_metadata(topic, &what).await?;
                let p = meta
                    .as_ref()
                    .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
                    .ok_or_else(|| {
                        ProduceError::new(
                            ProduceErrorKind::UnknownTopic,
                            true,
                            format!("{what}: the cluster does not know the partition"),
                        )
                    })?;
                match (p.leader, p.error) {
                    (Some(id), _) => id,
                    (None, e) => {
                        return Err(ProduceError::from_code(
                            &what,
                            e.unwrap_or(kavari_wire::ResponseError::LeaderNotAvailable),
                            None,
                        ));
                    }
                }
            }
        };
        let conn = self.producing.cluster.broker(id).await.map_err(|e| {
            ProduceError::from_wire(
                &format!("connecting to the leader of {topic}/{partition}"),
                &e,
            )
        })?;
        if self.leader_id != Some(id) || self.round.is_none() {
            self.round = Some(self.producing.rounds.of(id));
        }
        self.leader_id = Some(id);
        self.leader = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

/// A produce request's answer to come: the batch's base offset or error.
pub(super) type Answer = Pin<Box<dyn Future<Output = Result<i64, ProduceError>> + Send>>;

/// A batch written and waiting for its answer.
type InFlight = Pin<Box<dyn Future<Output = (Sent, Result<i64, ProduceError>)> + Send>>;

/// What settling a sent batch needs.
pub(super) struct Sent {
    pub(super) count: usize,
    bytes: usize,
    outcome: Arc<Outcome>,
    /// When its first record came: `delivery_timeout` counts from here.
    pub(super) first_at: Instant,
}

/// The offset the broker gave the batch's first record, or its error.
fn base_offset(
    resp: &ProduceResponse,
    topic: &TopicName,
    partition: i32,
    what: &str,
) -> Result<i64, ProduceError> {
    let answer = resp
        .responses
        .iter()
        .filter(|t| t.name == *topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == partition)
        .ok_or_else(|| {
            ProduceError::new(
                ProduceErrorKind::Broker,
                true,
                format!("{what}: the answer does not name the partition"),
            )
        })?;
    if let Some(e) = answer.error_code.err() {
        // The broker's own timeout (replication took too long): the
        // leader may have written the batch.
        let maybe = matches!(
            e,
            kavari_wire::ResponseError::RequestTimedOut
                | kavari_wire::ResponseError::NetworkException
        );
        return Err(ProduceError::from_code(
            what,
            e,
            answer.error_message.as_ref().map(|m| m.as_str()),
        )
        .with_maybe_written(maybe));
    }
    Ok(answer.base_offset)
}
