//! The producer identity every partition of a manager stamps its batches
//! with when publishing is idempotent: asked for once, replaced (the epoch
//! bumped where the broker can, KIP-360) when a partition's sequence must
//! start again, given up with a warning when the cluster cannot do it and
//! the user did not ask for it, and fenced for good when the broker says so.

use std::collections::HashMap;
use std::sync::Arc;

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

/// A partition's sequence, held by the one sender numbering its batches.
pub(crate) type SequenceSlot = Arc<tokio::sync::Mutex<PartitionSequence>>;

/// The manager's producer identity.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    cluster: Arc<Cluster>,
    required: bool,
    state: tokio::sync::Mutex<State>,
    /// Every partition's sequence, kept when its sender ends (an idle
    /// topic's route is forgotten, then made again): a new sender goes on
    /// where the last one stopped, once that one has finished.
    sequences: std::sync::Mutex<HashMap<(String, i32), SequenceSlot>>,
}

impl ProducerIds {
    /// `None` when idempotence is off.
    pub(crate) fn new(cluster: Arc<Cluster>, idempotence: Idempotence) -> Option<Self> {
        (idempotence != Idempotence::Off).then(|| Self {
            cluster,
            required: idempotence == Idempotence::Required,
            state: tokio::sync::Mutex::new(State::Unknown),
            sequences: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The sequence slot of `topic`/`partition`; a sender locks it for as
    /// long as it runs.
    pub(crate) fn sequence(&self, topic: &str, partition: i32) -> SequenceSlot {
        let mut slots = self.sequences.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry((topic.to_string(), partition)).or_default())
    }

    /// The identity to stamp batches with; `None` when the cluster cannot
    /// do idempotent producing (and it was only preferred).
    pub(crate) async fn current(&self) -> Result<Option<ProducerIdentity>, ProduceError> {
        let mut state = self.state.lock().await;
        match &*state {
            State::Active(id) => Ok(Some(*id)),
            State::Unsupported => Ok(None),
            State::Fenced(why) => Err(fenced(why)),
            State::Unknown => self.ask(&mut state, None).await,
        }
    }

    /// A new identity in place of `stale` (a partition's sequence must
    /// start again); the one another partition already got in its place,
    /// if it did.
    pub(crate) async fn replace(
        &self,
        stale: Option<ProducerIdentity>,
    ) -> Result<Option<ProducerIdentity>, ProduceError> {
        let mut state = self.state.lock().await;
        match &*state {
            State::Active(id) if Some(*id) != stale => Ok(Some(*id)),
            State::Active(_) | State::Unknown => self.ask(&mut state, stale).await,
            State::Unsupported => Ok(None),
            State::Fenced(why) => Err(fenced(why)),
        }
    }

    /// Whether `identity` is the one in use now.
    pub(crate) async fn is_current(&self, identity: Option<ProducerIdentity>) -> bool {
        matches!(&*self.state.lock().await, State::Active(id) if Some(*id) == identity)
    }

    /// Stops the producer for good: the broker fenced it.
    pub(crate) async fn fence(&self, why: String) -> ProduceError {
        let e = fenced(&why);
        *self.state.lock().await = State::Fenced(why);
        e
    }

    async fn ask(
        &self,
        state: &mut State,
        current: Option<ProducerIdentity>,
    ) -> Result<Option<ProducerIdentity>, ProduceError> {
        let what = "asking for a producer id (idempotent publishing)";
        match init_producer_id(&self.cluster, current).await {
            Ok(id) => {
                tracing::debug!(producer_id = id.id, epoch = id.epoch, "producer id");
                *state = State::Active(id);
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
                *state = State::Unsupported;
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
