//! A bounds-checked reader of Kafka's wire types. kafka-protocol's decoders
//! reserve a vector of the length the bytes claim, so a corrupt length
//! aborts the process on allocation; this reader checks every length
//! against the bytes left first, and slices byte fields out of the frame
//! without copying them.

use bytes::{Buf, Bytes};

use crate::WireError;

/// Reads Kafka's wire types from `buf`; every failure names `what`.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    what: &'static str,
}

impl Reader {
    /// A reader over `buf` (a cheap clone of it).
    pub fn new(buf: Bytes, what: &'static str) -> Self {
        Self { buf, what }
    }

    /// A malformed-input error naming what was being read.
    pub fn error(&self, detail: impl std::fmt::Display) -> WireError {
        WireError::Malformed {
            what: self.what,
            detail: detail.to_string(),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    /// What is left, consuming it.
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            return Err(self.error(format!(
                "needs {n} more bytes, {} left",
                self.buf.remaining()
            )));
        }
        Ok(())
    }

    /// An int8.
    pub fn i8(&mut self) -> Result<i8, WireError> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }

    /// An int16.
    pub fn i16(&mut self) -> Result<i16, WireError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    /// An int32.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    /// A uint32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// An int64.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    /// An unsigned varint (at most 5 bytes).
    pub fn uvarint(&mut self) -> Result<u32, WireError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.i8()? as u8;
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error("unsigned varint longer than 5 bytes"))
    }

    /// A zigzag varlong (at most 10 bytes).
    pub fn varlong(&mut self) -> Result<i64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.i8()? as u8;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// A zigzag varint length: `None` for -1, an error below that or past
    /// the bytes left.
    pub fn var_len(&mut self) -> Result<Option<usize>, WireError> {
        let n = self.varlong()?;
        self.checked_len(n)
    }

    fn checked_len(&self, n: i64) -> Result<Option<usize>, WireError> {
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| self.error(format!("negative length {n}")))?;
        self.need(n)?;
        Ok(Some(n))
    }

    /// An array or string length, int32 or compact (n + 1 as an unsigned
    /// varint): `None` for null. Each element takes at least `min_size`
    /// bytes, so a count the bytes left cannot hold is an error.
    pub fn len(&mut self, compact: bool, min_size: usize) -> Result<Option<usize>, WireError> {
        let n = if compact {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        let n = self.checked_len(n)?;
        if let Some(n) = n {
            self.need(n.saturating_mul(min_size))?;
        }
        Ok(n)
    }

    /// `n` bytes, sliced out of the frame.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, WireError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Nullable bytes with an int32 or compact length.
    pub fn nullable_bytes(&mut self, compact: bool) -> Result<Option<Bytes>, WireError> {
        match self.len(compact, 1)? {
            None => Ok(None),
            Some(n) => self.bytes(n).map(Some),
        }
    }

    /// A nullable string with an int16 or compact length.
    pub fn nullable_string(&mut self, compact: bool) -> Result<Option<String>, WireError> {
        let n = if compact {
            self.len(true, 1)?
        } else {
            let n = self.i16()?;
            self.checked_len(i64::from(n))?
        };
        let Some(n) = n else { return Ok(None) };
        let raw = self.bytes(n)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| self.error("a string is not UTF-8"))
    }

    /// A string with an int16 or compact length.
    pub fn string(&mut self, compact: bool) -> Result<String, WireError> {
        self.nullable_string(compact)?
            .ok_or_else(|| self.error("null where a string is required"))
    }

    /// An array with an int32 or compact count, each element read by `item`
    /// and taking at least `min_size` bytes; null reads as empty.
    pub fn array<T>(
        &mut self,
        compact: bool,
        min_size: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let n = self.len(compact, min_size)?.unwrap_or(0);
        (0..n).map(|_| item(self)).collect()
    }

    /// Skips a tagged-field section (flexible versions).
    pub fn skip_tagged_fields(&mut self) -> Result<(), WireError> {
        let n = self.uvarint()?;
        for _ in 0..n {
            let _tag = self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).unwrap_or(usize::MAX);
            self.bytes(size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> Reader {
        Reader::new(Bytes::copy_from_slice(bytes), "test")
    }

    #[test]
    fn varints_decode_as_the_protocol_defines() {
        for (bytes, v) in [
            (&[0x00][..], 0i64),
            (&[0x01], -1),
            (&[0x02], 1),
            (&[0x7f], -64),
            (&[0xd8, 0x04], 300),
        ] {
            assert_eq!(reader(bytes).varlong().expect("varlong"), v);
        }
        assert!(reader(&[0xff; 11]).varlong().is_err());
        assert!(reader(&[0x80]).varlong().is_err(), "cut short");
        assert_eq!(reader(&[0x96, 0x01]).uvarint().expect("uvarint"), 150);
    }

    #[test]
    fn claimed_lengths_past_the_bytes_are_errors_not_allocations() {
        // An int32 array count of 2^31 - 1 with four bytes left.
        let mut r = reader(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert!(r.len(false, 8).is_err());
        // A compact count.
        assert!(
            reader(&[0xff, 0xff, 0xff, 0xff, 0x0f])
                .len(true, 1)
                .is_err()
        );
        // Null, and a negative length.
        assert_eq!(
            reader(&[0xff, 0xff, 0xff, 0xff]).len(false, 1).ok(),
            Some(None)
        );
        assert!(reader(&[0xff, 0xff, 0xff, 0xfe]).len(false, 1).is_err());
        assert!(reader(&[0x03]).var_len().is_err(), "-2");
        // A string that is not UTF-8.
        assert!(reader(&[0, 2, 0xff, 0xfe]).string(false).is_err());
        assert_eq!(
            reader(&[3, b'h', b'i']).string(true).ok().as_deref(),
            Some("hi")
        );
    }
}
