//! Transactional publishing: [`Kavari::transaction`](crate::Kavari::transaction)
//! runs a body whose publishes land together (committed when it returns
//! `Ok`) or not at all (aborted on `Err` or a panic), for read_committed
//! readers. One transaction runs at a time per manager; its transactional
//! id fences every older instance of the same id.

mod producer;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kavari_wire::WireError;

pub(crate) use producer::TransactionalProducer;

use crate::codec::{self, EncodeError, EncodedMessage};
use crate::handler_error::HandlerError;
use crate::message::KafkaMessage;
use crate::publish::Delivery;
use crate::topic_names::TopicNames;

/// A transaction's settings: its id, and how long the coordinator lets it
/// stay open before aborting it (Kafka's `transaction.timeout.ms`).
#[derive(Debug, Clone)]
pub(crate) struct TransactionSettings {
    pub(crate) transactional_id: String,
    pub(crate) timeout: Duration,
}

/// Why a transaction did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The builder set no `transactional_id`.
    #[error("transactions need a transactional_id on the builder (Kafka's transactional.id)")]
    NotTransactional,
    /// The body returned this error (or a publish in it failed): the
    /// transaction was aborted, and nothing it published is visible to
    /// read_committed readers.
    #[error("the transaction was aborted: {cause:#}")]
    Aborted {
        /// What the body returned.
        cause: HandlerError,
    },
    /// Another instance with this transactional id started: this manager's
    /// transactions are refused from now on (a zombie never writes again).
    /// Build a new manager to take the id back.
    #[error(
        "fenced: another producer with transactional id {transactional_id:?} took over ({source})"
    )]
    Fenced {
        /// The transactional id.
        transactional_id: String,
        /// The broker's refusal.
        #[source]
        source: WireError,
    },
    /// A message did not encode.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The cluster did not answer as needed (coordinator or leader
    /// unreachable past the delivery timeout, a refusal): nothing of the
    /// transaction is visible to read_committed readers.
    #[error("the transaction failed and was not committed: {0}")]
    Failed(#[source] WireError),
}

/// What runs a manager's transactions: Kafka's transactional producer, or
/// the test kit's broker.
pub(crate) trait Transactions: Send + Sync {
    /// Opens a transaction; the session holds the manager's turn (one
    /// transaction at a time) until it ends.
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Session>, TransactionError>>;
}

/// An open transaction.
pub(crate) trait Session: Send + Sync {
    fn transactional_id(&self) -> &str;

    /// Writes `messages` in the transaction; the deliveries in order.
    fn publish(
        &self,
        messages: Vec<EncodedMessage>,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, TransactionError>>;

    /// Commits `offsets` of the consumer group that `member` belongs to in
    /// the transaction (AddOffsetsToTxn, then TxnOffsetCommit under the
    /// member's generation): they land when it commits.
    fn commit_offsets<'a>(
        &'a self,
        member: &'a kavari_group::GroupMember,
        group_id: &'a str,
        offsets: &'a std::collections::BTreeMap<
            kavari_group::TopicPartition,
            kavari_group::CommitOffset,
        >,
    ) -> BoxFuture<'a, Result<(), TransactionError>>;

    /// Ends the transaction: committed when `commit` and nothing it wrote
    /// failed, else aborted. `Err` when a commit was asked and did not
    /// happen, or when the transactional id was fenced. Publishes after
    /// the end fail.
    fn end(&self, commit: bool) -> BoxFuture<'_, Result<(), TransactionError>>;
}

/// Runs `body` in a transaction of `transactions`: commits when it returns
/// `Ok`, aborts when it returns `Err` or panics (the panic goes on after
/// the abort).
pub(crate) async fn run<T, F, Fut>(
    transactions: &dyn Transactions,
    names: &TopicNames,
    body: F,
) -> Result<T, TransactionError>
where
    F: FnOnce(Transaction) -> Fut,
    Fut: Future<Output = Result<T, HandlerError>>,
{
    use futures::FutureExt;

    let session: Arc<dyn Session> = Arc::from(transactions.begin().await?);
    let handle = Transaction {
        session: Arc::clone(&session),
        names: names.clone(),
    };
    let outcome = std::panic::AssertUnwindSafe(body(handle))
        .catch_unwind()
        .await;
    let ended = session.end(matches!(outcome, Ok(Ok(_)))).await;
    let outcome = match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(outcome) => outcome,
    };
    ended?;
    outcome.map_err(|cause| TransactionError::Aborted { cause })
}

/// The handle of an open transaction, handed to the body of
/// [`Kavari::transaction`](crate::Kavari::transaction). Cheap to clone;
/// publishes through it are sent one after another.
#[derive(Clone)]
pub struct Transaction {
    session: Arc<dyn Session>,
    names: TopicNames,
}

impl Transaction {
    pub(crate) fn new(session: Box<dyn Session>, names: TopicNames) -> Self {
        Self {
            session: Arc::from(session),
            names,
        }
    }

    pub(crate) fn session(&self) -> &dyn Session {
        self.session.as_ref()
    }
}

/// The same transaction.
impl PartialEq for Transaction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.session, &other.session)
    }
}

impl Eq for Transaction {}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("transactional_id", &self.session.transactional_id())
            .finish()
    }
}

impl Transaction {
    /// Publishes `msg` in the transaction, as [`Kavari::publish`](crate::Kavari::publish)
    /// writes it (topic mapping, key, headers, codec, partitioner), and
    /// returns once the partition's leader has it. It is visible to
    /// read_committed readers when the transaction commits.
    pub async fn publish<M: KafkaMessage>(&self, msg: &M) -> Result<Delivery, TransactionError> {
        let mut delivered = self.publish_batch(std::slice::from_ref(msg)).await?;
        delivered.pop().ok_or_else(|| {
            TransactionError::Failed(WireError::Malformed {
                what: "transaction",
                detail: "no delivery for the record".into(),
            })
        })
    }

    /// Publishes `msgs` in the transaction, one batch per partition (a
    /// round trip per partition, not per message), and returns their
    /// deliveries in order.
    pub async fn publish_batch<M: KafkaMessage>(
        &self,
        msgs: &[M],
    ) -> Result<Vec<Delivery>, TransactionError> {
        let topic = self.names.topic_of::<M>();
        let messages = msgs
            .iter()
            .map(|m| {
                codec::encode(m).map(|mut e| {
                    e.topic = topic.clone();
                    e
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.session.publish(messages).await
    }
}
