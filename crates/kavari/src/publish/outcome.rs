//! What became of one batch, shared by its publishes, its partition (which
//! settles it with the broker's answer) and the expiry task (which ends it
//! at its deadline).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

use super::{Offset, ProduceError};

/// What became of one batch: its base offset, or the error every record
/// shares; and how far it got, so a publish whose time ran out knows
/// whether its batch can still be stopped.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    result: OnceLock<Result<i64, ProduceError>>,
    done: Notify,
    /// [`QUEUED`], [`TAKEN`] or [`EXPIRED`].
    stage: AtomicU8,
}

/// In its partition's queue: a publish whose time ran out may expire it.
const QUEUED: u8 = 0;
/// Taken by its sink to be written: its outcome comes from the broker.
const TAKEN: u8 = 1;
/// Expired in the queue: never sent, its partition drops it.
const EXPIRED: u8 = 2;

impl BatchOutcome {
    pub(super) fn finish(&self, result: Result<i64, ProduceError>) {
        let _ = self.result.set(result);
        self.done.notify_waiters();
    }

    /// Ends the batch with `error` unless its sink took it already: true
    /// when it will never be sent.
    pub(crate) fn expire(&self, error: ProduceError) -> bool {
        let expired = self
            .stage
            .compare_exchange(QUEUED, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if expired {
            self.finish(Err(error));
        }
        expired
    }

    /// Claims the batch for sending: false when it expired first.
    pub(super) fn take(&self) -> bool {
        self.stage
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(super) fn is_expired(&self) -> bool {
        self.stage.load(Ordering::Acquire) == EXPIRED
    }

    /// Whether the batch's publishes have their answer.
    pub(super) fn is_finished(&self) -> bool {
        self.result.get().is_some()
    }

    /// The offset of the record at `index` once the batch is answered.
    pub(crate) async fn offset(&self, index: usize) -> Result<Offset, ProduceError> {
        loop {
            // Registered before the check: a finish in between still wakes us.
            let done = self.done.notified();
            if let Some(result) = self.result.get() {
                return match result {
                    Ok(base) => Ok(Offset::in_batch(*base, index)),
                    Err(e) => Err(e.clone()),
                };
            }
            done.await;
        }
    }
}
