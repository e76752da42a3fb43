//! TLS against a broker that serves only TLS, with a certificate from a CA
//! of the test's own: publish and subscribe over it; a certificate the
//! client does not trust, or one for another host, fails at once (not
//! retried as a network fault) with the reason, for publishes and for a
//! consumer's health; the host check can be turned off explicitly.

use super::*;

async fn tls_broker(names: &[&str], topic: &str) -> KafkaBroker {
    init_tracing();
    own_broker(KafkaBroker::builder().tls(names), topic, 2).await
}

fn trusting(broker: &KafkaBroker) -> kavari::TlsBuilder {
    Tls::builder().ca_file(broker.tls_ca_file().expect("a TLS broker"))
}

#[tokio::test]
async fn messages_travel_over_tls_both_ways() {
    init_tracing();
    let broker = KafkaBroker::builder()
        .tls(&["127.0.0.1"])
        .start()
        .await
        .expect("a TLS broker");
    let builder =
        Kavari::builder(broker.bootstrap_servers()).tls(trusting(&broker).build().expect("tls"));
    round_trip(&broker, builder).await;
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

    let why = consumer_fails(&manager).await;
    assert!(why.contains("TLS") && why.contains("certificate"), "{why}");
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

/// A plaintext client at a TLS listener, and a TLS client at a plaintext
/// one, are told what the listener speaks and which setting to change, at
/// once: a publish fails without retries, the consumer turns `Failed`.
#[tokio::test]
async fn the_wrong_security_protocol_is_named_not_retried() {
    let topic = unique_name("tls-mismatch");
    let tls = tls_broker(&["127.0.0.1"], &topic).await;
    let plaintext_client = Kavari::builder(tls.bootstrap_servers())
        .group_id(unique_name("tls-mismatch-group"))
        .build()
        .await
        .expect("build");
    let e = refused(&plaintext_client, &topic).await;
    assert!(
        e.to_string().contains("answered in TLS")
            && e.to_string().contains("KAVARI_SECURITY_PROTOCOL=SSL"),
        "{e}"
    );
    let why = consumer_fails(&plaintext_client).await;
    assert!(why.contains("KAVARI_SECURITY_PROTOCOL=SSL"), "{why}");

    let plaintext = own_broker(KafkaBroker::builder(), &topic, 1).await;
    let tls_client = Kavari::builder(plaintext.bootstrap_servers())
        .tls(trusting(&tls).build().expect("tls"))
        .group_id(unique_name("tls-mismatch-group"))
        .build()
        .await
        .expect("build");
    let e = refused(&tls_client, &topic).await;
    assert!(
        e.to_string().contains("answered in plaintext Kafka")
            && e.to_string().contains("KAVARI_SECURITY_PROTOCOL=PLAINTEXT"),
        "{e}"
    );
    let why = consumer_fails(&tls_client).await;
    assert!(why.contains("KAVARI_SECURITY_PROTOCOL=PLAINTEXT"), "{why}");
}
