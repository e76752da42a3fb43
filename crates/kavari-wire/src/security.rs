//! How connections to a cluster are secured: TLS or not, SASL or not.

use crate::sasl::Sasl;
use crate::stream::Transport;

/// The variables [`Security::from_vars`] reads, named after librdkafka's
/// properties.
pub const VARIABLES: &[&str] = &[
    "KAVARI_SECURITY_PROTOCOL",
    "KAVARI_SASL_MECHANISM",
    "KAVARI_SASL_MECHANISMS",
    "KAVARI_SASL_USERNAME",
    "KAVARI_SASL_PASSWORD",
    "KAVARI_SSL_CA_LOCATION",
    "KAVARI_SSL_CERTIFICATE_LOCATION",
    "KAVARI_SSL_KEY_LOCATION",
    "KAVARI_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
];

/// A security setting that cannot be used; it names the variable and
/// never shows a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecurityConfigError(String);

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

    /// The settings the `KAVARI_*` security variables describe (see
    /// [`VARIABLES`]), read by `var`: `KAVARI_SECURITY_PROTOCOL`
    /// (`PLAINTEXT` by default, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`), the
    /// SASL mechanism, user name and password, the CA, client certificate
    /// and key files and the host check. A SASL or TLS variable the
    /// protocol would not use is an error, and so is a SASL protocol
    /// without mechanism, user name and password, and TLS in a build
    /// without a TLS feature.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SecurityConfigError> {
        let err = |m: String| SecurityConfigError(m);
        let protocol = var("KAVARI_SECURITY_PROTOCOL").unwrap_or_else(|| "PLAINTEXT".into());
        let (tls, sasl) = match protocol.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            _ => {
                return Err(err(format!(
                    "KAVARI_SECURITY_PROTOCOL={protocol:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )));
            }
        };
        let unused = |prefix: &str, what: &str| match VARIABLES
            .iter()
            .find(|n| n.starts_with(prefix) && var(n).is_some())
        {
            Some(n) => Err(err(format!(
                "{n} is set, but KAVARI_SECURITY_PROTOCOL={protocol} does not use {what}: \
                 set KAVARI_SECURITY_PROTOCOL to use it, or unset {n}"
            ))),
            None => Ok(()),
        };
        let mut security = Self::plaintext();
        if sasl {
            let mechanism = var("KAVARI_SASL_MECHANISM")
                .or_else(|| var("KAVARI_SASL_MECHANISMS"))
                .ok_or_else(|| err(format!("KAVARI_SECURITY_PROTOCOL={protocol} needs KAVARI_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")))?;
            if mechanism.eq_ignore_ascii_case("OAUTHBEARER") {
                return Err(err(
                    "KAVARI_SASL_MECHANISM=OAUTHBEARER: its tokens come from a provider in code (Sasl::oauthbearer, then KavariBuilder::sasl), not from variables".into(),
                ));
            }
            let need = |name: &str| {
                var(name)
                    .ok_or_else(|| err(format!("KAVARI_SECURITY_PROTOCOL={protocol} needs {name}")))
            };
            let (user, password) = (need("KAVARI_SASL_USERNAME")?, need("KAVARI_SASL_PASSWORD")?);
            let sasl = Sasl::from_mechanism(&mechanism, user, password).ok_or_else(|| {
                err(format!(
                    "KAVARI_SASL_MECHANISM={mechanism:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ))
            })?;
            security = security.with_sasl(sasl);
        } else {
            unused("KAVARI_SASL_", "SASL")?;
        }
        if tls {
            security = tls_from_vars(security, &protocol, &var)?;
        } else {
            unused("KAVARI_SSL_", "TLS")?;
        }
        Ok(security)
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

/// Adds the TLS the `KAVARI_SSL_*` variables describe.
#[cfg(feature = "tls")]
fn tls_from_vars(
    security: Security,
    _protocol: &str,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Security, SecurityConfigError> {
    let mut tls = crate::tls::Tls::builder();
    if let Some(ca) = var("KAVARI_SSL_CA_LOCATION") {
        tls = tls.ca_file(ca);
    }
    match (
        var("KAVARI_SSL_CERTIFICATE_LOCATION"),
        var("KAVARI_SSL_KEY_LOCATION"),
    ) {
        (Some(cert), Some(key)) => tls = tls.client_certificate(cert, key),
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(SecurityConfigError(
                "KAVARI_SSL_CERTIFICATE_LOCATION and KAVARI_SSL_KEY_LOCATION go together: set both or neither".into(),
            ));
        }
    }
    if let Some(algorithm) = var("KAVARI_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM") {
        tls = match algorithm.to_ascii_lowercase().as_str() {
            "https" => tls,
            "none" => tls.verify_hostname(false),
            _ => {
                return Err(SecurityConfigError(format!(
                    "KAVARI_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM={algorithm:?}: expected https or none"
                )));
            }
        };
    }
    let tls = tls
        .build()
        .map_err(|e| SecurityConfigError(e.to_string()))?;
    Ok(security.with_tls(tls))
}

/// Without a TLS feature, TLS cannot be had: say which feature.
#[cfg(not(feature = "tls"))]
fn tls_from_vars(
    _security: Security,
    protocol: &str,
    _var: &impl Fn(&str) -> Option<String>,
) -> Result<Security, SecurityConfigError> {
    Err(SecurityConfigError(format!(
        "KAVARI_SECURITY_PROTOCOL={protocol} needs TLS: build with the tls-graviola \
         (pure Rust), tls-ring or tls-aws-lc feature"
    )))
}
