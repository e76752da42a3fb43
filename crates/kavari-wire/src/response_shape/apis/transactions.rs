//! Transactions: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
//! TxnOffsetCommit, at the versions a client speaks.

use crate::response_shape::Ty::{Array, I16, I32, I64, Str, Struct as S};
use crate::response_shape::{Shape, Struct, all, since, until};

/// A partition's index and error code.
static PARTITION_ERROR: Struct = Struct {
    fields: &[all(I32), all(I16)],
    tags: &[],
};

/// A topic's name and its partitions' errors.
static TOPIC_ERRORS: Struct = Struct {
    fields: &[all(Str), all(Array(&S(&PARTITION_ERROR)))],
    tags: &[],
};

/// AddPartitionsToTxn: flexible from v3; v4+ (brokers' batched form) is
/// not spoken.
pub static ADD_PARTITIONS_TO_TXN: Shape = Shape {
    flexible_since: 3,
    body: Struct {
        fields: &[
            all(I32),                           // throttle_time_ms
            until(3, Array(&S(&TOPIC_ERRORS))), // results_by_topic_v3_and_below
        ],
        tags: &[],
    },
};

/// AddOffsetsToTxn: flexible from v3.
pub static ADD_OFFSETS_TO_TXN: Shape = Shape {
    flexible_since: 3,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            all(I16), // error_code
        ],
        tags: &[],
    },
};

/// EndTxn: flexible from v3; v5 (KIP-890) hands back a bumped epoch.
pub static END_TXN: Shape = Shape {
    flexible_since: 3,
    body: Struct {
        fields: &[
            all(I32),      // throttle_time_ms
            all(I16),      // error_code
            since(5, I64), // producer_id
            since(5, I16), // producer_epoch
        ],
        tags: &[],
    },
};

/// TxnOffsetCommit: flexible from v3.
pub static TXN_OFFSET_COMMIT: Shape = Shape {
    flexible_since: 3,
    body: Struct {
        fields: &[
            all(I32),                      // throttle_time_ms
            all(Array(&S(&TOPIC_ERRORS))), // topics
        ],
        tags: &[],
    },
};
