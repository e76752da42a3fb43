//! A partition's part of an answer that goes topic by topic, partition by
//! partition (ListOffsets, OffsetForLeaderEpoch): one a broker left out is
//! a malformed answer, named as such.

use crate::{TopicPartition, WireError};

/// The part of `tp` among `topics` (each topic's name and parts), a part
/// naming its partition by `index`; `what` names the answer in the error.
pub(crate) fn part_of<'r, P: 'r>(
    what: &'static str,
    topics: impl IntoIterator<Item = (&'r str, &'r [P])>,
    tp: &TopicPartition,
    index: impl Fn(&P) -> i32,
) -> Result<&'r P, WireError> {
    topics
        .into_iter()
        .filter(|(topic, _)| *topic == tp.topic)
        .flat_map(|(_, parts)| parts)
        .find(|p| index(p) == tp.partition)
        .ok_or_else(|| WireError::Malformed {
            what,
            detail: format!("no answer for {tp}"),
        })
}
