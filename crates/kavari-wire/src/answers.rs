//! A partition's part of an answer that goes topic by topic, partition by
//! partition (ListOffsets, OffsetForLeaderEpoch): one a broker left out is
//! a malformed answer, named as such.

use kafka_protocol::error::ParseResponseErrorCode;

use crate::{TopicPartition, WireError};

/// The part of `tp` among `topics` (each topic's name and parts), a part
/// naming its partition by `index` and its broker error by `error`: the
/// part, a broker error of `api` for `tp`, or a malformed answer when the
/// broker left `tp` out.
pub(crate) fn part_of<'r, P: 'r>(
    api: &'static str,
    topics: impl IntoIterator<Item = (&'r str, &'r [P])>,
    tp: &TopicPartition,
    index: impl Fn(&P) -> i32,
    error: impl Fn(&P) -> i16,
) -> Result<&'r P, WireError> {
    let part = topics
        .into_iter()
        .filter(|(topic, _)| *topic == tp.topic)
        .flat_map(|(_, parts)| parts)
        .find(|p| index(p) == tp.partition)
        .ok_or_else(|| WireError::Malformed {
            what: api,
            detail: format!("no answer for {tp} in the response"),
        })?;
    match error(part).err() {
        Some(e) => Err(WireError::broker(api, e, Some(tp.to_string()))),
        None => Ok(part),
    }
}
