//! A request as it is written: pieces of the connection's frame buffer
//! with callers' bytes (record batches) between them, handed to the socket
//! as one [`Buf`] so a vectored write sends them without copying them
//! together first.

use std::io::IoSlice;
use std::ops::Range;

use bytes::Buf;

/// A piece of a request, in the order it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    /// These bytes of the frame buffer.
    Frame(Range<usize>),
    /// Bytes of the caller's (a record batch).
    Bytes(&'a [u8]),
}

/// The pieces of a request as one buffer.
#[derive(Debug)]
pub(crate) struct Segments<'a> {
    parts: Vec<&'a [u8]>,
    at: usize,
    remaining: usize,
}

impl<'a> Segments<'a> {
    /// The request `segments` make with `frame`, the frame buffer they
    /// point into. A range outside it is an error, not a panic.
    pub(crate) fn new(frame: &'a [u8], segments: Vec<Segment<'a>>) -> Option<Self> {
        let mut parts = Vec::with_capacity(segments.len());
        for s in segments {
            let part = match s {
                Segment::Frame(r) => frame.get(r)?,
                Segment::Bytes(b) => b,
            };
            if !part.is_empty() {
                parts.push(part);
            }
        }
        let remaining = parts.iter().map(|p| p.len()).sum();
        Some(Self {
            parts,
            at: 0,
            remaining,
        })
    }
}

impl Buf for Segments<'_> {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.get(self.at).copied().unwrap_or(&[])
    }

    fn advance(&mut self, mut n: usize) {
        self.remaining = self.remaining.saturating_sub(n);
        while n > 0 {
            let Some(part) = self.parts.get_mut(self.at) else {
                return;
            };
            if n < part.len() {
                *part = &part[n..];
                return;
            }
            n -= part.len();
            self.at += 1;
        }
    }

    fn chunks_vectored<'b>(&'b self, dst: &mut [IoSlice<'b>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst
            .iter_mut()
            .zip(&self.parts[self.at.min(self.parts.len())..])
        {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_read_in_order_across_advances_and_vectored_chunks() {
        let frame = b"0123456789";
        let segments = vec![
            Segment::Frame(0..4),
            Segment::Bytes(b"abc"),
            Segment::Frame(4..4),
            Segment::Bytes(b""),
            Segment::Frame(4..10),
        ];
        let mut buf = Segments::new(frame, segments).expect("in range");
        assert_eq!(buf.remaining(), 13);
        let mut io = [IoSlice::new(&[]); 8];
        assert_eq!(buf.chunks_vectored(&mut io), 3, "empty pieces are left out");
        buf.advance(5);
        assert_eq!(buf.chunk(), b"bc");
        let mut out = Vec::new();
        while buf.has_remaining() {
            let c = buf.chunk().to_vec();
            out.extend_from_slice(&c[..c.len().min(2)]);
            buf.advance(c.len().min(2));
        }
        assert_eq!(out, b"bc456789");
        assert!(Segments::new(frame, vec![Segment::Frame(5..11)]).is_none());
    }
}
