//! Metrics through the `metrics` facade (feature `metrics`): the library
//! records, the application installs the exporter it runs (Prometheus,
//! OpenTelemetry, StatsD…), as with `tracing`. Without the feature every
//! function here does nothing. The names and labels are listed in the
//! README ("Metrics").

use std::borrow::Cow;
use std::time::Duration;

use crate::publish::{Delivery, PublishError};

/// Counts a publish's outcome: `kavari_published_total{topic}`, or
/// `kavari_publish_errors_total{topic, kind}` and, when it went to the
/// dead-letter topic, `kavari_dead_letters_total{topic, source="publish"}`.
/// `topic` is asked for only when the publish failed (a delivery names
/// its own).
pub(crate) fn published(
    result: &Result<Delivery, PublishError>,
    topic: impl FnOnce() -> Cow<'static, str>,
) {
    #[cfg(feature = "metrics")]
    match result {
        Ok(d) => ::metrics::counter!("kavari_published_total", "topic" => label(d.topic.clone()))
            .increment(1),
        Err(e) => {
            let topic = topic();
            let kind = match e.kind() {
                Some(kind) => error_kind(kind),
                None => "encode",
            };
            ::metrics::counter!(
                "kavari_publish_errors_total", "topic" => label(topic.clone()), "kind" => kind
            )
            .increment(1);
            if matches!(e, PublishError::DeadLettered { .. }) {
                dead_lettered(&topic, "publish");
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (result, topic);
}

/// A topic as a label value: a topic the derive fixed is not copied.
#[cfg(feature = "metrics")]
fn label(topic: Cow<'static, str>) -> ::metrics::SharedString {
    match topic {
        Cow::Borrowed(t) => ::metrics::SharedString::const_str(t),
        Cow::Owned(t) => ::metrics::SharedString::from(t),
    }
}

/// The label of a produce error's class.
#[cfg(feature = "metrics")]
fn error_kind(kind: crate::publish::ProduceErrorKind) -> &'static str {
    use crate::publish::ProduceErrorKind as K;
    match kind {
        K::Connection => "connection",
        K::Timeout => "timeout",
        K::UnknownTopic => "unknown_topic",
        K::MessageTooLarge => "message_too_large",
        K::Authorization => "authorization",
        K::Authentication => "authentication",
        K::Broker => "broker",
        K::ShuttingDown => "shutting_down",
        K::Unconfirmed => "unconfirmed",
    }
}

/// A record of `topic` went to its dead-letter topic; `source` is
/// `publish` (every attempt to publish it failed) or `consume` (its
/// handler failed for good, or it could not be decoded).
pub(crate) fn dead_lettered(topic: &str, source: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(
        "kavari_dead_letters_total", "topic" => topic.to_string(), "source" => source
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (topic, source);
}

/// A record of `topic` was left unhandled by a `Skip` policy; `reason` is
/// `poison` (it could not be decoded or routed) or `handler_failure`.
pub(crate) fn skipped(topic: &str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(
        "kavari_skipped_total", "topic" => topic.to_string(), "reason" => reason
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (topic, reason);
}

/// When a handler call began, for [`handler_ran`]; `None` without the
/// feature, so a build without it does not even read the clock.
pub(crate) fn clock() -> Option<tokio::time::Instant> {
    #[cfg(feature = "metrics")]
    return Some(tokio::time::Instant::now());
    #[cfg(not(feature = "metrics"))]
    None
}

/// One handler call on a record of `topic` ended: `kavari_handled_total`
/// or `kavari_handler_errors_total`, and `kavari_handler_duration_seconds`,
/// all with `topic` and `handler` labels. Every attempt counts: a record
/// retried twice is two errors and, at last, one handled.
pub(crate) fn handler_ran(
    topic: &str,
    handler: &'static str,
    started: Option<tokio::time::Instant>,
    ok: bool,
) {
    #[cfg(feature = "metrics")]
    {
        let labels = [
            ::metrics::Label::new("topic", topic.to_string()),
            ::metrics::Label::from_static_parts("handler", handler),
        ];
        let name = if ok {
            "kavari_handled_total"
        } else {
            "kavari_handler_errors_total"
        };
        ::metrics::counter!(name, labels.iter()).increment(1);
        if let Some(started) = started {
            ::metrics::histogram!("kavari_handler_duration_seconds", labels.iter())
                .record(started.elapsed().as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (topic, handler, started, ok);
}

/// A partition's lag (high watermark minus position):
/// `kavari_consumer_lag{topic, partition}`.
pub(crate) fn lag(topic: &str, partition: i32, lag: i64) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(
        "kavari_consumer_lag", "topic" => topic.to_string(), "partition" => partition.to_string()
    )
    .set(lag as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (topic, partition, lag);
}

/// Records of a partition being handled now:
/// `kavari_in_flight{topic, partition}`.
pub(crate) fn in_flight(topic: &str, partition: i32, records: usize) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(
        "kavari_in_flight", "topic" => topic.to_string(), "partition" => partition.to_string()
    )
    .set(records as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (topic, partition, records);
}

/// The group gave this member a new assignment:
/// `kavari_rebalances_total{group}`.
pub(crate) fn rebalanced(group: &str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("kavari_rebalances_total", "group" => group.to_string()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = group;
}

/// An offset commit took `took`: `kavari_commit_duration_seconds{group}`,
/// and `kavari_commit_errors_total{group}` when it failed.
pub(crate) fn committed(group: &str, took: Duration, ok: bool) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::histogram!("kavari_commit_duration_seconds", "group" => group.to_string())
            .record(took.as_secs_f64());
        if !ok {
            ::metrics::counter!("kavari_commit_errors_total", "group" => group.to_string())
                .increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (group, took, ok);
}

/// A share group's record ended `outcome` (`accepted`, `released` or
/// `rejected`): `kavari_share_records_total{outcome}`.
pub(crate) fn share_record(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("kavari_share_records_total", "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}
