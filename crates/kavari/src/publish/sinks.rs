//! Where each partition's batches go: every partition's produce state while
//! a publisher's handle or unsent batches keep it, handed to the sink of its
//! leader (a sink is started when a partition first names that broker and
//! ends when it leads none); and, while a partition's leader is not known
//! (a first lookup that named none, or a failure that may mean it moved),
//! the lookup that finds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::batcher::{Batcher, Queue, Signal, Waker};
use super::partition::{Leader, Partition};
use super::producing::Producing;
use super::sink::{self, Placement};
use super::{ProduceError, ProduceErrorKind};

/// The first wait between lookups of a partition's leader; it doubles up
/// to [`LOOKUP_BACKOFF_MAX`].
const LOOKUP_BACKOFF: Duration = Duration::from_millis(50);
const LOOKUP_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The publisher's partitions and sinks.
#[derive(Debug)]
pub(crate) struct Sinks {
    ctx: Arc<Producing>,
    /// The inbox of each running sink, by broker id.
    brokers: Mutex<HashMap<i32, mpsc::UnboundedSender<Arc<Partition>>>>,
    /// Each partition's state while it lives: a publisher's new handle on
    /// a partition whose state is still sending reuses it.
    partitions: Mutex<HashMap<(String, i32), Weak<Partition>>>,
}

impl Sinks {
    pub(crate) fn new(ctx: Arc<Producing>) -> Self {
        Self {
            ctx,
            brokers: Mutex::new(HashMap::new()),
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// A publishers' handle on `topic`/`partition`, whose leader the
    /// metadata named (`None`: not known). Its produce state is made (and
    /// handed to its leader's sink) unless it still lives.
    pub(super) fn batcher(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        leader: Option<i32>,
    ) -> Batcher {
        let ctx = &self.ctx;
        let handle = |p: &Partition| {
            Batcher::new(
                Arc::clone(&p.queue),
                Arc::clone(&ctx.config),
                ctx.expiry.clone(),
            )
        };
        let mut live = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let key = (topic.to_string(), partition);
        if let Some(p) = live.get(&key).and_then(Weak::upgrade) {
            return handle(&p);
        }
        let sequence = ctx
            .ids
            .as_ref()
            .map(|ids| ids.saved(topic, partition))
            .unwrap_or_default();
        let queue = Queue::new(
            topic.to_string(),
            partition,
            &ctx.config,
            Arc::clone(&ctx.counters),
        );
        let p = Arc::new(Partition::new(Arc::new(queue), sequence));
        live.insert(key, Arc::downgrade(&p));
        let batcher = handle(&p);
        drop(live);
        match leader {
            Some(id) => self.adopt(id, p),
            None => self.locate(p),
        }
        batcher
    }

    /// Hands `p` to the sink of broker `id`, starting it if none runs.
    fn adopt(self: &Arc<Self>, id: i32, p: Arc<Partition>) {
        let mut brokers = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
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
        let placement: Arc<dyn Placement> = Arc::clone(self) as Arc<dyn Placement>;
        sink::spawn(Arc::clone(&self.ctx), placement, id, rx);
    }

    /// Looks for `p`'s leader, then hands it to that broker's sink.
    fn locate(self: &Arc<Self>, p: Arc<Partition>) {
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
        let meta = self.ctx.topic_metadata(topic, &what).await?;
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

impl Placement for Sinks {
    fn retire(&self, p: &Arc<Partition>) -> bool {
        let mut live = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if !p.is_finished() {
            return false;
        }
        let key = (p.queue.topic.clone(), p.queue.partition);
        let ours = live
            .get(&key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(p)));
        if ours {
            live.remove(&key);
        }
        if let Some(ids) = &self.ctx.ids {
            ids.save(&p.queue.topic, p.queue.partition, p.sequence());
        }
        true
    }

    fn relocate(self: Arc<Self>, p: Arc<Partition>) {
        self.locate(p);
    }

    fn sink_ends(
        &self,
        id: i32,
        inbox: &mut mpsc::UnboundedReceiver<Arc<Partition>>,
    ) -> Result<(), Arc<Partition>> {
        let mut brokers = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        match inbox.try_recv() {
            Ok(p) => Err(p),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                brokers.remove(&id);
                Ok(())
            }
        }
    }
}

/// Finds `p`'s leader once it has something to send, failing its batches
/// as a write would fail while the lookup does; `signal` wakes it when a
/// record comes.
async fn locate(
    sinks: Arc<Sinks>,
    p: Arc<Partition>,
    signal: Arc<Signal>,
    raised: Arc<AtomicBool>,
) {
    let mut backoff = LOOKUP_BACKOFF;
    loop {
        if p.is_finished() && sinks.retire(&p) {
            p.queue.set_waker(None);
            return;
        }
        if p.is_idle() {
            signal.wait().await;
            signal.raised();
            raised.store(false, Ordering::Release);
            continue;
        }
        match sinks.leader_of(&p).await {
            Ok(id) => {
                sinks.adopt(id, p);
                return;
            }
            Err(e) => {
                tracing::debug!(partition = %p.name(), error = %e, "no leader known");
                let wait = p.unplaced(&sinks.ctx, &e).max(backoff);
                backoff = (backoff * 2).min(LOOKUP_BACKOFF_MAX);
                tokio::time::sleep(wait).await;
            }
        }
    }
}
