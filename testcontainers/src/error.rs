use std::path::PathBuf;

/// Why a test broker or proxy could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker's SASL users could not be created.
    #[error("creating SASL users: {0}")]
    Users(String),
    /// The test certificates could not be made (the `openssl` command).
    #[error("making test certificates: {0}")]
    Certificates(String),
    /// No backend applies: no `KAVARI_BROKERS`, no broker binary, and the
    /// install did not run.
    #[error(
        "no Kafka broker available: set KAVARI_BROKERS=host:port for your own cluster, \
         or install the test broker with `bash testcontainers/install-broker.sh` \
         (cargo +nightly install nisshi --version 0.8.1 --no-default-features \
         --features dynostore,libsql --locked)"
    )]
    NoBackend,
    /// `KAVARI_TEST_BROKER` names no broker the test kit knows.
    #[error("KAVARI_TEST_BROKER={0:?}: the test brokers are `kafka` (the default) and `nisshi`")]
    UnknownTestBroker(String),
    /// An option only the Apache Kafka test cluster offers was asked of
    /// nisshi.
    #[error("{0} needs the Apache Kafka test broker (KAVARI_TEST_BROKER=kafka)")]
    NeedsKafka(&'static str),
    /// The broker install script failed.
    #[error(
        "installing the test broker failed (status {status}); run testcontainers/install-broker.sh by hand to see why"
    )]
    Install {
        /// The script's exit status.
        status: String,
    },
    /// Spawning or signalling the broker process failed.
    #[error("broker process {binary}: {action}")]
    Process {
        /// The broker binary.
        binary: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The broker did not answer Metadata in time.
    #[error("broker at {address} did not become ready within {waited:?}; its log: {log}")]
    NotReady {
        /// The address polled.
        address: String,
        /// How long we waited.
        waited: std::time::Duration,
        /// The tail of the broker's log, when there is one.
        log: String,
    },
    /// An operation that needs a broker process of our own was called on an
    /// external cluster.
    #[error("{0} needs a local broker process, but KAVARI_BROKERS points at an external cluster")]
    External(&'static str),
    /// A Kafka request (creating a topic, the readiness probe) failed.
    #[error("kafka request failed: {action}")]
    Kafka {
        /// What was being done.
        action: String,
        /// rskafka's error.
        #[source]
        source: rskafka::client::error::Error,
    },
    /// Creating a topic failed, or its partitions got no leader in time.
    #[error("{action}: {detail}")]
    Topic {
        /// What was being done.
        action: String,
        /// Why it failed.
        detail: String,
    },
    /// Local I/O (temporary directory, sockets).
    #[error("i/o: {action}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
