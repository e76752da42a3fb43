//! What the member tells the consumer runtime, and the member's state.

use tokio::sync::oneshot;

use crate::{GroupError, TopicPartition};

/// An identity in one generation of the group: what commits must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The generation id.
    pub generation_id: i32,
    /// The member id the coordinator gave this member.
    pub member_id: String,
    /// The static instance id, if any.
    pub group_instance_id: Option<String>,
}

/// A change of the member's partitions.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupEvent {
    /// Partitions were added in `generation`. `assignment` is everything the
    /// member owns now.
    Assigned {
        /// Newly added partitions.
        added: Vec<TopicPartition>,
        /// The whole assignment.
        assignment: Vec<TopicPartition>,
        /// The generation.
        generation: Generation,
    },
    /// These partitions are being taken away: stop processing them, commit
    /// their offsets, then call [`RevokeAck::done`] (dropping it also
    /// acknowledges). The member does not rejoin before that, for at most the
    /// rebalance timeout.
    Revoking {
        /// The partitions to give up.
        partitions: Vec<TopicPartition>,
        /// Acknowledge when committed.
        ack: RevokeAck,
    },
    /// These partitions were lost without a chance to commit (the session
    /// expired or the generation is gone): stop processing them; their
    /// new owner starts from the last commit.
    Lost {
        /// The partitions lost.
        partitions: Vec<TopicPartition>,
    },
    /// The member stopped for good with this error.
    Failed(GroupError),
}

/// Acknowledges a [`GroupEvent::Revoking`].
#[derive(Debug)]
pub struct RevokeAck(Option<oneshot::Sender<()>>);

impl RevokeAck {
    pub(crate) fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(tx)), rx)
    }

    /// The partitions are committed and released.
    pub fn done(mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for RevokeAck {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Where the member is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberPhase {
    /// Not joined yet.
    Unjoined,
    /// Looking up or reconnecting to the coordinator.
    Reconnecting,
    /// Sent JoinGroup, waiting for the group.
    Joining,
    /// Joined, waiting for the leader's assignment.
    AwaitingSync,
    /// In a stable generation, heartbeating.
    Stable,
    /// A rebalance is under way; giving up partitions.
    Rebalancing,
    /// Leaving the group.
    Leaving,
    /// Closed cleanly.
    Closed,
    /// Stopped by a fatal error.
    Failed(String),
}

/// A snapshot of the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    /// The phase.
    pub phase: MemberPhase,
    /// The current generation, when in one.
    pub generation: Option<Generation>,
    /// The partitions owned now.
    pub assignment: Vec<TopicPartition>,
    /// How many generations this member has joined (rebalances it saw).
    pub joins: u64,
}
