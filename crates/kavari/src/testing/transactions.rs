//! Transactions on the test kit's broker: a transaction's records are
//! appended (and delivered to the broker's consumers) when it commits, and
//! dropped when it aborts; a newer manager of the broker with the same
//! transactional id fences the older.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kavari_wire::WireError;

use super::consumer::Destination;
use crate::codec::EncodedMessage;
use crate::publish::{Delivery, Offset};
use crate::transaction::{Session, TransactionError, Transactions};

/// The epoch of each transactional id on a broker: the newest manager's.
pub(crate) type Epochs = Arc<Mutex<HashMap<String, u64>>>;

/// A manager's transactions on the broker.
pub(crate) struct MemoryTransactions {
    destination: Arc<Destination>,
    id: String,
    epochs: Epochs,
    /// This manager's epoch of the id: it writes while it is the newest.
    epoch: u64,
    /// One transaction at a time.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl MemoryTransactions {
    /// Takes `id` on the broker: an older manager with it is fenced.
    pub(crate) fn new(destination: Arc<Destination>, id: String, epochs: Epochs) -> Self {
        let epoch = {
            let mut all = epochs.lock().unwrap_or_else(|p| p.into_inner());
            let epoch = all.get(&id).map_or(0, |e| e + 1);
            all.insert(id.clone(), epoch);
            epoch
        };
        Self {
            destination,
            id,
            epochs,
            epoch,
            turn: Arc::default(),
        }
    }
}

/// Whether a newer manager took `id`.
fn fenced(epochs: &Epochs, id: &str, epoch: u64) -> Result<(), TransactionError> {
    let newest = epochs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .copied();
    if newest.is_some_and(|n| n > epoch) {
        return Err(TransactionError::Fenced {
            transactional_id: id.to_string(),
            source: WireError::broker(
                "EndTxn",
                ResponseError::ProducerFenced,
                Some("a newer manager of this broker took the transactional id".into()),
            ),
        });
    }
    Ok(())
}

impl Transactions for MemoryTransactions {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Session>, TransactionError>> {
        async move {
            let turn = Arc::clone(&self.turn).lock_owned().await;
            fenced(&self.epochs, &self.id, self.epoch)?;
            Ok(Box::new(MemorySession {
                destination: Arc::clone(&self.destination),
                id: self.id.clone(),
                epochs: Arc::clone(&self.epochs),
                epoch: self.epoch,
                turn: Mutex::new(Some(turn)),
                pending: Mutex::new(Some(Vec::new())),
            }) as Box<dyn Session>)
        }
        .boxed()
    }
}

/// An open transaction: its records, held until it ends.
struct MemorySession {
    destination: Arc<Destination>,
    id: String,
    epochs: Epochs,
    epoch: u64,
    turn: Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>,
    /// `None` once it ended.
    pending: Mutex<Option<Vec<(EncodedMessage, i32)>>>,
}

impl Session for MemorySession {
    fn transactional_id(&self) -> &str {
        &self.id
    }

    /// The deliveries say where the records land if nothing else is
    /// written to their partitions before the commit.
    fn publish(
        &self,
        messages: Vec<EncodedMessage>,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, TransactionError>> {
        let published = fenced(&self.epochs, &self.id, self.epoch).and_then(|()| {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let pending = pending.as_mut().ok_or_else(|| {
                TransactionError::Failed(WireError::Malformed {
                    what: "transaction",
                    detail: "publish after the transaction's body returned".into(),
                })
            })?;
            let log = &self.destination.log;
            Ok(messages
                .into_iter()
                .map(|m| {
                    let partition = self.destination.place(&m);
                    let tp = kavari_group::TopicPartition::new(m.topic.as_ref(), partition);
                    let before = pending
                        .iter()
                        .filter(|(p, at)| *at == partition && p.topic == m.topic)
                        .count();
                    let delivery = Delivery {
                        topic: m.topic.clone(),
                        partition,
                        offset: Offset::At(log.end(&tp) + before as i64),
                    };
                    pending.push((m, partition));
                    delivery
                })
                .collect())
        });
        futures::future::ready(published).boxed()
    }

    fn commit_offsets<'a>(
        &'a self,
        _member: &'a kavari_group::GroupMember,
        _group_id: &'a str,
        _offsets: &'a std::collections::BTreeMap<
            kavari_group::TopicPartition,
            kavari_group::CommitOffset,
        >,
    ) -> BoxFuture<'a, Result<(), TransactionError>> {
        // The test kit's consumers have no group members to commit for.
        futures::future::ready(Err(TransactionError::Failed(WireError::Malformed {
            what: "transaction",
            detail: "the test kit commits no consumer offsets in transactions".into(),
        })))
        .boxed()
    }

    fn end(&self, commit: bool) -> BoxFuture<'_, Result<(), TransactionError>> {
        async move {
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default();
            let ended = if commit {
                match fenced(&self.epochs, &self.id, self.epoch) {
                    Ok(()) => {
                        for (message, partition) in pending {
                            self.destination.append_to(message, partition).await;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            } else {
                Ok(())
            };
            // The next transaction's turn.
            drop(self.turn.lock().unwrap_or_else(|p| p.into_inner()).take());
            ended
        }
        .boxed()
    }
}
