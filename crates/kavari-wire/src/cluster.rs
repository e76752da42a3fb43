//! The cluster as a client sees it: the bootstrap servers, a connection to
//! any broker for metadata, and per broker id one pipelined [`Connection`]
//! for each [`Lane`], made when first needed and made again after it broke.
//!
//! A broker answers a connection's requests in order, and a Fetch may be
//! held for its whole `max_wait`: a produce request behind it would wait as
//! long. So fetches have a lane of their own, as the group member's
//! JoinGroup and SyncGroup have their own connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use tokio::sync::Mutex;

use crate::Security;
use crate::WireError;
use crate::connection::Connection;
use crate::topic_name;

/// A topic's partitions as the cluster described them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The topic.
    pub name: String,
    /// Its id (Metadata v10 on); `None` when the broker does not say.
    pub id: Option<uuid::Uuid>,
    /// Its partitions, ordered by partition id.
    pub partitions: Vec<PartitionMetadata>,
    /// The broker's error for the whole topic, if any.
    pub error: Option<ResponseError>,
}

/// One partition's leader, or why it has none now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition id.
    pub partition: i32,
    /// The leader's broker id; `None` while there is no leader.
    pub leader: Option<i32>,
    /// The leader's epoch (KIP-320), -1 when the broker does not say.
    pub leader_epoch: i32,
    /// The broker's error for this partition, if any.
    pub error: Option<ResponseError>,
    /// The brokers holding a copy, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The copies in sync with the leader.
    pub in_sync: Vec<i32>,
}

/// Which of a broker's connections a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Produce, metadata, offsets: requests the broker answers at once.
    General,
    /// Fetch requests, which the broker may hold for their `max_wait`.
    Fetch,
}

/// The broker address last seen for an id, and its connections.
#[derive(Debug, Default)]
struct BrokerSlot {
    address: std::sync::Mutex<String>,
    general: Mutex<Option<Arc<Connection>>>,
    fetch: Mutex<Option<Arc<Connection>>>,
}

/// Connections to one Kafka cluster.
#[derive(Debug)]
pub struct Cluster {
    bootstrap: Vec<String>,
    client_id: String,
    request_timeout: Duration,
    security: Security,
    any: Mutex<Option<Arc<Connection>>>,
    brokers: std::sync::Mutex<HashMap<i32, Arc<BrokerSlot>>>,
    /// The controller's id from the last metadata answer; -1 when unknown.
    controller: std::sync::atomic::AtomicI32,
}

impl Cluster {
    /// A cluster reached through `bootstrap` (`host:port` each); nothing is
    /// connected until a request needs it. Every request is bounded by
    /// `request_timeout`.
    pub fn new(bootstrap: Vec<String>, client_id: String, request_timeout: Duration) -> Self {
        Self {
            bootstrap,
            client_id,
            request_timeout,
            security: Security::plaintext(),
            any: Mutex::new(None),
            brokers: std::sync::Mutex::new(HashMap::new()),
            controller: std::sync::atomic::AtomicI32::new(-1),
        }
    }

    /// Secures every connection as `security` says (default: plaintext).
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// A new connection to `address`, with the cluster's client id,
    /// timeout and security: for callers that keep connections of their
    /// own (the group coordinator's).
    pub async fn connect(&self, address: &str) -> Result<Connection, WireError> {
        let connected = self.connect_once(address).await;
        if connected.is_err() {
            crate::metrics::connect_failed(address);
        }
        connected
    }

    async fn connect_once(&self, address: &str) -> Result<Connection, WireError> {
        let mut conn = Connection::connect(
            address,
            &self.client_id,
            self.request_timeout,
            self.security.transport(),
        )
        .await?;
        if let Some(sasl) = self.security.sasl()
            && let Some(lifetime) = sasl.authenticate(&conn).await?
        {
            conn.session_lasts(lifetime);
        }
        Ok(conn)
    }

    /// The timeout of every request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// The client id sent with every request.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// A connection to any bootstrap broker, tried in order.
    pub async fn any_broker(&self) -> Result<Arc<Connection>, WireError> {
        let mut slot = self.any.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_broken()
        {
            return Ok(Arc::clone(c));
        }
        let mut last = None;
        for address in &self.bootstrap {
            match self.connect(address).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    *slot = Some(Arc::clone(&c));
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(WireError::Connection {
            address: String::new(),
            detail: "no bootstrap servers".into(),
        }))
    }

    /// Forgets the bootstrap connection, so the next request makes another.
    pub async fn forget_any_broker(&self) {
        *self.any.lock().await = None;
    }

    /// The metadata of `topics`. A topic the cluster does not know is left
    /// out (it is never created by asking). Broker addresses are remembered
    /// for [`broker`](Self::broker).
    pub async fn topics(&self, topics: &[&str]) -> Result<Vec<TopicMetadata>, WireError> {
        Ok(self.metadata(Some(topics)).await?.1)
    }

    /// The metadata of every topic the cluster has.
    pub async fn all_topics(&self) -> Result<Vec<TopicMetadata>, WireError> {
        Ok(self.metadata(None).await?.1)
    }

    /// The ids of the brokers a fresh metadata answer names (the live
    /// ones), in order.
    pub async fn broker_ids(&self) -> Result<Vec<i32>, WireError> {
        let mut ids = self.metadata(Some(&[])).await?.0;
        ids.sort_unstable();
        Ok(ids)
    }

    /// The brokers this client keeps connections for: those the last
    /// metadata answer named.
    pub fn known_brokers(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Asks for `topics`' metadata (every topic: `None`); the brokers it
    /// names, and the topics.
    async fn metadata(
        &self,
        topics: Option<&[&str]>,
    ) -> Result<(Vec<i32>, Vec<TopicMetadata>), WireError> {
        let conn = self.any_broker().await?;
        let req = MetadataRequest::default()
            .with_topics(topics.map(|topics| {
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let resp = match conn.send(&req).await {
            Ok(r) => r,
            Err(e) => {
                self.forget_any_broker().await;
                return Err(e);
            }
        };
        self.controller
            .store(resp.controller_id.0, std::sync::atomic::Ordering::Relaxed);
        {
            let mut brokers = self.brokers.lock().unwrap_or_else(|p| p.into_inner());
            for b in &resp.brokers {
                let address = format!("{}:{}", b.host.as_str(), b.port);
                let slot = brokers.entry(b.node_id.0).or_default();
                let mut known = slot.address.lock().unwrap_or_else(|p| p.into_inner());
                if *known != address {
                    *known = address;
                }
            }
            // Brokers the answer no longer names are forgotten, with their
            // connections once no request holds them: a cluster that lists
            // millions of brokers once is not remembered for ever.
            if !resp.brokers.is_empty() {
                let live: std::collections::HashSet<i32> =
                    resp.brokers.iter().map(|b| b.node_id.0).collect();
                brokers.retain(|id, _| live.contains(id));
            }
        }
        let ids = resp.brokers.iter().map(|b| b.node_id.0).collect();
        let topics = resp
            .topics
            .into_iter()
            .filter(|t| t.error_code.err() != Some(ResponseError::UnknownTopicOrPartition))
            .filter_map(|t| {
                let name = t.name?.0.as_str().to_string();
                let mut partitions: Vec<PartitionMetadata> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionMetadata {
                        partition: p.partition_index,
                        leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                        leader_epoch: p.leader_epoch,
                        error: p.error_code.err(),
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        in_sync: p.isr_nodes.iter().map(|b| b.0).collect(),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                Some(TopicMetadata {
                    name,
                    id: (!t.topic_id.is_nil()).then_some(t.topic_id),
                    partitions,
                    error: t.error_code.err(),
                })
            })
            .collect();
        Ok((ids, topics))
    }

    /// The metadata of one topic; `None` when the cluster does not know it.
    pub async fn topic(&self, topic: &str) -> Result<Option<TopicMetadata>, WireError> {
        Ok(self
            .topics(&[topic])
            .await?
            .into_iter()
            .find(|t| t.name == topic))
    }

    /// A connection to the controller, as the last metadata answer names it
    /// (asked afresh here); any broker when the cluster names none (a
    /// KRaft cluster forwards admin requests to its controller itself).
    pub async fn controller(&self) -> Result<Arc<Connection>, WireError> {
        self.topics(&[]).await?;
        match self.controller.load(std::sync::atomic::Ordering::Relaxed) {
            id if id >= 0 => self.broker(id).await,
            _ => self.any_broker().await,
        }
    }

    /// The general connection to broker `id` (as named by the last
    /// metadata answer), connecting first when there is none or it broke.
    pub async fn broker(&self, id: i32) -> Result<Arc<Connection>, WireError> {
        self.broker_on(id, Lane::General).await
    }

    /// The connection of `lane` to broker `id`, connecting first when there
    /// is none or it broke.
    pub async fn broker_on(&self, id: i32, lane: Lane) -> Result<Arc<Connection>, WireError> {
        let slot = self
            .brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| WireError::Connection {
                address: format!("broker {id}"),
                detail: "not in the cluster's metadata".into(),
            })?;
        let mut conn = match lane {
            Lane::General => slot.general.lock().await,
            Lane::Fetch => slot.fetch.lock().await,
        };
        let address = slot
            .address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(c) = conn.as_ref()
            && !c.is_broken()
            && c.address() == address
        {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(self.connect(&address).await?);
        tracing::debug!(broker = id, %address, ?lane, "connected to broker");
        *conn = Some(Arc::clone(&c));
        Ok(c)
    }
}
