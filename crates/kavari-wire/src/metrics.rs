//! Connection metrics through the `metrics` facade (feature `metrics`):
//! open connections per broker (`kavari_connections`) and failed connection
//! attempts (`kavari_connection_errors_total`). Without the feature every
//! function here does nothing.

/// Counts one open connection in `kavari_connections{broker}` from
/// [`opened`](Self::opened) until it breaks or is dropped, once.
#[derive(Debug, Default)]
pub(crate) struct OpenConnection {
    #[cfg(feature = "metrics")]
    broker: std::sync::Mutex<Option<String>>,
}

impl OpenConnection {
    /// The connection to `broker` is up.
    pub(crate) fn opened(&self, broker: &str) {
        #[cfg(feature = "metrics")]
        {
            ::metrics::gauge!("kavari_connections", "broker" => broker.to_string()).increment(1.0);
            *self.broker.lock().unwrap_or_else(|p| p.into_inner()) = Some(broker.to_string());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = broker;
    }

    /// The connection broke or closed (only the first call counts).
    pub(crate) fn closed(&self) {
        #[cfg(feature = "metrics")]
        if let Some(broker) = self.broker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            ::metrics::gauge!("kavari_connections", "broker" => broker).decrement(1.0);
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.closed();
    }
}

/// A connection attempt to `broker` failed.
pub(crate) fn connect_failed(broker: &str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("kavari_connection_errors_total", "broker" => broker.to_string())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = broker;
}
