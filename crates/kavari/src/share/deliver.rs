//! One acquired record of a share group handed to its handlers: what the
//! broker is told of it. `Ok` accepts; a retriable error releases it (the
//! broker delivers it again, up to its delivery limit); a final failure,
//! or poison, rejects it, dead-lettered first by the failure policies.

use kavari_wire::record_batch::read::FetchedRecord;
use tokio::sync::watch;

use super::acks::Ack;
use crate::consume::{ConsumerConfig, FailurePolicy, Writer};
use crate::context::MessageContext;
use crate::registry::{Outcome, Registry, Route};

/// What delivering a share group's records needs.
pub(crate) struct Deliverer {
    pub(crate) registry: std::sync::Arc<Registry>,
    pub(crate) config: ConsumerConfig,
    pub(crate) group: String,
    pub(crate) dead_letters: std::sync::Arc<dyn Writer>,
}

impl Deliverer {
    /// Handles `record` of `topic`/`partition`, delivered for the
    /// `delivery`th time; says how to acknowledge it.
    pub(crate) async fn deliver(
        &self,
        topic: &str,
        partition: i32,
        record: &FetchedRecord,
        delivery: u16,
        stop: &watch::Receiver<bool>,
    ) -> Ack {
        let mut ctx = MessageContext::new(topic, partition, record.offset);
        ctx.refill(record);
        ctx.delivery_count = delivery;
        let value = record.value.as_deref().unwrap_or_default();
        let entry = match self
            .registry
            .route(topic, &ctx.headers, record.value.as_deref())
        {
            Route::Handlers(entry) => entry,
            Route::Poison(reason) => {
                let why = format!("cannot be handled: {reason}");
                return self
                    .give_up(&ctx, record, &why, self.config.on_poison, stop)
                    .await;
            }
        };
        for handler in entry.handlers() {
            let error = match handler.call(value, &ctx).await {
                Outcome::Ok => continue,
                Outcome::Undecodable(reason) => {
                    let why = format!("cannot be handled: {reason}");
                    return self
                        .give_up(&ctx, record, &why, self.config.on_poison, stop)
                        .await;
                }
                Outcome::Failed(e) => e,
                Outcome::Panicked(m) => crate::handler_error::HandlerError::new(m),
            };
            let last = delivery >= self.config.share_delivery_limit;
            if error.is_retriable() && !last {
                tracing::warn!(
                    topic, partition, offset = record.offset, handler = handler.name(), delivery,
                    error = %format_args!("{error:#}"), "handler failed; released for another delivery"
                );
                return Ack::Release;
            }
            let why = format!("{}: {error:#}", handler.name());
            return self
                .give_up(&ctx, record, &why, self.config.on_handler_failure, stop)
                .await;
        }
        Ack::Accept
    }

    /// A record no delivery will handle: dead-lettered first when the
    /// policy says so (a write that cannot be made releases it instead,
    /// so it is not lost), then rejected.
    async fn give_up(
        &self,
        ctx: &MessageContext,
        record: &FetchedRecord,
        why: &str,
        policy: FailurePolicy,
        stop: &watch::Receiver<bool>,
    ) -> Ack {
        let (topic, partition, offset) = (ctx.topic.as_str(), ctx.partition, ctx.offset);
        match (policy, self.dead_letters.suffix()) {
            (FailurePolicy::DeadLetter, Some(suffix)) => {
                tracing::error!(topic, partition, offset, error = %why, "record handled for the last time; dead-lettering");
                let letter = crate::dead_letter::letter(
                    topic,
                    suffix,
                    record.key.as_deref(),
                    record.value.as_deref().unwrap_or_default(),
                    &ctx.headers,
                    why,
                    Some(crate::dead_letter::Origin {
                        partition,
                        offset,
                        attempts: u32::from(ctx.delivery_count),
                        group_id: &self.group,
                    }),
                );
                let quiet = |_: Option<&crate::publish::ProduceError>| {};
                match self
                    .dead_letters
                    .write_until_written(letter, topic, stop.clone(), &quiet)
                    .await
                {
                    Ok(_) => {
                        crate::metrics::dead_lettered(topic, "consume");
                        Ack::Reject
                    }
                    Err(e) => {
                        tracing::error!(topic, partition, offset, error = %e, "dead-letter write abandoned: stopping; the record is released");
                        Ack::Release
                    }
                }
            }
            (FailurePolicy::Block, _) => {
                tracing::warn!(topic, partition, offset, error = %why, "handler failed; released for another delivery (on_handler_failure is Block)");
                Ack::Release
            }
            _ => {
                tracing::error!(topic, partition, offset, error = %why, "record rejected (skipped)");
                crate::metrics::skipped(topic, "handler_failure");
                Ack::Reject
            }
        }
    }
}
