//! Waiting for a broker to answer.

use std::time::{Duration, Instant};

use crate::Error;
use crate::access::Access;

/// Waits until `access` answers Metadata; after `timeout`, an error with
/// the broker's log (`log`).
pub(crate) async fn wait_ready(
    access: &Access,
    timeout: Duration,
    log: impl Fn() -> String,
) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        if access.answers(access.bootstrap.clone()).await? {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(Error::NotReady {
                address: access.bootstrap_servers(),
                waited: started.elapsed(),
                log: log(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
