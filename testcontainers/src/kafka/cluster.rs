//! [`KafkaCluster`]: Apache Kafka brokers in KRaft mode, each node both
//! broker and controller, as processes of the test's own on loopback.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::{ClientSecurity, NodeConfig, Ports};
use super::install::{classpath, ensure_kafka_installed, java, java_command};
use crate::access::Access;
use crate::process::{BrokerProcess, log_tail};
use crate::{BrokerBuilder, Error, FaultProxy};

/// The JVM options of each node unless `KAVARI_KAFKA_JVM_OPTS` says
/// otherwise: a small heap and the client compiler only, so three nodes
/// start in seconds on 2 cores and leave the cores to the tests.
const JVM_OPTS: &str = "-Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
                        -XX:-UsePerfData -Djava.awt.headless=true";

impl KafkaCluster {
    /// Installs Kafka if it is missing, formats the nodes' directories as
    /// `options` say, starts every node and returns once each answers
    /// Metadata.
    pub(crate) async fn start_with(options: &BrokerBuilder) -> Result<Self, Error> {
        let started = Instant::now();
        let home = crate::install::installed(ensure_kafka_installed).await?;
        let dir = crate::process::workdir("kavari-kafka-")?;
        let ids: Vec<i32> = (1..=i32::try_from(options.nodes).unwrap_or(3)).collect();
        // Three ports a node, all distinct (two listeners of a node on one
        // port make Kafka refuse its configuration).
        let ports = crate::free_ports(ids.len() * 3)?;
        let layout: Vec<(i32, Ports)> = ids
            .iter()
            .zip(ports.chunks_exact(3))
            .map(|(&id, p)| {
                (
                    id,
                    Ports {
                        client: p[0],
                        internal: p[1],
                        controller: p[2],
                    },
                )
            })
            .collect();
        let proxy = if options.proxy {
            Some(FaultProxy::start_many(
                layout
                    .iter()
                    .map(|(_, p)| format!("127.0.0.1:{}", p.client))
                    .collect(),
            )?)
        } else {
            None
        };
        let mut security = ClientSecurity {
            users: options.users.clone(),
            mechanisms: options.mechanisms.clone(),
            reauthenticate_after: options.reauthenticate_after,
            ..ClientSecurity::default()
        };
        let mut access = Access {
            sasl: options.users.first().cloned(),
            ..Access::default()
        };
        if let Some(names) = &options.tls_names {
            let ca = crate::certificates::issue(dir.path(), names)?;
            security.tls_keystore = Some(crate::certificates::keystore(dir.path())?);
            if options.client_certificates {
                security.client_ca = Some(ca.clone());
                access.client_certificate = Some(crate::certificates::issue_client(dir.path())?);
            }
            access.tls_ca = Some(ca);
        }
        let cluster_id = cluster_id();
        let mut nodes = Vec::with_capacity(layout.len());
        for (i, (id, ports)) in layout.iter().enumerate() {
            let node_dir = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir).map_err(|source| Error::Io {
                action: "creating a node's directory",
                source,
            })?;
            let advertised = match &proxy {
                Some(p) => p.addresses()[i].to_string(),
                None => format!("127.0.0.1:{}", ports.client),
            };
            let properties = NodeConfig {
                id: *id,
                nodes: &layout,
                advertised: &advertised,
                data: &node_dir.join("data"),
                security: &security,
            }
            .render();
            std::fs::write(node_dir.join("server.properties"), properties).map_err(|source| {
                Error::Io {
                    action: "writing a node's server.properties",
                    source,
                }
            })?;
            access.bootstrap.push(advertised.clone());
            nodes.push(Node {
                id: *id,
                advertised,
                dir: node_dir,
                process: Mutex::new(None),
            });
        }
        let cluster = KafkaCluster {
            home,
            dir,
            nodes,
            proxy,
            access,
        };
        let formatting = Instant::now();
        cluster.format(&cluster_id, &options.users).await?;
        let formatted = formatting.elapsed();
        for node in &cluster.nodes {
            cluster.spawn(node)?;
        }
        for node in &cluster.nodes {
            cluster.wait_node(node, options.ready_timeout).await?;
        }
        tracing::info!(
            nodes = cluster.nodes.len(),
            ?formatted,
            took = ?started.elapsed(),
            bootstrap = %cluster.bootstrap_servers(),
            "Kafka cluster started"
        );
        eprintln!(
            "kavari-testcontainers: Apache Kafka {} cluster of {} node(s) started in {:.1} s \
             (formatting {:.1} s), security {}",
            super::KAFKA_VERSION,
            cluster.nodes.len(),
            started.elapsed().as_secs_f64(),
            formatted.as_secs_f64(),
            security.protocol(),
        );
        Ok(cluster)
    }
}

/// One node: its id, the address clients are told, its directory
/// (`server.properties`, `data/`, `node.log`) and its process while it runs.
#[derive(Debug)]
struct Node {
    id: i32,
    advertised: String,
    dir: PathBuf,
    process: Mutex<Option<BrokerProcess>>,
}

impl Node {
    fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    fn take_process(&self) -> Option<BrokerProcess> {
        self.process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn is_running(&self) -> bool {
        self.process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// An Apache Kafka cluster in KRaft mode, every node both broker and
/// controller, each a JVM process of the test's own on free loopback
/// ports, in a fresh directory with a fresh cluster id. Topics created
/// with the broker's defaults get three copies (as many as there are
/// nodes, up to three) and `min.insync.replicas=2`.
///
/// Nodes are killed when the handle drops and when the test process exits,
/// however it exits.
#[derive(Debug)]
pub struct KafkaCluster {
    home: PathBuf,
    nodes: Vec<Node>,
    proxy: Option<FaultProxy>,
    access: Access,
    /// Last, so it is removed after the nodes are dead (fields drop in
    /// order; removing the data of a node still writing can fail, and
    /// left every cluster's directory behind).
    dir: tempfile::TempDir,
}

impl KafkaCluster {
    /// Options: nodes, a fault proxy, TLS, SASL ([`BrokerBuilder`]); its
    /// [`start_cluster`](BrokerBuilder::start_cluster) starts Kafka.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Starts a cluster of three nodes with plaintext listeners.
    pub async fn start() -> Result<Self, Error> {
        Self::builder().start_cluster().await
    }

    /// The bootstrap servers clients should use: every node (its proxy port
    /// when behind a proxy).
    pub fn bootstrap_servers(&self) -> String {
        self.access.bootstrap_servers()
    }

    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    /// The fault proxy in front of the nodes, when started behind one.
    pub fn proxy(&self) -> Option<&FaultProxy> {
        self.proxy.as_ref()
    }

    /// The node ids, `1..=N`.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The address clients are told for `node`.
    pub fn node_address(&self, node: i32) -> Result<&str, Error> {
        Ok(self.node(node)?.advertised.as_str())
    }

    fn node(&self, id: i32) -> Result<&Node, Error> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| Error::Topic {
                action: format!("finding node {id}"),
                detail: format!("the cluster's nodes are {:?}", self.node_ids()),
            })
    }

    /// Formats every node's directory with the cluster id, the SCRAM users
    /// written into the metadata from the start. The nodes format in
    /// parallel (a JVM each).
    async fn format(&self, cluster_id: &str, users: &[(String, String)]) -> Result<(), Error> {
        let classpath = self.classpath();
        let mut children = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let mut command = tokio::process::Command::new(java());
            command
                .args(["-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp"])
                .arg(&classpath)
                .args(["kafka.tools.StorageTool", "format"])
                // One argument: an id may start with `-`, which the tool
                // would read as an option.
                .arg(format!("--cluster-id={cluster_id}"))
                .arg("--config")
                .arg(node.dir.join("server.properties"));
            for (name, password) in users {
                for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
                    command
                        .arg("--add-scram")
                        .arg(format!("{mechanism}=[name={name},password={password}]"));
                }
            }
            let child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| Error::Process {
                    binary: java(),
                    action: "formatting a node's directory",
                    source,
                })?;
            children.push(child);
        }
        for child in children {
            let out = child
                .wait_with_output()
                .await
                .map_err(|source| Error::Process {
                    binary: java(),
                    action: "formatting a node's directory",
                    source,
                })?;
            if !out.status.success() {
                return Err(Error::Process {
                    binary: java(),
                    action: "formatting a node's directory",
                    source: std::io::Error::other(format!(
                        "{}: {}{}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )),
                });
            }
        }
        Ok(())
    }

    fn classpath(&self) -> String {
        classpath(&self.home)
    }

    fn spawn(&self, node: &Node) -> Result<(), Error> {
        let opts = std::env::var("KAVARI_KAFKA_JVM_OPTS").unwrap_or_else(|_| JVM_OPTS.to_string());
        let mut args: Vec<String> = opts.split_whitespace().map(str::to_string).collect();
        args.push(format!(
            "-Dlog4j2.configurationFile={}",
            self.home.join("log4j2.yaml").display()
        ));
        args.push("-cp".into());
        args.push(self.classpath());
        args.push("kafka.Kafka".into());
        args.push(node.dir.join("server.properties").display().to_string());
        let process = BrokerProcess::spawn(
            &java(),
            &args,
            (&node.dir, self.dir.path()),
            &node.log_path(),
        )?;
        let mut slot = node.process.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(process) {
            old.kill()?;
        }
        Ok(())
    }

    async fn wait_node(&self, node: &Node, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            if self.access.answers(vec![node.advertised.clone()]).await? {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(Error::NotReady {
                    address: format!("node {} at {}", node.id, node.advertised),
                    waited: started.elapsed(),
                    log: log_tail(&node.log_path()),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILLs `node`, as a crash would. Idempotent.
    pub fn kill_node(&self, node: i32) -> Result<(), Error> {
        match self.node(node)?.take_process() {
            Some(p) => p.kill(),
            None => Ok(()),
        }
    }

    /// Stops `node` with SIGTERM, Kafka's controlled shutdown (its
    /// partitions' leadership moves first); SIGKILL after 30 s. Idempotent.
    pub fn stop_node(&self, node: i32) -> Result<(), Error> {
        match self.node(node)?.take_process() {
            Some(p) => p.stop(Duration::from_secs(30)),
            None => Ok(()),
        }
    }

    /// Starts `node` again with its data, without waiting for it.
    pub fn spawn_node(&self, node: i32) -> Result<(), Error> {
        let node = self.node(node)?;
        if node.is_running() {
            return Ok(());
        }
        self.spawn(node)
    }

    /// Starts `node` again with its data (killing it first if it runs) and
    /// waits until it answers Metadata.
    pub async fn restart_node(&self, node: i32) -> Result<(), Error> {
        let node = self.node(node)?;
        if let Some(p) = node.take_process() {
            p.kill()?;
        }
        self.spawn(node)?;
        self.wait_node(node, Duration::from_secs(120)).await
    }

    /// SIGKILLs every node.
    pub fn kill_all(&self) -> Result<(), Error> {
        self.node_ids()
            .into_iter()
            .try_for_each(|n| self.kill_node(n))
    }

    /// Stops every node gracefully, one after another.
    pub fn stop_all(&self) -> Result<(), Error> {
        self.node_ids()
            .into_iter()
            .try_for_each(|n| self.stop_node(n))
    }

    /// Starts every node that is not running, without waiting.
    pub fn spawn_all(&self) -> Result<(), Error> {
        self.node_ids()
            .into_iter()
            .try_for_each(|n| self.spawn_node(n))
    }

    /// Starts every node that is not running and waits until each answers.
    pub async fn start_all(&self) -> Result<(), Error> {
        self.spawn_all()?;
        for node in &self.nodes {
            self.wait_node(node, Duration::from_secs(120)).await?;
        }
        Ok(())
    }

    /// The leader of `topic`/`partition` now, as Metadata tells it.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Option<i32>, Error> {
        let cluster = self.access.cluster(Duration::from_secs(5))?;
        let meta = cluster.topic(topic).await.map_err(|e| Error::Topic {
            action: format!("looking up the leader of {topic}/{partition}"),
            detail: e.to_string(),
        })?;
        Ok(meta
            .and_then(|m| m.partitions.into_iter().find(|p| p.partition == partition))
            .and_then(|p| p.leader))
    }

    /// Waits until `topic`/`partition` has a leader other than `not`, and
    /// returns it. Gives up after `timeout`.
    pub async fn wait_for_leader(
        &self,
        topic: &str,
        partition: i32,
        not: Option<i32>,
        timeout: Duration,
    ) -> Result<i32, Error> {
        let started = Instant::now();
        loop {
            match self.leader(topic, partition).await {
                Ok(Some(leader)) if Some(leader) != not => return Ok(leader),
                Ok(_) | Err(_) if started.elapsed() < timeout => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => {
                    return Err(Error::Topic {
                        action: format!("waiting for a new leader of {topic}/{partition}"),
                        detail: format!("after {timeout:?}: {other:?}"),
                    });
                }
            }
        }
    }

    /// Elects leaders of `partitions` of `topic` through the Admin API
    /// (ElectLeaders): [`Preferred`](kavari_wire::admin::Election::Preferred)
    /// moves each back to its first replica, as after a node returned;
    /// [`Unclean`](kavari_wire::admin::Election::Unclean) takes any live
    /// replica, and may truncate the log.
    pub async fn elect_leaders(
        &self,
        election: kavari_wire::admin::Election,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(), Error> {
        let cluster = self.access.cluster(Duration::from_secs(30))?;
        kavari_wire::admin::elect_leaders(&cluster, election, topic, partitions)
            .await
            .map_err(|e| Error::Topic {
                action: format!("electing leaders of {topic} {partitions:?} ({election:?})"),
                detail: e.to_string(),
            })
    }

    /// A `java` command with the cluster's jars on its class path
    /// (kafka-clients among them) and its quiet logging, running the
    /// single-file program `source` (Java's source-file mode): a Java
    /// client as a peer of the tests. Arguments follow.
    pub fn java_peer(&self, source: &Path) -> std::process::Command {
        java_command(&self.home, &["-XX:TieredStopAtLevel=1"], source)
    }

    /// `node`'s log so far.
    pub fn log(&self, node: i32) -> String {
        self.node(node)
            .ok()
            .and_then(|n| std::fs::read_to_string(n.log_path()).ok())
            .unwrap_or_default()
    }

    /// The last lines of every node's log, for a failure message.
    pub(crate) fn log_tail(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, log_tail(&n.log_path())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The cluster's directory (the nodes' data, logs and certificates).
    pub fn directory(&self) -> &Path {
        self.dir.path()
    }
}

/// A fresh cluster id: 16 random bytes in URL-safe base64 without padding,
/// as Kafka's `Uuid` prints them.
fn cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    base64_url(&bytes)
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_characters_and_differ() {
        let a = cluster_id();
        let b = cluster_id();
        assert_eq!(a.len(), 22, "{a}");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn base64_url_matches_known_values() {
        assert_eq!(base64_url(b"\xfb\xff"), "-_8");
        assert_eq!(base64_url(b"Man"), "TWFu");
        assert_eq!(base64_url(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
    }
}
