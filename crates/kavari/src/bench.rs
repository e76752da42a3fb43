//! Handler dispatch as the consumer runs it, for the dispatch benchmark:
//! only with the `bench` feature, which `kavari-benches` turns on.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::context::MessageContext;
use crate::handler::MessageHandler;
use crate::message::KafkaMessage;
use crate::registry::{Outcome, Registry, Route};

/// A registry of handlers, routed and called as the consumer does.
#[derive(Default)]
pub struct Dispatcher(Registry);

impl Dispatcher {
    /// Subscribes `handler` to `M`.
    pub fn subscribe<M: KafkaMessage, H: MessageHandler<M>>(&mut self, handler: H) {
        let handler = Arc::new(handler);
        let _ = self
            .0
            .add::<M, H, _>(M::TOPIC, move || Arc::clone(&handler));
    }

    /// Routes a record by its headers and runs every handler; true when
    /// all returned Ok.
    pub async fn dispatch(
        &self,
        topic: &str,
        headers: &BTreeMap<String, Vec<u8>>,
        value: &[u8],
        ctx: &MessageContext,
    ) -> bool {
        let Route::Handlers(entry) = self.0.route(topic, headers, Some(value)) else {
            return false;
        };
        let mut ok = true;
        for h in entry.handlers() {
            ok &= matches!(h.call(value, ctx).await, Outcome::Ok);
        }
        ok
    }
}
