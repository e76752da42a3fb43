//! How the test kit itself reaches a broker it started: the bootstrap
//! list, TLS with the test CA (and the test client certificate where the
//! broker asks for one), and SCRAM-SHA-512 as the first user where the
//! broker requires SASL. One place for the nisshi broker and the Kafka
//! cluster alike.

use std::path::PathBuf;
use std::time::Duration;

use crate::Error;

/// What a client needs to reach a test broker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// The bootstrap servers, `host:port` each.
    pub(crate) bootstrap: Vec<String>,
    /// The CA that issued the broker's certificate, when it serves TLS.
    pub(crate) tls_ca: Option<PathBuf>,
    /// The client certificate and key (PEM), when the broker requires one.
    pub(crate) client_certificate: Option<(PathBuf, PathBuf)>,
    /// The test kit's user and password, when the broker requires SASL.
    pub(crate) sasl: Option<(String, String)>,
}

impl Access {
    /// The bootstrap servers joined as clients take them.
    pub(crate) fn bootstrap_servers(&self) -> String {
        self.bootstrap.join(",")
    }

    /// A Kavari wire cluster with this access: TLS without the host-name
    /// check (some tests leave the name out of the certificate on
    /// purpose), SCRAM-SHA-512.
    pub(crate) fn cluster(
        &self,
        timeout: Duration,
    ) -> Result<kavari_wire::cluster::Cluster, Error> {
        self.cluster_of(self.bootstrap.clone(), timeout)
    }

    /// The same, reaching only `bootstrap` (one node of a cluster).
    pub(crate) fn cluster_of(
        &self,
        bootstrap: Vec<String>,
        timeout: Duration,
    ) -> Result<kavari_wire::cluster::Cluster, Error> {
        let mut security = kavari_wire::Security::plaintext();
        if let Some(ca) = &self.tls_ca {
            let mut tls = kavari_wire::tls::Tls::builder()
                .ca_file(ca)
                .verify_hostname(false);
            if let Some((cert, key)) = &self.client_certificate {
                tls = tls.client_certificate(cert, key);
            }
            let tls = tls
                .build()
                .map_err(|e| Error::Certificates(e.to_string()))?;
            security = security.with_tls(tls);
        }
        if let Some((user, password)) = &self.sasl {
            security = security.with_sasl(kavari_wire::sasl::Sasl::scram_sha512(user, password));
        }
        Ok(
            kavari_wire::cluster::Cluster::new(bootstrap, "kavari-testcontainers".into(), timeout)
                .with_security(security),
        )
    }

    /// Whether `bootstrap` answers a Metadata request within 3 s, on a
    /// fresh connection (a restarted broker must answer on a new one).
    pub(crate) async fn answers(&self, bootstrap: Vec<String>) -> Result<bool, Error> {
        let cluster = self.cluster_of(bootstrap, Duration::from_secs(1))?;
        let attempt = async move { cluster.topics(&[]).await.map(drop) };
        Ok(
            match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "broker not ready yet");
                    false
                }
                Err(_) => {
                    tracing::debug!("broker readiness probe timed out");
                    false
                }
            },
        )
    }
}
