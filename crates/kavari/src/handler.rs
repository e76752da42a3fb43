//! Typed handlers: what a service implements to receive messages.

use std::future::Future;

use crate::context::MessageContext;
use crate::handler_error::HandlerError;
use crate::message::KafkaMessage;

/// Handles every message of type `M` on `M::TOPIC`.
///
/// ```
/// use kavari::{HandlerError, KafkaMessage, MessageContext, MessageHandler};
///
/// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
/// #[kavari(topic = "orders")]
/// struct OrderPlaced { #[kavari(key)] order_id: String }
///
/// struct Billing;
///
/// impl MessageHandler<OrderPlaced> for Billing {
///     async fn handle(&self, msg: OrderPlaced, ctx: &MessageContext) -> Result<(), HandlerError> {
///         if msg.order_id.is_empty() {
///             // Retrying cannot fix this: straight to the dead-letter topic.
///             return Err(HandlerError::permanent("order without an id"));
///         }
///         println!("{} at {}/{}@{}", msg.order_id, ctx.topic, ctx.partition, ctx.offset);
///         Ok(())
///     }
/// }
/// ```
pub trait MessageHandler<M: KafkaMessage>: Send + Sync + 'static {
    /// Handles one message. `Ok` lets its offset be committed; an error is
    /// retried by the delivery retry policy, then dead-lettered.
    fn handle(
        &self,
        msg: M,
        ctx: &MessageContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}
