//! Choosing a partition for a key, byte-compatible with other Kafka clients.

use std::sync::atomic::{AtomicU32, Ordering};

/// How keyed messages are spread over partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Partitioner {
    /// `murmur2(key) & 0x7fffffff % partitions`: the Java client's default and
    /// librdkafka's `murmur2_random`, so a key lands on the same partition
    /// whichever of them wrote it. The default.
    #[default]
    Murmur2,
    /// librdkafka's default, `consistent_random`: `crc32(key) % partitions`,
    /// and a random partition for an empty or null key. What the Python
    /// library and every confluent-kafka / librdkafka producer with default
    /// settings use: choose it when such services publish the same keys.
    Crc32,
}

impl Partitioner {
    /// The partition a publish takes for `key` (`None`: a null key) among
    /// `partitions`: by [`partition_for_key`](Self::partition_for_key),
    /// except that [`Crc32`](Self::Crc32) sends an empty or null key to a
    /// random partition and [`Murmur2`](Self::Murmur2) spreads null keys
    /// round robin over `spread`.
    pub(crate) fn choose(self, key: Option<&[u8]>, partitions: u32, spread: &RoundRobin) -> i32 {
        match (self, key) {
            (Partitioner::Crc32, None | Some([])) => random_partition(partitions),
            (_, Some(key)) => self.partition_for_key(key, partitions),
            (Partitioner::Murmur2, None) => spread.next(partitions),
        }
    }

    /// The partition for `key` among `partitions` (> 0), by the hash alone
    /// (an empty key hashes too; a publish with [`Crc32`](Self::Crc32)
    /// places it at random instead, as librdkafka does).
    pub fn partition_for_key(self, key: &[u8], partitions: u32) -> i32 {
        let partitions = partitions.max(1);
        let hash = match self {
            Partitioner::Murmur2 => (Self::murmur2(key) & 0x7fff_ffff) as u32,
            Partitioner::Crc32 => Self::crc32(key),
        };
        // partitions <= i32::MAX on the wire, so the remainder fits.
        (hash % partitions) as i32
    }
}

/// A uniformly random partition among `partitions`.
fn random_partition(partitions: u32) -> i32 {
    use rand::Rng;
    // partitions <= i32::MAX on the wire.
    rand::rng().random_range(0..partitions.max(1)) as i32
}

/// Spreads null-key messages round-robin over the partitions.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin(AtomicU32);

impl RoundRobin {
    pub(crate) fn next(&self, partitions: u32) -> i32 {
        (self.0.fetch_add(1, Ordering::Relaxed) % partitions.max(1)) as i32
    }
}

impl Partitioner {
    /// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), as a
    /// signed 32-bit value like the Java method returns: the hash of
    /// [`Murmur2`](Self::Murmur2).
    pub fn murmur2(data: &[u8]) -> i32 {
        const SEED: u32 = 0x9747_b28c;
        const M: u32 = 0x5bd1_e995;
        const R: u32 = 24;
        let len = data.len();
        // The Java code mixes the length in as a 32-bit int.
        let mut h = SEED ^ (len as u32);
        let mut chunks = data.chunks_exact(4);
        for chunk in &mut chunks {
            let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            k = k.wrapping_mul(M);
            k ^= k >> R;
            k = k.wrapping_mul(M);
            h = h.wrapping_mul(M);
            h ^= k;
        }
        let tail = chunks.remainder();
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        if !tail.is_empty() {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        h ^= h >> 13;
        h = h.wrapping_mul(M);
        h ^= h >> 15;
        h as i32
    }

    /// CRC-32 (IEEE 802.3, reflected, as zlib and librdkafka's `rd_crc32`):
    /// the hash of [`Crc32`](Self::Crc32).
    pub fn crc32(data: &[u8]) -> u32 {
        const TABLE: [u32; 256] = {
            let mut table = [0u32; 256];
            let mut i = 0;
            while i < 256 {
                let mut c = i as u32;
                let mut k = 0;
                while k < 8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                    k += 1;
                }
                table[i] = c;
                i += 1;
            }
            table
        };
        !data.iter().fold(!0u32, |c, &b| {
            TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Kafka's `UtilsTest.testMurmur2` vectors.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(
                Partitioner::murmur2(key),
                want,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn murmur2_partition_is_to_positive_modulo() {
        // toPositive(-790332482) = 1357151166; 1357151166 % 50 = 16.
        assert_eq!(Partitioner::Murmur2.partition_for_key(b"foobar", 50), 16);
        for key in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"abcde"] {
            let p = Partitioner::Murmur2.partition_for_key(key, 7);
            assert!((0..7).contains(&p));
        }
    }

    #[test]
    fn crc32_matches_zlib() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(Partitioner::crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(Partitioner::crc32(b""), 0);
        assert_eq!(
            Partitioner::Crc32.partition_for_key(b"123456789", 10),
            (0xcbf4_3926u32 % 10) as i32
        );
    }

    /// librdkafka's `consistent_random`: keyed by CRC32, but an empty or
    /// null key goes anywhere rather than always to partition 0.
    #[test]
    fn crc32_spreads_empty_and_null_keys_at_random() {
        let rr = RoundRobin::default();
        for key in [None, Some(&b""[..])] {
            let mut seen = [0u32; 8];
            for _ in 0..1000 {
                let p = Partitioner::Crc32.choose(key, 8, &rr);
                seen[usize::try_from(p).unwrap()] += 1;
            }
            assert!(seen.iter().all(|&n| n > 50), "{key:?}: {seen:?}");
        }
        let k = Some(&b"order-7"[..]);
        assert_eq!(
            Partitioner::Crc32.choose(k, 8, &rr),
            (Partitioner::crc32(b"order-7") % 8) as i32
        );
        // Murmur2 as the Java client: an empty key is hashed, a null key
        // spread round robin.
        assert_eq!(
            Partitioner::Murmur2.choose(Some(b""), 8, &rr),
            Partitioner::Murmur2.partition_for_key(b"", 8)
        );
        let rr = RoundRobin::default();
        let nulls: Vec<i32> = (0..3)
            .map(|_| Partitioner::Murmur2.choose(None, 3, &rr))
            .collect();
        assert_eq!(nulls, [0, 1, 2]);
    }

    #[test]
    fn round_robin_visits_every_partition() {
        let rr = RoundRobin::default();
        let seen: Vec<i32> = (0..6).map(|_| rr.next(3)).collect();
        assert_eq!(seen, [0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.next(0), 0);
    }
}
