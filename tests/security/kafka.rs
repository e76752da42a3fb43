//! What Apache Kafka offers and the single-process broker does not: PLAIN
//! and OAUTHBEARER (with Kafka's unsecured validator, which takes unsigned
//! tokens), mutual TLS, and sessions that end (KIP-368). Each test starts
//! a one-node Kafka cluster of its own, whatever `KAVARI_TEST_BROKER` says.

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;

use super::*;

const PASSWORD: &str = "kafka-secret-7d1e";

async fn one_node(builder: kavari_testcontainers::BrokerBuilder) -> KafkaBroker {
    init_tracing();
    KafkaBroker::from(
        builder
            .nodes(1)
            .start_cluster()
            .await
            .expect("a Kafka node"),
    )
}

/// Unsigned tokens for `sub` (`alg: none`, valid for an hour), as Kafka's
/// unsecured validator takes them; counts the tokens asked for.
struct Unsigned {
    sub: &'static str,
    asked: Arc<AtomicUsize>,
}

impl kavari::TokenProvider for Unsigned {
    fn token(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<kavari::OAuthToken, kavari::TokenError>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let now = chrono::Utc::now().timestamp();
        let b64 = |json: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let jws = format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#.to_string()),
            b64(format!(
                r#"{{"sub":"{}","iat":{now},"exp":{}}}"#,
                self.sub,
                now + 3600
            ))
        );
        Box::pin(async move { Ok(kavari::OAuthToken::new(jws)) })
    }
}

#[tokio::test]
async fn plain_and_oauthbearer_work_both_ways() {
    let broker = one_node(KafkaBroker::builder().sasl_user("alice", PASSWORD)).await;
    let plain = Kavari::builder(broker.bootstrap_servers()).sasl(Sasl::plain("alice", PASSWORD));
    round_trip(&broker, plain).await;
    let asked = Arc::new(AtomicUsize::new(0));
    let bearer = Kavari::builder(broker.bootstrap_servers()).sasl(Sasl::oauthbearer(Unsigned {
        sub: "alice",
        asked: Arc::clone(&asked),
    }));
    round_trip(&broker, bearer).await;
    assert!(asked.load(Ordering::SeqCst) > 0, "a token was asked for");
}

#[tokio::test]
async fn scram_sha256_and_sha512_work_both_ways_over_tls() {
    let broker = one_node(
        KafkaBroker::builder()
            .tls(&["127.0.0.1"])
            .sasl_user("alice", PASSWORD),
    )
    .await;
    let ca = broker.tls_ca_file().expect("TLS");
    for sasl in [
        Sasl::scram_sha256("alice", PASSWORD),
        Sasl::scram_sha512("alice", PASSWORD),
    ] {
        let builder = Kavari::builder(broker.bootstrap_servers())
            .tls(Tls::builder().ca_file(ca).build().expect("tls"))
            .sasl(sasl);
        round_trip(&broker, builder).await;
    }
}

#[tokio::test]
async fn mutual_tls_works_and_a_missing_client_certificate_fails_at_once_saying_so() {
    let broker = one_node(
        KafkaBroker::builder()
            .tls(&["127.0.0.1"])
            .require_client_certificates(),
    )
    .await;
    let (cert, key) = broker.client_certificate().expect("a client certificate");
    let ca = broker.tls_ca_file().expect("TLS");
    let with_certificate = Kavari::builder(broker.bootstrap_servers()).tls(
        Tls::builder()
            .ca_file(ca)
            .client_certificate(cert, key)
            .build()
            .expect("tls"),
    );
    round_trip(&broker, with_certificate).await;

    let topic = unique_name("mtls-missing");
    broker.create_topic(&topic, 1).await.expect("topic");
    let without = Kavari::builder(broker.bootstrap_servers())
        .tls(Tls::builder().ca_file(ca).build().expect("tls"))
        .build()
        .await
        .expect("build");
    let e = refused(&without, &topic).await.to_string();
    assert!(
        e.contains("certificate"),
        "says a certificate is missing: {e}"
    );
    assert!(e.contains("127.0.0.1"), "names the broker: {e}");
}

/// Sessions of 30 s (`connections.max.reauth.ms`): Kavari opens a fresh,
/// authenticated connection before each ends, and records keep flowing
/// both ways for 40 s, none lost.
#[tokio::test]
async fn records_flow_across_reauthentication_every_30_seconds() {
    let broker = one_node(
        KafkaBroker::builder()
            .sasl_user("alice", PASSWORD)
            .reauthenticate_after(Duration::from_secs(30)),
    )
    .await;
    let (prefix, _topic) = prefixed_topic::<Secured>(&broker, 2).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let manager = collecting(
        Kavari::builder(broker.bootstrap_servers())
            .sasl(Sasl::scram_sha512("alice", PASSWORD))
            .topic_prefix(prefix)
            .group_id(unique_name("reauth-group")),
        &seen,
    )
    .await;
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(40) {
        let msg = Secured {
            id: format!("k{n}"),
            n,
        };
        manager
            .publish(&msg)
            .await
            .unwrap_or_else(|e| panic!("publish #{n} after {:?}: {e}", started.elapsed()));
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(Duration::from_secs(30), "every message handled", || {
        seen.lock().expect("lock").len() >= usize::try_from(n).unwrap()
    })
    .await;
    let mut got = seen.lock().expect("lock").clone();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, (0..n).collect::<Vec<_>>(), "each of {n} handled");
    manager.shutdown().await.expect("shutdown");
}
