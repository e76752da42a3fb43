//! Consumer groups: the coordinator, membership, offsets, and the
//! groups' descriptions.

use crate::response_shape::Ty::{
    Array, Bool, Bytes, I8, I16, I32, I64, Nullable, Str, Struct as S, Uuid,
};
use crate::response_shape::{Shape, Struct, all, between, since, until};

/// FindCoordinator: flexible from v3; v4 answers for a list of keys.
pub static FIND_COORDINATOR: Shape = Shape {
    flexible_since: 3,
    body: Struct {
        fields: &[
            since(1, I32),      // throttle_time_ms
            until(3, I16),      // error_code
            between(1, 3, Str), // error_message
            until(3, I32),      // node_id
            until(3, Str),      // host
            until(3, I32),      // port
            // coordinators: key, node_id, host, port, error_code, error_message
            since(
                4,
                Array(&S(&Struct {
                    fields: &[all(Str), all(I32), all(Str), all(I32), all(I16), all(Str)],
                    tags: &[],
                })),
            ),
        ],
        tags: &[],
    },
};

/// JoinGroup: flexible from v6.
pub static JOIN_GROUP: Shape = Shape {
    flexible_since: 6,
    body: Struct {
        fields: &[
            since(2, I32),  // throttle_time_ms
            all(I16),       // error_code
            all(I32),       // generation_id
            since(7, Str),  // protocol_type
            all(Str),       // protocol_name
            all(Str),       // leader
            since(9, Bool), // skip_assignment
            all(Str),       // member_id
            // members: member_id, group_instance_id, metadata
            all(Array(&S(&Struct {
                fields: &[all(Str), since(5, Str), all(Bytes)],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// SyncGroup: flexible from v4.
pub static SYNC_GROUP: Shape = Shape {
    flexible_since: 4,
    body: Struct {
        fields: &[
            since(1, I32), // throttle_time_ms
            all(I16),      // error_code
            since(5, Str), // protocol_type
            since(5, Str), // protocol_name
            all(Bytes),    // assignment
        ],
        tags: &[],
    },
};

/// Heartbeat: flexible from v4.
pub static HEARTBEAT: Shape = Shape {
    flexible_since: 4,
    body: Struct {
        fields: &[since(1, I32), all(I16)], // throttle_time_ms, error_code
        tags: &[],
    },
};

/// LeaveGroup: flexible from v4; v3 answers per member.
pub static LEAVE_GROUP: Shape = Shape {
    flexible_since: 4,
    body: Struct {
        fields: &[
            since(1, I32), // throttle_time_ms
            all(I16),      // error_code
            // members: member_id, group_instance_id, error_code
            since(
                3,
                Array(&S(&Struct {
                    fields: &[all(Str), all(Str), all(I16)],
                    tags: &[],
                })),
            ),
        ],
        tags: &[],
    },
};

/// OffsetCommit: flexible from v8.
pub static OFFSET_COMMIT: Shape = Shape {
    flexible_since: 8,
    body: Struct {
        fields: &[
            since(3, I32), // throttle_time_ms
            all(Array(&S(&Struct {
                fields: &[
                    until(9, Str),   // name
                    since(10, Uuid), // topic_id
                    // partitions: partition_index, error_code
                    all(Array(&S(&Struct {
                        fields: &[all(I32), all(I16)],
                        tags: &[],
                    }))),
                ],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// OffsetFetch: flexible from v6; v8 answers per group.
pub static OFFSET_FETCH: Shape = Shape {
    flexible_since: 6,
    body: Struct {
        fields: &[
            since(3, I32), // throttle_time_ms
            // topics (to v7): name, partitions
            until(
                7,
                Array(&S(&Struct {
                    fields: &[
                        all(Str),
                        // partition_index, committed_offset,
                        // committed_leader_epoch, metadata, error_code
                        all(Array(&S(&Struct {
                            fields: &[all(I32), all(I64), since(5, I32), all(Str), all(I16)],
                            tags: &[],
                        }))),
                    ],
                    tags: &[],
                })),
            ),
            between(2, 7, I16), // error_code
            // groups (from v8): group_id, topics, error_code
            since(
                8,
                Array(&S(&Struct {
                    fields: &[
                        all(Str),
                        all(Array(&S(&Struct {
                            fields: &[
                                until(9, Str),   // name
                                since(10, Uuid), // topic_id
                                all(Array(&S(&Struct {
                                    fields: &[all(I32), all(I64), all(I32), all(Str), all(I16)],
                                    tags: &[],
                                }))),
                            ],
                            tags: &[],
                        }))),
                        all(I16),
                    ],
                    tags: &[],
                })),
            ),
        ],
        tags: &[],
    },
};

/// DescribeGroups: flexible from v5.
pub static DESCRIBE_GROUPS: Shape = Shape {
    flexible_since: 5,
    body: Struct {
        fields: &[
            since(1, I32), // throttle_time_ms
            all(Array(&S(&Struct {
                fields: &[
                    all(I16),      // error_code
                    since(6, Str), // error_message
                    all(Str),      // group_id
                    all(Str),      // group_state
                    all(Str),      // protocol_type
                    all(Str),      // protocol_data
                    // members: member_id, group_instance_id, client_id,
                    // client_host, member_metadata, member_assignment
                    all(Array(&S(&Struct {
                        fields: &[
                            all(Str),
                            since(4, Str),
                            all(Str),
                            all(Str),
                            all(Bytes),
                            all(Bytes),
                        ],
                        tags: &[],
                    }))),
                    since(3, I32), // authorized_operations
                ],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// ListGroups: flexible from v3.
pub static LIST_GROUPS: Shape = Shape {
    flexible_since: 3,
    body: Struct {
        fields: &[
            since(1, I32), // throttle_time_ms
            all(I16),      // error_code
            // groups: group_id, protocol_type, group_state
            all(Array(&S(&Struct {
                fields: &[all(Str), all(Str), since(4, Str)],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// A topic id and partitions, as the consumer group protocol (KIP-848)
/// assigns them.
static TOPIC_ID_PARTITIONS: Struct = Struct {
    fields: &[all(Uuid), all(Array(&I32))],
    tags: &[],
};

/// ConsumerGroupHeartbeat (KIP-848): flexible in every version.
pub static CONSUMER_GROUP_HEARTBEAT: Shape = Shape {
    flexible_since: 0,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            all(I16), // error_code
            all(Str), // error_message
            all(Str), // member_id
            all(I32), // member_epoch
            all(I32), // heartbeat_interval_ms
            // assignment: topic_partitions (null when unchanged)
            all(Nullable(&Struct {
                fields: &[all(Array(&S(&TOPIC_ID_PARTITIONS)))],
                tags: &[],
            })),
        ],
        tags: &[],
    },
};

/// A topic id, its name and partitions, as ConsumerGroupDescribe shows an
/// assignment.
static NAMED_TOPIC_PARTITIONS: Struct = Struct {
    fields: &[all(Uuid), all(Str), all(Array(&I32))],
    tags: &[],
};

/// An assignment in ConsumerGroupDescribe: its topics' partitions.
static DESCRIBED_ASSIGNMENT: Struct = Struct {
    fields: &[all(Array(&S(&NAMED_TOPIC_PARTITIONS)))],
    tags: &[],
};

/// ConsumerGroupDescribe (KIP-848): flexible in every version; v1 says
/// whether each member speaks the consumer or the classic protocol.
pub static CONSUMER_GROUP_DESCRIBE: Shape = Shape {
    flexible_since: 0,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            // groups
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
                            all(Str),                      // member_id
                            all(Str),                      // instance_id
                            all(Str),                      // rack_id
                            all(I32),                      // member_epoch
                            all(Str),                      // client_id
                            all(Str),                      // client_host
                            all(Array(&Str)),              // subscribed_topic_names
                            all(Str),                      // subscribed_topic_regex
                            all(S(&DESCRIBED_ASSIGNMENT)), // assignment
                            all(S(&DESCRIBED_ASSIGNMENT)), // target_assignment
                            since(1, I8),                  // member_type
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
