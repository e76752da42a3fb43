//! A share session with one broker: ShareFetch for the records of the
//! partitions it leads, acquired for this member, handed to the handlers
//! side by side (up to `max_in_flight`), and their acknowledgements
//! carried on the next ShareFetch; ShareAcknowledge closes the session,
//! which releases whatever is still acquired.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatch,
};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::{GroupId, ShareAcknowledgeRequest, ShareFetchRequest};
use kafka_protocol::protocol::StrBytes;
use kavari_group::TopicPartition;
use kavari_wire::WireError;
use kavari_wire::backoff::Backoff;
use kavari_wire::cluster::Cluster;
use tokio::sync::{Semaphore, mpsc, watch};
use uuid::Uuid;

use super::acks::{Ack, Batch, Pending, gaps};
use super::deliver::Deliverer;
use super::stats::ShareCounts;

/// How much a partition's answer may hold.
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;

/// One broker's share session for a member.
pub(crate) struct Session {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) broker: i32,
    pub(crate) member_id: String,
    pub(crate) deliverer: Arc<Deliverer>,
    /// The partitions of the member's assignment this broker leads.
    pub(crate) partitions: watch::Receiver<BTreeMap<TopicPartition, Uuid>>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) counts: Arc<ShareCounts>,
    pub(crate) max_in_flight: usize,
    /// Told when a partition's leader moved: the assignment is placed
    /// again.
    pub(crate) moved: mpsc::UnboundedSender<()>,
}

/// A handled record's acknowledgement, from its handler's task.
type Done = (TopicPartition, i64, Ack);

impl Session {
    pub(crate) async fn run(mut self) {
        let mut epoch = 0;
        let mut in_session: BTreeMap<TopicPartition, Uuid> = BTreeMap::new();
        let mut pending = Pending::default();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let room = Arc::new(Semaphore::new(self.max_in_flight));
        let mut in_flight = 0usize;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            while let Ok(done) = done_rx.try_recv() {
                in_flight -= 1;
                self.finished(&mut pending, done);
            }
            if *self.stop.borrow() {
                break;
            }
            let wanted = self.partitions.borrow().clone();
            if wanted.is_empty() && in_session.is_empty() && in_flight == 0 && pending.is_empty() {
                // Nothing here: wait for partitions or the stop.
                tokio::select! {
                    _ = self.partitions.changed() => {}
                    _ = self.stop.changed() => {}
                }
                continue;
            }
            let free = self.max_in_flight.saturating_sub(in_flight);
            if free == 0 && (pending.is_empty() || epoch == 0) {
                // Full: wait for a handler to finish.
                tokio::select! {
                    Some(done) = done_rx.recv() => {
                        in_flight -= 1;
                        self.finished(&mut pending, done);
                    }
                    _ = self.stop.changed() => {}
                }
                continue;
            }
            // A request that opens a session carries no acknowledgements:
            // they wait for the next.
            let acks = if epoch == 0 {
                BTreeMap::new()
            } else {
                pending.take()
            };
            let ids: BTreeMap<TopicPartition, Uuid> = in_session
                .iter()
                .chain(wanted.iter())
                .map(|(tp, id)| (tp.clone(), *id))
                .collect();
            let req = fetch_request(
                &self.deliverer.group,
                &self.member_id,
                epoch,
                &wanted,
                &in_session,
                &ids,
                &acks,
                free,
                // Acknowledgements wait no longer than this for records.
                if in_flight > 0 { 50 } else { 500 },
            );
            let answer = match self.cluster.broker(self.broker).await {
                Ok(conn) => conn.send(&req).await,
                Err(e) => Err(e),
            };
            let resp = match answer {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::warn!(broker = self.broker, error = %e, "share fetch failed; trying again");
                    requeue(&mut pending, acks);
                    epoch = 0;
                    in_session.clear();
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            match resp.error_code.err() {
                None => {}
                Some(
                    e @ (ResponseError::ShareSessionNotFound
                    | ResponseError::InvalidShareSessionEpoch),
                ) => {
                    tracing::info!(broker = self.broker, error = ?e, "share session gone; opening a new one");
                    requeue(&mut pending, acks);
                    epoch = 0;
                    in_session.clear();
                    continue;
                }
                Some(e) => {
                    tracing::warn!(broker = self.broker, error = ?e, message = ?resp.error_message, "share fetch refused; trying again");
                    requeue(&mut pending, acks);
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            }
            backoff.reset();
            tracing::trace!(broker = self.broker, epoch, acks = ?acks, "share fetch answered");
            epoch = if epoch == 0 { 1 } else { epoch + 1 };
            in_session = wanted;
            let names: BTreeMap<Uuid, String> =
                ids.iter().map(|(tp, id)| (*id, tp.topic.clone())).collect();
            for topic in resp.responses {
                let Some(name) = names.get(&topic.topic_id) else {
                    continue;
                };
                for p in topic.partitions {
                    let tp = TopicPartition::new(name.clone(), p.partition_index);
                    if let Some(e) = p.acknowledge_error_code.err() {
                        tracing::warn!(partition = %tp, error = ?e, "acknowledgements refused; those records are delivered again");
                    }
                    match p.error_code.err() {
                        None => {}
                        Some(
                            ResponseError::NotLeaderOrFollower
                            | ResponseError::UnknownTopicOrPartition
                            | ResponseError::FencedLeaderEpoch,
                        ) => {
                            let _ = self.moved.send(());
                            continue;
                        }
                        Some(e) => {
                            tracing::warn!(partition = %tp, error = ?e, "share fetch of a partition refused");
                            continue;
                        }
                    }
                    let acquired: Vec<(i64, i64, u16)> = p
                        .acquired_records
                        .iter()
                        .map(|a| {
                            (
                                a.first_offset,
                                a.last_offset,
                                u16::try_from(a.delivery_count).unwrap_or(u16::MAX),
                            )
                        })
                        .collect();
                    if acquired.is_empty() {
                        continue;
                    }
                    let records = match p.records {
                        Some(bytes) => self.records(&tp, bytes),
                        None => Vec::new(),
                    };
                    let seen: BTreeSet<i64> = records.iter().map(|r| r.offset).collect();
                    let ranges: Vec<(i64, i64)> = acquired.iter().map(|a| (a.0, a.1)).collect();
                    let missing = gaps(&ranges, &seen);
                    if !missing.is_empty() {
                        tracing::debug!(partition = %tp, ?ranges, gaps = missing.len(), "acquired offsets without a record");
                    }
                    for gap in missing {
                        pending.add(tp.clone(), gap, Ack::Gap);
                    }
                    for record in records {
                        let Some(delivery) = acquired
                            .iter()
                            .find(|a| a.0 <= record.offset && record.offset <= a.1)
                            .map(|a| a.2)
                        else {
                            continue;
                        };
                        self.counts.acquired();
                        in_flight += 1;
                        let (deliverer, done, room, stop, tp) = (
                            Arc::clone(&self.deliverer),
                            done_tx.clone(),
                            Arc::clone(&room),
                            self.stop.clone(),
                            tp.clone(),
                        );
                        tokio::spawn(async move {
                            let _permit = room.acquire_owned().await;
                            // Acquired but not begun when the member stops:
                            // given back for another member at once.
                            let ack = if *stop.borrow() {
                                Ack::Release
                            } else {
                                deliverer
                                    .deliver(&tp.topic, tp.partition, &record, delivery, &stop)
                                    .await
                            };
                            let _ = done.send((tp, record.offset, ack));
                        });
                    }
                }
            }
        }
        // Stopping: the handlers running finish, then the session closes
        // with their acknowledgements; what is left acquired is released.
        while in_flight > 0 {
            match done_rx.recv().await {
                Some(done) => {
                    in_flight -= 1;
                    self.finished(&mut pending, done);
                }
                None => break,
            }
        }
        if epoch > 0 {
            self.close(&in_session, pending.take()).await;
        }
    }

    fn finished(&self, pending: &mut Pending, (tp, offset, ack): Done) {
        self.counts.finished(ack);
        pending.add(tp, offset, ack);
    }

    /// The records of a partition's answer, control batches left out.
    fn records(
        &self,
        tp: &TopicPartition,
        bytes: bytes::Bytes,
    ) -> Vec<kavari_wire::record_batch::read::FetchedRecord> {
        let mut out = Vec::new();
        for batch in kavari_wire::record_batch::read::batches(bytes) {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(partition = %tp, error = %e, "a batch that cannot be read; its records are delivered again");
                    break;
                }
            };
            if batch.is_control {
                continue;
            }
            let max = usize::try_from(PARTITION_MAX_BYTES).unwrap_or(usize::MAX) * 64;
            match kavari_wire::fetch::batch_records(&batch, 0, max) {
                Ok(records) => out.extend(records.filter_map(Result::ok)),
                Err(e) => {
                    tracing::warn!(partition = %tp, error = %e, "a batch that cannot be read; its records are delivered again");
                }
            }
        }
        out
    }

    /// Closes the session (ShareAcknowledge at epoch -1) with the last
    /// acknowledgements; the broker releases every record still acquired.
    async fn close(
        &self,
        in_session: &BTreeMap<TopicPartition, Uuid>,
        acks: BTreeMap<TopicPartition, Vec<Batch>>,
    ) {
        let mut topics: BTreeMap<Uuid, Vec<AcknowledgePartition>> = BTreeMap::new();
        for (tp, batches) in &acks {
            let Some(id) = in_session.get(tp) else {
                continue;
            };
            topics.entry(*id).or_default().push(
                AcknowledgePartition::default()
                    .with_partition_index(tp.partition)
                    .with_acknowledgement_batches(
                        batches
                            .iter()
                            .map(|b| {
                                AckBatch::default()
                                    .with_first_offset(b.first)
                                    .with_last_offset(b.last)
                                    .with_acknowledge_types(vec![b.ack as i8])
                            })
                            .collect(),
                    ),
            );
        }
        let req = ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(StrBytes::from_string(
                self.deliverer.group.clone(),
            ))))
            .with_member_id(Some(StrBytes::from_string(self.member_id.clone())))
            .with_share_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(id, partitions)| {
                        AcknowledgeTopic::default()
                            .with_topic_id(id)
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let closed: Result<_, WireError> = match self.cluster.broker(self.broker).await {
            Ok(conn) => conn.send(&req).await,
            Err(e) => Err(e),
        };
        match closed {
            Ok(resp) if resp.error_code == 0 => {
                tracing::debug!(
                    broker = self.broker,
                    "share session closed; what was left acquired is released"
                );
            }
            Ok(resp) => {
                tracing::warn!(broker = self.broker, error = ?resp.error_code.err(), "closing the share session refused; the lock timeout releases what is left");
            }
            Err(e) => {
                tracing::warn!(broker = self.broker, error = %e, "closing the share session failed; the lock timeout releases what is left");
            }
        }
    }
}

/// Acknowledgements whose request failed, kept for the next one.
fn requeue(pending: &mut Pending, acks: BTreeMap<TopicPartition, Vec<Batch>>) {
    for (tp, batches) in acks {
        for b in batches {
            for offset in b.first..=b.last {
                pending.add(tp.clone(), offset, b.ack);
            }
        }
    }
}

/// A ShareFetch at `epoch`: the partitions `wanted` (each with its
/// acknowledgements), those with acknowledgements still, and the session's
/// partitions no longer wanted forgotten.
#[allow(clippy::too_many_arguments)]
fn fetch_request(
    group: &str,
    member_id: &str,
    epoch: i32,
    wanted: &BTreeMap<TopicPartition, Uuid>,
    in_session: &BTreeMap<TopicPartition, Uuid>,
    ids: &BTreeMap<TopicPartition, Uuid>,
    acks: &BTreeMap<TopicPartition, Vec<Batch>>,
    max_records: usize,
    max_wait_ms: i32,
) -> ShareFetchRequest {
    let mut topics: BTreeMap<Uuid, Vec<FetchPartition>> = BTreeMap::new();
    let listed: BTreeSet<&TopicPartition> = wanted.keys().chain(acks.keys()).collect();
    for tp in listed {
        let Some(id) = ids.get(tp) else { continue };
        let batches = acks.get(tp).map(Vec::as_slice).unwrap_or_default();
        topics.entry(*id).or_default().push(
            FetchPartition::default()
                .with_partition_index(tp.partition)
                .with_partition_max_bytes(PARTITION_MAX_BYTES)
                .with_acknowledgement_batches(
                    batches
                        .iter()
                        .map(|b| {
                            AcknowledgementBatch::default()
                                .with_first_offset(b.first)
                                .with_last_offset(b.last)
                                .with_acknowledge_types(vec![b.ack as i8])
                        })
                        .collect(),
                ),
        );
    }
    let mut forgotten: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for (tp, id) in in_session {
        if !wanted.contains_key(tp) && !acks.contains_key(tp) {
            forgotten.entry(*id).or_default().push(tp.partition);
        }
    }
    let max_records = i32::try_from(max_records).unwrap_or(i32::MAX).max(1);
    ShareFetchRequest::default()
        .with_group_id(Some(GroupId(StrBytes::from_string(group.to_string()))))
        .with_member_id(Some(StrBytes::from_string(member_id.to_string())))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 * 1024 * 1024)
        .with_max_records(max_records)
        .with_batch_size(max_records)
        .with_topics(
            topics
                .into_iter()
                .map(|(id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_forgotten_topics_data(
            forgotten
                .into_iter()
                .map(|(id, partitions)| {
                    ForgottenTopic::default()
                        .with_topic_id(id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}
