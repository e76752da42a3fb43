//! Retries and dead letters of handler failures.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "retry.jobs")]
pub(crate) struct Job {
    #[kavari(key)]
    id: String,
    flaky: bool,
}

#[derive(Default)]
pub(crate) struct Flaky {
    calls: Mutex<HashMap<String, Vec<u32>>>,
}

pub(crate) struct FlakyHandler(pub(crate) Arc<Flaky>);
impl MessageHandler<Job> for FlakyHandler {
    async fn handle(&self, job: Job, ctx: &MessageContext) -> Result<(), HandlerError> {
        let n = {
            let mut calls = self.0.calls.lock().unwrap();
            let v = calls.entry(job.id.clone()).or_default();
            v.push(ctx.attempt);
            v.len()
        };
        if job.flaky {
            if n <= 2 {
                return Err(HandlerError::new(format!("transient failure {n}")));
            }
            return Ok(());
        }
        Err(HandlerError::new("always fails"))
    }
}

#[tokio::test]
async fn failing_handlers_are_retried_then_dead_lettered_with_provenance() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker.create_topic(Job::TOPIC, 1).await.expect("topic");
    broker.create_topic("retry.jobs.dlq", 1).await.expect("dlq");
    let group = unique_name("retry");
    let m = consumer(broker, &group)
        .delivery_retry_policy(FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(20)))
        .build()
        .await
        .expect("build");
    let flaky = Arc::new(Flaky::default());
    m.subscribe::<Job, _>(FlakyHandler(Arc::clone(&flaky)))
        .expect("subscribe");
    m.start().await.expect("start");
    m.publish(&Job {
        id: "flaky".into(),
        flaky: true,
    })
    .await
    .expect("publish");
    m.publish(&Job {
        id: "doomed".into(),
        flaky: false,
    })
    .await
    .expect("publish");

    eventually(WAIT, "both jobs done", || {
        let calls = flaky.calls.lock().unwrap();
        calls.get("flaky").map(Vec::len) == Some(3) && calls.get("doomed").map(Vec::len) == Some(3)
    })
    .await;
    eventually(WAIT, "the commit past the dead letter", || {
        m.health().partitions.first().and_then(|p| p.committed) == Some(2)
    })
    .await;
    m.shutdown().await.expect("shutdown");
    let calls = flaky.calls.lock().unwrap().clone();
    assert_eq!(
        calls["flaky"],
        [1, 2, 3],
        "fails twice, then succeeds: three calls"
    );
    assert_eq!(calls["doomed"], [1, 2, 3], "three attempts by the policy");

    let letters = fetch_topic(broker, "retry.jobs.dlq", 1).await;
    assert_eq!(letters.len(), 1, "only the doomed job is dead-lettered");
    let r = &letters[0].1.record;
    assert_eq!(r.key.as_deref(), Some(&b"doomed"[..]));
    let h = |name| header(&r.headers, name).unwrap_or_else(|| panic!("header {name}"));
    assert_eq!(h("msg_type"), "Job");
    assert!(h("original_error").contains("always fails"));
    assert_eq!(h("original_topic"), "retry.jobs");
    assert_eq!(h("original_partition"), "0");
    assert_eq!(h("original_offset"), "1");
    assert_eq!(h("attempts"), "3");
    assert_eq!(h("group_id"), group);
    assert_eq!(committed(broker, &group, Job::TOPIC, 1).await[&0], Some(2));
}
