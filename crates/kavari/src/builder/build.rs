//! Checking a [`KavariBuilder`]'s options and building the manager on
//! Kafka (or on the test kit's broker).

use std::sync::Arc;
use std::time::Duration;

use kavari_wire::cluster::Cluster;

use super::{ConfigError, KavariBuilder};
use crate::manager::Kavari;
use crate::publish::Publisher;

/// The most records a partition may have in flight under a concurrent
/// processing order: a window of records is held in memory per partition.
const MAX_IN_FLIGHT: usize = 10_000;

impl KavariBuilder {
    pub(crate) fn validate(&self) -> Result<Vec<String>, ConfigError> {
        let bootstrap: Vec<String> = self
            .bootstrap
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if bootstrap.is_empty() {
            return Err(ConfigError("bootstrap servers are empty".into()));
        }
        if let Some(bad) = bootstrap.iter().find(|b| !b.contains(':')) {
            return Err(ConfigError(format!(
                "bootstrap server {bad:?} has no port (expected host:port)"
            )));
        }
        self.check_options()?;
        Ok(bootstrap)
    }

    /// Checks every option but the bootstrap servers.
    pub(crate) fn check_options(&self) -> Result<(), ConfigError> {
        if self.request_timeout.is_zero() {
            return Err(ConfigError("request_timeout must be above zero".into()));
        }
        if self.producer.metadata_max_idle < Duration::from_millis(2) {
            return Err(ConfigError(
                "metadata_max_idle must be at least 2 ms".into(),
            ));
        }
        if self.producer.delivery_timeout.is_zero() {
            return Err(ConfigError("delivery_timeout must be above zero".into()));
        }
        if self.producer.max_batch_bytes == 0 || self.producer.max_message_bytes == 0 {
            return Err(ConfigError(
                "max_batch_bytes and max_message_bytes must be above zero".into(),
            ));
        }
        if self.producer.queue_capacity == 0
            || self.producer.queue_capacity_bytes == 0
            || self.producer.buffer_memory == 0
        {
            return Err(ConfigError(
                "max_queued_per_partition, max_queued_bytes_per_partition and buffer_memory must be above zero"
                    .into(),
            ));
        }
        if self.consumer.heartbeat_interval.is_zero()
            || self.consumer.heartbeat_interval >= self.consumer.session_timeout
        {
            return Err(ConfigError(
                "heartbeat_interval must be above zero and below session_timeout".into(),
            ));
        }
        if self.consumer.fetch_max_bytes <= 0
            || self.consumer.max_partition_fetch_bytes <= 0
            || self.consumer.fetch_min_bytes < 0
            || self.consumer.queued_max_bytes == 0
        {
            return Err(ConfigError(
                "fetch_max_bytes, max_partition_fetch_bytes and queued_max_bytes must be above zero, fetch_min_bytes not below"
                    .into(),
            ));
        }
        if self.consumer.max_handler_time.is_zero() {
            return Err(ConfigError("max_handler_time must be above zero".into()));
        }
        if let Some((_, limit)) = self.consumer.order.window()
            && !(1..=MAX_IN_FLIGHT).contains(&limit)
        {
            return Err(ConfigError(format!(
                "processing_order: max_in_flight is {limit}; it must be 1 to {MAX_IN_FLIGHT}"
            )));
        }
        if self.transactional_id.as_deref() == Some("") {
            return Err(ConfigError("the transactional_id is empty".into()));
        }
        if self.transaction_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError("transaction_timeout must be above zero".into()));
        }
        if self.consumer.group_protocol == kavari_group::GroupProtocol::Consumer {
            if self.consumer.assignors.is_some() {
                return Err(ConfigError(
                    "assignors are the classic group protocol's: under the consumer protocol the broker assigns (set group_remote_assignor)".into(),
                ));
            }
        } else if self.consumer.remote_assignor.is_some() {
            return Err(ConfigError(
                "group_remote_assignor needs group_protocol(GroupProtocol::Consumer)".into(),
            ));
        }
        if self.consumer.share_group.is_some() && self.consumer.exactly_once.is_some() {
            return Err(ConfigError(
                "exactly_once needs a consumer group: a share group acknowledges records one by one".into(),
            ));
        }
        if self.consumer.share_group.as_deref() == Some("") {
            return Err(ConfigError("share_group is empty".into()));
        }
        if self.consumer.records_per_transaction == 0 {
            return Err(ConfigError(
                "records_per_transaction must be at least 1".into(),
            ));
        }
        if let Some(prefix) = &self.consumer.exactly_once {
            if prefix.is_empty() {
                return Err(ConfigError(
                    "exactly_once needs a transactional id prefix".into(),
                ));
            }
            if self.consumer.order != crate::consume::ProcessingOrder::Partition {
                return Err(ConfigError(
                    "exactly_once needs ProcessingOrder::Partition: a partition's records commit in transactions in offset order".into(),
                ));
            }
        }
        if self.consumer.metadata_max_age.is_zero() {
            return Err(ConfigError("metadata_max_age must be above zero".into()));
        }
        if self.consumer.group_id.as_deref() == Some("") {
            return Err(ConfigError("group_id is empty".into()));
        }
        let dead_letters_wanted = [self.consumer.on_handler_failure, self.consumer.on_poison]
            .contains(&crate::consume::FailurePolicy::DeadLetter);
        if self.consumer.group_id.is_some()
            && self.producer.dlq_suffix.is_none()
            && dead_letters_wanted
        {
            return Err(ConfigError(
                "dead letters are off (dead_letter_suffix(None)) but a consumer failure policy is DeadLetter: choose Block or Skip with on_handler_failure / on_poison, or keep a suffix".into(),
            ));
        }
        if let Some(s) = &self.producer.dlq_suffix
            && s.is_empty()
        {
            return Err(ConfigError(
                "the dead-letter suffix is empty: dead letters would go back to the topic itself"
                    .into(),
            ));
        }
        self.producer.topic_names.validate().map_err(ConfigError)
    }

    /// Checks the options (the bootstrap servers aside) and hands over the
    /// publishing and consuming settings, for a manager on the test kit's
    /// in-memory broker.
    #[cfg(feature = "testing")]
    pub(crate) fn into_checked_configs(
        self,
    ) -> Result<
        (
            crate::publish::ProducerConfig,
            crate::consume::ConsumerConfig,
            Option<crate::transaction::TransactionSettings>,
        ),
        ConfigError,
    > {
        self.check_options()?;
        let transactions = self.transaction_settings();
        Ok((self.producer, self.consumer, transactions))
    }

    /// Checks the options and creates the manager. It does not need Kafka to
    /// be up: it tries to connect once, and a failure only logs, because
    /// every publish (re)connects as needed.
    pub async fn build(self) -> Result<Kavari, ConfigError> {
        let bootstrap = self.validate()?;
        // One connection pool for the publisher, the fetcher and the group
        // member.
        let cluster = Arc::new(
            Cluster::new(bootstrap, self.client_id.clone(), self.request_timeout)
                .with_security(self.security.clone()),
        );
        match cluster.any_broker().await {
            Ok(_) => {}
            // Refused, not unreachable: no retry changes that.
            Err(e) if e.is_authentication() => {
                tracing::error!(error = %e, "Kafka refuses this client's configuration; publishes fail and the consumer turns Failed until it changes");
            }
            Err(e) => {
                tracing::warn!(error = %e, "Kafka is not reachable yet; Kavari will keep trying");
            }
        }
        let publisher = Arc::new(Publisher::new(
            Arc::clone(&cluster),
            self.producer.clone(),
            Arc::clone(&self.publishing_retry),
        ));
        let transactions = self.transaction_settings().map(|settings| {
            Arc::new(crate::transaction::TransactionalProducer::new(
                Arc::clone(&cluster),
                &settings,
                self.producer.clone(),
            ))
        });
        let exactly_once = self.consumer.exactly_once.as_ref().map(|prefix| {
            let settings = crate::transaction::TransactionSettings {
                transactional_id: exactly_once_id(
                    prefix,
                    self.consumer.group_instance_id.as_deref(),
                ),
                // A killed member's open transaction holds its partitions'
                // next owner back this long at most: Kafka Streams' 10 s.
                timeout: self.transaction_timeout.unwrap_or(Duration::from_secs(10)),
            };
            Arc::new(crate::transaction::TransactionalProducer::new(
                Arc::clone(&cluster),
                &settings,
                self.producer.clone(),
            ))
        });
        let kafka = crate::manager::Kafka::new(
            cluster,
            publisher,
            transactions,
            exactly_once,
            self.client_id,
            self.shutdown_timeout,
        );
        Ok(Kavari::new(Box::new(kafka), self.consumer))
    }
}

impl KavariBuilder {
    /// The settings of `Kavari::transaction`, with a transactional id.
    fn transaction_settings(&self) -> Option<crate::transaction::TransactionSettings> {
        self.transactional_id
            .as_ref()
            .map(|id| crate::transaction::TransactionSettings {
                transactional_id: id.clone(),
                timeout: self.transaction_timeout.unwrap_or(Duration::from_secs(60)),
            })
    }
}

/// The transactional id of a member's exactly-once handling: `prefix-`
/// and its `group.instance.id`, or a random suffix for a dynamic member.
fn exactly_once_id(prefix: &str, instance: Option<&str>) -> String {
    match instance {
        Some(instance) => format!("{prefix}-{instance}"),
        None => format!("{prefix}-{:016x}", rand::random::<u64>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::FailurePolicy;

    /// Dead letters off must not mean "skip" for a consumer: the builder
    /// asks for an explicit policy instead.
    #[test]
    fn a_consumer_without_dead_letters_must_choose_another_policy() {
        let base = || {
            KavariBuilder::new("127.0.0.1:9092")
                .group_id("g")
                .dead_letter_suffix(None)
        };
        let e = base().validate().unwrap_err();
        assert!(e.0.contains("on_handler_failure"), "{e}");
        assert!(
            base()
                .on_handler_failure(FailurePolicy::Block)
                .on_poison(FailurePolicy::Skip)
                .validate()
                .is_ok()
        );
        // Poison is dead-lettered by default too.
        assert!(
            base()
                .on_handler_failure(FailurePolicy::Skip)
                .validate()
                .is_err()
        );
        // A publish-only manager hands failed records back: fine.
        assert!(
            KavariBuilder::new("127.0.0.1:9092")
                .dead_letter_suffix(None)
                .validate()
                .is_ok()
        );
    }
}
