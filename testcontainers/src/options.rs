//! [`BrokerBuilder`]: the options of a test broker, and which broker
//! ([`TestBroker`]) and storage ([`Storage`]) the tests use.

use std::time::Duration;

use crate::Error;

/// Which broker the tests run against when `KAVARI_BROKERS` names none:
/// `KAVARI_TEST_BROKER=kafka` (the default) or `nisshi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TestBroker {
    /// Apache Kafka, a cluster of three KRaft nodes ([`KafkaCluster`](crate::KafkaCluster)).
    Kafka,
    /// nisshi, one process: fast to start, built from crates.io.
    Nisshi,
}

impl TestBroker {
    /// The broker `KAVARI_TEST_BROKER` names (default: Kafka). An unknown
    /// name is an error that lists the known ones.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var("KAVARI_TEST_BROKER") {
            Err(_) => Ok(Self::Kafka),
            Ok(v) => v.parse(),
        }
    }

    /// Whether the tests run against Apache Kafka (`KAVARI_TEST_BROKER`
    /// unset or `kafka`).
    pub fn is_kafka() -> bool {
        matches!(Self::from_env(), Ok(Self::Kafka))
    }
}

impl std::str::FromStr for TestBroker {
    type Err = Error;

    /// `kafka` (or nothing) or `nisshi`, in any case.
    fn from_str(name: &str) -> Result<Self, Error> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "kafka" => Ok(Self::Kafka),
            "nisshi" => Ok(Self::Nisshi),
            other => Err(Error::UnknownTestBroker(other.to_string())),
        }
    }
}

/// Where a local broker keeps its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast, gone when the process stops (the default). Apache
    /// Kafka always keeps its logs on disk, in the cluster's temporary
    /// directory.
    #[default]
    Memory,
    /// On file: records and committed offsets survive
    /// [`KafkaBroker::kill`](crate::KafkaBroker::kill) + [`KafkaBroker::restart`](crate::KafkaBroker::restart).
    File,
}

/// Options for [`KafkaBroker`](crate::KafkaBroker); [`KafkaBroker::start`](crate::KafkaBroker::start) uses the defaults.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    pub(crate) storage: Storage,
    pub(crate) proxy: bool,
    pub(crate) ready_timeout: Duration,
    pub(crate) tls_names: Option<Vec<String>>,
    pub(crate) users: Vec<(String, String)>,
    pub(crate) mechanisms: Vec<String>,
    pub(crate) client_certificates: bool,
    pub(crate) reauthenticate_after: Option<Duration>,
    pub(crate) nodes: usize,
    pub(crate) broker: Option<TestBroker>,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        Self {
            storage: Storage::Memory,
            proxy: false,
            ready_timeout: Duration::from_secs(120),
            tls_names: None,
            users: Vec::new(),
            mechanisms: Vec::new(),
            client_certificates: false,
            reauthenticate_after: None,
            nodes: 3,
            broker: None,
        }
    }
}

impl BrokerBuilder {
    /// Which broker [`start`](Self::start) runs, whatever
    /// `KAVARI_TEST_BROKER` says (a benchmark's flag). Default: the one
    /// `KAVARI_TEST_BROKER` names ([`TestBroker::from_env`]).
    /// `KAVARI_BROKERS` still wins over both.
    pub fn broker(mut self, broker: TestBroker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Storage of a local nisshi broker. Default: [`Storage::Memory`].
    /// Kafka keeps everything on disk whatever this says.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Put a [`FaultProxy`](crate::FaultProxy) in front of the broker (in front of every node
    /// of a Kafka cluster) and advertise the proxy's addresses, so every
    /// client connection (bootstrap and after Metadata) goes through it.
    /// Needs a local broker. Default: off.
    pub fn behind_proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    /// Serve TLS only, with a certificate for `names` (host names or IP
    /// addresses) issued by a CA of the test's own
    /// ([`KafkaBroker::tls_ca_file`](crate::KafkaBroker::tls_ca_file)). Made with the `openssl` command.
    /// Needs a local broker. Default: plaintext.
    pub fn tls(mut self, names: &[&str]) -> Self {
        self.tls_names = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// Require SASL authentication, with `name` known by `password` for
    /// SCRAM-SHA-256 and SCRAM-SHA-512 (and PLAIN on Kafka; call again for
    /// more users). The first user is the test kit's own
    /// ([`KafkaBroker::sasl`](crate::KafkaBroker::sasl)). nisshi then stores on file: it keeps SCRAM
    /// users only there. Needs a local broker. Default: no authentication.
    pub fn sasl_user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_string(), password.to_string()));
        self
    }

    /// With [`sasl_user`](Self::sasl_user): offer only `mechanisms`
    /// (Kafka's names) on Kafka. nisshi offers SCRAM-SHA-256 and
    /// SCRAM-SHA-512 whatever this says. Default: every mechanism the
    /// broker has.
    pub fn sasl_mechanisms(mut self, mechanisms: &[&str]) -> Self {
        self.mechanisms = mechanisms.iter().map(|m| m.to_string()).collect();
        self
    }

    /// With [`tls`](Self::tls): clients must present a certificate issued
    /// by the test CA (`ssl.client.auth=required`); the test kit's own is
    /// [`KafkaBroker::client_certificate`](crate::KafkaBroker::client_certificate). Kafka only. Default: not
    /// asked.
    pub fn require_client_certificates(mut self) -> Self {
        self.client_certificates = true;
        self
    }

    /// Authenticated sessions last `after` (`connections.max.reauth.ms`,
    /// KIP-368): a client re-authenticates or is disconnected. Kafka only.
    /// Default: forever.
    pub fn reauthenticate_after(mut self, after: Duration) -> Self {
        self.reauthenticate_after = Some(after);
        self
    }

    /// How many nodes a Kafka cluster has (nisshi is always one).
    /// Default: 3.
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes.max(1);
        self
    }

    /// How long to wait for the broker to answer Metadata. Default: 120 s.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }
}
