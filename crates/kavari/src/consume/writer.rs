//! [`Writer`]: how the consumer writes its dead letters. The consumer is
//! handed one (the manager hands it the publisher; the test kit its
//! in-memory log), so consuming never calls publishing itself.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use crate::codec::EncodedMessage;
use crate::publish::{Delivery, ProduceError};

/// A dead-letter write to come.
pub(crate) type Writing<'a> =
    Pin<Box<dyn Future<Output = Result<Delivery, ProduceError>> + Send + 'a>>;

/// What writes the consumer's dead letters (the manager hands it the
/// publisher; the test kit its in-memory log).
pub(crate) trait Writer: Send + Sync {
    /// The dead-letter suffix; `None` when dead letters are off.
    fn suffix(&self) -> Option<&str>;

    /// Writes `letter` (of a record of `source`) until it is written or
    /// `stop` turns true: a record must not be committed before its dead
    /// letter exists. Every failed attempt goes to `blocked`, and `None`
    /// once written after one.
    fn write_until_written<'a>(
        &'a self,
        letter: EncodedMessage,
        source: &'a str,
        stop: watch::Receiver<bool>,
        blocked: &'a (dyn Fn(Option<&ProduceError>) + Send + Sync),
    ) -> Writing<'a>;
}
