//! Parts several answers share.

use crate::response_shape::Struct;
use crate::response_shape::Ty::{I32, Str};
use crate::response_shape::all;

/// A partition's leader: its id and epoch (Produce's and Fetch's tagged
/// fields, ShareFetch's and ShareAcknowledge's `current_leader`).
pub(super) static LEADER_ID_AND_EPOCH: Struct = Struct {
    fields: &[all(I32), all(I32)],
    tags: &[],
};

/// A broker the answer names: node id, host, port, rack (Produce's and
/// Fetch's tagged fields, the share answers' `node_endpoints`).
pub(super) static NODE_ENDPOINT: Struct = Struct {
    fields: &[all(I32), all(Str), all(I32), all(Str)],
    tags: &[],
};
