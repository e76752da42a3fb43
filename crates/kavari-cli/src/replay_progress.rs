//! What `kavari dlq replay` has replayed of one dead-letter partition,
//! kept as the offset (and its metadata) of the group `kavari-replay.<DLQ>`:
//! every letter below the offset is replayed, and past it, the letters
//! that match the filters of an earlier `--where` run below where that run
//! read to. A letter a filter passed over stays replayable, by another
//! filter or by a run without one, and no letter is replayed twice.

use serde::{Deserialize, Serialize};

use crate::Failure;

/// The most metadata Kafka keeps with an offset by default
/// (`offset.metadata.max.bytes`), less a margin.
const MAX_METADATA: usize = 4000;

/// `--where` filters: header name and value pairs, all of which must match.
pub(crate) type Filters = Vec<(String, String)>;

/// Whether a letter whose headers `header` reads passes every filter.
pub(crate) fn passes<'h>(
    filters: &[(String, String)],
    header: impl Fn(&str) -> Option<&'h str>,
) -> bool {
    filters
        .iter()
        .all(|(name, value)| header(name) == Some(value.as_str()))
}

/// A filtered run's reach: the letters matching `filters` below `upto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Filtered {
    #[serde(rename = "where")]
    filters: Filters,
    upto: i64,
}

/// One partition's replay progress.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Progress {
    /// Every letter below it is replayed (the committed offset).
    pub(crate) done_below: i64,
    filtered: Vec<Filtered>,
}

impl Progress {
    /// The progress a commit holds; `group` names it in errors.
    pub(crate) fn from_commit(offset: i64, metadata: &str, group: &str) -> Result<Self, Failure> {
        let filtered = if metadata.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(metadata).map_err(|e| {
                Failure(format!(
                    "the progress kept in group {group} is not a replay's ({e}); \
                     `kavari dlq replay --reset` starts it afresh"
                ))
            })?
        };
        Ok(Self {
            done_below: offset,
            filtered,
        })
    }

    /// The metadata to commit with [`done_below`](Self::done_below).
    pub(crate) fn metadata(&self) -> Result<String, Failure> {
        if self.filtered.is_empty() {
            return Ok(String::new());
        }
        let text = serde_json::to_string(&self.filtered)
            .map_err(|e| Failure(format!("writing the replay's progress: {e}")))?;
        if text.len() > MAX_METADATA {
            return Err(Failure(format!(
                "too many different --where filters to remember ({} bytes of progress); \
                 replay without --where, or start afresh with --reset",
                text.len()
            )));
        }
        Ok(text)
    }

    /// Whether the letter at `offset` was replayed by an earlier run.
    fn replayed<'h>(&self, offset: i64, header: impl Fn(&str) -> Option<&'h str>) -> bool {
        offset < self.done_below
            || self
                .filtered
                .iter()
                .any(|f| offset < f.upto && passes(&f.filters, &header))
    }
}

/// What to do with a letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Replayed by an earlier run.
    Earlier,
    /// Not wanted by this run's filters: left for another.
    PassedOver,
    /// Publish it again.
    Replay,
}

/// One partition's run: its progress, and whether a letter was passed over
/// (after which the offset cannot move past it).
#[derive(Debug)]
pub(crate) struct PartitionRun {
    progress: Progress,
    filters: Filters,
    gap: bool,
    /// Past the last letter decided before the first passed over.
    contiguous: i64,
}

impl PartitionRun {
    /// A run with `filters` from `progress`.
    pub(crate) fn new(progress: Progress, filters: &[(String, String)]) -> Self {
        Self {
            contiguous: progress.done_below,
            progress,
            filters: filters.to_vec(),
            gap: false,
        }
    }

    /// Decides the letter at `offset` (read in order); a `Replay` must be
    /// published before [`progress_at`](Self::progress_at) is committed.
    pub(crate) fn decide<'h>(
        &mut self,
        offset: i64,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Decision {
        let decision = if self.progress.replayed(offset, &header) {
            Decision::Earlier
        } else if passes(&self.filters, &header) {
            Decision::Replay
        } else {
            Decision::PassedOver
        };
        if decision == Decision::PassedOver {
            self.gap = true;
        } else if !self.gap {
            self.contiguous = offset + 1;
        }
        decision
    }

    /// The progress once every letter below `position` was decided.
    pub(crate) fn progress_at(&self, position: i64) -> Progress {
        let mut p = self.progress.clone();
        if !self.filters.is_empty() {
            match p.filtered.iter_mut().find(|f| f.filters == self.filters) {
                Some(f) => f.upto = f.upto.max(position),
                None => p.filtered.push(Filtered {
                    filters: self.filters.clone(),
                    upto: position,
                }),
            }
        }
        // Offsets without a letter (transaction markers, compaction) count
        // as decided.
        let contiguous = if self.gap { self.contiguous } else { position };
        p.done_below = p.done_below.max(contiguous);
        let done_below = p.done_below;
        p.filtered.retain(|f| f.upto > done_below);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Letters 0..6 alternating between two types.
    fn letter_type(offset: i64) -> &'static str {
        if offset % 2 == 0 {
            "OrderPlaced"
        } else {
            "OrderCancelled"
        }
    }

    /// Runs over letters 0..end with `filters` from `progress`; what it
    /// replays and the progress after it.
    fn run(progress: Progress, filters: &[(&str, &str)], end: i64) -> (Vec<i64>, Progress) {
        let filters: Filters = filters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut run = PartitionRun::new(progress.clone(), &filters);
        let mut replayed = Vec::new();
        for offset in progress.done_below..end {
            let header = |name: &str| (name == "msg_type").then(|| letter_type(offset));
            if run.decide(offset, header) == Decision::Replay {
                replayed.push(offset);
            }
        }
        let after = run.progress_at(end);
        // What is committed reads back the same.
        let metadata = after.metadata().expect("fits");
        let read = Progress::from_commit(after.done_below, &metadata, "g").expect("reads");
        assert_eq!(read, after);
        (replayed, after)
    }

    #[test]
    fn a_filter_strands_nothing_and_nothing_is_replayed_twice() {
        let start = Progress::default();
        let (placed, p) = run(start, &[("msg_type", "OrderPlaced")], 6);
        assert_eq!(placed, [0, 2, 4]);
        // Offset 1 was passed over: the offset stays before it.
        assert_eq!(p.done_below, 1);
        let (cancelled, p) = run(p, &[("msg_type", "OrderCancelled")], 6);
        assert_eq!(cancelled, [1, 3, 5]);
        // Both filters together covered everything: one offset, no filters.
        assert_eq!(p.done_below, 6);
        assert_eq!(p.metadata().expect("fits"), "");
        // Two more letters: a run without filters replays only them.
        let (rest, p) = run(p, &[], 8);
        assert_eq!(rest, [6, 7]);
        assert_eq!(p.done_below, 8);
    }

    #[test]
    fn a_run_without_filters_skips_what_a_filter_replayed() {
        let (placed, p) = run(Progress::default(), &[("msg_type", "OrderPlaced")], 4);
        assert_eq!(placed, [0, 2]);
        let (rest, p) = run(p, &[], 4);
        assert_eq!(rest, [1, 3]);
        assert_eq!(
            p,
            Progress {
                done_below: 4,
                filtered: Vec::new()
            }
        );
        // The same filter again finds nothing new.
        let (again, _) = run(p, &[("msg_type", "OrderPlaced")], 4);
        assert!(again.is_empty());
    }

    #[test]
    fn progress_that_is_not_a_replays_is_an_error_with_the_way_out() {
        let e = Progress::from_commit(3, "not json", "kavari-replay.x").expect_err("refused");
        assert!(e.0.contains("--reset"), "{}", e.0);
    }
}
