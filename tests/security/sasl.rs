//! SASL against a broker that requires it: SCRAM-SHA-256 and -512 both
//! ways, over plaintext and over TLS; a wrong password or a mechanism the
//! broker does not offer fails at once, naming the broker and the
//! mechanism and never the password.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const PASSWORD: &str = "correct horse battery staple";

async fn sasl_broker(tls: bool) -> KafkaBroker {
    init_tracing();
    let mut builder = KafkaBroker::builder().sasl_user("alice", PASSWORD);
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
    let manager = builder.build().await.expect("build");
    let e = refused(&manager, &topic).await.to_string();
    assert!(e.contains("SCRAM-SHA-512"), "names the mechanism: {e}");
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
    // The test broker offers the SCRAM mechanisms only.
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

/// The test broker offers SCRAM only, so OAUTHBEARER's exchange itself
/// cannot be shown here (its messages are unit-tested); what can: the
/// mechanism is asked for by name, refused at once with the offered list,
/// and no token is fetched for a broker that would not take it.
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
