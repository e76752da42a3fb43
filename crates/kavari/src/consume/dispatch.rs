//! Delivering one record: route, run every handler with retries, and
//! dead-letter what cannot be handled.

use std::collections::BTreeMap;
use std::sync::Arc;

use kavari_wire::record_batch::read::FetchedRecord;
use tokio::sync::watch;

use super::Shared;
use crate::codec::{DecodeError, EncodedMessage, MSG_TYPE_HEADER};
use crate::publish::ORIGINAL_ERROR_HEADER;
use crate::registry::{Outcome, Route};
use crate::{HandlerError, MessageContext};

/// How a record was disposed of; every case may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    Handled,
    DeadLettered,
    Skipped,
}

/// The dead-letter write failed and the partition is stopping: the record
/// must not be committed; its next owner gets it again.
#[derive(Debug)]
pub(crate) struct Undelivered;

/// What a dead letter is made of.
struct Letter<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    value: &'a [u8],
    headers: &'a BTreeMap<String, Vec<u8>>,
}

pub(crate) async fn deliver(
    shared: &Arc<Shared>,
    topic: &str,
    partition: i32,
    record: FetchedRecord,
    stop: &watch::Receiver<bool>,
) -> Result<Disposition, Undelivered> {
    let FetchedRecord {
        offset,
        timestamp_ms,
        key,
        value: record_value,
        headers,
    } = record;
    let value = record_value.as_deref().unwrap_or_default();
    let key = key.as_deref();
    // Handlers see headers by name (the last of a repeated name wins); the
    // names move over from the fetched record.
    let headers: BTreeMap<String, Vec<u8>> = headers
        .into_iter()
        .map(|(k, v)| (k, v.as_deref().unwrap_or_default().to_vec()))
        .collect();
    let letter = |headers| Letter {
        topic,
        partition,
        offset,
        key,
        value,
        headers,
    };
    let entry = match shared
        .registry
        .route(topic, &headers, record_value.as_deref())
    {
        Route::Handlers(entry) => entry,
        Route::Poison(reason) => {
            let letter = letter(&headers);
            return poison(shared, &letter, &reason, stop).await;
        }
    };
    // The headers move into the context; dead letters read them from there.
    let mut ctx = MessageContext {
        topic: topic.to_string(),
        partition,
        offset,
        key: key
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_string),
        headers,
        timestamp: chrono::DateTime::from_timestamp_millis(timestamp_ms).unwrap_or_default(),
        attempt: 1,
    };
    let mut disposition = Disposition::Handled;
    for (i, handler) in entry.handlers().enumerate() {
        let mut attempt = 1;
        loop {
            ctx.attempt = attempt;
            let error = match handler.call(value, &ctx).await {
                Outcome::Ok => break,
                Outcome::Undecodable(reason) if i == 0 => {
                    // Every handler of the type would fail alike: poison.
                    let letter = letter(&ctx.headers);
                    return poison(shared, &letter, &reason, stop).await;
                }
                Outcome::Undecodable(reason) => HandlerError::permanent(reason.to_string()),
                Outcome::Failed(e) => e,
                // A panic is an error of this message; the runtime lives on.
                Outcome::Panicked(m) => HandlerError::new(m),
            };
            let delay = if error.is_retriable() {
                shared.config.delivery_retry.delay(attempt)
            } else {
                None
            };
            match delay {
                Some(d) => {
                    tracing::warn!(
                        topic, partition, offset, handler = handler.name(),
                        attempt, error = %error, "handler failed; retrying"
                    );
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                None => {
                    tracing::error!(
                        topic, partition, offset, handler = handler.name(),
                        attempts = attempt, error = %error, "handler failed for good; dead-lettering"
                    );
                    let why = format!("{}: {error}", handler.name());
                    let letter = letter(&ctx.headers);
                    dead_letter(shared, &letter, &why, attempt, stop).await?;
                    disposition = Disposition::DeadLettered;
                    break;
                }
            }
        }
    }
    Ok(disposition)
}

/// A record that cannot be handled: skipped in relaxed mode, dead-lettered
/// in strict mode (or when configured).
async fn poison(
    shared: &Arc<Shared>,
    letter: &Letter<'_>,
    reason: &DecodeError,
    stop: &watch::Receiver<bool>,
) -> Result<Disposition, Undelivered> {
    let to_dlq = shared.config.strict || shared.config.dead_letter_poison;
    tracing::warn!(
        topic = letter.topic, partition = letter.partition, offset = letter.offset,
        error = %reason, dead_letter = to_dlq, "record cannot be handled"
    );
    if to_dlq {
        dead_letter(shared, letter, &reason.to_string(), 0, stop).await?;
        return Ok(Disposition::DeadLettered);
    }
    Ok(Disposition::Skipped)
}

/// Writes the record to `<topic><suffix>` with its provenance, retrying until
/// it is written or the partition stops.
async fn dead_letter(
    shared: &Arc<Shared>,
    letter: &Letter<'_>,
    error: &str,
    attempts: u32,
    stop: &watch::Receiver<bool>,
) -> Result<(), Undelivered> {
    let (topic, partition, offset) = (letter.topic, letter.partition, letter.offset);
    let Some(suffix) = shared.publisher.dlq_suffix() else {
        tracing::error!(
            topic,
            partition,
            offset,
            error,
            "dead letters are off; the record is skipped"
        );
        return Ok(());
    };
    let mut headers = BTreeMap::new();
    if let Some(t) = letter.headers.get(MSG_TYPE_HEADER) {
        headers.insert(MSG_TYPE_HEADER.to_string(), t.clone());
    }
    let mut put = |k: &str, v: String| headers.insert(k.to_string(), v.into_bytes());
    put(ORIGINAL_ERROR_HEADER, error.to_string());
    put("original_topic", topic.to_string());
    put("original_partition", partition.to_string());
    put("original_offset", offset.to_string());
    put("attempts", attempts.to_string());
    put("group_id", shared.group_id.clone());
    let message = EncodedMessage {
        topic: format!("{topic}{suffix}").into(),
        key: letter.key.map(<[u8]>::to_vec),
        value: letter.value.to_vec(),
        headers,
    };
    shared
        .publisher
        .produce_until_written(message, stop.clone())
        .await
        .map(drop)
        .map_err(|e| {
            tracing::error!(topic, partition, offset, error = %e, "dead-letter write abandoned: the partition is stopping; the record stays uncommitted");
            Undelivered
        })
}
