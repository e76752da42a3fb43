//! The typed consumer runtime against a real broker, one module per
//! concern: dispatch, poison input, retries and dead letters, restarts,
//! crash safety, blocked partitions, topic mapping, offset resets, topics
//! created later, shutdown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::codec::EncodedMessage;
use kavari::{
    FibonacciRetryPolicy, HandlerError, HealthState, KafkaMessage, Kavari, MessageContext,
    MessageHandler, NoRetry,
};
use kavari_testcontainers::{KafkaBroker, shared_broker, unique_name};
use kavari_tests::{
    CrashJob, Numbered, Numbers, consumer, eventually, fetch_topic, header, init_tracing,
    prefixed_topic,
};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(60);

async fn committed(
    broker: &KafkaBroker,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Option<i64>> {
    // A throwaway member of another group only to read offsets would not
    // do: read through a member of the same group that joins nothing.
    let config = kavari_group::GroupConfig::new(broker.bootstrap_list(), group, [topic]);
    let store = kavari_group::GroupMember::start(config).expect("member").0;
    let tps: Vec<_> = (0..partitions)
        .map(|p| kavari_group::TopicPartition::new(topic, p))
        .collect();
    let mut out = BTreeMap::new();
    for _ in 0..100 {
        if let Ok(c) = store.committed(&tps).await {
            for (tp, o) in c {
                out.insert(tp.partition, o.map(|c| c.offset));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.abort();
    out
}

/// Publishes `messages` all at once (under `prefix`) through a manager of
/// its own, so a consumer meets them as a backlog.
async fn publish_all<M: KafkaMessage>(broker: &KafkaBroker, prefix: &str, messages: &[M]) {
    let publisher = Kavari::builder(broker.bootstrap_servers())
        .topic_prefix(prefix)
        .build()
        .await
        .expect("build");
    for r in publisher.publish_batch(messages).await {
        r.expect("publish");
    }
    publisher.shutdown().await.expect("shutdown");
}

mod batches;
mod blocked;
mod crash;
mod dispatch;
mod latest;
mod lifecycle;
mod new_topics;
mod ordering;
mod pause;
mod poison;
mod restart;
mod retries;
mod shutdown;
mod stuck;
mod topics;
