//! A partition's record bytes as a fetch answer carries them: batches of
//! every codec, read record by record as the consumer reads them. The
//! target writes each batch's CRC-32C itself, so the fuzzer reaches the
//! decompressors and the record decoder instead of stopping at the
//! checksum.
#![no_main]

use bytes::Bytes;
use kavari_wire::record_batch::read::batches;
use libfuzzer_sys::fuzz_target;

/// The most decompressed bytes a batch may take here (the consumer's own
/// bound is larger; the fuzzer's malloc limit is what catches a bomb).
const MAX_BYTES: usize = 4 << 20;

/// Writes the CRC-32C of each whole batch (from its attributes to its end).
fn with_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0;
    while out.len() >= at + 21 {
        let length = i32::from_be_bytes([out[at + 8], out[at + 9], out[at + 10], out[at + 11]]);
        let Some(end) = usize::try_from(length)
            .ok()
            .filter(|l| *l >= 9)
            .map(|l| at + 12 + l)
            .filter(|end| *end <= out.len())
        else {
            break;
        };
        let crc = crc32c::crc32c(&out[at + 21..end]);
        out[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    for batch in batches(Bytes::from(with_checksums(data))) {
        let Ok(batch) = batch else { break };
        let _ = batch.control_type();
        let Ok(records) = batch.iter_records(MAX_BYTES) else {
            continue;
        };
        for record in records {
            let Ok(record) = record else { break };
            std::hint::black_box(&record);
        }
    }
});
