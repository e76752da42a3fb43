//! Stop signals: the `watch` channels that tell a task to finish (a
//! partition's worker, a retry wait, a dead-letter write), shared by the
//! publisher and the consumer.

use tokio::sync::watch;

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across awaits.
    let _ = stop.wait_for(|s| *s).await.map(drop);
}
