//! The offset commit store: where a group's progress lives.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use crate::api::{GroupApi, KafkaGroupApi};
use crate::{CommitOffset, Generation, GroupError, TopicPartition};

/// Commits and reads a group's offsets. An offset is the next one to read
/// (last handled + 1), as Kafka tooling expects.
pub trait OffsetStore: Send + Sync {
    /// Commits `offsets` under `generation`. A stale generation fails with
    /// ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID ([`GroupError::needs_rejoin`]).
    fn commit(
        &self,
        offsets: &BTreeMap<TopicPartition, CommitOffset>,
        generation: &Generation,
    ) -> impl Future<Output = Result<(), GroupError>> + Send;

    /// The committed offset of each partition, with the leader epoch
    /// committed with it; `None` when the group has committed nothing
    /// there (apply `auto.offset.reset`).
    fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> impl Future<Output = Result<BTreeMap<TopicPartition, Option<CommitOffset>>, GroupError>> + Send;
}

/// Offsets in Kafka's `__consumer_offsets`, through the group coordinator.
#[derive(Debug, Clone)]
pub struct KafkaOffsetStore {
    pub(crate) api: Arc<KafkaGroupApi>,
}

impl OffsetStore for KafkaOffsetStore {
    async fn commit(
        &self,
        offsets: &BTreeMap<TopicPartition, CommitOffset>,
        generation: &Generation,
    ) -> Result<(), GroupError> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.api.offset_commit(generation, offsets).await
    }

    async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<CommitOffset>>, GroupError> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.api.offset_fetch(partitions).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use kafka_protocol::ResponseError;

    use super::*;

    /// An in-memory store for tests: it knows the group's current generation and
    /// refuses commits from any other, as the coordinator does.
    #[derive(Debug, Default, Clone)]
    struct MemoryOffsetStore {
        inner: Arc<Mutex<MemoryInner>>,
    }

    #[derive(Debug, Default)]
    struct MemoryInner {
        offsets: HashMap<TopicPartition, i64>,
        generation: Option<Generation>,
    }

    impl MemoryOffsetStore {
        /// Sets the generation commits must carry (`None`: accept any).
        fn set_generation(&self, generation: Option<Generation>) {
            self.lock().generation = generation;
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
            self.inner.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    impl OffsetStore for MemoryOffsetStore {
        async fn commit(
            &self,
            offsets: &BTreeMap<TopicPartition, CommitOffset>,
            generation: &Generation,
        ) -> Result<(), GroupError> {
            let mut inner = self.lock();
            if let Some(current) = &inner.generation {
                if current.member_id != generation.member_id {
                    return Err(GroupError::broker(
                        "OffsetCommit",
                        ResponseError::UnknownMemberId,
                        None,
                    ));
                }
                if current.generation_id != generation.generation_id {
                    return Err(GroupError::broker(
                        "OffsetCommit",
                        ResponseError::IllegalGeneration,
                        None,
                    ));
                }
            }
            for (tp, o) in offsets {
                inner.offsets.insert(tp.clone(), o.offset);
            }
            Ok(())
        }

        async fn committed(
            &self,
            partitions: &[TopicPartition],
        ) -> Result<BTreeMap<TopicPartition, Option<CommitOffset>>, GroupError> {
            let inner = self.lock();
            Ok(partitions
                .iter()
                .map(|tp| (tp.clone(), inner.offsets.get(tp).map(|o| (*o).into())))
                .collect())
        }
    }

    #[tokio::test]
    async fn memory_store_round_trips_and_refuses_stale_generations() {
        let store = MemoryOffsetStore::default();
        let tp = TopicPartition::new("t", 0);
        let g1 = Generation {
            generation_id: 1,
            member_id: "m".into(),
            group_instance_id: None,
        };
        assert_eq!(
            store.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
            None
        );
        store.set_generation(Some(g1.clone()));
        store
            .commit(&BTreeMap::from([(tp.clone(), 5.into())]), &g1)
            .await
            .unwrap();
        assert_eq!(
            store.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
            Some(5.into())
        );
        let stale = Generation {
            generation_id: 0,
            ..g1.clone()
        };
        let err = store
            .commit(&BTreeMap::from([(tp.clone(), 9.into())]), &stale)
            .await
            .unwrap_err();
        assert!(err.needs_rejoin(), "{err}");
        assert_eq!(
            store.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
            Some(5.into())
        );
    }
}
