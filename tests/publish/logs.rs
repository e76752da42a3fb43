//! What failed publishes log: a few lines per topic and cause, not one per
//! record.

use super::*;

/// 200 publishes to a missing topic (and a missing dead-letter topic) log
/// a few lines that count the records, not a line per record and attempt;
/// each publish's error names the cause.
#[tokio::test]
async fn a_publish_storm_to_a_missing_topic_logs_a_bounded_number_of_lines() {
    let (captured, _guard) = CapturedLogs::warnings();
    let (_, manager) = setup(&[], |b| {
        b.publishing_retry_policy(FibonacciRetryPolicy::new(3).with_unit(Duration::from_millis(20)))
    })
    .await;
    let topic = unique_name("missing");
    let publishes = (0..200).map(|i| manager.publish_encoded(to_topic(&order(i), &topic)));
    let results = futures::future::join_all(publishes).await;
    for r in &results {
        let e = r.as_ref().expect_err("the topic does not exist");
        let shown = e.to_string();
        assert!(
            shown.contains(&format!("topic {topic} does not exist")),
            "{shown}"
        );
        assert_eq!(e.kind(), Some(kavari::ProduceErrorKind::UnknownTopic));
    }
    manager.shutdown().await.expect("shutdown");
    let lines = captured.lines();
    let about_the_topic: Vec<&String> = lines.iter().filter(|l| l.contains(&topic)).collect();
    assert!(
        !about_the_topic.is_empty() && about_the_topic.len() <= 6,
        "{} lines about {topic}:\n{}",
        about_the_topic.len(),
        lines.join("\n")
    );
    assert!(
        about_the_topic.iter().any(|l| l.contains("records=")),
        "a line counts the records it stands for:\n{}",
        lines.join("\n")
    );
}
