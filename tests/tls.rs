//! TLS against a broker that serves only TLS, with a certificate from a CA
//! of the test's own: publish and subscribe over it; a certificate the
//! client does not trust, or one for another host, fails at once (not
//! retried as a network fault) with the reason, for publishes and for a
//! consumer's health; the host check can be turned off explicitly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kavari::publish::ProduceErrorKind;
use kavari::{
    HandlerError, HealthState, KafkaMessage, Kavari, MessageContext, MessageHandler, PublishError,
    Tls,
};
use kavari_testcontainers::{KafkaBroker, unique_name};
use kavari_tests::{eventually, init_tracing, own_broker, prefixed_topic};
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

async fn tls_broker(names: &[&str], topic: &str) -> KafkaBroker {
    init_tracing();
    own_broker(KafkaBroker::builder().tls(names), topic, 2).await
}

fn trusting(broker: &KafkaBroker) -> kavari::TlsBuilder {
    Tls::builder().ca_file(broker.tls_ca_file().expect("a TLS broker"))
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

#[tokio::test]
async fn messages_travel_over_tls_both_ways() {
    init_tracing();
    let broker = KafkaBroker::builder()
        .tls(&["127.0.0.1"])
        .start()
        .await
        .expect("a TLS broker");
    let (prefix, _topic) = prefixed_topic::<Secured>(&broker, 2).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let manager = Kavari::builder(broker.bootstrap_servers())
        .tls(trusting(&broker).build().expect("tls"))
        .topic_prefix(prefix)
        .group_id(unique_name("tls-group"))
        .build()
        .await
        .expect("build");
    manager
        .subscribe::<Secured, _>(Collect(Arc::clone(&seen)))
        .expect("subscribe");
    manager.start().await.expect("start");
    for n in 0..20 {
        let msg = Secured {
            id: format!("k{n}"),
            n,
        };
        manager.publish(&msg).await.expect("publish over TLS");
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

#[tokio::test]
async fn an_untrusted_certificate_fails_publishes_and_the_consumer_at_once() {
    let topic = unique_name("tls-untrusted");
    let broker = tls_broker(&["127.0.0.1"], &topic).await;
    // The system's roots do not include the test's CA.
    let manager = Kavari::builder(broker.bootstrap_servers())
        .tls(Tls::builder().build().expect("system roots"))
        .group_id(unique_name("tls-untrusted-group"))
        .build()
        .await
        .expect("build: an unreachable cluster is not a build error");
    let e = refused(&manager, &topic).await;
    let text = e.to_string();
    assert!(text.contains("certificate"), "names the cause: {text}");
    assert!(text.contains("127.0.0.1"), "names the broker: {text}");

    manager
        .subscribe::<Secured, _>(Collect(Arc::default()))
        .expect("subscribe");
    manager.start().await.ok();
    eventually(Duration::from_secs(15), "health turns Failed", || {
        matches!(manager.health().state, HealthState::Failed(_))
    })
    .await;
    let HealthState::Failed(why) = manager.health().state else {
        unreachable!("checked above")
    };
    assert!(why.contains("TLS") && why.contains("certificate"), "{why}");
    assert!(!manager.health().ready);
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_unless_host_checks_are_off() {
    let topic = unique_name("tls-name");
    let broker = tls_broker(&["kafka.invalid"], &topic).await;
    let checked = Kavari::builder(broker.bootstrap_servers())
        .tls(trusting(&broker).build().expect("tls"))
        .build()
        .await
        .expect("build");
    let e = refused(&checked, &topic).await;
    assert!(e.to_string().contains("not valid for name"), "{e}");

    let unchecked = Kavari::builder(broker.bootstrap_servers())
        .tls(
            trusting(&broker)
                .verify_hostname(false)
                .build()
                .expect("tls"),
        )
        .build()
        .await
        .expect("build");
    let msg = Secured {
        id: "a".into(),
        n: 1,
    };
    let mut encoded = kavari::codec::encode(&msg).expect("encode");
    encoded.topic = topic.clone().into();
    unchecked
        .publish_encoded(encoded)
        .await
        .expect("the chain is trusted; the name is not checked");

    // The chain is still checked with the name check off.
    let untrusted = Kavari::builder(broker.bootstrap_servers())
        .tls(Tls::builder().verify_hostname(false).build().expect("tls"))
        .build()
        .await
        .expect("build");
    refused(&untrusted, &topic).await;
}
