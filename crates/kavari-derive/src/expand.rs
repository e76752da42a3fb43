//! The generated `impl ::kavari::KafkaMessage`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use crate::ast::{Codec, Key, Message};

pub(crate) fn expand(message: &Message<'_>) -> TokenStream {
    let ident = &message.input.ident;
    let (impl_generics, ty_generics, where_clause) = message.input.generics.split_for_impl();
    // For a generic type, state the serde bounds the trait needs on the
    // concrete type, so the impl applies exactly where they hold.
    let mut where_clause = where_clause.cloned();
    if !message.input.generics.params.is_empty() {
        where_clause
            .get_or_insert_with(|| syn::parse_quote!(where))
            .predicates
            .push(syn::parse_quote! {
                #ident #ty_generics: ::kavari::__private::Serialize
                    + ::kavari::__private::DeserializeOwned
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static
            });
    }
    let topic = &message.topic;
    let name = &message.name;
    let (key, write_key) = match &message.key {
        Some(Key {
            member,
            span,
            optional: false,
        }) => (
            quote! { ::kavari::__private::written_key(self) },
            quote_spanned! {*span=>
                ::kavari::__private::KeyField::write_key(&self.#member, out);
                true
            },
        ),
        Some(Key {
            member,
            span,
            optional: true,
        }) => (
            quote! { ::kavari::__private::written_key(self) },
            quote_spanned! {*span=>
                match &self.#member {
                    ::core::option::Option::Some(key) => {
                        ::kavari::__private::KeyField::write_key(key, out);
                        true
                    }
                    ::core::option::Option::None => false,
                }
            },
        ),
        None => (
            quote! { ::core::option::Option::None },
            quote! {
                let _ = out;
                false
            },
        ),
    };
    let codec = match message.codec {
        Codec::MessagePack => quote! {},
        Codec::Json => quote! {
            const CODEC: ::kavari::codec::Codec = ::kavari::codec::Codec::Json;
        },
        Codec::Text => quote! {
            const CODEC: ::kavari::codec::Codec = ::kavari::codec::Codec::Text;
            fn write_text(
                &self,
                out: &mut ::kavari::__private::Vec<u8>,
            ) -> ::core::result::Result<(), ::kavari::__private::String> {
                ::kavari::__private::write_display(&self.0, out);
                ::core::result::Result::Ok(())
            }
            fn read_text(
                text: &str,
            ) -> ::core::result::Result<Self, ::kavari::__private::String> {
                ::kavari::__private::parse_text(text).map(Self)
            }
        },
    };
    quote! {
        #[automatically_derived]
        impl #impl_generics ::kavari::KafkaMessage for #ident #ty_generics #where_clause {
            const TOPIC: &'static str = #topic;
            const NAME: &'static str = #name;
            fn key(&self) -> ::core::option::Option<::kavari::__private::String> {
                #key
            }
            fn write_key(&self, out: &mut ::kavari::__private::Vec<u8>) -> bool {
                #write_key
            }
            #codec
        }
    }
}
