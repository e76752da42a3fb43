//! `#[derive(KafkaMessage)]` for Kavari.
//!
//! ```ignore
//! #[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
//! #[kavari(topic = "orders", name = "OrderPlaced")]
//! struct OrderPlaced {
//!     #[kavari(key)]
//!     order_id: String,
//!     amount_cents: u64,
//! }
//! ```
//!
//! - `topic = "..."` (required): the topic every message of this type goes to.
//! - `name = "..."` (optional): the `msg_type` header; default the type's name.
//! - `#[kavari(key)]` on at most one field: its `Display` value is the
//!   partition key; without one the key is null.

mod ast;
mod attr;
mod expand;

use proc_macro::TokenStream;

/// Implements `kavari::KafkaMessage`. See the crate docs for the attributes.
#[proc_macro_derive(KafkaMessage, attributes(kavari))]
pub fn derive_kafka_message(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match ast::Message::from_syn(&input) {
        Ok(message) => expand::expand(&message).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
