//! The record-batch codecs, all in pure Rust, both ways: gzip (flate2's Rust
//! backend), snappy (raw, and the xerial framing the Java client writes),
//! lz4 (the LZ4 frame format, as Kafka has used since message format v1)
//! and zstd.

use std::io::{Read, Write};

/// Compression of a record batch (the batch attributes' low three bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (the default).
    #[default]
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4 (frame format).
    Lz4,
    /// zstd.
    Zstd,
}

/// Why a batch's records could not be compressed or decompressed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The attributes name a codec that does not exist.
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    /// The bytes did not decompress.
    #[error("{codec:?} records did not decompress: {detail}")]
    Corrupt {
        /// The codec.
        codec: Compression,
        /// What the decoder said.
        detail: String,
    },
    /// The records decompress to more than the limit allows.
    #[error("{codec:?} records decompress to more than {limit} bytes")]
    TooLarge {
        /// The codec.
        codec: Compression,
        /// The limit.
        limit: usize,
    },
}

/// The first bytes of the xerial snappy framing (snappy-java's stream).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

impl Compression {
    /// The codec's id in the batch attributes.
    pub fn id(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// The codec an id names.
    pub fn from_id(id: i16) -> Result<Self, CodecError> {
        Ok(match id {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            other => return Err(CodecError::UnknownCodec(other)),
        })
    }

    /// The codec's name as Kafka's `compression.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// Appends `data`, compressed, to `out`.
    pub fn compress(self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let corrupt = |e: &dyn std::fmt::Display| CodecError::Corrupt {
            codec: self,
            detail: e.to_string(),
        };
        match self {
            Self::None => out.extend_from_slice(data),
            Self::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                gz.write_all(data).map_err(|e| corrupt(&e))?;
                gz.finish().map_err(|e| corrupt(&e))?;
            }
            Self::Snappy => {
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(data.len()), 0);
                let n = snap::raw::Encoder::new()
                    .compress(data, &mut out[start..])
                    .map_err(|e| corrupt(&e))?;
                out.truncate(start + n);
            }
            Self::Lz4 => {
                // Independent 64 KiB blocks, no content checksum: what every
                // Kafka client's lz4 reader accepts.
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
                enc.write_all(data).map_err(|e| corrupt(&e))?;
                enc.finish().map_err(|e| corrupt(&e))?;
            }
            Self::Zstd => {
                let compressed = ruzstd::encoding::compress_to_vec(
                    data,
                    ruzstd::encoding::CompressionLevel::Fastest,
                );
                out.extend_from_slice(&compressed);
            }
        }
        Ok(())
    }

    /// A reader of `data` decompressed as it is read, so a batch's records
    /// cost what is read at a time, not the whole batch: gzip, lz4 and zstd
    /// stream; snappy (whose raw blocks decompress whole) is decompressed
    /// at once, to at most `limit` bytes. The caller bounds the total read.
    pub fn decoder<'a>(
        self,
        data: &'a [u8],
        limit: usize,
    ) -> Result<Box<dyn Read + Send + 'a>, CodecError> {
        Ok(match self {
            Self::None => Box::new(data),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
            Self::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(data)),
            Self::Zstd => Box::new(ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| {
                CodecError::Corrupt {
                    codec: self,
                    detail: e.to_string(),
                }
            })?),
            Self::Snappy => Box::new(std::io::Cursor::new(self.decompress(data, limit)?)),
        })
    }

    /// `data` decompressed; more than `limit` bytes is an error (a small
    /// batch must not expand into all of memory).
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
        let corrupt = |e: &dyn std::fmt::Display| CodecError::Corrupt {
            codec: self,
            detail: e.to_string(),
        };
        let mut out = Vec::with_capacity(data.len().saturating_mul(2).min(limit));
        match self {
            Self::None => out.extend_from_slice(data),
            Self::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), &mut out, limit)
                .map_err(|e| corrupt(&e))?,
            Self::Snappy if data.starts_with(XERIAL_MAGIC) => {
                // Magic, version and compatible version (4 bytes each), then
                // blocks of a big-endian length and raw snappy bytes.
                let mut rest = data
                    .get(16..)
                    .ok_or_else(|| corrupt(&"short xerial header"))?;
                while !rest.is_empty() {
                    let (len, tail) = rest
                        .split_first_chunk::<4>()
                        .ok_or_else(|| corrupt(&"short xerial block length"))?;
                    let len = usize::try_from(i32::from_be_bytes(*len))
                        .map_err(|_| corrupt(&"negative xerial block length"))?;
                    let block = tail
                        .get(..len)
                        .ok_or_else(|| corrupt(&"xerial block past the end"))?;
                    snappy_raw(block, &mut out, limit).map_err(|e| match e {
                        Some(e) => corrupt(&e),
                        None => CodecError::TooLarge { codec: self, limit },
                    })?;
                    rest = &tail[len..];
                }
            }
            Self::Snappy => snappy_raw(data, &mut out, limit).map_err(|e| match e {
                Some(e) => corrupt(&e),
                None => CodecError::TooLarge { codec: self, limit },
            })?,
            Self::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), &mut out, limit)
                .map_err(|e| corrupt(&e))?,
            Self::Zstd => {
                let dec = ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| corrupt(&e))?;
                read_bounded(dec, &mut out, limit).map_err(|e| corrupt(&e))?;
            }
        }
        if out.len() > limit {
            return Err(CodecError::TooLarge { codec: self, limit });
        }
        Ok(out)
    }
}

/// Reads `r` to its end into `out`, at most `limit + 1` bytes (one more than
/// allowed, so the caller sees the overflow).
fn read_bounded(r: impl Read, out: &mut Vec<u8>, limit: usize) -> std::io::Result<()> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(out).map(drop)
}

/// Appends one raw snappy block; `Err(None)` when it would pass `limit`.
fn snappy_raw(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Option<snap::Error>> {
    let len = snap::raw::decompress_len(block).map_err(Some)?;
    if out.len().saturating_add(len) > limit {
        return Err(None);
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(Some)?;
    out.truncate(start + n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 13 + i / 1000) as u8).collect()
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in ALL {
            for n in [0, 1, 100, 70_000, 300_000] {
                let data = sample(n);
                let mut packed = vec![9, 9]; // appends after what is there
                codec.compress(&data, &mut packed).expect("compress");
                assert_eq!(&packed[..2], &[9, 9]);
                let back = codec.decompress(&packed[2..], n).expect("decompress");
                assert_eq!(back, data, "{codec:?}, {n} bytes");
                assert_eq!(Compression::from_id(codec.id()), Ok(codec));
            }
        }
        assert_eq!(Compression::from_id(5), Err(CodecError::UnknownCodec(5)));
    }

    #[test]
    fn output_past_the_limit_is_an_error_not_an_allocation() {
        let data = vec![0u8; 1 << 20];
        for codec in ALL {
            let mut packed = Vec::new();
            codec.compress(&data, &mut packed).expect("compress");
            let e = codec.decompress(&packed, 1000).expect_err("over the limit");
            assert!(
                matches!(e, CodecError::TooLarge { limit: 1000, .. }),
                "{codec:?}: {e}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut rng_state = 7u32;
        for codec in &ALL[1..] {
            for len in [0usize, 1, 5, 64, 1000] {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        rng_state = rng_state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (rng_state >> 16) as u8
                    })
                    .collect();
                let _ = codec.decompress(&bytes, 1 << 20);
            }
            // A valid stream cut short is an error.
            let mut packed = Vec::new();
            codec
                .compress(&sample(10_000), &mut packed)
                .expect("compress");
            packed.truncate(packed.len() / 2);
            assert!(codec.decompress(&packed, 1 << 20).is_err(), "{codec:?}");
        }
    }

    /// The xerial framing snappy-java writes (the Java client's snappy):
    /// header, then length-prefixed raw blocks.
    #[test]
    fn xerial_snappy_is_read() {
        let data = sample(100_000);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend(1i32.to_be_bytes());
        framed.extend(1i32.to_be_bytes());
        for chunk in data.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new()
                .compress_vec(chunk)
                .expect("snappy");
            framed.extend(i32::try_from(block.len()).expect("len").to_be_bytes());
            framed.extend(block);
        }
        let back = Compression::Snappy
            .decompress(&framed, 1 << 20)
            .expect("decompress");
        assert_eq!(back, data);
        framed.truncate(framed.len() - 3);
        assert!(Compression::Snappy.decompress(&framed, 1 << 20).is_err());
    }
}
