//! Share groups (KIP-932): ShareFetch, ShareAcknowledge and
//! ShareGroupDescribe; ShareGroupHeartbeat answers as
//! ConsumerGroupHeartbeat does.

use crate::response_shape::Ty::{Array, Bytes, I16, I32, I64, Str, Struct as S, Uuid};
use crate::response_shape::{Shape, Struct, all};

use super::common::{LEADER_ID_AND_EPOCH, NODE_ENDPOINT};

/// ShareFetch: flexible in every version.
pub static SHARE_FETCH: Shape = Shape {
    flexible_since: 0,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            all(I16), // error_code
            all(Str), // error_message
            all(I32), // acquisition_lock_timeout_ms
            // responses: topic_id, partitions
            all(Array(&S(&Struct {
                fields: &[
                    all(Uuid),
                    all(Array(&S(&Struct {
                        fields: &[
                            all(I32),                     // partition_index
                            all(I16),                     // error_code
                            all(Str),                     // error_message
                            all(I16),                     // acknowledge_error_code
                            all(Str),                     // acknowledge_error_message
                            all(S(&LEADER_ID_AND_EPOCH)), // current_leader
                            all(Bytes),                   // records
                            // acquired_records: first_offset, last_offset,
                            // delivery_count
                            all(Array(&S(&Struct {
                                fields: &[all(I64), all(I64), all(I16)],
                                tags: &[],
                            }))),
                        ],
                        tags: &[],
                    }))),
                ],
                tags: &[],
            }))),
            all(Array(&S(&NODE_ENDPOINT))), // node_endpoints
        ],
        tags: &[],
    },
};

/// ShareAcknowledge: flexible in every version.
pub static SHARE_ACKNOWLEDGE: Shape = Shape {
    flexible_since: 0,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            all(I16), // error_code
            all(Str), // error_message
            // responses: topic_id, partitions
            all(Array(&S(&Struct {
                fields: &[
                    all(Uuid),
                    all(Array(&S(&Struct {
                        fields: &[
                            all(I32),                     // partition_index
                            all(I16),                     // error_code
                            all(Str),                     // error_message
                            all(S(&LEADER_ID_AND_EPOCH)), // current_leader
                        ],
                        tags: &[],
                    }))),
                ],
                tags: &[],
            }))),
            all(Array(&S(&NODE_ENDPOINT))), // node_endpoints
        ],
        tags: &[],
    },
};

/// ShareGroupDescribe: flexible in every version.
pub static SHARE_GROUP_DESCRIBE: Shape = Shape {
    flexible_since: 0,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            all(Array(&S(&Struct {
                fields: &[
                    all(I16), // error_code
                    all(Str), // error_message
                    all(Str), // group_id
                    all(Str), // group_state
                    all(I32), // group_epoch
                    all(I32), // assignment_epoch
                    all(Str), // assignor_name
                    // members
                    all(Array(&S(&Struct {
                        fields: &[
                            all(Str),         // member_id
                            all(Str),         // rack_id
                            all(I32),         // member_epoch
                            all(Str),         // client_id
                            all(Str),         // client_host
                            all(Array(&Str)), // subscribed_topic_names
                            // assignment: topic_id, topic_name, partitions
                            all(S(&Struct {
                                fields: &[all(Array(&S(&Struct {
                                    fields: &[all(Uuid), all(Str), all(Array(&I32))],
                                    tags: &[],
                                })))],
                                tags: &[],
                            })),
                        ],
                        tags: &[],
                    }))),
                    all(I32), // authorized_operations
                ],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// DescribeShareGroupOffsets: flexible in every version.
pub static DESCRIBE_SHARE_GROUP_OFFSETS: Shape = Shape {
    flexible_since: 0,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            // groups: group_id, topics, error_code, error_message
            all(Array(&S(&Struct {
                fields: &[
                    all(Str),
                    // topics: topic_name, topic_id, partitions
                    all(Array(&S(&Struct {
                        fields: &[
                            all(Str),
                            all(Uuid),
                            // partitions: partition_index, start_offset,
                            // leader_epoch, error_code, error_message
                            all(Array(&S(&Struct {
                                fields: &[all(I32), all(I64), all(I32), all(I16), all(Str)],
                                tags: &[],
                            }))),
                        ],
                        tags: &[],
                    }))),
                    all(I16),
                    all(Str),
                ],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};
