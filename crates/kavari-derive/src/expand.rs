//! The generated `impl ::kavari::KafkaMessage`.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Message;

pub(crate) fn expand(message: &Message<'_>) -> TokenStream {
    let ident = &message.input.ident;
    let (impl_generics, ty_generics, where_clause) = message.input.generics.split_for_impl();
    let topic = &message.topic;
    let name = &message.name;
    let key = match &message.key {
        Some(member) => quote! {
            ::core::option::Option::Some(::kavari::__private::key_string(&self.#member))
        },
        None => quote! { ::core::option::Option::None },
    };
    quote! {
        #[automatically_derived]
        impl #impl_generics ::kavari::KafkaMessage for #ident #ty_generics #where_clause {
            const TOPIC: &'static str = #topic;
            const NAME: &'static str = #name;
            fn key(&self) -> ::core::option::Option<::kavari::__private::String> {
                #key
            }
        }
    }
}
