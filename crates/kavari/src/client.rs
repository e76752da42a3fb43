//! The shared rskafka client, connected lazily and rebuilt after failures,
//! so Kavari starts while Kafka is down and recovers when it comes back.

use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};

use crate::publish::ProduceError;

/// Owns the rskafka [`Client`]. Every network call through it is bounded by
/// `request_timeout` (rskafka has no per-request timeout, and its own retry
/// loop is capped at the same deadline).
#[derive(Debug)]
pub(crate) struct ClientHandle {
    bootstrap: Vec<String>,
    client_id: String,
    request_timeout: Duration,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl ClientHandle {
    pub(crate) fn new(
        bootstrap: Vec<String>,
        client_id: String,
        request_timeout: Duration,
    ) -> Self {
        Self {
            bootstrap,
            client_id,
            request_timeout,
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub(crate) fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// rskafka's own retries end at our request timeout, so a dead broker
    /// surfaces as an error to Kavari's retry policy instead of hanging.
    pub(crate) fn backoff_config(&self) -> BackoffConfig {
        BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(self.request_timeout),
        }
    }

    /// The connected client, connecting first when there is none.
    pub(crate) async fn get(&self) -> Result<Arc<Client>, ProduceError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(Arc::clone(c));
        }
        let build = ClientBuilder::new(self.bootstrap.clone())
            .client_id(self.client_id.clone())
            .backoff_config(self.backoff_config())
            .build();
        let what = format!("connecting to {}", self.bootstrap.join(","));
        let client = match tokio::time::timeout(self.request_timeout, build).await {
            Ok(Ok(c)) => Arc::new(c),
            Ok(Err(e)) => return Err(ProduceError::from_rskafka(&what, &e)),
            Err(_) => return Err(ProduceError::timeout(&what, self.request_timeout)),
        };
        tracing::info!(bootstrap = %self.bootstrap.join(","), "connected to Kafka");
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Drops `stale` so the next [`get`](Self::get) reconnects; a newer
    /// client that replaced it already is kept.
    pub(crate) async fn invalidate(&self, stale: &Arc<Client>, why: &str) {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, stale)) {
            tracing::warn!(
                why,
                "dropping the Kafka client; the next request reconnects"
            );
            *slot = None;
        }
    }
}
