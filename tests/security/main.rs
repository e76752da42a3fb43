//! Secured connections against brokers that require them: TLS with a
//! certificate of the test's own CA, SASL (SCRAM, PLAIN) with users of the
//! test's own, and both. A refusal comes at once, typed, with the reason.

mod kafka;
mod sasl;
mod tls;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kavari::ProduceErrorKind;
use kavari::{
    HandlerError, HealthState, KafkaMessage, Kavari, MessageContext, MessageHandler, PublishError,
    Sasl, Tls,
};
use kavari_testcontainers::{KafkaBroker, unique_name};
use kavari_tests::{RdkafkaMember, eventually, init_tracing, own_broker, prefixed_topic};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "secured")]
struct Secured {
    #[kavari(key)]
    id: String,
    n: u32,
}

struct Collect(Arc<Mutex<Vec<u32>>>);

impl MessageHandler<Secured> for Collect {
    async fn handle(&self, msg: Secured, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().expect("lock").push(msg.n);
        Ok(())
    }
}

/// A started manager of `builder` whose subscriber puts every `Secured`
/// it handles into `seen`.
async fn collecting(builder: kavari::KavariBuilder, seen: &Arc<Mutex<Vec<u32>>>) -> Kavari {
    kavari_tests::started::<Secured, _>(builder, Collect(Arc::clone(seen))).await
}

/// Publishes 20 messages through `builder`'s manager and has its own
/// subscriber handle them all: both directions work over the connection.
async fn round_trip(broker: &KafkaBroker, builder: kavari::KavariBuilder) {
    let (prefix, _topic) = prefixed_topic::<Secured>(broker, 2).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let builder = builder
        .topic_prefix(prefix)
        .group_id(unique_name("secured-group"));
    let manager = collecting(builder, &seen).await;
    for n in 0..20 {
        let msg = Secured {
            id: format!("k{n}"),
            n,
        };
        manager.publish(&msg).await.expect("publish");
    }
    eventually(Duration::from_secs(30), "20 messages handled", || {
        seen.lock().expect("lock").len() >= 20
    })
    .await;
    let mut got = seen.lock().expect("lock").clone();
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    manager.shutdown().await.expect("shutdown");
}

/// A consumer that cannot get through turns `Failed`, saying why.
async fn consumer_fails(manager: &Kavari) -> String {
    manager
        .subscribe::<Secured, _>(Collect(Arc::default()))
        .expect("subscribe");
    manager.start().await.ok();
    eventually(Duration::from_secs(15), "health turns Failed", || {
        matches!(manager.health().state, HealthState::Failed(_))
    })
    .await;
    assert!(!manager.health().ready);
    match manager.health().state {
        HealthState::Failed(why) => why,
        other => panic!("not failed: {other:?}"),
    }
}

/// The publish's failure, which must come at once and say why.
async fn refused(manager: &Kavari, topic: &str) -> PublishError {
    let msg = Secured {
        id: "a".into(),
        n: 0,
    };
    let mut encoded = kavari::codec::encode(&msg).expect("encode");
    encoded.topic = topic.to_string().into();
    let started = Instant::now();
    let e = manager
        .publish_encoded(encoded)
        .await
        .expect_err("TLS refuses the broker");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not retried for the delivery timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), Some(ProduceErrorKind::Authentication), "{e}");
    e
}
