//! The in-memory broker's state: topics of partitions of records, and
//! each group's committed offset per partition.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kavari_group::TopicPartition;
use kavari_wire::Compression;
use kavari_wire::record_batch::read::{FetchedRecord, batches};
use kavari_wire::record_batch::write::RecordBatch;

use crate::codec::EncodedMessage;

/// Where a group stands in one partition, and who delivers it now.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// The next offset to deliver: the group's committed offset.
    next: Mutex<i64>,
    /// Held while a consumer of the group delivers the partition, so its
    /// records go one at a time, in order, to one consumer.
    pub(crate) delivering: tokio::sync::Mutex<()>,
}

impl Cursor {
    pub(crate) fn next(&self) -> i64 {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn advance(&self, to: i64) {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Topic → partitions → records, each at its offset.
    topics: Mutex<BTreeMap<String, Vec<Vec<FetchedRecord>>>>,
    /// (group, partition) → its cursor.
    cursors: Mutex<HashMap<(String, TopicPartition), Arc<Cursor>>>,
}

impl Log {
    /// Creates `topic` with `partitions`; false when it exists already.
    pub(crate) fn create(&self, topic: &str, partitions: usize) -> bool {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if topics.contains_key(topic) {
            return false;
        }
        topics.insert(topic.to_string(), vec![Vec::new(); partitions.max(1)]);
        true
    }

    /// How many partitions `topic` has, creating it with one when it does
    /// not exist.
    pub(crate) fn partitions(&self, topic: &str) -> usize {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(topic.to_string())
            .or_insert_with(|| vec![Vec::new()])
            .len()
    }

    /// Appends `message` to `partition` of its topic (created with one
    /// partition when missing), written and read back as a record batch
    /// (what a fetch would hand over); its offset.
    pub(crate) fn append(&self, message: &EncodedMessage, partition: i32) -> i64 {
        let mut batch = RecordBatch::with_capacity(0);
        batch.push(&message.record(), chrono::Utc::now().timestamp_millis());
        let read = batch
            .finish(Compression::None)
            .ok()
            .and_then(|b| {
                batches(Bytes::from(b))
                    .next()?
                    .ok()?
                    .records(usize::MAX)
                    .ok()
            })
            .and_then(|mut records| records.pop());
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let partitions = topics
            .entry(message.topic.to_string())
            .or_insert_with(|| vec![Vec::new()]);
        let Some(log) = usize::try_from(partition)
            .ok()
            .and_then(|p| partitions.get_mut(p))
        else {
            return -1;
        };
        let offset = log.len() as i64;
        // A batch of one uncompressed record always reads back; the
        // fallback keeps the offset sequence whole regardless.
        let mut record = read.unwrap_or(FetchedRecord {
            offset,
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            key: message.key.clone().map(Bytes::from),
            value: Some(Bytes::from(message.value.clone())),
            headers: Default::default(),
            leader_epoch: -1,
        });
        record.offset = offset;
        log.push(record);
        offset
    }

    /// The record at `offset` of `tp`, if written.
    pub(crate) fn record(&self, tp: &TopicPartition, offset: i64) -> Option<FetchedRecord> {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let log = topics
            .get(&tp.topic)?
            .get(usize::try_from(tp.partition).ok()?)?;
        log.get(usize::try_from(offset).ok()?).cloned()
    }

    /// The offset the next record of `tp` gets (its high watermark).
    pub(crate) fn end(&self, tp: &TopicPartition) -> i64 {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .get(&tp.topic)
            .and_then(|t| t.get(usize::try_from(tp.partition).ok()?))
            .map_or(0, |log| log.len() as i64)
    }

    /// Every record of `topic`, partition by partition.
    pub(crate) fn records(&self, topic: &str) -> Vec<(i32, FetchedRecord)> {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let Some(partitions) = topics.get(topic) else {
            return Vec::new();
        };
        partitions
            .iter()
            .enumerate()
            .flat_map(|(p, log)| log.iter().map(move |r| (p as i32, r.clone())))
            .collect()
    }

    /// `group`'s cursor in `tp`, starting at `start` when it has none.
    pub(crate) fn cursor(&self, group: &str, tp: &TopicPartition, start: i64) -> Arc<Cursor> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            cursors
                .entry((group.to_string(), tp.clone()))
                .or_insert_with(|| {
                    Arc::new(Cursor {
                        next: Mutex::new(start),
                        delivering: tokio::sync::Mutex::new(()),
                    })
                }),
        )
    }

    /// `group`'s committed offset in `tp`.
    pub(crate) fn committed(&self, group: &str, tp: &TopicPartition) -> Option<i64> {
        let cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        cursors
            .get(&(group.to_string(), tp.clone()))
            .map(|c| c.next())
    }
}
