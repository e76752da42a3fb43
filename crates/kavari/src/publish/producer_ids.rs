//! The producer identity every partition of a manager stamps its batches
//! with when publishing is idempotent: asked for once, replaced (the epoch
//! bumped where the broker can, KIP-360) when a partition's sequence must
//! start again, given up with a warning when the cluster cannot do it and
//! the user did not ask for it, and fenced for good when the broker says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kavari_wire::ResponseError;
use kavari_wire::cluster::Cluster;
use kavari_wire::producer_id::{ProducerIdentity, init_producer_id};

use super::{ProduceError, ProduceErrorKind};

/// Whether publishing is idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Idempotence {
    /// On where the cluster supports it, as Java's default; off with a
    /// warning where it does not.
    #[default]
    Preferred,
    /// Asked for: publishes fail where the cluster cannot do it.
    Required,
    /// Off: at-least-once, retries may reorder.
    Off,
}

#[derive(Debug)]
enum State {
    /// Not asked yet.
    Unknown,
    Active(ProducerIdentity),
    /// The cluster cannot (and idempotence was only preferred).
    Unsupported,
    /// The broker fenced this producer: every publish fails.
    Fenced(String),
}

/// A partition's sequence numbers under one producer identity.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PartitionSequence {
    pub(crate) identity: Option<ProducerIdentity>,
    /// The sequence the broker expects next.
    pub(crate) acknowledged: i32,
}

/// The manager's producer identity.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    cluster: Arc<Cluster>,
    required: bool,
    state: Mutex<State>,
    /// One InitProducerId request at a time.
    asking: tokio::sync::Mutex<()>,
    /// The sequence of each partition whose produce state ended (an idle
    /// topic's route is forgotten, then made again): it goes on from here.
    saved: Mutex<HashMap<(String, i32), PartitionSequence>>,
}

impl ProducerIds {
    /// `None` when idempotence is off.
    pub(crate) fn new(cluster: Arc<Cluster>, idempotence: Idempotence) -> Option<Self> {
        (idempotence != Idempotence::Off).then(|| Self {
            cluster,
            required: idempotence == Idempotence::Required,
            state: Mutex::new(State::Unknown),
            asking: tokio::sync::Mutex::new(()),
            saved: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sequence `topic`/`partition` ended with, if its produce state
    /// ended before.
    pub(crate) fn saved(&self, topic: &str, partition: i32) -> PartitionSequence {
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        saved
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or_default()
    }

    /// Keeps the sequence of a partition whose produce state ends.
    pub(crate) fn save(&self, topic: &str, partition: i32, sequence: PartitionSequence) {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        saved.insert((topic.to_string(), partition), sequence);
    }

    /// The identity to stamp batches with; `None` when the cluster cannot
    /// do idempotent producing (and it was only preferred).
    pub(crate) async fn current(&self) -> Result<Option<ProducerIdentity>, ProduceError> {
        if let Some(known) = self.known(None) {
            return known;
        }
        let _one = self.asking.lock().await;
        match self.known(None) {
            Some(known) => known,
            None => self.ask(None).await,
        }
    }

    /// A new identity in place of `stale` (a partition's sequence must
    /// start again); the one another partition already got in its place,
    /// if it did.
    pub(crate) async fn replace(
        &self,
        stale: Option<ProducerIdentity>,
    ) -> Result<Option<ProducerIdentity>, ProduceError> {
        if let Some(known) = self.known(Some(stale)) {
            return known;
        }
        let _one = self.asking.lock().await;
        match self.known(Some(stale)) {
            Some(known) => known,
            None => self.ask(stale).await,
        }
    }

    /// The answer without asking the cluster, if there is one: the active
    /// identity (unless it is `replacing`), or why there is none.
    fn known(
        &self,
        replacing: Option<Option<ProducerIdentity>>,
    ) -> Option<Result<Option<ProducerIdentity>, ProduceError>> {
        match &*self.lock() {
            State::Active(id) if replacing != Some(Some(*id)) => Some(Ok(Some(*id))),
            State::Active(_) | State::Unknown => None,
            State::Unsupported => Some(Ok(None)),
            State::Fenced(why) => Some(Err(fenced(why))),
        }
    }

    /// Whether `identity` is the one in use now.
    pub(crate) fn is_current(&self, identity: Option<ProducerIdentity>) -> bool {
        matches!(&*self.lock(), State::Active(id) if Some(*id) == identity)
    }

    /// Stops the producer for good: the broker fenced it.
    pub(crate) fn fence(&self, why: String) {
        *self.lock() = State::Fenced(why);
    }

    async fn ask(
        &self,
        current: Option<ProducerIdentity>,
    ) -> Result<Option<ProducerIdentity>, ProduceError> {
        let what = "asking for a producer id (idempotent publishing)";
        match init_producer_id(&self.cluster, current).await {
            Ok(id) => {
                tracing::debug!(producer_id = id.id, epoch = id.epoch, "producer id");
                *self.lock() = State::Active(id);
                Ok(Some(id))
            }
            Err(e) => {
                let unsupported = matches!(e, kavari_wire::WireError::UnsupportedVersion { .. })
                    || matches!(
                        e.response_error(),
                        Some(ResponseError::ClusterAuthorizationFailed)
                    );
                if !unsupported {
                    return Err(ProduceError::from_wire(what, &e));
                }
                if self.required {
                    return Err(ProduceError::new(
                        ProduceErrorKind::Broker,
                        false,
                        format!(
                            "{what}: the cluster cannot do idempotent publishing ({e}); \
                             enable_idempotence(false) publishes without it"
                        ),
                    ));
                }
                tracing::warn!(error = %e, "the cluster cannot do idempotent publishing: publishing at least once, without it");
                *self.lock() = State::Unsupported;
                Ok(None)
            }
        }
    }
}

fn fenced(why: &str) -> ProduceError {
    ProduceError::new(
        ProduceErrorKind::Broker,
        false,
        format!("the producer was fenced ({why}): this manager publishes no more; start a new one"),
    )
}
