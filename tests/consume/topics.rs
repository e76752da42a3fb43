//! Topic mapping, and handler errors from anyhow and boxed errors.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "mapped.jobs")]
struct Mapped {
    #[kavari(key)]
    id: String,
    fail: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "mapped.jobs")]
struct Renamed {
    #[kavari(key)]
    id: String,
    fail: bool,
}

#[derive(Debug)]
struct LookupFailed(std::io::Error);
impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("looking up the customer")
    }
}
impl std::error::Error for LookupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Records (type, id, the context's topic); fails the ones marked `fail`
/// with an anyhow chain (`Mapped`) or a boxed error chain (`Renamed`).
/// (type, id, the context's topic) of each handled message.
type Handled = Vec<(&'static str, String, String)>;

#[derive(Clone, Default)]
struct Topics(Arc<Mutex<Handled>>);
impl MessageHandler<Mapped> for Topics {
    async fn handle(&self, m: Mapped, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(("Mapped", m.id, ctx.topic.clone()));
        if m.fail {
            let lookup: anyhow::Result<()> = Err(anyhow::anyhow!("connection reset"));
            use anyhow::Context as _;
            lookup.context("loading the order")?;
        }
        Ok(())
    }
}
impl MessageHandler<Renamed> for Topics {
    async fn handle(&self, m: Renamed, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(("Renamed", m.id, ctx.topic.clone()));
        if m.fail {
            let boxed: Box<dyn std::error::Error + Send + Sync> =
                Box::new(LookupFailed(std::io::Error::other("timed out")));
            Err(boxed)?;
        }
        Ok(())
    }
}

/// A topic prefix and a per-type topic route publishing, subscribing and
/// dead letters alike; the context shows the real topic, and the dead
/// letters of anyhow and boxed errors carry their whole chain.
#[tokio::test]
async fn a_topic_prefix_routes_publish_subscribe_and_dead_letters() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let prefix = format!("{}.", unique_name("env"));
    let mapped = format!("{prefix}mapped.jobs");
    let renamed = format!("{prefix}renamed-jobs");
    for t in [&mapped, &renamed] {
        broker.create_topic(t, 1).await.expect("topic");
        broker
            .create_topic(&format!("{t}.dlq"), 1)
            .await
            .expect("dlq");
    }
    let m = consumer(broker, &unique_name("mapped"))
        .topic_prefix(&prefix)
        .topic_for::<Renamed>("renamed-jobs")
        .delivery_retry_policy(NoRetry)
        .build()
        .await
        .expect("build");
    let seen = Topics::default();
    m.subscribe::<Mapped, _>(seen.clone()).expect("subscribe");
    m.subscribe::<Renamed, _>(seen.clone()).expect("subscribe");
    m.start().await.expect("start");
    let job = |id: &str, fail| Mapped {
        id: id.into(),
        fail,
    };
    let d = m.publish(&job("m1", false)).await.expect("publish");
    assert_eq!(d.topic, mapped);
    let batch = m.publish_batch(&[job("m2", true)]).await;
    assert_eq!(batch[0].as_ref().expect("publish").topic, mapped);
    for (id, fail) in [("r1", false), ("r2", true)] {
        let d = m
            .publish(&Renamed {
                id: id.into(),
                fail,
            })
            .await
            .expect("publish");
        assert_eq!(d.topic, renamed);
    }
    eventually(WAIT, "all four handled", || {
        seen.0.lock().unwrap().len() == 4
    })
    .await;
    let mut got = seen.0.lock().unwrap().clone();
    got.sort();
    let expected = [
        ("Mapped", "m1", &mapped),
        ("Mapped", "m2", &mapped),
        ("Renamed", "r1", &renamed),
        ("Renamed", "r2", &renamed),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(t, id, topic)| (*t, id.to_string(), topic.to_string()))
        .collect();
    assert_eq!(got, expected);
    eventually(
        WAIT,
        "both partitions committed past the dead letters",
        || {
            let h = m.health();
            h.partitions.len() == 2 && h.partitions.iter().all(|p| p.committed == Some(2))
        },
    )
    .await;
    m.shutdown().await.expect("shutdown");
    for (topic, error) in [
        (&mapped, "loading the order: connection reset"),
        (&renamed, "looking up the customer: timed out"),
    ] {
        let letters = fetch_topic(broker, &format!("{topic}.dlq"), 1).await;
        assert_eq!(letters.len(), 1, "one dead letter in {topic}.dlq");
        let h = &letters[0].1.record.headers;
        assert_eq!(header(h, "original_topic").as_deref(), Some(topic.as_str()));
        let original = header(h, "original_error").expect("original_error");
        assert!(original.ends_with(error), "{original:?}");
        assert_eq!(
            header(h, "content-type").as_deref(),
            Some("application/msgpack"),
            "the dead letter keeps the value's content type"
        );
    }
}
