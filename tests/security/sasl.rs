//! SASL against a broker that requires it: SCRAM-SHA-256 and -512 both
//! ways, over plaintext and over TLS; a wrong password or a mechanism the
//! broker does not offer fails at once, naming the broker and the
//! mechanism and never the password.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const PASSWORD: &str = "correct horse battery staple";

/// A broker requiring SASL that offers the SCRAM mechanisms only (all
/// nisshi has; Kafka narrowed to the same), with user alice.
async fn sasl_broker(tls: bool) -> KafkaBroker {
    init_tracing();
    let mut builder = KafkaBroker::builder()
        .sasl_user("alice", PASSWORD)
        .sasl_mechanisms(&["SCRAM-SHA-256", "SCRAM-SHA-512"]);
    if tls {
        builder = builder.tls(&["127.0.0.1"]);
    }
    builder.start().await.expect("a broker requiring SASL")
}

#[tokio::test]
async fn scram_sha256_and_sha512_work_both_ways() {
    let broker = sasl_broker(false).await;
    for sasl in [
        Sasl::scram_sha256("alice", PASSWORD),
        Sasl::scram_sha512("alice", PASSWORD),
    ] {
        let builder = Kavari::builder(broker.bootstrap_servers()).sasl(sasl);
        round_trip(&broker, builder).await;
    }
}

/// SASL_SSL configured the way a deployment does it: `KAVARI_*`
/// variables named after librdkafka's properties.
#[tokio::test]
async fn scram_over_tls_from_the_environment_works_both_ways() {
    let broker = sasl_broker(true).await;
    let ca = broker.tls_ca_file().expect("TLS").display().to_string();
    let vars = [
        ("KAVARI_BROKERS", broker.bootstrap_servers()),
        ("KAVARI_SECURITY_PROTOCOL", "SASL_SSL".into()),
        ("KAVARI_SASL_MECHANISM", "SCRAM-SHA-512".into()),
        ("KAVARI_SASL_USERNAME", "alice".into()),
        ("KAVARI_SASL_PASSWORD", PASSWORD.into()),
        ("KAVARI_SSL_CA_LOCATION", ca),
    ];
    let builder = Kavari::from_vars(vars.map(|(k, v)| (k.to_string(), v))).expect("variables");
    round_trip(&broker, builder).await;
}

#[tokio::test]
async fn refused_credentials_fail_at_once_and_never_show_the_password() {
    let broker = sasl_broker(false).await;
    let topic = unique_name("sasl-refused");
    broker.create_topic(&topic, 1).await.expect("topic");
    let wrong = "not-the-password-9f2c";
    let builder = Kavari::builder(broker.bootstrap_servers())
        .sasl(Sasl::scram_sha512("alice", wrong))
        .group_id(unique_name("sasl-refused-group"));
    assert!(!format!("{builder:?}").contains(wrong), "{builder:?}");
    let (logs, guard) = kavari_tests::CapturedLogs::warnings();
    let manager = builder.build().await.expect("build");
    drop(guard);
    let logged = logs.lines().join("\n");
    assert!(
        logged.contains("refuses this client's configuration") && !logged.contains("not reachable"),
        "a refusal is not logged as an outage: {logged}"
    );
    let refusal = refused(&manager, &topic).await;
    // Refused credentials would refuse a dead letter alike: none is tried.
    assert!(
        matches!(
            &refusal,
            PublishError::Failed {
                dlq_error: None,
                ..
            }
        ),
        "{refusal:?}"
    );
    let e = refusal.to_string();
    assert!(
        e.contains(r#"authentication failed for user "alice" with SCRAM-SHA-512"#)
            && e.contains("wrong user name or password"),
        "says what to fix: {e}"
    );
    assert!(e.contains("127.0.0.1"), "names the broker: {e}");
    assert!(!e.contains(wrong), "{e}");
    let why = consumer_fails(&manager).await;
    assert!(why.contains("SCRAM-SHA-512"), "{why}");
    assert!(!why.contains(wrong), "{why}");

    // A user the broker does not know is refused alike.
    let stranger = Kavari::builder(broker.bootstrap_servers())
        .sasl(Sasl::scram_sha256("mallory", PASSWORD))
        .build()
        .await
        .expect("build");
    refused(&stranger, &topic).await;
}

#[tokio::test]
async fn a_mechanism_the_broker_does_not_offer_is_named_with_those_it_does() {
    let broker = sasl_broker(false).await;
    let topic = unique_name("sasl-mechanism");
    broker.create_topic(&topic, 1).await.expect("topic");
    let manager = Kavari::builder(broker.bootstrap_servers())
        .sasl(Sasl::plain("alice", PASSWORD))
        .build()
        .await
        .expect("build");
    let msg = Secured {
        id: "a".into(),
        n: 0,
    };
    let mut encoded = kavari::codec::encode(&msg).expect("encode");
    encoded.topic = topic.clone().into();
    // The broker offers the SCRAM mechanisms only.
    let e = manager
        .publish_encoded(encoded)
        .await
        .expect_err("PLAIN is not offered");
    assert_eq!(e.kind(), Some(ProduceErrorKind::Authentication), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("does not offer PLAIN") && text.contains("SCRAM-SHA-512"),
        "{text}"
    );
    assert!(Sasl::from_mechanism("GSSAPI", "alice", PASSWORD).is_none());
}

/// Counts the tokens asked for.
struct Tokens(Arc<AtomicUsize>);

impl kavari::TokenProvider for Tokens {
    fn token(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<kavari::OAuthToken, kavari::TokenError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(kavari::OAuthToken::new("eyJh.eyJz.c2ln")) })
    }
}

/// A broker that offers SCRAM only: the mechanism is asked for by name,
/// refused at once with the offered list, and no token is fetched for a
/// broker that would not take it. (The exchange itself runs against Kafka
/// in `kafka.rs`.)
#[tokio::test]
async fn oauthbearer_asks_for_no_token_when_the_broker_does_not_offer_it() {
    let broker = sasl_broker(false).await;
    let asked = Arc::new(AtomicUsize::new(0));
    let manager = Kavari::builder(broker.bootstrap_servers())
        .sasl(Sasl::oauthbearer(Tokens(Arc::clone(&asked))))
        .build()
        .await
        .expect("build");
    let e = manager
        .publish(&Secured {
            id: "a".into(),
            n: 0,
        })
        .await
        .expect_err("OAUTHBEARER is not offered");
    assert_eq!(e.kind(), Some(ProduceErrorKind::Authentication), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("does not offer OAUTHBEARER") && text.contains("SCRAM-SHA-256"),
        "{text}"
    );
    assert!(!text.contains("eyJh"), "no token in errors: {text}");
    assert_eq!(asked.load(Ordering::SeqCst), 0, "no token fetched");
}

/// A Kavari consumer and a librdkafka member share one group over
/// SASL_SSL with SCRAM-SHA-512: the partitions split between them, and
/// Kavari handles and commits its share.
#[tokio::test]
async fn a_librdkafka_member_shares_a_group_over_sasl_ssl() {
    let broker = sasl_broker(true).await;
    let ca = broker.tls_ca_file().expect("TLS").display().to_string();
    let (prefix, topic) = prefixed_topic::<Secured>(&broker, 4).await;
    let group = unique_name("secured-interop");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let builder = Kavari::builder(broker.bootstrap_servers())
        .tls(Tls::builder().ca_file(&ca).build().expect("TLS settings"))
        .sasl(Sasl::scram_sha512("alice", PASSWORD))
        .topic_prefix(&prefix)
        .group_id(&group)
        // librdkafka's peer speaks range.
        .assignors(vec![Arc::new(kavari::assignor::RangeAssignor)])
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500));
    let manager = collecting(builder, &seen).await;

    let peer = RdkafkaMember::spawn(
        &broker.bootstrap_servers(),
        &group,
        &topic,
        &[
            ("PEER_SECURITY_PROTOCOL", "SASL_SSL"),
            ("PEER_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("PEER_SASL_USERNAME", "alice"),
            ("PEER_SASL_PASSWORD", PASSWORD),
            ("PEER_SSL_CA_LOCATION", &ca),
        ],
    );
    let mine = || -> Vec<i32> {
        let mut ps: Vec<i32> = manager
            .health()
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect();
        ps.sort_unstable();
        ps
    };
    eventually(Duration::from_secs(60), "the group split 2 + 2", || {
        let (mine, theirs) = (mine(), peer.assignment());
        mine.len() == 2 && theirs.len() == 2 && mine.iter().all(|p| !theirs.contains(p))
    })
    .await;

    // Kavari handles and commits what lands on its partitions.
    let owned = mine();
    let keys: Vec<String> = (0..200)
        .map(|i| format!("k{i}"))
        .filter(|k| {
            owned.contains(&kavari::Partitioner::Murmur2.partition_for_key(k.as_bytes(), 4))
        })
        .take(10)
        .collect();
    for (n, id) in keys.iter().enumerate() {
        let msg = Secured {
            id: id.clone(),
            n: n as u32,
        };
        manager.publish(&msg).await.expect("publish over SASL_SSL");
    }
    eventually(Duration::from_secs(30), "Kavari's share handled", || {
        seen.lock().expect("lock").len() == keys.len()
    })
    .await;
    eventually(Duration::from_secs(30), "and committed", || {
        manager
            .health()
            .partitions
            .iter()
            .all(|p| p.committed == p.high_watermark)
    })
    .await;
    peer.leave().await;
    manager.shutdown().await.expect("shutdown");
}
