//! The wire shape of each response Kavari reads, and a walk over a
//! response's bytes that checks every claimed length against the bytes
//! left before kafka-protocol decodes it.
//!
//! kafka-protocol reserves a vector of the length an array claims
//! (`Vec::with_capacity(n)`), so four corrupt bytes claiming 2³¹ elements
//! of a hundred bytes each abort the process on allocation, whatever the
//! frame's size. The walk reads the same grammar kafka-protocol reads (the
//! tables in [`apis`], written from the protocol's message specs and
//! checked against kafka-protocol at every version Kavari speaks), so once
//! it passes, no array claims more elements than the bytes left could hold.
//!
//! Fitting the bytes is not enough where an element decodes to far more
//! memory than it takes on the wire (a broker of 12 bytes becomes a
//! structure of about a hundred): a response may hold at most
//! [`MAX_ELEMENTS`] structures and strings in its arrays, so a 60 MB answer
//! listing 4.5 million brokers is refused instead of decoded into gigabytes.

pub mod apis;

use std::cell::Cell;

use bytes::Bytes;

use crate::WireError;
use crate::reader::Reader;

/// The most structures, strings and byte strings a response's arrays may
/// hold together: ample for a Metadata answer naming every partition of a
/// cluster of 400,000, and each decodes to at most a few hundred bytes.
pub const MAX_ELEMENTS: usize = 500_000;

/// A field's wire type.
#[derive(Debug)]
pub enum Ty {
    /// An int8.
    I8,
    /// A boolean (one byte).
    Bool,
    /// An int16.
    I16,
    /// An int32.
    I32,
    /// An int64.
    I64,
    /// A UUID (16 bytes).
    Uuid,
    /// A string, nullable or not: an int16 length, compact in flexible
    /// versions.
    Str,
    /// Bytes, nullable or not: an int32 length, compact in flexible
    /// versions.
    Bytes,
    /// An array: an int32 count, compact in flexible versions.
    Array(&'static Ty),
    /// A structure.
    Struct(&'static Struct),
    /// A nullable structure: an int8, 1 when the structure follows, -1
    /// when it is null.
    Nullable(&'static Struct),
}

/// A field present from `since` to `until` (inclusive).
#[derive(Debug)]
pub struct Field {
    /// Its type.
    pub ty: Ty,
    /// The first version it is in.
    pub since: i16,
    /// The last version it is in.
    pub until: i16,
}

/// A tagged field the decoder reads by its type (not skipped by its size).
#[derive(Debug)]
pub struct Tag {
    /// Its tag.
    pub tag: u32,
    /// Its type.
    pub ty: Ty,
    /// The first version it is in; below it the decoder refuses the tag.
    pub since: i16,
}

/// A structure's fields in wire order, and its known tagged fields.
#[derive(Debug)]
pub struct Struct {
    /// Fields in wire order.
    pub fields: &'static [Field],
    /// Tagged fields read by type (flexible versions only).
    pub tags: &'static [Tag],
}

/// A whole response body.
#[derive(Debug)]
pub struct Shape {
    /// The first flexible version (compact lengths, tagged fields).
    pub flexible_since: i16,
    /// The top-level structure.
    pub body: Struct,
}

/// A field in every version.
pub const fn all(ty: Ty) -> Field {
    Field {
        ty,
        since: 0,
        until: i16::MAX,
    }
}

/// A field from `since` on.
pub const fn since(since: i16, ty: Ty) -> Field {
    Field {
        ty,
        since,
        until: i16::MAX,
    }
}

/// A field up to `until` only.
pub const fn until(until: i16, ty: Ty) -> Field {
    Field {
        ty,
        since: 0,
        until,
    }
}

/// A field from `since` to `until`.
pub const fn between(since: i16, until: i16, ty: Ty) -> Field {
    Field { ty, since, until }
}

impl Field {
    /// Whether the field is in `version`.
    pub fn in_version(&self, version: i16) -> bool {
        self.since <= version && version <= self.until
    }
}

impl Ty {
    /// The fewest bytes a value of this type takes.
    pub fn min_size(&self, version: i16, flexible: bool) -> usize {
        match self {
            Ty::I8 | Ty::Bool | Ty::Nullable(_) => 1,
            Ty::I16 => 2,
            Ty::I32 => 4,
            Ty::I64 => 8,
            Ty::Uuid => 16,
            Ty::Str if !flexible => 2,
            Ty::Bytes | Ty::Array(_) if !flexible => 4,
            Ty::Str | Ty::Bytes | Ty::Array(_) => 1,
            Ty::Struct(s) => {
                let fields: usize = s
                    .fields
                    .iter()
                    .filter(|f| f.in_version(version))
                    .map(|f| f.ty.min_size(version, flexible))
                    .sum();
                fields + usize::from(flexible)
            }
        }
    }
}

impl Shape {
    /// Walks `body` as this response at `version`: an error when a length
    /// claims more than the bytes left or the bytes end early; otherwise
    /// how many bytes follow the response (normally none).
    pub fn check(&self, body: &Bytes, version: i16, api: &'static str) -> Result<usize, WireError> {
        let mut r = Reader::new(body.clone(), api);
        let walk = Walk {
            version,
            flexible: version >= self.flexible_since,
            elements: Cell::new(MAX_ELEMENTS),
        };
        walk.structure(&mut r, &self.body)?;
        Ok(r.remaining())
    }
}

/// One walk's version, and how many more elements that decode to more
/// than their bytes the response may hold.
struct Walk {
    version: i16,
    flexible: bool,
    elements: Cell<usize>,
}

impl Walk {
    fn value(&self, r: &mut Reader, ty: &Ty) -> Result<(), WireError> {
        match ty {
            Ty::I8 | Ty::Bool => r.i8().map(drop),
            Ty::I16 => r.i16().map(drop),
            Ty::I32 => r.i32().map(drop),
            Ty::I64 => r.i64().map(drop),
            Ty::Uuid => r.bytes(16).map(drop),
            Ty::Str if self.flexible => r.nullable_bytes(true).map(drop),
            Ty::Str => match r.i16()? {
                -1 => Ok(()),
                n => {
                    let n = usize::try_from(n)
                        .map_err(|_| r.error(format!("negative string length {n}")))?;
                    r.bytes(n).map(drop)
                }
            },
            Ty::Bytes => r.nullable_bytes(self.flexible).map(drop),
            Ty::Array(element) => {
                let min = element.min_size(self.version, self.flexible).max(1);
                let n = r.len(self.flexible, min)?.unwrap_or(0);
                if !matches!(element, Ty::I8 | Ty::Bool | Ty::I16 | Ty::I32 | Ty::I64) {
                    let left = self.elements.get().checked_sub(n).ok_or_else(|| {
                        r.error(format!(
                            "an array of {n} elements passes the {MAX_ELEMENTS} a response may hold"
                        ))
                    })?;
                    self.elements.set(left);
                }
                (0..n).try_for_each(|_| self.value(r, element))
            }
            Ty::Struct(s) => self.structure(r, s),
            // kafka-protocol reads the structure only after a 1.
            Ty::Nullable(s) => match r.i8()? {
                1 => self.structure(r, s),
                _ => Ok(()),
            },
        }
    }

    fn structure(&self, r: &mut Reader, s: &Struct) -> Result<(), WireError> {
        for field in s.fields.iter().filter(|f| f.in_version(self.version)) {
            self.value(r, &field.ty)?;
        }
        if !self.flexible {
            return Ok(());
        }
        let tags = r.uvarint()?;
        for _ in 0..tags {
            let tag = r.uvarint()?;
            let size = r.uvarint()?;
            match s.tags.iter().find(|t| t.tag == tag) {
                Some(t) if self.version >= t.since => self.value(r, &t.ty)?,
                Some(_) => {
                    return Err(r.error(format!(
                        "tagged field {tag} in version {}, which lacks it",
                        self.version
                    )));
                }
                None => {
                    let size = usize::try_from(size).unwrap_or(usize::MAX);
                    r.bytes(size)?;
                }
            }
        }
        Ok(())
    }
}
