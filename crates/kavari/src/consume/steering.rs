//! Pause, resume and seek: what the application asks of the partitions
//! this member owns ([`Steering`], shared with their workers), and the
//! public types of those calls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use kavari_group::TopicPartition;
use kavari_wire::WireError;
use kavari_wire::list_offsets::OffsetSpec;
use tokio::sync::watch;

/// Where [`Kavari::seek`](crate::Kavari::seek) moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeekTo {
    /// This offset: the next record handled is the one at it (or the first
    /// after it, where compaction removed it).
    Offset(i64),
    /// The first record whose timestamp is at or after this time; the log
    /// end when none is that late.
    Time(SystemTime),
    /// The oldest record still kept.
    Earliest,
    /// The end of the log: only records written from now on.
    Latest,
}

/// Where a seek goes: an offset given, or one its leader finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    At(i64),
    Find(OffsetSpec),
}

impl SeekTo {
    /// The offset given, or the ListOffsets question that finds it.
    pub(crate) fn target(self) -> Result<Target, ControlError> {
        Ok(match self {
            Self::Offset(o) if o < 0 => return Err(ControlError::NegativeOffset(o)),
            Self::Offset(o) => Target::At(o),
            Self::Earliest => Target::Find(OffsetSpec::Earliest),
            Self::Latest => Target::Find(OffsetSpec::Latest),
            Self::Time(t) => {
                let ms = t
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                Target::Find(OffsetSpec::Time(ms))
            }
        })
    }
}

/// Why a pause, resume or seek was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The consumer has not started, or has stopped.
    #[error("the consumer is not running: start() it first")]
    NotRunning,
    /// This member does not own the partition now (it was never assigned
    /// here, or a rebalance moved it).
    #[error("this member does not own {0} now (health() lists the partitions it owns)")]
    NotOwned(TopicPartition),
    /// A seek to a negative offset.
    #[error("cannot seek to offset {0}: offsets start at 0")]
    NegativeOffset(i64),
    /// The partition's leader could not say where the seek goes.
    #[error("looking up the offset of {partition}: {source}")]
    Lookup {
        /// The partition.
        partition: TopicPartition,
        /// Why the lookup failed.
        #[source]
        source: WireError,
    },
}

/// Pausing, resuming and seeking a running consumer's partitions: the
/// consumer over Kafka, or the test kit's.
pub(crate) trait Steer: Send + Sync {
    /// Pauses (`true`) or resumes `partitions`, each owned now.
    fn pause(&self, partitions: &[TopicPartition], paused: bool) -> Result<(), ControlError>;

    /// Moves `partition`'s position; returns the offset it moves to.
    fn seek<'a>(
        &'a self,
        partition: &'a TopicPartition,
        to: SeekTo,
    ) -> futures::future::BoxFuture<'a, Result<i64, ControlError>>;
}

/// What the application asked of the partitions, read by their workers.
#[derive(Debug, Default)]
pub(crate) struct Steering {
    /// Partitions whose records are not handed to handlers until resumed;
    /// kept for the partitions that stay through a rebalance.
    pub(crate) paused: BTreeSet<TopicPartition>,
    /// Seeks not yet carried out: the partition's next record is at this
    /// offset.
    pub(crate) seeks: BTreeMap<TopicPartition, i64>,
}

/// What a worker is to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Orders {
    /// Go on from this offset (a seek, taken out of the steering).
    pub(crate) seek: Option<i64>,
    /// Hand nothing to handlers.
    pub(crate) paused: bool,
}

/// The orders for `tp`, taking its seek out of the steering.
pub(crate) fn orders(
    steering: &watch::Sender<Steering>,
    seen: &mut watch::Receiver<Steering>,
    tp: &TopicPartition,
) -> Orders {
    let (seek, paused) = {
        let now = seen.borrow_and_update();
        (now.seeks.get(tp).copied(), now.paused.contains(tp))
    };
    if seek.is_some() {
        // Taken without waking the workers again.
        steering.send_if_modified(|s| {
            s.seeks.remove(tp);
            false
        });
    }
    Orders { seek, paused }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seeks_name_their_offset_lookup() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(
            SeekTo::Time(at).target().ok(),
            Some(Target::Find(OffsetSpec::Time(1_700_000_000_123)))
        );
        assert_eq!(SeekTo::Offset(7).target().ok(), Some(Target::At(7)));
        assert!(matches!(
            SeekTo::Offset(-1).target(),
            Err(ControlError::NegativeOffset(-1))
        ));
        assert_eq!(
            SeekTo::Earliest.target().ok(),
            Some(Target::Find(OffsetSpec::Earliest))
        );
    }

    /// A seek is carried out once; a pause holds until resumed.
    #[test]
    fn a_seek_is_taken_once_and_a_pause_stays() {
        let (steering, mut seen) = watch::channel(Steering::default());
        let tp = TopicPartition::new("t", 0);
        let other = TopicPartition::new("t", 1);
        steering.send_modify(|s| {
            s.paused.insert(tp.clone());
            s.seeks.insert(tp.clone(), 5);
            s.seeks.insert(other.clone(), 9);
        });
        assert_eq!(
            orders(&steering, &mut seen, &tp),
            Orders {
                seek: Some(5),
                paused: true
            }
        );
        assert_eq!(
            orders(&steering, &mut seen, &tp),
            Orders {
                seek: None,
                paused: true
            }
        );
        assert!(
            !seen.has_changed().unwrap_or(true),
            "taking a seek wakes no one"
        );
        assert_eq!(orders(&steering, &mut seen, &other).seek, Some(9));
    }
}
