//! A nisshi broker process (the fast, single-node Kafka-protocol broker
//! built from crates.io): its command line, its SCRAM users, its log.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::access::Access;
use crate::process::BrokerProcess;
use crate::{BrokerBuilder, Error, FaultProxy, Storage, ensure_broker_installed};

/// A nisshi process of the test's own, on a free loopback port, in its own
/// temporary directory.
#[derive(Debug)]
pub(crate) struct NisshiBroker {
    binary: PathBuf,
    port: u16,
    advertised: String,
    storage: Storage,
    proxy: Option<FaultProxy>,
    /// Serves TLS with the certificate in the working directory.
    tls: bool,
    /// Requires SASL (once its users exist).
    authentication: std::sync::atomic::AtomicBool,
    process: Mutex<Option<BrokerProcess>>,
    /// Last, so it is removed after the broker is dead (fields drop in
    /// order; removing a directory a broker still writes to can fail).
    workdir: tempfile::TempDir,
}

impl NisshiBroker {
    /// Installs nisshi if it is missing, starts it as `options` say and
    /// returns it with the access the test kit uses, once it answers.
    pub(crate) async fn start(options: &BrokerBuilder) -> Result<(Self, Access), Error> {
        if options.client_certificates {
            return Err(Error::NeedsKafka("require_client_certificates"));
        }
        if options.reauthenticate_after.is_some() {
            return Err(Error::NeedsKafka("reauthenticate_after"));
        }
        let binary = crate::install::installed(ensure_broker_installed).await?;
        let workdir = crate::process::workdir("kavari-broker-")?;
        // One port: free_ports(1) returns exactly one.
        let port = crate::free_ports(1)?[0];
        let proxy = if options.proxy {
            Some(FaultProxy::start(format!("127.0.0.1:{port}"))?)
        } else {
            None
        };
        let advertised = match &proxy {
            Some(p) => p.address().to_string(),
            None => format!("127.0.0.1:{port}"),
        };
        let tls_ca = match &options.tls_names {
            Some(names) => Some(crate::certificates::issue(workdir.path(), names)?),
            None => None,
        };
        let storage = if options.users.is_empty() {
            options.storage
        } else {
            // The broker keeps SCRAM users only on file.
            Storage::File
        };
        let local = Self {
            binary,
            workdir,
            port,
            advertised: advertised.clone(),
            storage,
            proxy,
            tls: tls_ca.is_some(),
            authentication: std::sync::atomic::AtomicBool::new(false),
            process: Mutex::new(None),
        };
        if !options.users.is_empty() {
            // The broker takes new users only from an unauthenticated,
            // plaintext client: create them before security is on.
            local.spawn_plain()?;
            let plain = Access {
                bootstrap: vec![format!("127.0.0.1:{port}")],
                ..Access::default()
            };
            crate::ready::wait_ready(&plain, options.ready_timeout, || local.log_tail()).await?;
            for (name, password) in &options.users {
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
        let access = Access {
            bootstrap: vec![advertised],
            tls_ca,
            client_certificate: None,
            sasl: options.users.first().cloned(),
        };
        Ok((local, access))
    }

    /// The fault proxy in front of the broker, if any.
    pub(crate) fn proxy(&self) -> Option<&FaultProxy> {
        self.proxy.as_ref()
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.workdir.path().join("broker.log")
    }

    pub(crate) fn spawn(&self) -> Result<(), Error> {
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
        let process = BrokerProcess::spawn(
            &self.binary,
            &args,
            (self.workdir.path(), self.workdir.path()),
            &self.log_path(),
        )?;
        let mut slot = self.process.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(process) {
            old.kill()?;
        }
        Ok(())
    }

    pub(crate) fn take_process(&self) -> Option<BrokerProcess> {
        self.process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The last 2000 bytes of the broker's log.
    pub(crate) fn log_tail(&self) -> String {
        crate::process::log_tail(&self.log_path())
    }
}
