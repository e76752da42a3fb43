//! Apache Kafka itself as the test broker: [`KafkaCluster`] runs N nodes
//! (default 3) in KRaft mode from the broker jars `install-kafka.sh`
//! resolves from Maven Central, and can kill, stop and start each node and
//! tell a partition's leader.

mod cluster;
mod config;
mod install;

pub use cluster::KafkaCluster;
pub use install::{KAFKA_VERSION, java_program};
