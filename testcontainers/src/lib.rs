//! Real Kafka-protocol brokers and a fault-injecting TCP proxy, for Kavari's
//! tests and examples.
//!
//! [`KafkaBroker::start`] picks the first backend that applies:
//!
//! 1. `KAVARI_BROKERS` is set: an external cluster (for example your own Apache
//!    Kafka). Nothing is started; `stop`/`kill`/`restart` are errors.
//! 2. `KAVARI_TEST_BROKER` unset or `kafka`: an Apache Kafka cluster of three
//!    KRaft nodes ([`KafkaCluster`]), installed from Maven Central by
//!    `install-kafka.sh` when missing (about 10 s, once).
//! 3. `KAVARI_TEST_BROKER=nisshi`: a nisshi process (or `tansu` as a
//!    fallback), installed by `install-broker.sh` when missing (about 11
//!    minutes on 2 cores, once).
//!
//! Local brokers run on free loopback ports, each in its own temporary
//! directory, and are killed when the handle drops and when the test process
//! exits, even by a panic or a SIGKILL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kavari_testcontainers::Error> {
//! use kavari_testcontainers::KafkaBroker;
//! let broker = KafkaBroker::start().await?;
//! broker.create_topic("orders", 3).await?;
//! println!("bootstrap: {}", broker.bootstrap_servers());
//! # Ok(()) }
//! ```
//!
//! [`FaultProxy`] sits between clients and the broker (see
//! [`BrokerBuilder::behind_proxy`]) and can cut connections, refuse or
//! black-hole new ones, and add latency.

mod access;
mod broker;
mod certificates;
mod error;
mod install;
mod kafka;
mod nisshi;
mod options;
mod ports;
mod process;
mod proxy;
mod ready;

pub use broker::{KafkaBroker, shared_broker};
pub use error::Error;
pub use install::{broker_binary, ensure_broker_installed};
pub use kafka::{KAFKA_VERSION, KafkaCluster, java_program};
pub use options::{BrokerBuilder, Storage, TestBroker};
pub(crate) use ports::free_ports;
pub use proxy::{FaultMode, FaultProxy};

/// A topic or group name unique to this process and call, so tests sharing a
/// broker never collide.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}
