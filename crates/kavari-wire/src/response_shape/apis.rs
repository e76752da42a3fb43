//! The shapes of the responses Kavari reads, from the protocol's message
//! specs (`clients/src/main/resources/common/message/*Response.json`), for
//! the versions Kavari speaks. Names are in comments only: the walk needs
//! types and versions.

use super::Ty::{Array, Bool, Bytes, I8, I16, I32, I64, Str, Struct as S, Uuid};
use super::{Shape, Struct, Tag, all, between, since, until};

/// ApiVersions: flexible from v3.
pub static API_VERSIONS: Shape = Shape {
    flexible_since: 3,
    body: Struct {
        fields: &[
            all(I16), // error_code
            // api_keys: api_key, min_version, max_version
            all(Array(&S(&Struct {
                fields: &[all(I16), all(I16), all(I16)],
                tags: &[],
            }))),
            since(1, I32), // throttle_time_ms
        ],
        tags: &[
            // supported_features: name, min_version, max_version
            Tag {
                tag: 0,
                ty: Array(&S(&FEATURE)),
                since: 3,
            },
            // finalized_features_epoch
            Tag {
                tag: 1,
                ty: I64,
                since: 3,
            },
            // finalized_features: name, max_version_level, min_version_level
            Tag {
                tag: 2,
                ty: Array(&S(&FEATURE)),
                since: 3,
            },
            // zk_migration_ready
            Tag {
                tag: 3,
                ty: Bool,
                since: 3,
            },
        ],
    },
};

/// A feature's name and two version levels.
static FEATURE: Struct = Struct {
    fields: &[all(Str), all(I16), all(I16)],
    tags: &[],
};

/// Metadata: flexible from v9.
pub static METADATA: Shape = Shape {
    flexible_since: 9,
    body: Struct {
        fields: &[
            since(3, I32), // throttle_time_ms
            // brokers: node_id, host, port, rack
            all(Array(&S(&Struct {
                fields: &[all(I32), all(Str), all(I32), since(1, Str)],
                tags: &[],
            }))),
            since(2, Str), // cluster_id
            since(1, I32), // controller_id
            all(Array(&S(&Struct {
                fields: &[
                    all(I16),        // error_code
                    all(Str),        // name
                    since(10, Uuid), // topic_id
                    since(1, Bool),  // is_internal
                    all(Array(&S(&Struct {
                        fields: &[
                            all(I16),              // error_code
                            all(I32),              // partition_index
                            all(I32),              // leader_id
                            since(7, I32),         // leader_epoch
                            all(Array(&I32)),      // replica_nodes
                            all(Array(&I32)),      // isr_nodes
                            since(5, Array(&I32)), // offline_replicas
                        ],
                        tags: &[],
                    }))),
                    since(8, I32), // topic_authorized_operations
                ],
                tags: &[],
            }))),
            between(8, 10, I32), // cluster_authorized_operations
            since(13, I16),      // error_code
        ],
        tags: &[],
    },
};

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

/// A leader's id and epoch (Produce and Fetch tagged fields).
static LEADER_ID_AND_EPOCH: Struct = Struct {
    fields: &[all(I32), all(I32)],
    tags: &[],
};

/// A broker's node id, host, port and rack (Produce and Fetch tagged
/// fields).
static NODE_ENDPOINT: Struct = Struct {
    fields: &[all(I32), all(Str), all(I32), all(Str)],
    tags: &[],
};

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

/// CreatePartitions: flexible from v2.
pub static CREATE_PARTITIONS: Shape = Shape {
    flexible_since: 2,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            // results: name, error_code, error_message
            all(Array(&S(&Struct {
                fields: &[all(Str), all(I16), all(Str)],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// ElectLeaders: flexible from v2; the top-level error code from v1.
pub static ELECT_LEADERS: Shape = Shape {
    flexible_since: 2,
    body: Struct {
        fields: &[
            all(I32),      // throttle_time_ms
            since(1, I16), // error_code
            // replica_election_results: topic, then per partition its id,
            // error_code and error_message
            all(Array(&S(&Struct {
                fields: &[
                    all(Str),
                    all(Array(&S(&Struct {
                        fields: &[all(I32), all(I16), all(Str)],
                        tags: &[],
                    }))),
                ],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// CreateTopics: flexible from v5.
pub static CREATE_TOPICS: Shape = Shape {
    flexible_since: 5,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            all(Array(&S(&Struct {
                fields: &[
                    all(Str),       // name
                    since(7, Uuid), // topic_id
                    all(I16),       // error_code
                    all(Str),       // error_message
                    since(5, I32),  // num_partitions
                    since(5, I16),  // replication_factor
                    // configs: name, value, read_only, config_source,
                    // is_sensitive
                    since(
                        5,
                        Array(&S(&Struct {
                            fields: &[all(Str), all(Str), all(Bool), all(I8), all(Bool)],
                            tags: &[],
                        })),
                    ),
                ],
                tags: &[Tag {
                    tag: 0, // topic_config_error_code
                    ty: I16,
                    since: 5,
                }],
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

/// SaslHandshake: never flexible.
pub static SASL_HANDSHAKE: Shape = Shape {
    flexible_since: i16::MAX,
    body: Struct {
        fields: &[all(I16), all(Array(&Str))], // error_code, mechanisms
        tags: &[],
    },
};

/// SaslAuthenticate: flexible from v2.
pub static SASL_AUTHENTICATE: Shape = Shape {
    flexible_since: 2,
    body: Struct {
        fields: &[
            all(I16),      // error_code
            all(Str),      // error_message
            all(Bytes),    // auth_bytes
            since(1, I64), // session_lifetime_ms
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

/// DeleteTopics: flexible from v4.
pub static DELETE_TOPICS: Shape = Shape {
    flexible_since: 4,
    body: Struct {
        fields: &[
            since(1, I32), // throttle_time_ms
            // responses: name, error_code, error_message
            all(Array(&S(&Struct {
                fields: &[all(Str), all(I16), since(5, Str)],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};

/// DescribeConfigs: flexible from v4.
pub static DESCRIBE_CONFIGS: Shape = Shape {
    flexible_since: 4,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            // results: error_code, error_message, resource_type,
            // resource_name, configs
            all(Array(&S(&Struct {
                fields: &[
                    all(I16),
                    all(Str),
                    all(I8),
                    all(Str),
                    // configs: name, value, read_only, config_source,
                    // is_sensitive, synonyms (name, value, source),
                    // config_type, documentation
                    all(Array(&S(&Struct {
                        fields: &[
                            all(Str),
                            all(Str),
                            all(Bool),
                            all(I8),
                            all(Bool),
                            all(Array(&S(&Struct {
                                fields: &[all(Str), all(Str), all(I8)],
                                tags: &[],
                            }))),
                            since(3, I8),
                            since(3, Str),
                        ],
                        tags: &[],
                    }))),
                ],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};
