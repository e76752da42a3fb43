//! Parsing of `#[kavari(...)]` attributes.

use proc_macro2::Span;
use syn::Attribute;
use syn::spanned::Spanned;

/// `#[kavari(topic = "...", name = "...", codec = "...")]` on the type.
#[derive(Default)]
pub(crate) struct TypeAttr {
    pub(crate) topic: Option<syn::LitStr>,
    pub(crate) name: Option<syn::LitStr>,
    pub(crate) codec: Option<syn::LitStr>,
}

/// `#[kavari(key)]` on a field: the span of `key` when present.
pub(crate) struct FieldAttr {
    pub(crate) key: Option<Span>,
}

pub(crate) fn type_attr(attrs: &[Attribute]) -> syn::Result<TypeAttr> {
    let mut out = TypeAttr::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("kavari")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("topic") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                if out.topic.replace(lit).is_some() {
                    return Err(meta.error("duplicate `topic`"));
                }
                Ok(())
            } else if meta.path.is_ident("name") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                if out.name.replace(lit).is_some() {
                    return Err(meta.error("duplicate `name`"));
                }
                Ok(())
            } else if meta.path.is_ident("codec") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                if out.codec.replace(lit).is_some() {
                    return Err(meta.error("duplicate `codec`"));
                }
                Ok(())
            } else if meta.path.is_ident("key") {
                Err(meta.error("`key` goes on a field, not on the type"))
            } else {
                Err(meta.error(
                    "unknown kavari attribute; expected `topic = \"...\"`, `name = \"...\"` or `codec = \"...\"`",
                ))
            }
        })?;
    }
    Ok(out)
}

pub(crate) fn field_attr(attrs: &[Attribute]) -> syn::Result<FieldAttr> {
    let mut out = FieldAttr { key: None };
    for attr in attrs.iter().filter(|a| a.path().is_ident("kavari")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("key") {
                if out.key.replace(meta.path.span()).is_some() {
                    return Err(meta.error("duplicate `key`"));
                }
                Ok(())
            } else {
                Err(meta.error("unknown kavari field attribute; expected `key`"))
            }
        })?;
    }
    Ok(out)
}
