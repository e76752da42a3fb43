//! Connecting: ApiVersions, Metadata, and the SASL exchange.

use crate::response_shape::Ty::{Array, Bool, Bytes, I16, I32, I64, Str, Struct as S, Uuid};
use crate::response_shape::{Shape, Struct, Tag, all, between, since};

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
