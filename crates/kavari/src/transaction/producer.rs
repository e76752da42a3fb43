//! [`TransactionalProducer`]: a manager's transactional id, its producer id
//! and epoch, its sequence numbers, and one open transaction at a time
//! (`Open`, its [`Session`]), whose records go to their leaders as
//! transactional batches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kavari_wire::WireError;
use kavari_wire::backoff::Backoff;
use kavari_wire::cluster::Cluster;
use kavari_wire::produce::{PartitionBatch, Produce};
use kavari_wire::producer_id::ProducerIdentity;
use kavari_wire::record_batch::write::{RecordBatch, mark_transactional, stamp};
use kavari_wire::transaction::TransactionCoordinator;
use tokio::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Session, TransactionError, TransactionSettings, Transactions};
use crate::codec::EncodedMessage;
use crate::partitioner::RoundRobin;
use crate::publish::{Delivery, Offset, ProducerConfig};

/// A manager's transactional producer.
#[derive(Debug)]
pub(crate) struct TransactionalProducer(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    cluster: Arc<Cluster>,
    coordinator: TransactionCoordinator,
    config: ProducerConfig,
    round_robin: RoundRobin,
    /// Held for a whole transaction: one at a time.
    state: Arc<tokio::sync::Mutex<State>>,
}

/// What lasts from one transaction to the next.
#[derive(Debug, Default)]
struct State {
    /// `None` until the first transaction.
    identity: Option<ProducerIdentity>,
    /// The identity must be bumped before it writes again (a transaction
    /// ended without a clean EndTxn): asked with it as the current one, so
    /// a newer instance's id is never taken back.
    stale: bool,
    /// The next sequence number of each partition written under it.
    sequences: HashMap<(String, i32), i32>,
    /// Set for good once another instance fenced this one.
    fenced: Option<WireError>,
}

impl TransactionalProducer {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        settings: &TransactionSettings,
        config: ProducerConfig,
    ) -> Self {
        let coordinator = TransactionCoordinator::new(
            Arc::clone(&cluster),
            settings.transactional_id.clone(),
            settings.timeout,
            config.delivery_timeout,
        );
        Self(Arc::new(Shared {
            cluster,
            coordinator,
            config,
            round_robin: RoundRobin::default(),
            state: Arc::default(),
        }))
    }
}

impl Transactions for TransactionalProducer {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Session>, TransactionError>> {
        let shared = Arc::clone(&self.0);
        async move {
            let mut state = Arc::clone(&shared.state).lock_owned().await;
            if let Some(e) = &state.fenced {
                return Err(shared.fenced(e.clone()));
            }
            let identity = match state.identity {
                Some(identity) if !state.stale => identity,
                current => shared.bump(&mut state, current).await?,
            };
            let sequences = std::mem::take(&mut state.sequences);
            Ok(Box::new(Open {
                producer: shared,
                identity,
                turn: tokio::sync::Mutex::new(Some(state)),
                inner: tokio::sync::Mutex::new(Inner::new(sequences)),
            }) as Box<dyn Session>)
        }
        .boxed()
    }
}

impl Shared {
    fn fenced(&self, source: WireError) -> TransactionError {
        TransactionError::Fenced {
            transactional_id: self.coordinator.transactional_id().to_string(),
            source,
        }
    }

    /// Asks for the next epoch of the transactional id (a first one when
    /// `current` is `None`): the sequences start afresh.
    async fn bump(
        &self,
        state: &mut State,
        current: Option<ProducerIdentity>,
    ) -> Result<ProducerIdentity, TransactionError> {
        match self.coordinator.init(current).await {
            Ok(identity) => {
                tracing::debug!(transactional_id = %self.coordinator.transactional_id(), ?current, ?identity, "producer epoch taken");
                state.sequences.clear();
                state.identity = Some(identity);
                state.stale = false;
                Ok(identity)
            }
            Err(e) => {
                state.stale = true;
                Err(self.failed(state, e))
            }
        }
    }

    /// The error of `e`, remembering a fencing for good.
    fn failed(&self, state: &mut State, e: WireError) -> TransactionError {
        if e.is_fenced() {
            tracing::error!(transactional_id = %self.coordinator.transactional_id(), error = %e, "fenced: another producer with this transactional id took over; this one never writes again");
            state.fenced = Some(e.clone());
            return self.fenced(e);
        }
        TransactionError::Failed(e)
    }

    /// Ends the transaction of `identity` whose writes are `inner`:
    /// committed when asked and nothing failed, else aborted.
    async fn end(
        &self,
        state: &mut State,
        identity: ProducerIdentity,
        inner: Inner,
        commit: bool,
    ) -> Result<(), TransactionError> {
        state.sequences = inner.sequences;
        if let Some(broken) = inner.broken {
            // A batch failed (its answer may be lost, or the epoch went
            // stale, as when the transaction timed out): a new epoch aborts
            // the transaction and starts the sequences afresh.
            self.bump(state, Some(identity)).await?;
            return if commit {
                Err(self.failed(state, broken))
            } else {
                Ok(())
            };
        }
        if inner.added.is_empty() && inner.groups.is_empty() {
            // Nothing was written: nothing to end.
            return Ok(());
        }
        match self.coordinator.end(identity, commit).await {
            Ok(()) => Ok(()),
            // Fenced, or the coordinator aborted the transaction when it
            // timed out and bumped the epoch: asking for the id again with
            // this epoch tells which (KIP-588).
            Err(e) if e.is_fenced() => {
                self.bump(state, Some(identity)).await?;
                Err(TransactionError::Failed(e))
            }
            Err(e) => {
                // The transaction's outcome is the coordinator's now (it
                // aborts it at the latest when it times out); the next one
                // bumps the epoch first.
                state.stale = true;
                Err(self.failed(state, e))
            }
        }
    }
}

/// An open transaction.
#[derive(Debug)]
struct Open {
    producer: Arc<Shared>,
    identity: ProducerIdentity,
    /// The producer's turn, held until the transaction ends.
    turn: tokio::sync::Mutex<Option<tokio::sync::OwnedMutexGuard<State>>>,
    /// Held for each publish: a partition's batches go in sequence order.
    inner: tokio::sync::Mutex<Inner>,
}

/// A transaction dropped without its end (its task aborted): the next
/// transaction bumps the epoch first, which aborts this one, rather than
/// going on with it.
impl Drop for Open {
    fn drop(&mut self) {
        if let Some(state) = self.turn.get_mut().as_mut() {
            state.stale = true;
        }
    }
}

impl Session for Open {
    fn transactional_id(&self) -> &str {
        self.producer.coordinator.transactional_id()
    }

    fn publish(
        &self,
        messages: Vec<EncodedMessage>,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, TransactionError>> {
        self.publish_now(messages).boxed()
    }

    fn commit_offsets<'a>(
        &'a self,
        member: &'a kavari_group::GroupMember,
        group_id: &'a str,
        offsets: &'a std::collections::BTreeMap<
            kavari_group::TopicPartition,
            kavari_group::CommitOffset,
        >,
    ) -> BoxFuture<'a, Result<(), TransactionError>> {
        async move {
            let mut inner = self.inner.lock().await;
            if let Some(e) = &inner.broken {
                return Err(TransactionError::Failed(e.clone()));
            }
            let coordinator = &self.producer.coordinator;
            let mut committed = Ok(());
            if !inner.groups.contains(group_id) {
                committed = coordinator.add_offsets(self.identity, group_id).await;
                if committed.is_ok() {
                    inner.groups.insert(group_id.to_string());
                }
            }
            if committed.is_ok() {
                committed = member
                    .commit_in_transaction(coordinator.transactional_id(), self.identity, offsets)
                    .await
                    .map_err(|e| match e {
                        kavari_group::GroupError::Wire(w) => w,
                        other => WireError::Malformed {
                            what: "TxnOffsetCommit",
                            detail: other.to_string(),
                        },
                    });
            }
            committed.map_err(|e| {
                inner.broken = Some(e.clone());
                TransactionError::Failed(e)
            })
        }
        .boxed()
    }

    fn end(&self, commit: bool) -> BoxFuture<'_, Result<(), TransactionError>> {
        async move {
            // A handle kept past the end publishes nothing more.
            let inner = std::mem::replace(&mut *self.inner.lock().await, Inner::ended());
            let Some(mut state) = self.turn.lock().await.take() else {
                return Ok(());
            };
            self.producer
                .end(&mut state, self.identity, inner, commit)
                .await
        }
        .boxed()
    }
}

impl Inner {
    fn new(sequences: HashMap<(String, i32), i32>) -> Self {
        Self {
            added: BTreeSet::new(),
            groups: BTreeSet::new(),
            sequences,
            metadata: HashMap::new(),
            broken: None,
        }
    }

    /// After the transaction's end.
    fn ended() -> Self {
        Self {
            broken: Some(WireError::Malformed {
                what: "transaction",
                detail: "publish after the transaction's body returned".into(),
            }),
            ..Self::new(HashMap::new())
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// The partitions added to the transaction.
    added: BTreeSet<(String, i32)>,
    /// The consumer groups whose offsets it commits.
    groups: BTreeSet<String>,
    sequences: HashMap<(String, i32), i32>,
    /// Per topic: partition count and leaders, as last looked up.
    metadata: HashMap<String, Vec<Option<i32>>>,
    /// A publish failed: the transaction can only abort.
    broken: Option<WireError>,
}

impl Open {
    fn transactional_id(&self) -> &str {
        self.producer.coordinator.transactional_id()
    }

    /// Writes `messages` in the transaction: one batch per partition,
    /// partitions added to the transaction first. The deliveries are in
    /// the order of `messages`.
    async fn publish_now(
        &self,
        messages: Vec<EncodedMessage>,
    ) -> Result<Vec<Delivery>, TransactionError> {
        let mut inner = self.inner.lock().await;
        if let Some(e) = &inner.broken {
            return Err(TransactionError::Failed(e.clone()));
        }
        match self.write(&mut inner, &messages).await {
            Ok(deliveries) => Ok(deliveries),
            Err(e) => {
                // Fenced or timed out: the end of the transaction tells.
                inner.broken = Some(e.clone());
                Err(TransactionError::Failed(e))
            }
        }
    }

    async fn write(
        &self,
        inner: &mut Inner,
        messages: &[EncodedMessage],
    ) -> Result<Vec<Delivery>, WireError> {
        let producer = &self.producer;
        let config = &producer.config;
        // Each message's partition.
        let mut placed: Vec<(String, i32)> = Vec::with_capacity(messages.len());
        for m in messages {
            config
                .check_size(m.value.len(), true)
                .map_err(|e| WireError::Malformed {
                    what: "record",
                    detail: e.to_string(),
                })?;
            let topic = m.topic.to_string();
            let leaders = self.leaders(inner, &topic, false).await?;
            let count = u32::try_from(leaders.len()).unwrap_or(u32::MAX).max(1);
            let partition =
                config
                    .partitioner
                    .choose(m.key.as_deref(), count, &producer.round_robin);
            placed.push((topic, partition));
        }
        let mut partitions = placed.clone();
        partitions.sort();
        partitions.dedup();
        let new: Vec<(&str, i32)> = partitions
            .iter()
            .filter(|tp| !inner.added.contains(*tp))
            .map(|(t, p)| (t.as_str(), *p))
            .collect();
        if !new.is_empty() {
            producer
                .coordinator
                .add_partitions(self.identity, &new)
                .await?;
            inner.added.extend(partitions.iter().cloned());
        }
        let mut offsets: Vec<Offset> = vec![Offset::Duplicate; messages.len()];
        for tp in &partitions {
            // The partition's messages in order, in batches of at most
            // `max_batch_bytes` (a record larger goes alone).
            let mine: Vec<usize> = (0..messages.len()).filter(|&i| placed[i] == *tp).collect();
            let mut start = 0;
            while start < mine.len() {
                let mut end = start + 1;
                let mut bytes = messages[mine[start]].value.len();
                while end < mine.len() {
                    bytes += messages[mine[end]].value.len();
                    if bytes > config.max_batch_bytes {
                        break;
                    }
                    end += 1;
                }
                let chunk = &mine[start..end];
                let first = self
                    .send(inner, tp, chunk.iter().map(|&i| &messages[i]))
                    .await?;
                for (n, &i) in chunk.iter().enumerate() {
                    offsets[i] = match first {
                        Offset::At(o) => Offset::At(o + n as i64),
                        Offset::Duplicate => Offset::Duplicate,
                    };
                }
                start = end;
            }
        }
        Ok(messages
            .iter()
            .zip(placed)
            .zip(offsets)
            .map(|((m, (_, partition)), offset)| Delivery {
                topic: m.topic.clone(),
                partition,
                offset,
            })
            .collect())
    }

    /// Sends `records` to `tp` as one transactional batch under its next
    /// sequence, retrying what may pass within the delivery timeout;
    /// returns the offset of the first record.
    async fn send<'m>(
        &self,
        inner: &mut Inner,
        tp: &(String, i32),
        records: impl Iterator<Item = &'m EncodedMessage>,
    ) -> Result<Offset, WireError> {
        let producer = &self.producer;
        let config = &producer.config;
        let (topic, partition) = (tp.0.as_str(), tp.1);
        let sequence = inner.sequences.get(tp).copied().unwrap_or(0);
        let mut batch = RecordBatch::with_capacity(4096);
        let now = chrono::Utc::now().timestamp_millis();
        for m in records {
            batch.push(&m.record(), now);
        }
        let count = i32::try_from(batch.len()).unwrap_or(i32::MAX);
        let mut bytes = batch
            .finish(config.compression)
            .map_err(|e| WireError::Malformed {
                what: "record batch",
                detail: e.to_string(),
            })?;
        if !stamp(&mut bytes, self.identity.id, self.identity.epoch, sequence)
            || !mark_transactional(&mut bytes)
        {
            return Err(WireError::Malformed {
                what: "record batch",
                detail: "shorter than a batch header".into(),
            });
        }
        let request = Produce {
            transactional_id: Some(self.transactional_id().to_string()),
            acks: -1,
            timeout_ms: i32::try_from(producer.cluster.request_timeout().as_millis())
                .unwrap_or(i32::MAX),
            batches: vec![PartitionBatch {
                topic: kavari_wire::topic_name(topic),
                partition,
                records: bytes.into(),
            }],
        };
        let deadline = Instant::now() + config.delivery_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let leaders = self.leaders(inner, topic, false).await?;
            let sent = match leaders.get(usize::try_from(partition).unwrap_or(usize::MAX)) {
                Some(Some(leader)) => match producer.cluster.broker(*leader).await {
                    Ok(conn) => match conn.send_produce(&request).await {
                        Ok(answer) => answer.await.and_then(|r| answer_of(&r, topic, partition)),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                _ => Err(WireError::broker(
                    "Produce",
                    ResponseError::LeaderNotAvailable,
                    None,
                )),
            };
            let error = match sent {
                Ok(offset) => {
                    inner
                        .sequences
                        .insert(tp.clone(), sequence.wrapping_add(count));
                    return Ok(offset);
                }
                Err(e) => e,
            };
            if !error.is_retriable() {
                return Err(error);
            }
            let wait = backoff.next();
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(topic, partition, error = %error, retry_in = ?wait, "transactional batch not written; retrying");
            tokio::time::sleep(wait).await;
            if error
                .response_error()
                .is_none_or(kavari_wire::needs_metadata_refresh)
            {
                self.leaders(inner, topic, true).await?;
            }
        }
    }

    /// The leader of each partition of `topic` (looked up again when
    /// `refresh`).
    async fn leaders(
        &self,
        inner: &mut Inner,
        topic: &str,
        refresh: bool,
    ) -> Result<Vec<Option<i32>>, WireError> {
        if !refresh && let Some(known) = inner.metadata.get(topic) {
            return Ok(known.clone());
        }
        let meta = self.producer.cluster.topic(topic).await?.ok_or_else(|| {
            WireError::broker(
                "Metadata",
                ResponseError::UnknownTopicOrPartition,
                Some(format!("topic {topic} does not exist")),
            )
        })?;
        let leaders: Vec<Option<i32>> = meta.partitions.iter().map(|p| p.leader).collect();
        inner.metadata.insert(topic.to_string(), leaders.clone());
        Ok(leaders)
    }
}

/// The offset a Produce answer gives the batch, or its error.
fn answer_of(
    resp: &kafka_protocol::messages::ProduceResponse,
    topic: &str,
    partition: i32,
) -> Result<Offset, WireError> {
    let p = resp
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == partition)
        .ok_or_else(|| WireError::Malformed {
            what: "Produce response",
            detail: format!("no answer for {topic}/{partition}"),
        })?;
    match p.error_code.err() {
        None => Ok(Offset::At(p.base_offset)),
        Some(ResponseError::DuplicateSequenceNumber) => Ok(Offset::Duplicate),
        Some(e) => Err(WireError::broker(
            "Produce",
            e,
            p.error_message.as_ref().map(|m| m.as_str().to_string()),
        )),
    }
}
