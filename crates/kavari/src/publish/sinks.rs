//! Which sink sends a partition's batches: the sink of its leader, started
//! when a partition first names that broker and ended when it leads none;
//! and, while a partition's leader is not known (a first lookup that named
//! none, or a failure that may mean it moved), the lookup that finds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::batcher::{Signal, Waker};
use super::partition::{Leader, Partition};
use super::producing::Producing;
use super::{ProduceError, ProduceErrorKind};

/// The first wait between lookups of a partition's leader; it doubles up
/// to [`LOOKUP_BACKOFF_MAX`].
const LOOKUP_BACKOFF: Duration = Duration::from_millis(50);
const LOOKUP_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The inbox of each running sink, by broker id.
#[derive(Debug, Default)]
pub(super) struct Sinks {
    brokers: Mutex<HashMap<i32, mpsc::UnboundedSender<Arc<Partition>>>>,
}

impl Producing {
    /// Hands `p` to the sink of broker `id`, starting it if none runs.
    pub(super) fn adopt(self: &Arc<Self>, id: i32, p: Arc<Partition>) {
        let mut brokers = self.sinks.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let p = match brokers.get(&id) {
            Some(inbox) => match inbox.send(p) {
                Ok(()) => return,
                Err(back) => back.0,
            },
            None => p,
        };
        let (inbox, rx) = mpsc::unbounded_channel();
        let _ = inbox.send(p);
        brokers.insert(id, inbox);
        super::sink::spawn(Arc::clone(self), id, rx);
    }

    /// Ends the sink of broker `id` unless a partition came in meanwhile
    /// (then returns it, and the sink goes on).
    pub(super) fn sink_ends(
        &self,
        id: i32,
        inbox: &mut mpsc::UnboundedReceiver<Arc<Partition>>,
    ) -> Result<(), Arc<Partition>> {
        let mut brokers = self.sinks.brokers.lock().unwrap_or_else(|e| e.into_inner());
        match inbox.try_recv() {
            Ok(p) => Err(p),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                brokers.remove(&id);
                Ok(())
            }
        }
    }

    /// Looks for `p`'s leader, then hands it to that broker's sink.
    pub(super) fn locate(self: &Arc<Self>, p: Arc<Partition>) {
        p.set_leader(Leader::Unknown);
        let signal = Arc::new(Signal::default());
        let waker = Waker::new(Arc::clone(&signal), 0);
        let raised = waker.raised();
        p.queue.set_waker(Some(waker));
        tokio::spawn(locate(Arc::clone(self), p, signal, raised));
    }

    /// The broker leading `p`, from a Metadata request.
    async fn leader_of(&self, p: &Partition) -> Result<i32, ProduceError> {
        let (topic, partition) = (&p.queue.topic, p.queue.partition);
        let what = format!("finding the leader of {topic}/{partition}");
        let meta = self.topic_metadata(topic, &what).await?;
        let found = meta
            .as_ref()
            .and_then(|t| t.partitions.iter().find(|m| m.partition == partition))
            .ok_or_else(|| {
                ProduceError::new(
                    ProduceErrorKind::UnknownTopic,
                    true,
                    format!("{what}: the cluster does not know the partition"),
                )
            })?;
        match (found.leader, found.error) {
            (Some(id), _) => Ok(id),
            (None, e) => Err(ProduceError::from_code(
                &what,
                e.unwrap_or(kavari_wire::ResponseError::LeaderNotAvailable),
                None,
            )),
        }
    }
}

/// Finds `p`'s leader once it has something to send, failing its batches
/// as a write would fail while the lookup does; `signal` wakes it when a
/// record comes.
async fn locate(
    ctx: Arc<Producing>,
    p: Arc<Partition>,
    signal: Arc<Signal>,
    raised: Arc<AtomicBool>,
) {
    let mut backoff = LOOKUP_BACKOFF;
    loop {
        if p.is_finished() && ctx.retire(&p) {
            p.queue.set_waker(None);
            return;
        }
        if p.is_idle() {
            signal.wait().await;
            signal.raised();
            raised.store(false, Ordering::Release);
            continue;
        }
        match ctx.leader_of(&p).await {
            Ok(id) => {
                ctx.adopt(id, p);
                return;
            }
            Err(e) => {
                tracing::debug!(partition = %p.name(), error = %e, "no leader known");
                let wait = p.unplaced(&ctx, &e).max(backoff);
                backoff = (backoff * 2).min(LOOKUP_BACKOFF_MAX);
                tokio::time::sleep(wait).await;
            }
        }
    }
}
