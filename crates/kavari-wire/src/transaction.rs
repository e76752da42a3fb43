//! Transactions (KIP-98), as a transactional producer speaks them to its
//! transaction coordinator: the producer id and epoch of a transactional id
//! (asking again bumps the epoch, which fences an older instance), the
//! partitions and consumer group a transaction writes to, and its end,
//! committed or aborted. The batches themselves go to the partitions'
//! leaders as Produce requests carrying the transactional id.
//!
//! Each call finds the coordinator again when it moved and retries what
//! the protocol says may pass (a coordinator loading, a transaction still
//! ending) until its deadline; a fenced producer gets
//! [`WireError::is_fenced`] at once and must never write again.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use crate::WireError;
use crate::backoff::Backoff;
use crate::cluster::Cluster;
use crate::connection::{Connection, Request};
use crate::coordinator::{CoordinatorOf, coordinator_address};
use crate::producer_id::ProducerIdentity;
use crate::topic_name;

/// A transactional id and its coordinator.
#[derive(Debug)]
pub struct TransactionCoordinator {
    cluster: Arc<Cluster>,
    id: String,
    /// `transaction.timeout.ms`: the coordinator aborts a transaction left
    /// open longer.
    timeout: Duration,
    /// How long one call retries before it fails.
    retry_for: Duration,
    coordinator: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl TransactionCoordinator {
    /// The coordinator of `transactional_id`, found on first use; the
    /// coordinator aborts a transaction open longer than `timeout`, and
    /// each call retries for at most `retry_for`.
    pub fn new(
        cluster: Arc<Cluster>,
        transactional_id: impl Into<String>,
        timeout: Duration,
        retry_for: Duration,
    ) -> Self {
        Self {
            cluster,
            id: transactional_id.into(),
            timeout,
            retry_for,
            coordinator: tokio::sync::Mutex::new(None),
        }
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.id
    }

    /// The producer id and epoch of the transactional id: a new epoch,
    /// which fences every older instance (their writes and transaction
    /// ends are refused from now on) and aborts a transaction one left
    /// open. An instance that has an identity passes it as `current`
    /// (KIP-360, KIP-588): it gets the next epoch only while it still
    /// owns the id (after its own transaction timed out, say), and is
    /// refused as fenced once a newer instance took the id over.
    pub async fn init(
        &self,
        current: Option<ProducerIdentity>,
    ) -> Result<ProducerIdentity, WireError> {
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        let mut req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(self.id_str())))
            .with_transaction_timeout_ms(timeout_ms);
        if let Some(c) = current {
            req = req
                .with_producer_id(ProducerId(c.id))
                .with_producer_epoch(c.epoch);
        }
        self.call("InitProducerId", &req, |r| {
            r.error_code.err().map_or(
                Ok(ProducerIdentity {
                    id: r.producer_id.0,
                    epoch: r.producer_epoch,
                }),
                Err,
            )
        })
        .await
    }

    /// Adds `partitions` (topic, partition) to the open transaction of
    /// `producer`: done before the transaction's first batch to each.
    pub async fn add_partitions(
        &self,
        producer: ProducerIdentity,
        partitions: &[(&str, i32)],
    ) -> Result<(), WireError> {
        let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
        for &(topic, partition) in partitions {
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    AddPartitionsToTxnTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(self.id_str()))
            .with_v3_and_below_producer_id(ProducerId(producer.id))
            .with_v3_and_below_producer_epoch(producer.epoch)
            .with_v3_and_below_topics(topics);
        self.call("AddPartitionsToTxn", &req, |r| {
            // One failed partition leaves the others OPERATION_NOT_ATTEMPTED:
            // the failure is the code to act on.
            let codes = r
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .filter_map(|p| p.partition_error_code.err());
            let mut first = None;
            for code in codes {
                if code != ResponseError::OperationNotAttempted {
                    return Err(code);
                }
                first.get_or_insert(code);
            }
            first.map_or(Ok(()), Err)
        })
        .await
    }

    /// Adds `group_id`'s offsets to the open transaction of `producer`:
    /// done before its offsets are committed in the transaction
    /// (TxnOffsetCommit, to the group's coordinator).
    pub async fn add_offsets(
        &self,
        producer: ProducerIdentity,
        group_id: &str,
    ) -> Result<(), WireError> {
        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(self.id_str()))
            .with_producer_id(ProducerId(producer.id))
            .with_producer_epoch(producer.epoch)
            .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())));
        self.call("AddOffsetsToTxn", &req, |r| {
            r.error_code.err().map_or(Ok(()), Err)
        })
        .await
    }

    /// Ends the open transaction of `producer`: its writes become visible
    /// to read_committed readers at once (`commit`), or never. Every batch
    /// of the transaction must have been acknowledged first.
    pub async fn end(&self, producer: ProducerIdentity, commit: bool) -> Result<(), WireError> {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(self.id_str()))
            .with_producer_id(ProducerId(producer.id))
            .with_producer_epoch(producer.epoch)
            .with_committed(commit);
        self.call("EndTxn", &req, |r| r.error_code.err().map_or(Ok(()), Err))
            .await
    }

    fn id_str(&self) -> StrBytes {
        StrBytes::from_string(self.id.clone())
    }

    /// The coordinator's connection, found when none is known or the last
    /// one broke.
    async fn coordinator(&self) -> Result<Arc<Connection>, WireError> {
        let mut slot = self.coordinator.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_broken()
        {
            return Ok(Arc::clone(c));
        }
        let address =
            coordinator_address(&self.cluster, CoordinatorOf::Transaction, &self.id).await?;
        let conn = Arc::new(self.cluster.connect(&address).await?);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn forget_coordinator(&self) {
        *self.coordinator.lock().await = None;
    }

    /// Sends `req` to the coordinator until `answer` accepts the response,
    /// the error cannot pass, or the time to retry is spent.
    async fn call<R: Request, T>(
        &self,
        api: &'static str,
        req: &R,
        answer: impl Fn(&R::Response) -> Result<T, ResponseError>,
    ) -> Result<T, WireError> {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            let error = match self.coordinator().await {
                Ok(conn) => match conn.send(req).await {
                    Ok(resp) => match answer(&resp) {
                        Ok(t) => return Ok(t),
                        Err(code) => WireError::broker(api, code, None),
                    },
                    Err(e) => e,
                },
                Err(e) => e,
            };
            match retry(&error) {
                Retry::No => return Err(error),
                Retry::Elsewhere => self.forget_coordinator().await,
                Retry::Same => {}
            }
            // The last transaction's markers are still being written: that
            // takes a few milliseconds, so ask again soon (a backoff made
            // every transaction after the first wait 60 ms).
            let wait = if error.response_error() == Some(ResponseError::ConcurrentTransactions) {
                CONCURRENT_RETRY
            } else {
                backoff.next()
            };
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(api, transactional_id = %self.id, error = %error, retry_in = ?wait, "transaction request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// How soon a request refused because the last transaction is still
/// ending (`CONCURRENT_TRANSACTIONS`) is sent again.
const CONCURRENT_RETRY: Duration = Duration::from_millis(5);

/// Whether a failed transaction request may pass if sent again.
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    /// To the same coordinator: it is loading, or the last transaction is
    /// still ending.
    Same,
    /// To the coordinator found anew: it moved, or its connection broke.
    Elsewhere,
    /// Never: fenced, refused, or a request it does not take.
    No,
}

fn retry(e: &WireError) -> Retry {
    use ResponseError as E;
    match e.response_error() {
        Some(E::NotCoordinator | E::CoordinatorNotAvailable) => Retry::Elsewhere,
        Some(E::CoordinatorLoadInProgress | E::ConcurrentTransactions) => Retry::Same,
        Some(_) if e.is_fenced() => Retry::No,
        Some(code) if crate::error::is_retriable_code(code) => Retry::Same,
        Some(_) => Retry::No,
        None if e.is_transport() => Retry::Elsewhere,
        None => Retry::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_producer_never_retries_and_a_moved_coordinator_is_found_again() {
        use ResponseError as E;
        let code = |c| WireError::broker("EndTxn", c, None);
        assert_eq!(retry(&code(E::ProducerFenced)), Retry::No);
        assert_eq!(retry(&code(E::InvalidProducerEpoch)), Retry::No);
        assert!(code(E::ProducerFenced).is_fenced());
        assert_eq!(retry(&code(E::NotCoordinator)), Retry::Elsewhere);
        assert_eq!(retry(&code(E::ConcurrentTransactions)), Retry::Same);
        assert_eq!(retry(&code(E::CoordinatorLoadInProgress)), Retry::Same);
        assert_eq!(
            retry(&code(E::TransactionalIdAuthorizationFailed)),
            Retry::No
        );
        assert_eq!(retry(&code(E::InvalidTxnState)), Retry::No);
        let broken = WireError::Connection {
            address: "b:9092".into(),
            detail: "reset".into(),
        };
        assert_eq!(retry(&broken), Retry::Elsewhere);
    }
}
