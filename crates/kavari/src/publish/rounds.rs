//! Produce rounds, one per broker. When one partition's batch is due (full,
//! its linger over, flushed), every other partition led by the same broker
//! sends the batch it is filling at once, so one produce request carries
//! them all, as the Java producer drains every partition of a broker that
//! has a batch ready. A broker then gets a request per linger, not one per
//! partition per linger. A batch sent along does not call a round itself,
//! so rounds do not chase each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The round signal of each broker a publisher sends to.
#[derive(Debug, Default)]
pub(crate) struct Rounds {
    brokers: Mutex<HashMap<i32, Arc<Notify>>>,
}

impl Rounds {
    /// The round signal of broker `id`: partitions it leads wait on it
    /// while they fill a batch, and call it when a batch is due.
    pub(crate) fn of(&self, id: i32) -> Arc<Notify> {
        let mut brokers = self.brokers.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(brokers.entry(id).or_default())
    }
}
