//! [`Kavari`]: the manager a service holds to publish (and subscribe).

use std::sync::Arc;
use std::time::Duration;

use crate::KafkaMessage;
use crate::builder::KavariBuilder;
use crate::client::ClientHandle;
use crate::codec;
use crate::publish::{Delivery, PublishError, PublishStats, Publisher};

/// Why `shutdown()` did not finish cleanly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Publishes were still in flight when the shutdown timeout ran out. They
    /// still return their own result to their callers.
    #[error("{in_flight} publish(es) still in flight after the shutdown timeout of {timeout:?}")]
    PublishesInFlight {
        /// How many.
        in_flight: usize,
        /// The timeout that ran out.
        timeout: Duration,
    },
}

/// The Kavari manager: cheap to clone, shared by every part of a service.
#[derive(Debug, Clone)]
pub struct Kavari {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Arc<ClientHandle>,
    publisher: Publisher,
    shutdown_timeout: Duration,
}

impl Kavari {
    /// Starts configuring a manager for `bootstrap_servers`
    /// (`host:port[,host:port…]`).
    pub fn builder(bootstrap_servers: impl Into<String>) -> KavariBuilder {
        KavariBuilder::new(bootstrap_servers)
    }

    pub(crate) fn from_parts(
        client: Arc<ClientHandle>,
        publisher: Publisher,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                publisher,
                shutdown_timeout,
            }),
        }
    }

    /// The bootstrap servers this manager connects to.
    pub fn bootstrap_servers(&self) -> &[String] {
        self.inner.client.bootstrap()
    }

    /// Publishes `msg` to `M::TOPIC`, keyed by its partition key, with the
    /// `msg_type` and `content-type` headers. Concurrent publishes to one
    /// partition share a produce request. On failure it retries by the
    /// publishing retry policy, then writes the message to the dead-letter
    /// topic ([`PublishError::DeadLettered`]), and when that fails too, hands
    /// the encoded record back ([`PublishError::Failed`]).
    pub async fn publish<M: KafkaMessage>(&self, msg: &M) -> Result<Delivery, PublishError> {
        let encoded = codec::encode(msg)?;
        self.inner.publisher.publish(encoded).await
    }

    /// Publishes every message concurrently (so they batch together) and
    /// returns each one's result, in order.
    pub async fn publish_batch<M: KafkaMessage>(
        &self,
        msgs: &[M],
    ) -> Vec<Result<Delivery, PublishError>> {
        let publishes = msgs.iter().map(|m| self.publish(m));
        futures::future::join_all(publishes).await
    }

    /// Publishes an already encoded record (for example one handed back by
    /// [`PublishError::Failed`]).
    pub async fn publish_encoded(
        &self,
        message: codec::EncodedMessage,
    ) -> Result<Delivery, PublishError> {
        self.inner.publisher.publish(message).await
    }

    /// The publisher's counters.
    pub fn publish_stats(&self) -> PublishStats {
        self.inner.publisher.stats()
    }

    /// Shuts down: refuses new publishes, lets the ones in flight finish
    /// (bounded by the shutdown timeout) and flushes every batch. Idempotent.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        let timeout = self.inner.shutdown_timeout;
        match self.inner.publisher.close(timeout).await {
            0 => {
                tracing::info!("kavari shut down");
                Ok(())
            }
            in_flight => Err(ShutdownError::PublishesInFlight { in_flight, timeout }),
        }
    }
}
