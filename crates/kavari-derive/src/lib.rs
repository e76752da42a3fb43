//! `#[derive(KafkaMessage)]` for Kavari. Use it through the `kavari`
//! crate (`kavari::KafkaMessage`), whose documentation of the derive lists
//! every attribute with examples:
//!
//! - `#[kavari(topic = "...")]` (required), `#[kavari(name = "...")]` and
//!   `#[kavari(codec = "msgpack" | "json" | "text")]` on the type;
//! - `#[kavari(key)]` on at most one field (`Display`; `Option<T>` for an
//!   optional key).

mod ast;
mod attr;
mod expand;

use proc_macro::TokenStream;

/// Implements `kavari::KafkaMessage` from `#[kavari(topic = "...", name =
/// "...", codec = "...")]` on the type and `#[kavari(key)]` on one field.
#[proc_macro_derive(KafkaMessage, attributes(kavari))]
pub fn derive_kafka_message(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match ast::Message::from_syn(&input) {
        Ok(message) => expand::expand(&message).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
