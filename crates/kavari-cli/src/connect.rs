//! The cluster from `--brokers` or `KAVARI_BROKERS` and the `KAVARI_*`
//! security variables.

use std::time::Duration;

use kavari_wire::Security;
use kavari_wire::cluster::Cluster;

use crate::Failure;

/// The cluster the command talks to.
pub(crate) fn cluster(brokers: Option<String>) -> Result<Cluster, Failure> {
    let brokers = brokers
        .or_else(|| std::env::var("KAVARI_BROKERS").ok())
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| {
            Failure("no brokers: pass --brokers host:port or set KAVARI_BROKERS".into())
        })?;
    let bootstrap = brokers
        .split(',')
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .collect();
    let security = Security::from_vars(|name| std::env::var(name).ok())?;
    Ok(
        Cluster::new(bootstrap, "kavari-cli".into(), Duration::from_secs(30))
            .with_security(security),
    )
}
