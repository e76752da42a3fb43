//! The typed model of a `#[derive(KafkaMessage)]` input, with its checks.

use proc_macro2::Span;
use syn::{Data, DeriveInput, Fields, Ident, Member};

use crate::attr::{self, FieldAttr, TypeAttr};

/// What the derive needs to know about a message type.
pub(crate) struct Message<'a> {
    pub(crate) input: &'a DeriveInput,
    pub(crate) topic: syn::LitStr,
    pub(crate) name: syn::LitStr,
    /// The key field.
    pub(crate) key: Option<Key>,
    pub(crate) codec: Codec,
}

/// The `codec = "..."` of the type.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    MessagePack,
    Json,
    /// The single field of a tuple struct, as `Display` / `FromStr` text.
    Text,
}

/// The `#[kavari(key)]` field.
pub(crate) struct Key {
    pub(crate) member: Member,
    /// The span of its type, for errors about it.
    pub(crate) span: Span,
    /// Declared as `Option<T>`: `None` is a null key.
    pub(crate) optional: bool,
}

/// Whether `ty` is written as `Option<T>` (`Option`, `std::option::Option`
/// or `core::option::Option`): a derive sees only the syntax, so a type
/// alias of an `Option` is a plain key.
fn is_option(ty: &syn::Type) -> bool {
    let syn::Type::Path(p) = ty else {
        return false;
    };
    if p.qself.is_some() {
        return false;
    }
    let segments: Vec<String> = p
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let path_ok = match segments.as_slice() {
        [one] => one == "Option",
        [a, b, c] => (a == "std" || a == "core") && b == "option" && c == "Option",
        _ => false,
    };
    let one_arg = p.path.segments.last().is_some_and(
        |s| matches!(&s.arguments, syn::PathArguments::AngleBracketed(a) if a.args.len() == 1),
    );
    path_ok && one_arg
}

impl<'a> Message<'a> {
    /// Parses and validates; every error found is reported together.
    pub(crate) fn from_syn(input: &'a DeriveInput) -> syn::Result<Self> {
        let mut errors: Option<syn::Error> = None;
        let mut push = |e: syn::Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };

        let (
            TypeAttr {
                topic,
                name,
                codec: codec_lit,
            },
            attr_ok,
        ) = match attr::type_attr(&input.attrs) {
            Ok(a) => (a, true),
            Err(e) => {
                push(e);
                (TypeAttr::default(), false)
            }
        };
        // A malformed attribute was reported already; do not add a second
        // error about the topic it may have held.
        if topic.is_none() && attr_ok {
            push(syn::Error::new_spanned(
                &input.ident,
                "missing #[kavari(topic = \"...\")] on a KafkaMessage type",
            ));
        }
        if let Some(t) = &topic
            && !valid_topic(&t.value())
        {
            push(syn::Error::new_spanned(
                t,
                "a Kafka topic name is 1 to 249 characters of [a-zA-Z0-9._-], and not \".\" or \"..\"",
            ));
        }
        if let Some(n) = &name
            && n.value().is_empty()
        {
            push(syn::Error::new_spanned(
                n,
                "the message type name must not be empty",
            ));
        }

        let codec = match codec_lit.as_ref().map(syn::LitStr::value).as_deref() {
            None | Some("msgpack") => Codec::MessagePack,
            Some("json") => Codec::Json,
            Some("text") => Codec::Text,
            Some(_) => {
                push(syn::Error::new_spanned(
                    &codec_lit,
                    "unknown codec; expected \"msgpack\" (the default), \"json\" or \"text\"",
                ));
                Codec::MessagePack
            }
        };
        let single_field = matches!(
            &input.data,
            Data::Struct(d) if matches!(&d.fields, Fields::Unnamed(f) if f.unnamed.len() == 1)
        );
        if codec == Codec::Text && !single_field {
            push(syn::Error::new_spanned(
                &codec_lit,
                "codec = \"text\" needs a tuple struct with one field, e.g. `struct Greeting(String)`: the field's Display and FromStr are the value",
            ));
        }

        let mut key: Option<Key> = None;
        match &input.data {
            Data::Struct(data) => {
                let fields: Vec<_> = match &data.fields {
                    Fields::Named(f) => f.named.iter().collect(),
                    Fields::Unnamed(f) => f.unnamed.iter().collect(),
                    Fields::Unit => Vec::new(),
                };
                for (index, field) in fields.into_iter().enumerate() {
                    match attr::field_attr(&field.attrs) {
                        Ok(FieldAttr { key: Some(span) }) => {
                            if key.is_some() {
                                push(syn::Error::new(
                                    span,
                                    "only one field may be #[kavari(key)]",
                                ));
                            } else {
                                let member = match &field.ident {
                                    Some(ident) => Member::Named(ident.clone()),
                                    None => Member::Unnamed(index.into()),
                                };
                                key = Some(Key {
                                    member,
                                    span: syn::spanned::Spanned::span(&field.ty),
                                    optional: is_option(&field.ty),
                                });
                            }
                        }
                        Ok(FieldAttr { key: None }) => {}
                        Err(e) => push(e),
                    }
                }
            }
            Data::Enum(data) => {
                for variant in &data.variants {
                    for field in &variant.fields {
                        if let Ok(FieldAttr { key: Some(span) }) = attr::field_attr(&field.attrs) {
                            push(syn::Error::new(
                                span,
                                "#[kavari(key)] is only supported on struct fields",
                            ));
                        }
                    }
                }
            }
            Data::Union(u) => push(syn::Error::new_spanned(
                u.union_token,
                "KafkaMessage cannot be derived for a union",
            )),
        }

        if let Some(e) = errors {
            return Err(e);
        }
        let topic = topic.unwrap_or_else(|| syn::LitStr::new("", Span::call_site()));
        let name = name.unwrap_or_else(|| type_name(&input.ident));
        Ok(Self {
            input,
            topic,
            name,
            key,
            codec,
        })
    }
}

fn type_name(ident: &Ident) -> syn::LitStr {
    let s = ident.to_string();
    let s = s.strip_prefix("r#").unwrap_or(&s).to_string();
    syn::LitStr::new(&s, ident.span())
}

/// Kafka's own rule for topic names (`Topic.validate` in the Java client).
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}
