//! The cluster from `--brokers` or `KAVARI_BROKERS` and the `KAVARI_*`
//! security variables.

use std::time::Duration;

use kavari_wire::Security;
use kavari_wire::cluster::Cluster;

use crate::Failure;

/// Where the cluster is and how to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) brokers: String,
    pub(crate) security: Security,
}

impl Settings {
    /// The cluster's connections, for reading and administration.
    pub(crate) fn cluster(&self) -> Cluster {
        let bootstrap = self
            .brokers
            .split(',')
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        Cluster::new(bootstrap, "kavari-cli".into(), Duration::from_secs(30))
            .with_security(self.security.clone())
    }

    /// A manager for publishing, as a service would.
    pub(crate) fn publisher(&self) -> kavari::KavariBuilder {
        kavari::Kavari::builder(&self.brokers)
            .client_id("kavari-cli")
            .security(self.security.clone())
    }
}

/// The settings from `--brokers` (or `KAVARI_BROKERS`) and the `KAVARI_*`
/// security variables.
pub(crate) fn settings(brokers: Option<String>) -> Result<Settings, Failure> {
    let brokers = brokers
        .or_else(|| std::env::var("KAVARI_BROKERS").ok())
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| {
            Failure("no brokers: pass --brokers host:port or set KAVARI_BROKERS".into())
        })?;
    let security = Security::from_vars(|name| std::env::var(name).ok())?;
    Ok(Settings { brokers, security })
}
