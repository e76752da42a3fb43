//! Administration: topics, partitions, leaders, configs.

use crate::response_shape::Ty::{Array, Bool, I8, I16, I32, Str, Struct as S, Uuid};
use crate::response_shape::{Shape, Struct, Tag, all, since};

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

/// IncrementalAlterConfigs: flexible from v1.
pub static INCREMENTAL_ALTER_CONFIGS: Shape = Shape {
    flexible_since: 1,
    body: Struct {
        fields: &[
            all(I32), // throttle_time_ms
            // responses: error_code, error_message, resource_type,
            // resource_name
            all(Array(&S(&Struct {
                fields: &[all(I16), all(Str), all(I8), all(Str)],
                tags: &[],
            }))),
        ],
        tags: &[],
    },
};
