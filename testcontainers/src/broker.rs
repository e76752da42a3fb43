use std::time::{Duration, Instant};

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};

use crate::access::Access;
use crate::nisshi::NisshiBroker;
use crate::ready::wait_ready;
use crate::{BrokerBuilder, Error, FaultProxy, KafkaCluster, TestBroker};

impl BrokerBuilder {
    /// Starts the broker (or connects to `KAVARI_BROKERS`) and returns once it
    /// serves Metadata: a Kafka cluster, or nisshi, as `KAVARI_TEST_BROKER`
    /// says ([`TestBroker`]).
    pub async fn start(self) -> Result<KafkaBroker, Error> {
        if let Ok(external) = std::env::var("KAVARI_BROKERS")
            && !external.trim().is_empty()
        {
            if self.proxy {
                return Err(Error::External("behind_proxy"));
            }
            if self.tls_names.is_some() {
                return Err(Error::External("tls"));
            }
            if !self.users.is_empty() {
                return Err(Error::External("sasl_user"));
            }
            let access = Access {
                bootstrap: external
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                ..Access::default()
            };
            tracing::info!(brokers = %external, timeout = ?self.ready_timeout, "waiting for KAVARI_BROKERS to answer");
            let broker = KafkaBroker {
                access,
                running: Running::External,
            };
            broker.wait_ready(self.ready_timeout).await?;
            return Ok(broker);
        }
        let kind = match self.broker {
            Some(kind) => kind,
            None => TestBroker::from_env()?,
        };
        match kind {
            TestBroker::Nisshi => {
                let (nisshi, access) = NisshiBroker::start(&self).await?;
                let broker = KafkaBroker {
                    access,
                    running: Running::Nisshi(nisshi),
                };
                broker.wait_ready(self.ready_timeout).await?;
                Ok(broker)
            }
            TestBroker::Kafka => Ok(KafkaBroker::from(KafkaCluster::start_with(&self).await?)),
        }
    }

    /// Starts an Apache Kafka cluster, whatever `KAVARI_TEST_BROKER` and
    /// `KAVARI_BROKERS` say (for tests only a cluster of several brokers
    /// can show), and returns once every node answers Metadata.
    pub async fn start_cluster(self) -> Result<KafkaCluster, Error> {
        KafkaCluster::start_with(&self).await
    }
}

/// Whether each partition's leader answers ListOffsets for it: the
/// partition takes writes. The reason when one does not.
async fn leaders_serve(
    cluster: &kavari_wire::cluster::Cluster,
    topic: &str,
    meta: &kavari_wire::cluster::TopicMetadata,
) -> Result<(), String> {
    use kavari_wire::fetch::Isolation;
    use kavari_wire::list_offsets::{OffsetSpec, list_offsets};
    let mut by_leader: std::collections::BTreeMap<i32, Vec<kavari_wire::TopicPartition>> =
        std::collections::BTreeMap::new();
    for p in &meta.partitions {
        if let Some(leader) = p.leader {
            by_leader
                .entry(leader)
                .or_default()
                .push(kavari_wire::TopicPartition::new(topic, p.partition));
        }
    }
    for (leader, partitions) in by_leader {
        let conn = cluster
            .broker(leader)
            .await
            .map_err(|e| format!("leader {leader}: {e}"))?;
        let answers = list_offsets(
            &conn,
            &partitions,
            OffsetSpec::Latest,
            Isolation::ReadUncommitted,
        )
        .await
        .map_err(|e| format!("leader {leader}: {e}"))?;
        if let Some((tp, Err(e))) = answers.iter().find(|(_, a)| a.is_err()) {
            return Err(format!("leader {leader} does not serve {tp} yet: {e}"));
        }
    }
    Ok(())
}

/// What runs behind a [`KafkaBroker`].
#[derive(Debug)]
enum Running {
    /// `KAVARI_BROKERS`: nothing of ours.
    External,
    /// A nisshi process.
    Nisshi(NisshiBroker),
    /// An Apache Kafka cluster.
    Kafka(KafkaCluster),
}

/// A Kafka-protocol broker for tests: an Apache Kafka cluster or a nisshi
/// process of our own, or an external cluster named by `KAVARI_BROKERS`.
///
/// Local processes are killed when the handle drops and when the test
/// process exits, however it exits. On a Kafka cluster, [`kill`](Self::kill),
/// [`stop`](Self::stop), [`restart`](Self::restart) and
/// [`spawn_again`](Self::spawn_again) act on every node (the whole cluster
/// goes down and comes back, as the single nisshi process does); the nodes
/// one by one are [`kafka`](Self::kafka)'s.
#[derive(Debug)]
pub struct KafkaBroker {
    access: Access,
    running: Running,
}

impl From<KafkaCluster> for KafkaBroker {
    fn from(cluster: KafkaCluster) -> Self {
        Self {
            access: cluster.access().clone(),
            running: Running::Kafka(cluster),
        }
    }
}

impl KafkaBroker {
    /// Options: storage, a fault proxy, TLS, SASL, the readiness timeout.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Starts a broker with the default options (no proxy, plaintext).
    pub async fn start() -> Result<Self, Error> {
        Self::builder().start().await
    }

    /// The bootstrap servers clients should use (`host:port[,host:port]`):
    /// the proxy's addresses when the broker is behind one.
    pub fn bootstrap_servers(&self) -> String {
        self.access.bootstrap_servers()
    }

    /// The bootstrap servers as a list, as rskafka's `ClientBuilder` takes them.
    pub fn bootstrap_list(&self) -> Vec<String> {
        self.access.bootstrap.clone()
    }

    /// The PEM file of the CA that issued the broker's certificate, when
    /// started with [`BrokerBuilder::tls`].
    pub fn tls_ca_file(&self) -> Option<&std::path::Path> {
        self.access.tls_ca.as_deref()
    }

    /// The test kit's client certificate and key (PEM files), when started
    /// with [`BrokerBuilder::require_client_certificates`].
    pub fn client_certificate(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        self.access
            .client_certificate
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()))
    }

    /// The first user given to [`BrokerBuilder::sasl_user`] and its
    /// password, when the broker requires authentication.
    pub fn sasl(&self) -> Option<(&str, &str)> {
        self.access
            .sasl
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// True when this handle points at `KAVARI_BROKERS` instead of a process of
    /// our own.
    pub fn is_external(&self) -> bool {
        matches!(self.running, Running::External)
    }

    /// The Apache Kafka cluster behind this handle (its nodes one by one,
    /// partition leaders), when the tests run on Kafka.
    pub fn kafka(&self) -> Option<&KafkaCluster> {
        match &self.running {
            Running::Kafka(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// The fault proxy in front of the broker, when started with
    /// [`BrokerBuilder::behind_proxy`].
    pub fn proxy(&self) -> Option<&FaultProxy> {
        match &self.running {
            Running::External => None,
            Running::Nisshi(nisshi) => nisshi.proxy(),
            Running::Kafka(cluster) => cluster.proxy(),
        }
    }

    /// A fresh rskafka client for this broker, whose retries give up after
    /// 30 s instead of never.
    pub async fn client(&self) -> Result<Client, Error> {
        self.client_with_deadline(Duration::from_secs(30)).await
    }

    async fn client_with_deadline(&self, deadline: Duration) -> Result<Client, Error> {
        ClientBuilder::new(self.access.bootstrap.clone())
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(deadline),
            })
            .build()
            .await
            .map_err(|source| Error::Kafka {
                action: format!("connecting to {}", self.access.bootstrap_servers()),
                source,
            })
    }

    /// Creates a topic with `partitions` partitions (the broker's default
    /// replication; one that exists already is kept) and waits until every
    /// partition has a leader. Gives up after 30 s, so an unreachable
    /// cluster is an error rather than a retry loop.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        const DEADLINE: Duration = Duration::from_secs(30);
        let action = format!("creating topic {name} with {partitions} partitions");
        let cluster = self.access.cluster(Duration::from_secs(10))?;
        let topic = kavari_wire::admin::NewTopic {
            name,
            partitions,
            replication_factor: -1,
            configs: &[],
        };
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < DEADLINE {
            let attempt = async {
                kavari_wire::admin::create_topic(&cluster, &topic).await?;
                cluster.topic(name).await
            };
            match attempt.await {
                Ok(Some(meta))
                    if meta.partitions.len() == usize::try_from(partitions).unwrap_or(0)
                        && meta.partitions.iter().all(|p| p.leader.is_some()) =>
                {
                    // A leader named in Metadata may not serve its partition
                    // yet (Kafka's brokers learn of new partitions a moment
                    // after the controller): every leader must answer for
                    // every partition before the topic counts as made.
                    match leaders_serve(&cluster, name, &meta).await {
                        Ok(()) => return Ok(()),
                        Err(why) => last = why,
                    }
                }
                Ok(meta) => last = format!("no leader for every partition yet: {meta:?}"),
                Err(e) if !e.is_retriable() => {
                    return Err(Error::Topic {
                        action,
                        detail: e.to_string(),
                    });
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Topic {
            action,
            detail: format!("gave up after {DEADLINE:?}: {last}"),
        })
    }

    /// Deletes `name` and creates it again, empty, with `partitions`: a
    /// benchmark's runs each start on an empty topic rather than on every
    /// earlier run's records (an in-memory broker holding gigabytes slows
    /// down; a fixed order of clients would favour the first). Waits until
    /// the old topic is gone from the metadata, at most 30 s.
    pub async fn recreate_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        const DEADLINE: Duration = Duration::from_secs(30);
        let failed = |detail: String| Error::Topic {
            action: format!("recreating topic {name}"),
            detail,
        };
        let cluster = self.access.cluster(Duration::from_secs(10))?;
        kavari_wire::admin::delete_topic(&cluster, name)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let started = Instant::now();
        loop {
            match cluster.topic(name).await {
                Ok(None) => break,
                Ok(Some(_)) | Err(_) if started.elapsed() < DEADLINE => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Some(_)) => return Err(failed(format!("still listed after {DEADLINE:?}"))),
                Err(e) => return Err(failed(e.to_string())),
            }
        }
        self.create_topic(name, partitions).await
    }

    /// Grows `name` to `total` partitions (CreatePartitions; Kafka only,
    /// nisshi has no such request) and waits until every partition's leader
    /// serves it. Gives up after 30 s.
    pub async fn add_partitions(&self, name: &str, total: i32) -> Result<(), Error> {
        const DEADLINE: Duration = Duration::from_secs(30);
        let action = format!("growing topic {name} to {total} partitions");
        let cluster = self.access.cluster(Duration::from_secs(10))?;
        kavari_wire::admin::create_partitions(&cluster, name, total)
            .await
            .map_err(|e| Error::Topic {
                action: action.clone(),
                detail: e.to_string(),
            })?;
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < DEADLINE {
            match cluster.topic(name).await {
                Ok(Some(meta)) if meta.partitions.len() == usize::try_from(total).unwrap_or(0) => {
                    match leaders_serve(&cluster, name, &meta).await {
                        Ok(()) => return Ok(()),
                        Err(why) => last = why,
                    }
                }
                other => last = format!("{other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Topic {
            action,
            detail: format!("gave up after {DEADLINE:?}: {last}"),
        })
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        wait_ready(&self.access, timeout, || self.log_tail()).await
    }

    fn log_tail(&self) -> String {
        match &self.running {
            Running::External => String::new(),
            Running::Nisshi(nisshi) => nisshi.log_tail(),
            Running::Kafka(cluster) => cluster.log_tail(),
        }
    }

    /// SIGKILLs the broker process (every node), as a crash would.
    /// Idempotent.
    pub fn kill(&self) -> Result<(), Error> {
        match &self.running {
            Running::External => Err(Error::External("kill")),
            Running::Nisshi(nisshi) => match nisshi.take_process() {
                Some(p) => p.kill(),
                None => Ok(()),
            },
            Running::Kafka(cluster) => cluster.kill_all(),
        }
    }

    /// Stops the broker (every node) with SIGTERM, SIGKILL if it has not
    /// exited in time. Idempotent.
    pub fn stop(&self) -> Result<(), Error> {
        match &self.running {
            Running::External => Err(Error::External("stop")),
            Running::Nisshi(nisshi) => match nisshi.take_process() {
                Some(p) => p.stop(Duration::from_secs(10)),
                None => Ok(()),
            },
            Running::Kafka(cluster) => cluster.stop_all(),
        }
    }

    /// Starts the broker again on the same addresses and data (nisshi with
    /// [`Storage::Memory`](crate::Storage::Memory) starts empty), killing it first if it runs, and
    /// waits until it serves Metadata.
    pub async fn restart(&self) -> Result<(), Error> {
        match &self.running {
            Running::External => return Err(Error::External("restart")),
            Running::Nisshi(nisshi) => {
                if let Some(p) = nisshi.take_process() {
                    p.kill()?;
                }
                nisshi.spawn()?;
            }
            Running::Kafka(cluster) => {
                cluster.kill_all()?;
                cluster.spawn_all()?;
                self.wait_ready(Duration::from_secs(120)).await?;
                // A cluster that answers Metadata may not have elected its
                // leaders yet: as a single broker does, it is back once
                // every partition is served.
                return self.wait_served(Duration::from_secs(120)).await;
            }
        }
        self.wait_ready(Duration::from_secs(120)).await
    }

    /// Waits until every partition of every topic has a leader that serves
    /// it.
    async fn wait_served(&self, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        let cluster = self.access.cluster(Duration::from_secs(5))?;
        let mut last = String::new();
        while started.elapsed() < timeout {
            match cluster.all_topics().await {
                Ok(topics) => {
                    let mut served = Ok(());
                    for meta in &topics {
                        if meta.partitions.iter().any(|p| p.leader.is_none()) {
                            served = Err(format!("{} has a partition without a leader", meta.name));
                            break;
                        }
                        if let Err(why) = leaders_serve(&cluster, &meta.name, meta).await {
                            served = Err(why);
                            break;
                        }
                    }
                    match served {
                        Ok(()) => return Ok(()),
                        Err(why) => last = why,
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Error::NotReady {
            address: self.access.bootstrap_servers(),
            waited: started.elapsed(),
            log: format!("partitions not served: {last}\n{}", self.log_tail()),
        })
    }

    /// Starts a broker that was stopped or killed, without waiting for it to
    /// be ready (the fault tests want to see clients find it by themselves).
    pub fn spawn_again(&self) -> Result<(), Error> {
        match &self.running {
            Running::External => Err(Error::External("spawn_again")),
            Running::Nisshi(nisshi) => nisshi.spawn(),
            Running::Kafka(cluster) => cluster.spawn_all(),
        }
    }

    /// The broker's log so far (every node's, one after another; empty for
    /// an external cluster).
    pub fn log(&self) -> String {
        match &self.running {
            Running::External => String::new(),
            Running::Nisshi(nisshi) => {
                std::fs::read_to_string(nisshi.log_path()).unwrap_or_default()
            }
            Running::Kafka(cluster) => cluster
                .node_ids()
                .into_iter()
                .map(|n| cluster.log(n))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One broker shared by every test in this test binary, started on first use
/// with the default options. Tests sharing it must use their own topic and
/// group names ([`crate::unique_name`]).
pub async fn shared_broker() -> Result<&'static KafkaBroker, Error> {
    static SHARED: tokio::sync::OnceCell<KafkaBroker> = tokio::sync::OnceCell::const_new();
    SHARED.get_or_try_init(KafkaBroker::start).await
}
