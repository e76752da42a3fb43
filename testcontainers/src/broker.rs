use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};

use crate::process::BrokerProcess;
use crate::{Error, FaultProxy, ensure_broker_installed};

/// Where a local broker keeps its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast, gone when the process stops (the default).
    #[default]
    Memory,
    /// A SQLite file in the broker's working directory: records and committed
    /// offsets survive [`KafkaBroker::kill`] + [`KafkaBroker::restart`].
    File,
}

/// Options for [`KafkaBroker`]; [`KafkaBroker::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    storage: Storage,
    proxy: bool,
    ready_timeout: Duration,
    tls_names: Option<Vec<String>>,
    users: Vec<(String, String)>,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        Self {
            storage: Storage::Memory,
            proxy: false,
            ready_timeout: Duration::from_secs(60),
            tls_names: None,
            users: Vec::new(),
        }
    }
}

impl BrokerBuilder {
    /// Storage of a local broker. Default: [`Storage::Memory`].
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Put a [`FaultProxy`] in front of the broker and advertise the proxy's
    /// address, so every client connection (bootstrap and after Metadata)
    /// goes through it. Needs a local broker. Default: off.
    pub fn behind_proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    /// Serve TLS only, with a certificate for `names` (host names or IP
    /// addresses) issued by a CA of the test's own
    /// ([`KafkaBroker::tls_ca_file`]). Made with the `openssl` command.
    /// Needs a local broker. Default: plaintext.
    pub fn tls(mut self, names: &[&str]) -> Self {
        self.tls_names = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// Require SASL authentication, with `name` known by `password` for
    /// SCRAM-SHA-256 and SCRAM-SHA-512 (call again for more users). The
    /// first user is the test kit's own ([`KafkaBroker::sasl`]). Stores on
    /// file ([`Storage::File`]): the broker keeps SCRAM users only there.
    /// Needs a local broker. Default: no authentication.
    pub fn sasl_user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_string(), password.to_string()));
        self.storage = Storage::File;
        self
    }

    /// How long to wait for the broker to answer Metadata. Default: 60 s.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the broker (or connects to `KAVARI_BROKERS`) and returns once it
    /// serves Metadata.
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
            let broker = KafkaBroker {
                bootstrap: external.trim().to_string(),
                local: None,
                tls_ca: None,
                sasl: None,
            };
            tracing::info!(brokers = %broker.bootstrap, timeout = ?self.ready_timeout, "waiting for KAVARI_BROKERS to answer");
            broker.wait_ready(self.ready_timeout).await?;
            return Ok(broker);
        }

        let binary = tokio::task::spawn_blocking(ensure_broker_installed)
            .await
            .map_err(|e| Error::Io {
                action: "waiting for the broker install",
                source: std::io::Error::other(e),
            })??;
        let workdir = tempfile::Builder::new()
            .prefix("kavari-broker-")
            .tempdir()
            .map_err(|source| Error::Io {
                action: "creating the broker's working directory",
                source,
            })?;
        let port = free_port()?;
        let proxy = if self.proxy {
            Some(FaultProxy::start(format!("127.0.0.1:{port}"))?)
        } else {
            None
        };
        let advertised = match &proxy {
            Some(p) => p.address().to_string(),
            None => format!("127.0.0.1:{port}"),
        };
        let tls_ca = match &self.tls_names {
            Some(names) => Some(crate::certificates::issue(workdir.path(), names)?),
            None => None,
        };
        let local = LocalBroker {
            binary,
            workdir,
            port,
            advertised: advertised.clone(),
            storage: self.storage,
            proxy,
            tls: tls_ca.is_some(),
            authentication: std::sync::atomic::AtomicBool::new(false),
            process: Mutex::new(None),
        };
        if !self.users.is_empty() {
            // The broker takes new users only from an unauthenticated,
            // plaintext client: create them before security is on.
            local.spawn_plain()?;
            let plain = KafkaBroker {
                bootstrap: format!("127.0.0.1:{port}"),
                local: None,
                tls_ca: None,
                sasl: None,
            };
            plain.wait_ready(self.ready_timeout).await?;
            for (name, password) in &self.users {
                local.create_user(name, password)?;
            }
            if let Some(p) = local.take_process() {
                p.stop(Duration::from_secs(10))?;
            }
            local
                .authentication
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        local.spawn()?;
        let broker = KafkaBroker {
            bootstrap: advertised,
            local: Some(local),
            tls_ca,
            sasl: self.users.first().cloned(),
        };
        broker.wait_ready(self.ready_timeout).await?;
        Ok(broker)
    }
}

#[derive(Debug)]
struct LocalBroker {
    binary: PathBuf,
    workdir: tempfile::TempDir,
    port: u16,
    advertised: String,
    storage: Storage,
    proxy: Option<FaultProxy>,
    /// Serves TLS with the certificate in the working directory.
    tls: bool,
    /// Requires SASL (once its users exist).
    authentication: std::sync::atomic::AtomicBool,
    process: Mutex<Option<BrokerProcess>>,
}

impl LocalBroker {
    fn log_path(&self) -> PathBuf {
        self.workdir.path().join("broker.log")
    }

    fn spawn(&self) -> Result<(), Error> {
        let authentication = self
            .authentication
            .load(std::sync::atomic::Ordering::Relaxed);
        self.spawn_with(self.tls, authentication)
    }

    /// Plaintext without authentication, whatever the broker serves later.
    fn spawn_plain(&self) -> Result<(), Error> {
        self.spawn_with(false, false)
    }

    /// Creates `name` for SCRAM-SHA-256 and SCRAM-SHA-512 through a broker
    /// started by [`spawn_plain`](Self::spawn_plain).
    fn create_user(&self, name: &str, password: &str) -> Result<(), Error> {
        for mechanism in ["scram256", "scram512"] {
            let out = std::process::Command::new(&self.binary)
                .args(["user", "create", "--broker"])
                .arg(format!("tcp://127.0.0.1:{}", self.port))
                .args(["--mechanism", mechanism, name, password])
                .output()
                .map_err(|source| Error::Io {
                    action: "running the broker's user create",
                    source,
                })?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() || stderr.contains("error") {
                return Err(Error::Users(format!("{mechanism} {name}: {stderr}")));
            }
        }
        Ok(())
    }

    fn spawn_with(&self, tls: bool, authentication: bool) -> Result<(), Error> {
        let storage = match self.storage {
            Storage::Memory => "memory://nisshi/".to_string(),
            Storage::File => "sqlite://kafka.db".to_string(),
        };
        let mut args = vec![
            "broker".to_string(),
            "--listener-url".to_string(),
            format!("tcp://127.0.0.1:{}", self.port),
            "--advertised-listener-url".to_string(),
            format!("tcp://{}", self.advertised),
            "--storage-engine".to_string(),
            storage,
            "--group-initial-rebalance-delay".to_string(),
            "0s".to_string(),
        ];
        if authentication {
            args.push("--authentication".to_string());
        }
        if tls {
            let dir = self.workdir.path();
            args.push("--cert".to_string());
            args.push(
                dir.join(crate::certificates::SERVER_CERT)
                    .display()
                    .to_string(),
            );
            args.push("--key".to_string());
            args.push(
                dir.join(crate::certificates::SERVER_KEY)
                    .display()
                    .to_string(),
            );
        }
        let process =
            BrokerProcess::spawn(&self.binary, &args, self.workdir.path(), &self.log_path())?;
        let mut slot = self.process.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(process) {
            old.kill()?;
        }
        Ok(())
    }

    fn take_process(&self) -> Option<BrokerProcess> {
        self.process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The last 2000 bytes of the broker's log.
    fn log_tail(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut tail = Vec::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path()) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let read = file
                .seek(SeekFrom::Start(len.saturating_sub(2000)))
                .and_then(|_| file.read_to_end(&mut tail));
            if read.is_err() {
                tail.clear();
            }
        }
        String::from_utf8_lossy(&tail).into_owned()
    }
}

/// A Kafka-protocol broker for tests: a local process of our own, or an
/// external cluster named by `KAVARI_BROKERS`.
///
/// A local process is killed when the handle drops and when the test process
/// exits, however it exits.
#[derive(Debug)]
pub struct KafkaBroker {
    bootstrap: String,
    local: Option<LocalBroker>,
    /// The CA that issued the broker's certificate, when it serves TLS.
    tls_ca: Option<PathBuf>,
    /// The test kit's SASL user and password, when the broker requires
    /// authentication.
    sasl: Option<(String, String)>,
}

impl KafkaBroker {
    /// Options: storage, a fault proxy, the readiness timeout.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Starts a broker with the default options (in-memory storage, no proxy).
    pub async fn start() -> Result<Self, Error> {
        Self::builder().start().await
    }

    /// The bootstrap servers clients should use (`host:port[,host:port]`):
    /// the proxy's address when the broker is behind one.
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    /// The bootstrap servers as a list, as rskafka's `ClientBuilder` takes them.
    pub fn bootstrap_list(&self) -> Vec<String> {
        self.bootstrap
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The PEM file of the CA that issued the broker's certificate, when
    /// started with [`BrokerBuilder::tls`].
    pub fn tls_ca_file(&self) -> Option<&std::path::Path> {
        self.tls_ca.as_deref()
    }

    /// The first user given to [`BrokerBuilder::sasl_user`] and its
    /// password, when the broker requires authentication.
    pub fn sasl(&self) -> Option<(&str, &str)> {
        self.sasl.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The test kit's own client: TLS with the broker's CA (not checking
    /// the host name, which some tests leave out on purpose) when the
    /// broker serves TLS, SCRAM-SHA-512 as the first user when it requires
    /// authentication.
    fn cluster(&self, timeout: Duration) -> Result<kavari_wire::cluster::Cluster, Error> {
        let mut security = kavari_wire::Security::plaintext();
        if let Some(ca) = &self.tls_ca {
            let tls = kavari_wire::tls::Tls::builder()
                .ca_file(ca)
                .verify_hostname(false)
                .build()
                .map_err(|e| Error::Certificates(e.to_string()))?;
            security = security.with_tls(tls);
        }
        if let Some((user, password)) = &self.sasl {
            security = security.with_sasl(kavari_wire::sasl::Sasl::scram_sha512(user, password));
        }
        Ok(kavari_wire::cluster::Cluster::new(
            self.bootstrap_list(),
            "kavari-testcontainers".into(),
            timeout,
        )
        .with_security(security))
    }

    /// True when this handle points at `KAVARI_BROKERS` instead of a process of
    /// our own.
    pub fn is_external(&self) -> bool {
        self.local.is_none()
    }

    /// The fault proxy in front of the broker, when started with
    /// [`BrokerBuilder::behind_proxy`].
    pub fn proxy(&self) -> Option<&FaultProxy> {
        self.local.as_ref().and_then(|l| l.proxy.as_ref())
    }

    /// A fresh rskafka client for this broker, whose retries give up after
    /// 30 s instead of never.
    pub async fn client(&self) -> Result<Client, Error> {
        self.client_with_deadline(Duration::from_secs(30)).await
    }

    async fn client_with_deadline(&self, deadline: Duration) -> Result<Client, Error> {
        ClientBuilder::new(self.bootstrap_list())
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(deadline),
            })
            .build()
            .await
            .map_err(|source| Error::Kafka {
                action: format!("connecting to {}", self.bootstrap),
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
        let cluster = self.cluster(Duration::from_secs(10))?;
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
                    return Ok(());
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

    async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            // A Metadata request on a fresh connection each time (a
            // restarted broker must answer on a new one).
            let cluster = self.cluster(Duration::from_secs(1))?;
            let attempt = async move { cluster.topics(&[]).await.map(drop) };
            match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => tracing::debug!(error = %e, "broker not ready yet"),
                Err(_) => tracing::debug!("broker readiness probe timed out"),
            }
            if started.elapsed() >= timeout {
                return Err(Error::NotReady {
                    address: self.bootstrap.clone(),
                    waited: started.elapsed(),
                    log: self
                        .local
                        .as_ref()
                        .map(|l| l.log_tail())
                        .unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn local(&self, what: &'static str) -> Result<&LocalBroker, Error> {
        self.local.as_ref().ok_or(Error::External(what))
    }

    /// SIGKILLs the broker process, as a crash would. Idempotent.
    pub fn kill(&self) -> Result<(), Error> {
        match self.local("kill")?.take_process() {
            Some(p) => p.kill(),
            None => Ok(()),
        }
    }

    /// Stops the broker with SIGTERM (SIGKILL after 10 s). Idempotent.
    pub fn stop(&self) -> Result<(), Error> {
        match self.local("stop")?.take_process() {
            Some(p) => p.stop(Duration::from_secs(10)),
            None => Ok(()),
        }
    }

    /// Starts the broker again on the same address and working directory
    /// (with [`Storage::File`], with the same data), killing it first if it
    /// runs, and waits until it serves Metadata.
    pub async fn restart(&self) -> Result<(), Error> {
        let local = self.local("restart")?;
        if let Some(p) = local.take_process() {
            p.kill()?;
        }
        local.spawn()?;
        self.wait_ready(Duration::from_secs(60)).await
    }

    /// Starts a broker that was stopped or killed, without waiting for it to
    /// be ready (the fault tests want to see clients find it by themselves).
    pub fn spawn_again(&self) -> Result<(), Error> {
        self.local("spawn_again")?.spawn()
    }

    /// The broker's log so far (empty for an external cluster).
    pub fn log(&self) -> String {
        self.local
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l.log_path()).ok())
            .unwrap_or_default()
    }
}

/// One broker shared by every test in this test binary, started on first use
/// with the default options. Tests sharing it must use their own topic and
/// group names ([`crate::unique_name`]).
pub async fn shared_broker() -> Result<&'static KafkaBroker, Error> {
    static SHARED: tokio::sync::OnceCell<KafkaBroker> = tokio::sync::OnceCell::const_new();
    SHARED.get_or_try_init(KafkaBroker::start).await
}

fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Io {
        action: "finding a free port",
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            action: "finding a free port",
            source,
        })
}
