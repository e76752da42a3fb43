//! [`Backend`]: what a manager runs on. Kafka's (`kafka.rs`) in
//! production; the test kit's broker in this process under the
//! `testing` feature. The manager is written against this trait alone.

use std::fmt::Debug;

use futures::future::BoxFuture;

use super::ShutdownError;
use crate::codec::EncodedMessage;
use crate::consume::{ConsumerConfig, StartError, Steer};
use crate::health::Health;
use crate::publish::{Delivery, PublishError, PublishStats, Publisher};
use crate::registry::Registry;
use crate::topic_names::TopicNames;
use crate::transaction::Transactions;

/// Publishing, the consumer's life and the manager's reports, as one
/// backend does them. Its `Debug` is the manager's.
pub(crate) trait Backend: Debug + Send + Sync + 'static {
    /// How this manager names each message type's topic.
    fn topic_names(&self) -> &TopicNames;

    /// The publisher that takes a typed message without encoding it
    /// first (Kafka's copies it straight into its partition's batch).
    /// `None`: a typed message is encoded and goes through
    /// [`publish`](Self::publish). (A trait object cannot take the
    /// message's type, and boxing every publish's future would be an
    /// allocation on the hot path.)
    fn direct(&self) -> Option<&Publisher> {
        None
    }

    /// Publishes an encoded record.
    fn publish(&self, message: EncodedMessage) -> BoxFuture<'_, Result<Delivery, PublishError>>;

    /// The publisher's counters.
    fn publish_stats(&self) -> PublishStats;

    /// Starts consuming what `registry` subscribes to; called once, with
    /// subscriptions.
    fn start(
        &self,
        registry: Registry,
        config: ConsumerConfig,
    ) -> BoxFuture<'_, Result<(), StartError>>;

    /// Resolves when the consumer stops (at once when none started).
    fn wait(&self) -> BoxFuture<'_, Result<(), ShutdownError>>;

    /// The consumer's health ([`Health::not_started`] before it starts).
    fn health(&self) -> Health;

    /// The running consumer's pause, resume and seek; `None` before it
    /// starts.
    fn steer(&self) -> Option<&dyn Steer>;

    /// The transactional producer, when the builder set a
    /// `transactional_id` (Kafka's backend only).
    fn transactions(&self) -> Option<&dyn Transactions> {
        None
    }

    /// The bootstrap servers (none for a broker in this process).
    fn bootstrap_servers(&self) -> &[String];

    /// Stops consuming, then publishing; idempotent.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), ShutdownError>>;
}
