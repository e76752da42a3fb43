//! Record batches (message format v2, "magic 2"), written in place by the
//! producer ([`write`](mod@write)) and read, CRC checked and decompressed, by the
//! fetcher ([`read`]). Layout: the Kafka protocol guide, "Record Batch".

pub mod read;
pub mod write;

/// Bytes of the batch header before the first record.
pub(crate) const HEADER_LEN: usize = 61;
/// Where the CRC-covered part (attributes to the end) begins.
pub(crate) const CRC_FROM: usize = 21;

pub(crate) fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn varlong_len(v: i64) -> usize {
    let bits = 64 - zigzag(v).leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}
