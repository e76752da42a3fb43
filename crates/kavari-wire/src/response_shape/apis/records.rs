//! Records: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, and the
//! producer id.

use crate::response_shape::Ty::{Array, Bytes, I16, I32, I64, Str, Struct as S, Uuid};
use crate::response_shape::{Shape, Struct, Tag, all, since, until};

use super::common::{LEADER_ID_AND_EPOCH, NODE_ENDPOINT};

/// Produce: flexible from v9.
pub static PRODUCE: Shape = Shape {
    flexible_since: 9,
    body: Struct {
        fields: &[
            all(Array(&S(&Struct {
                fields: &[
                    until(12, Str),  // name
                    since(13, Uuid), // topic_id
                    all(Array(&S(&Struct {
                        fields: &[
                            all(I32),      // index
                            all(I16),      // error_code
                            all(I64),      // base_offset
                            all(I64),      // log_append_time_ms
                            since(5, I64), // log_start_offset
                            // record_errors: batch_index, message
                            since(
                                8,
                                Array(&S(&Struct {
                                    fields: &[all(I32), all(Str)],
                                    tags: &[],
                                })),
                            ),
                            since(8, Str), // error_message
                        ],
                        tags: &[Tag {
                            tag: 0, // current_leader
                            ty: S(&LEADER_ID_AND_EPOCH),
                            since: 10,
                        }],
                    }))),
                ],
                tags: &[],
            }))),
            all(I32), // throttle_time_ms
        ],
        tags: &[Tag {
            tag: 0, // node_endpoints
            ty: Array(&S(&NODE_ENDPOINT)),
            since: 10,
        }],
    },
};

/// Fetch: flexible from v12. Kavari reads fetch answers with its own
/// reader ([`crate::fetch`]); this shape guards any other decoding of them.
pub static FETCH: Shape = Shape {
    flexible_since: 12,
    body: Struct {
        fields: &[
            all(I32),      // throttle_time_ms
            since(7, I16), // error_code
            since(7, I32), // session_id
            all(Array(&S(&Struct {
                fields: &[
                    until(12, Str),  // topic
                    since(13, Uuid), // topic_id
                    all(Array(&S(&Struct {
                        fields: &[
                            all(I32),      // partition_index
                            all(I16),      // error_code
                            all(I64),      // high_watermark
                            all(I64),      // last_stable_offset
                            since(5, I64), // log_start_offset
                            // aborted_transactions: producer_id, first_offset
                            all(Array(&S(&Struct {
                                fields: &[all(I64), all(I64)],
                                tags: &[],
                            }))),
                            since(11, I32), // preferred_read_replica
                            all(Bytes),     // records
                        ],
                        tags: &[
                            // diverging_epoch: epoch, end_offset
                            Tag {
                                tag: 0,
                                ty: S(&Struct {
                                    fields: &[all(I32), all(I64)],
                                    tags: &[],
                                }),
                                since: 12,
                            },
                            Tag {
                                tag: 1, // current_leader
                                ty: S(&LEADER_ID_AND_EPOCH),
                                since: 12,
                            },
                            // snapshot_id: end_offset, epoch
                            Tag {
                                tag: 2,
                                ty: S(&Struct {
                                    fields: &[all(I64), all(I32)],
                                    tags: &[],
                                }),
                                since: 12,
                            },
                        ],
                    }))),
                ],
                tags: &[],
            }))),
        ],
        tags: &[Tag {
            tag: 0, // node_endpoints
            ty: Array(&S(&NODE_ENDPOINT)),
            since: 16,
        }],
    },
};

/// ListOffsets: flexible from v6.
pub static LIST_OFFSETS: Shape = Shape {
    flexible_since: 6,
    body: Struct {
        fields: &[
            since(2, I32), // throttle_time_ms
            all(Array(&S(&Struct {
                fields: &[
                    all(Str), // name
                    // partitions: partition_index, error_code, timestamp,
                    // offset, leader_epoch
                    all(Array(&S(&Struct {
                        fields: &[all(I32), all(I16), all(I64), all(I64), since(4, I32)],
                        tags: &[],
                    }))),
                ],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// OffsetForLeaderEpoch: flexible from v4.
pub static OFFSET_FOR_LEADER_EPOCH: Shape = Shape {
    flexible_since: 4,
    body: Struct {
        fields: &[
            since(2, I32), // throttle_time_ms
            all(Array(&S(&Struct {
                fields: &[
                    all(Str), // topic
                    // partitions: error_code, partition, leader_epoch,
                    // end_offset
                    all(Array(&S(&Struct {
                        fields: &[all(I16), all(I32), since(1, I32), all(I64)],
                        tags: &[],
                    }))),
                ],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// InitProducerId: flexible from v2.
pub static INIT_PRODUCER_ID: Shape = Shape {
    flexible_since: 2,
    body: Struct {
        fields: &[
            all(I32),      // throttle_time_ms
            all(I16),      // error_code
            all(I64),      // producer_id
            all(I16),      // producer_epoch
            since(6, I64), // ongoing_txn_producer_id
            since(6, I16), // ongoing_txn_producer_epoch
        ],
        tags: &[],
    },
};
