//! Stop signals: the `watch` channels that tell a task to finish (a
//! partition's worker, a retry wait, a dead-letter write), shared by the
//! publisher and the consumer.

use tokio::sync::watch;

/// Waits `wait` unless `stop` turns true first: true when the wait ran
/// its course (a retry loop's pause), false when told to stop.
pub(crate) async fn pause(wait: std::time::Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = until_stopped(stop) => false,
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across awaits.
    let _ = stop.wait_for(|s| *s).await.map(drop);
}
