//! A SCRAM exchange with a server that writes what it likes: the
//! server-first message and the server-final message, split at the first
//! zero byte. Refusals are fine; a panic is not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, last) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    kavari_wire::sasl::fuzz_scram(first, last);
});
