//! The consumer protocol's bytes other members and the group leader send:
//! a member's subscription (in a JoinGroup answer, read by the leader) and
//! an assignment (in a SyncGroup answer). The first byte picks which.
#![no_main]

use bytes::Bytes;
use kavari_group::protocol::{Assignment, Subscription};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else { return };
    let bytes = Bytes::copy_from_slice(rest);
    if pick % 2 == 0 {
        let _ = Subscription::decode(&bytes);
    } else {
        let _ = Assignment::decode(&bytes);
    }
});
