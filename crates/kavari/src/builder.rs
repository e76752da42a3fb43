//! [`KavariBuilder`]: every option in one place, checked by `build()`.

use std::sync::Arc;
use std::time::Duration;

use crate::client::ClientHandle;
use crate::publish::{Compression, ProducerConfig, Publisher};
use crate::retry::{FibonacciRetryPolicy, RetryPolicy};
use crate::{Kavari, Partitioner};

/// A configuration `build()` refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid Kavari configuration: {0}")]
pub struct ConfigError(pub String);

/// Builds a [`Kavari`] manager. Start with [`Kavari::builder`].
#[derive(Debug, Clone)]
pub struct KavariBuilder {
    bootstrap: String,
    client_id: String,
    request_timeout: Duration,
    shutdown_timeout: Duration,
    publishing_retry: Arc<dyn RetryPolicy>,
    producer: ProducerConfig,
}

impl KavariBuilder {
    pub(crate) fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            client_id: "kavari".to_string(),
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            publishing_retry: Arc::new(FibonacciRetryPolicy::new(3)),
            producer: ProducerConfig::default(),
        }
    }

    /// The client id sent to the broker (Kafka's `client.id`). Default: `kavari`.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// The longest any single request may take before it counts as failed:
    /// connect, metadata, produce. Kafka's `request.timeout.ms`. Default: 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long `shutdown()` waits for publishes in flight. Default: 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// When a failed publish is tried again. Default:
    /// `FibonacciRetryPolicy::new(3)` (waits of 1 s and 2 s).
    pub fn publishing_retry_policy(mut self, policy: impl RetryPolicy) -> Self {
        self.publishing_retry = Arc::new(policy);
        self
    }

    /// How long a batch waits for more records after its first one. Kafka's
    /// `linger.ms`. Default: 5 ms.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.producer.linger = linger;
        self
    }

    /// The largest batch per partition and request, in bytes of key, value
    /// and headers. Kafka's `batch.size`. Default: 1 MiB.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.producer.max_batch_bytes = bytes;
        self
    }

    /// The largest message publish accepts; a larger one is not retried and
    /// goes to the dead-letter topic. Kafka's `max.request.size`. Default: 1 MiB.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.producer.max_message_bytes = bytes;
        self
    }

    /// Batch compression. Default: [`Compression::None`].
    pub fn compression(mut self, compression: Compression) -> Self {
        self.producer.compression = compression;
        self
    }

    /// How keys map to partitions. Default: [`Partitioner::Murmur2`], as the
    /// Java client.
    pub fn partitioner(mut self, partitioner: Partitioner) -> Self {
        self.producer.partitioner = partitioner;
        self
    }

    /// The suffix of dead-letter topics (`<topic><suffix>`), or `None` to
    /// hand failed records back instead. Default: `Some(".dlq")`.
    pub fn dead_letter_suffix(mut self, suffix: Option<&str>) -> Self {
        self.producer.dlq_suffix = suffix.map(str::to_string);
        self
    }

    /// How many records each partition may hold waiting for a batch before
    /// `publish` waits (backpressure). Default: 65,536.
    pub fn max_queued_per_partition(mut self, records: usize) -> Self {
        self.producer.queue_capacity = records;
        self
    }

    fn validate(&self) -> Result<Vec<String>, ConfigError> {
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
        if self.request_timeout.is_zero() {
            return Err(ConfigError("request_timeout must be above zero".into()));
        }
        if self.producer.max_batch_bytes == 0 || self.producer.max_message_bytes == 0 {
            return Err(ConfigError(
                "max_batch_bytes and max_message_bytes must be above zero".into(),
            ));
        }
        if self.producer.queue_capacity == 0 {
            return Err(ConfigError(
                "max_queued_per_partition must be above zero".into(),
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
        Ok(bootstrap)
    }

    /// Checks the options and creates the manager. It does not need Kafka to
    /// be up: it tries to connect once, and a failure only logs, because
    /// every publish (re)connects as needed.
    pub async fn build(self) -> Result<Kavari, ConfigError> {
        let bootstrap = self.validate()?;
        let client = Arc::new(ClientHandle::new(
            bootstrap,
            self.client_id.clone(),
            self.request_timeout,
        ));
        if let Err(e) = client.get().await {
            tracing::warn!(error = %e, "Kafka is not reachable yet; Kavari will keep trying");
        }
        let publisher = Publisher::new(
            Arc::clone(&client),
            self.producer.clone(),
            Arc::clone(&self.publishing_retry),
        );
        Ok(Kavari::from_parts(client, publisher, self.shutdown_timeout))
    }
}
