//! Batch handlers: what a service implements to receive the messages of one
//! type from one partition several at a time (a bulk insert), and report
//! which of them failed.

use std::future::Future;

use crate::context::MessageContext;
use crate::handler_error::HandlerError;
use crate::message::KafkaMessage;

/// Handles messages of type `M` on `M::TOPIC` several at a time: up to
/// `max_records` consecutive records of one partition, or what came within
/// `max_wait` of the first (see [`Kavari::subscribe_batch`](crate::Kavari::subscribe_batch)).
///
/// `Ok` lets the whole batch be committed. An error names the records that
/// failed ([`BatchError::failed`]), or all of them (`?` on any error); only
/// those are retried, by the delivery retry policy and in a batch of their
/// own, then dead-lettered (or skipped, or blocked on) one by one by
/// `on_handler_failure`. A record whose value does not decode never reaches
/// the handler: it is poison, handled by `on_poison`.
///
/// ```
/// use kavari::{BatchError, BatchHandler, KafkaMessage, MessageContext};
///
/// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
/// #[kavari(topic = "readings")]
/// struct Reading { #[kavari(key)] sensor: String, value: f64 }
///
/// struct BulkInsert;
///
/// impl BatchHandler<Reading> for BulkInsert {
///     async fn handle(&self, batch: Vec<(Reading, MessageContext)>) -> Result<(), BatchError> {
///         let mut failed = BatchError::none();
///         for (i, (reading, _ctx)) in batch.iter().enumerate() {
///             if reading.value.is_nan() {
///                 failed = failed.failed(i, kavari::HandlerError::permanent("not a number"));
///             }
///         }
///         // ... insert the others in one statement ...
///         failed.into_result()
///     }
/// }
/// ```
pub trait BatchHandler<M: KafkaMessage>: Send + Sync + 'static {
    /// Handles a batch of messages with their contexts, in offset order.
    /// Each context's `attempt` is the batch's attempt: 2, 3, … when the
    /// batch holds only records that failed before.
    fn handle(
        &self,
        batch: Vec<(M, MessageContext)>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send;
}

/// Which records of a batch failed, by their index in the batch handed
/// over, and why. From any error (`?`): every record failed with it.
pub struct BatchError {
    /// `None`: every record, with the one error.
    pub(crate) all: Option<HandlerError>,
    pub(crate) failed: Vec<(usize, HandlerError)>,
}

impl BatchError {
    /// No record failed yet: add failures with [`failed`](Self::failed),
    /// then [`into_result`](Self::into_result).
    pub fn none() -> Self {
        Self {
            all: None,
            failed: Vec::new(),
        }
    }

    /// Every record of the batch failed with `error`.
    pub fn all(error: impl Into<HandlerError>) -> Self {
        Self {
            all: Some(error.into()),
            failed: Vec::new(),
        }
    }

    /// The record at `index` of the batch failed with `error`. An index
    /// past the batch is ignored (and logged); of a record named twice,
    /// the last error counts.
    pub fn failed(mut self, index: usize, error: impl Into<HandlerError>) -> Self {
        self.failed.push((index, error.into()));
        self
    }

    /// How many records it names (0 when all failed with one error).
    pub fn len(&self) -> usize {
        self.failed.len()
    }

    /// Names no record and is not for all of them.
    pub fn is_empty(&self) -> bool {
        self.all.is_none() && self.failed.is_empty()
    }

    /// `Ok` when no record failed, else this error.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl std::fmt::Debug for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.all {
            Some(e) => write!(f, "BatchError(all: {e:#})"),
            None => f
                .debug_map()
                .entries(self.failed.iter().map(|(i, e)| (i, format!("{e:#}"))))
                .finish(),
        }
    }
}

impl<E: Into<HandlerError>> From<E> for BatchError {
    fn from(error: E) -> Self {
        Self::all(error)
    }
}

/// How a batch subscription collects its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// At most this many records per batch (at least 1).
    pub(crate) max_records: usize,
    /// A batch waits at most this long from its first record for more.
    pub(crate) max_wait: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_error_names_records_or_all() {
        assert!(BatchError::none().into_result().is_ok());
        let some = BatchError::none()
            .failed(3, "bad row")
            .failed(7, HandlerError::permanent("worse"));
        assert_eq!(some.len(), 2);
        let shown = format!("{some:?}");
        assert!(
            shown.contains("3: \"bad row\"") && shown.contains("worse"),
            "{shown}"
        );
        let e: Result<(), BatchError> = (|| {
            "x".parse::<u32>()?;
            Ok(())
        })();
        let e = e.expect_err("fails");
        assert!(e.all.as_ref().is_some_and(|e| e.is_retriable()));
        assert!(!e.is_empty());
    }
}
