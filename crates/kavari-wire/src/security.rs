//! How connections to a cluster are secured: TLS or not, SASL or not.

use crate::sasl::Sasl;
use crate::stream::Transport;

/// How connections to a cluster are secured: TLS or not, SASL or not
/// (Kafka's `security.protocol`: `PLAINTEXT` by default, `SSL` with TLS,
/// `SASL_PLAINTEXT` with SASL, `SASL_SSL` with both).
#[derive(Debug, Clone, Default)]
pub struct Security {
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Tls>,
    sasl: Option<Sasl>,
}

impl Security {
    /// Plain TCP, no authentication.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// TLS on every connection.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: crate::tls::Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// SASL authentication on every connection.
    pub fn with_sasl(mut self, sasl: Sasl) -> Self {
        self.sasl = Some(sasl);
        self
    }

    /// The SASL mechanism and credentials, if any.
    pub fn sasl(&self) -> Option<&Sasl> {
        self.sasl.as_ref()
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// What carries the bytes.
    pub(crate) fn transport(&self) -> Transport<'_> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return Transport::Tls(tls);
        }
        Transport::Plain
    }
}
