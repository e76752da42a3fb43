//! TLS for every connection to the cluster, through rustls: the broker's
//! certificate checked against a CA file or the system's roots, its name
//! checked against the address connected to (unless explicitly turned off,
//! as librdkafka's `ssl.endpoint.identification.algorithm=none`), and an
//! optional client certificate (mutual TLS).
//!
//! The crypto comes from one provider, chosen by feature: `tls-graviola`
//! (pure Rust), `tls-ring` or `tls-aws-lc` (both compile C); with only
//! `tls`, the provider the process installed as rustls' default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::WireError;

/// TLS settings for the connections to a cluster: cheap to clone.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// A TLS setting that cannot be used: a file that cannot be read, a
/// certificate or key that does not parse, no crypto provider.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("TLS configuration: {0}")]
pub struct TlsConfigError(String);

/// Where the broker's certificate chain must lead.
#[derive(Debug, Clone)]
enum Roots {
    System,
    CaFile(PathBuf),
}

/// Builds [`Tls`] settings; see [`Tls::builder`].
#[derive(Debug, Clone)]
pub struct TlsBuilder {
    roots: Roots,
    client: Option<(PathBuf, PathBuf)>,
    verify_hostname: bool,
}

impl Tls {
    /// Settings that trust the system's root certificates and check the
    /// broker's name; change them on the builder.
    pub fn builder() -> TlsBuilder {
        TlsBuilder {
            roots: Roots::System,
            client: None,
            verify_hostname: true,
        }
    }

    /// Settings from a rustls configuration built by the caller (its own
    /// verifier, provider, session cache…).
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Self {
            connector: TlsConnector::from(config),
        }
    }

    /// Opens TLS over `tcp`, connected to `address` (`host:port`): the name
    /// the broker's certificate must carry is `host`.
    pub(crate) async fn handshake(
        &self,
        address: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, WireError> {
        let host = host_of(address);
        let name = ServerName::try_from(host.to_string()).map_err(|e| WireError::Tls {
            address: address.to_string(),
            detail: format!("{host:?} is not a name TLS can verify: {e}"),
        })?;
        let e = match self.connector.connect(name, tcp).await {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        // A certificate or protocol failure is the configuration's (or the
        // broker's), not the network's: another try fails alike.
        let rustls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(tls) = rustls {
            return Err(WireError::Tls {
                address: address.to_string(),
                detail: tls.to_string(),
            });
        }
        // A plaintext listener reads the ClientHello as an absurd request
        // size and closes the connection: ask it in plaintext whether it
        // is one, so that the answer names the setting to change instead
        // of a network fault retried for ever.
        let closed = matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        );
        if closed && speaks_plaintext_kafka(address).await {
            return Err(WireError::ProtocolMismatch {
                address: address.to_string(),
                detail: "answered in plaintext Kafka, and this client connected with TLS: \
                         set KAVARI_SECURITY_PROTOCOL=PLAINTEXT (or SASL_PLAINTEXT), build \
                         without .tls(…), or use the listener's TLS port"
                    .into(),
            });
        }
        Err(WireError::Connection {
            address: address.to_string(),
            detail: format!("TLS handshake: {e}"),
        })
    }
}

/// Whether `address` answers an ApiVersions request in plaintext (within
/// a few seconds): a Kafka listener without TLS.
async fn speaks_plaintext_kafka(address: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CORRELATION: [u8; 4] = *b"tls?";
    let probe = async {
        let mut tcp = TcpStream::connect(address).await.ok()?;
        // ApiVersions v0: length, api key 18, version 0, correlation id,
        // null client id.
        let mut frame = vec![0, 0, 0, 10, 0, 18, 0, 0];
        frame.extend_from_slice(&CORRELATION);
        frame.extend_from_slice(&[0xff, 0xff]);
        tcp.write_all(&frame).await.ok()?;
        let mut head = [0u8; 8];
        tcp.read_exact(&mut head).await.ok()?;
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        Some((6..1 << 20).contains(&len) && head[4..] == CORRELATION)
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl TlsBuilder {
    /// Trusts only the CA certificates in this PEM file (librdkafka's
    /// `ssl.ca.location`), instead of the system's roots.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.roots = Roots::CaFile(path.into());
        self
    }

    /// Presents this certificate chain and private key (PEM files) to
    /// brokers that ask for one: mutual TLS (`ssl.certificate.location`,
    /// `ssl.key.location`).
    pub fn client_certificate(
        mut self,
        certificate: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.client = Some((certificate.into(), key.into()));
        self
    }

    /// Whether the broker's certificate must name the host connected to
    /// (default: yes). Turning it off still checks the chain, and is for
    /// brokers advertised under names their certificates lack
    /// (`ssl.endpoint.identification.algorithm=none`).
    pub fn verify_hostname(mut self, verify: bool) -> Self {
        self.verify_hostname = verify;
        self
    }

    /// Reads the files and builds the settings.
    pub fn build(self) -> Result<Tls, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        match &self.roots {
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // A system store holds some certificates rustls cannot
                    // use; the rest still serve.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(TlsConfigError(format!(
                        "no usable root certificate in the system's store ({} errors); name a CA file",
                        found.errors.len()
                    )));
                }
            }
            Roots::CaFile(path) => {
                for cert in read_certificates(path)? {
                    roots.add(cert).map_err(|e| {
                        TlsConfigError(format!("CA certificate in {}: {e}", path.display()))
                    })?;
                }
            }
        }
        let roots = Arc::new(roots);
        let provider = provider()?;
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError(format!("protocol versions: {e}")))?;
        let builder = if self.verify_hostname {
            builder.with_root_certificates(roots)
        } else {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsConfigError(format!("certificate verifier: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostname(inner)))
        };
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    TlsConfigError(format!("private key in {}: {e}", key.display()))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsConfigError(format!("client certificate: {e}")))?
            }
        };
        Ok(Tls::from_config(Arc::new(config)))
    }
}

/// The crypto provider of the build's TLS feature, or the process's.
fn provider() -> Result<Arc<CryptoProvider>, TlsConfigError> {
    #[cfg(feature = "tls-graviola")]
    return Ok(Arc::new(rustls_graviola::default_provider()));
    #[cfg(all(feature = "tls-ring", not(feature = "tls-graviola")))]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(all(
        feature = "tls-aws-lc",
        not(any(feature = "tls-graviola", feature = "tls-ring"))
    ))]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[allow(unreachable_code)]
    CryptoProvider::get_default().cloned().ok_or_else(|| {
        TlsConfigError(
            "no crypto provider: enable the tls-graviola (pure Rust), tls-ring or tls-aws-lc \
             feature, or install one with rustls::crypto::CryptoProvider::install_default"
                .into(),
        )
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsConfigError(format!("certificates in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsConfigError(format!(
            "no PEM certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The host of `host:port` (brackets of an IPv6 address removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Checks the chain as the standard verifier does, but not the name.
#[derive(Debug)]
struct AnyHostname(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_what_the_certificate_must_name() {
        assert_eq!(host_of("broker-1.example.com:9093"), "broker-1.example.com");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }

    #[test]
    fn unreadable_files_are_named() {
        let e = Tls::builder()
            .ca_file("/nonexistent/ca.pem")
            .build()
            .expect_err("no such file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
