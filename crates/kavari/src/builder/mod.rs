//! [`KavariBuilder`]: every option in one place, checked by `build()`
//! (`build.rs`).

mod build;

use std::sync::Arc;
use std::time::Duration;

use crate::consume::{ConsumerConfig, OffsetReset};
use crate::manager::Kavari;
use crate::partitioner::Partitioner;
use crate::publish::{Compression, ProducerConfig};
use crate::retry::{ExponentialRetryPolicy, RetryPolicy};

/// A configuration `build()` refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid Kavari configuration: {0}")]
pub struct ConfigError(pub String);

/// Builds a [`Kavari`](crate::Kavari) manager. Start with [`Kavari::builder`](crate::Kavari::builder).
#[derive(Debug, Clone)]
pub struct KavariBuilder {
    bootstrap: String,
    client_id: String,
    request_timeout: Duration,
    security: kavari_wire::Security,
    shutdown_timeout: Duration,
    publishing_retry: Arc<dyn RetryPolicy>,
    producer: ProducerConfig,
    consumer: ConsumerConfig,
    transactional_id: Option<String>,
    transaction_timeout: Option<Duration>,
}

impl Kavari {
    /// Starts configuring a manager for `bootstrap_servers`
    /// (`host:port[,host:port…]`).
    pub fn builder(bootstrap_servers: impl Into<String>) -> KavariBuilder {
        KavariBuilder::new(bootstrap_servers)
    }
}

impl KavariBuilder {
    pub(crate) fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            client_id: "kavari".to_string(),
            request_timeout: Duration::from_secs(30),
            security: kavari_wire::Security::plaintext(),
            shutdown_timeout: Duration::from_secs(30),
            // Java's producer: retry.backoff.ms 100 doubling to
            // retry.backoff.max.ms 1 s, for as long as delivery_timeout lasts.
            publishing_retry: Arc::new(
                ExponentialRetryPolicy::new(u32::MAX).cap(Duration::from_secs(1)),
            ),
            producer: ProducerConfig::default(),
            consumer: ConsumerConfig::default(),
            transactional_id: None,
            transaction_timeout: None,
        }
    }

    /// Exactly-once handling: each record is handled in a transaction
    /// (shared by up to [`records_per_transaction`](Self::records_per_transaction)
    /// records of a partition) whose publishes (through [`MessageContext::transaction`](crate::MessageContext::transaction))
    /// and the record's offset commit land together, or not at all; a
    /// failed attempt's publishes are aborted before the retry, and a dead
    /// letter lands with the commit too. Readers at read_committed see
    /// each result once, even when a member dies mid-record. The
    /// transactional id is `prefix-` followed by the `group_instance_id`
    /// (stable: a restarted member fences its predecessor) or a random
    /// one; the group's generation fences a member the group has moved
    /// past (KIP-447). A killed member's open transaction holds its
    /// partitions' next owner back until it is fenced, or at most the
    /// [`transaction_timeout`](Self::transaction_timeout) (10 s by default
    /// here). Needs [`ProcessingOrder::Partition`](crate::ProcessingOrder::Partition)
    /// and record handlers (not batch handlers); the test kit handles
    /// at-least-once. Default: off.
    pub fn exactly_once(mut self, transactional_id_prefix: impl Into<String>) -> Self {
        self.consumer.exactly_once = Some(transactional_id_prefix.into());
        self
    }

    /// Under [`exactly_once`](Self::exactly_once) handling, how many
    /// records of a partition at most share a transaction: their publishes
    /// and the offset after the last land together. A transaction costs
    /// a few round trips to its coordinator whatever its size, so sharing
    /// it multiplies throughput; a transaction also ends when the records
    /// fetched so far are handled (a quiet partition waits for nothing),
    /// before a pause, and before a seek. When a record's attempt fails in
    /// a transaction that holds earlier records, it is aborted with them:
    /// their handlers run again (their publishes land once), each record
    /// in a transaction of its own up to the failed one, which then retries
    /// as usual. 1 makes every record a transaction. Default: 100.
    pub fn records_per_transaction(mut self, records: usize) -> Self {
        self.consumer.records_per_transaction = records;
        self
    }

    /// Kafka's `transactional.id`: lets [`Kavari::transaction`](crate::Kavari::transaction)
    /// publish in transactions. One instance of an id writes at a time:
    /// the newest fences the others (give each replica its own, stable
    /// across its restarts, e.g. the pod's name). Default: none.
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// Kafka's `transaction.timeout.ms`: how long a transaction may stay
    /// open before its coordinator aborts it (within the broker's
    /// `transaction.max.timeout.ms`). Default: 60 s for
    /// [`transaction`](crate::Kavari::transaction), 10 s under
    /// [`exactly_once`](Self::exactly_once).
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = Some(timeout);
        self
    }

    /// The consumer group subscribed handlers join (Kafka's `group.id`).
    /// Required to `start()` with subscriptions.
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.consumer.group_id = Some(group_id.into());
        self
    }

    /// Static membership (Kafka's `group.instance.id`): a pod restarted
    /// within the session timeout gets its partitions back without a
    /// rebalance. Default: none.
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.consumer.group_instance_id = Some(id.into());
        self
    }

    /// The member's rack (Kafka's `client.rack`, an availability zone, say),
    /// told to the group's coordinator: in the subscription under the
    /// classic protocol, in each heartbeat under the consumer and share
    /// protocols. Rack-aware assignors (the broker's under the consumer
    /// protocol) give a member partitions with replicas in its rack.
    /// Records are still fetched from each partition's leader.
    /// Default: none.
    pub fn client_rack(mut self, rack: impl Into<String>) -> Self {
        self.consumer.client_rack = Some(rack.into());
        self
    }

    /// When a failed handler is tried again before its message is
    /// dead-lettered. Default: `FibonacciRetryPolicy::new(3)`.
    pub fn delivery_retry_policy(mut self, policy: impl RetryPolicy) -> Self {
        self.consumer.delivery_retry = Arc::new(policy);
        self
    }

    /// Where partitions without a committed offset start (Kafka's
    /// `auto.offset.reset`). Default: [`OffsetReset::Earliest`].
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.consumer.auto_offset_reset = reset;
        self
    }

    /// What happens to a record a handler failed for good (its delivery
    /// retries spent, or a permanent error). Default:
    /// [`FailurePolicy::DeadLetter`](crate::FailurePolicy::DeadLetter); [`FailurePolicy::Skip`](crate::FailurePolicy::Skip) loses the
    /// record and is only for those who ask for it. `KAVARI_ON_FAILURE` sets
    /// it from the environment.
    pub fn on_handler_failure(mut self, policy: crate::consume::FailurePolicy) -> Self {
        self.consumer.on_handler_failure = policy;
        self
    }

    /// What happens to poison input: records with no `msg_type`, of a type
    /// nobody subscribed on their topic, or with a value that does not
    /// decode. Default: [`FailurePolicy::DeadLetter`](crate::FailurePolicy::DeadLetter), the Python
    /// library's strict mode: nothing leaves a partition without a trace.
    /// [`FailurePolicy::Skip`](crate::FailurePolicy::Skip) is its relaxed mode, for a topic that
    /// carries types this service ignores on purpose: each skip is logged
    /// and counted (`health()`'s `skipped`, `kavari_skipped_total`).
    /// `KAVARI_ON_POISON` sets it from the environment.
    pub fn on_poison(mut self, policy: crate::consume::FailurePolicy) -> Self {
        self.consumer.on_poison = policy;
        self
    }

    /// Whether a missing dead-letter topic is created (with its source
    /// topic's partition count and the broker's default replication) before
    /// a dead letter is written to it. Default: true. Off, a missing one
    /// makes a consumer's partition wait (blocked in `health()`) and a
    /// publish hand its record back.
    pub fn create_dead_letter_topics(mut self, create: bool) -> Self {
        self.producer.create_dead_letter_topics = create;
        self
    }

    /// How often handled offsets are committed; `Duration::ZERO` commits
    /// after every message (Kafka's `auto.commit.interval.ms`, but only over
    /// handled messages). Default: 1 s.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.consumer.commit_interval = interval;
        self
    }

    /// Bytes of fetched records all partitions together may hold before
    /// fetching pauses (librdkafka's `queued.max.messages.kbytes`; a
    /// partition alone pauses at twice `max_partition_fetch_bytes`).
    /// Default: 64 MiB.
    pub fn queued_max_bytes(mut self, bytes: usize) -> Self {
        self.consumer.queued_max_bytes = bytes;
        self
    }

    /// Kafka's `fetch.max.bytes`: the most one Fetch request (all of a
    /// broker's partitions) returns; a first batch larger than this still
    /// comes whole. Default: 50 MiB.
    pub fn fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.consumer.fetch_max_bytes = bytes;
        self
    }

    /// Kafka's `max.partition.fetch.bytes`: the most one partition returns
    /// per request. A partition holds up to twice this unhandled (the next
    /// fetch's answer arrives while the last is handled); past that it is
    /// not fetched until its handler catches up (a slow partition pauses
    /// alone). Default: 1 MiB.
    pub fn max_partition_fetch_bytes(mut self, bytes: i32) -> Self {
        self.consumer.max_partition_fetch_bytes = bytes;
        self
    }

    /// Kafka's `fetch.min.bytes`: the broker answers once this much is
    /// there, or after `fetch_max_wait`. Default: 1.
    pub fn fetch_min_bytes(mut self, bytes: i32) -> Self {
        self.consumer.fetch_min_bytes = bytes;
        self
    }

    /// Kafka's `isolation.level`. Default:
    /// [`Isolation::ReadCommitted`](crate::Isolation::ReadCommitted), as
    /// librdkafka and Kafka's own tools: records of aborted transactions
    /// are never delivered.
    pub fn isolation_level(mut self, isolation: kavari_wire::fetch::Isolation) -> Self {
        self.consumer.isolation = isolation;
        self
    }

    /// Kafka's `fetch.max.wait.ms`. Default: 500 ms.
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.consumer.fetch_max_wait = wait;
        self
    }

    /// Kafka's `session.timeout.ms`. Default: 10 s.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.consumer.session_timeout = timeout;
        self
    }

    /// Kafka's `heartbeat.interval.ms`. Default: 3 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.consumer.heartbeat_interval = interval;
        self
    }

    /// Kafka's `max.poll.interval.ms`, used as the rebalance timeout: the
    /// longest a revocation (finishing handlers and committing) may take.
    /// Default: 60 s.
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.consumer.rebalance_timeout = timeout;
        self
    }

    /// Give up when Kafka has been unreachable for this long: the consumer
    /// stops, `health()` says `Failed(reason)`, and [`Kavari::wait`](crate::Kavari::wait) and
    /// `shutdown()` return the reason. Default: none (keep trying, with
    /// backoff capped at 10 s).
    pub fn give_up_after(mut self, limit: Duration) -> Self {
        self.consumer.give_up_after = Some(limit);
        self
    }

    /// The longest one record's handling (its handlers with their retries)
    /// may take, as Kafka's `max.poll.interval.ms`. Past it the partition
    /// shows as stuck in `health()`, and the member leaves the group so its
    /// partitions move to other members: its workers are stopped (the stuck
    /// handler's future is dropped) and nothing past the handled prefix is
    /// committed; it then joins again. Default: 5 min.
    pub fn max_handler_time(mut self, limit: Duration) -> Self {
        self.consumer.max_handler_time = limit;
        self
    }

    /// How each partition's records are handed to the handlers: one at a
    /// time in offset order ([`ProcessingOrder::Partition`](crate::ProcessingOrder::Partition), the default),
    /// by key ([`ProcessingOrder::Key`](crate::ProcessingOrder::Key): records with different keys run
    /// side by side, each key's in offset order), or in no order
    /// ([`ProcessingOrder::Unordered`](crate::ProcessingOrder::Unordered)). A handler that waits on I/O (a
    /// database, an HTTP call, a publish) handles as many records at once
    /// as the window allows.
    ///
    /// ```
    /// use kavari::{Kavari, ProcessingOrder};
    ///
    /// let builder = Kavari::builder("127.0.0.1:9092")
    ///     .group_id("billing")
    ///     .processing_order(ProcessingOrder::Key { max_in_flight: 64 });
    /// ```
    pub fn processing_order(mut self, order: crate::consume::ProcessingOrder) -> Self {
        self.consumer.order = order;
        self
    }

    /// Kafka's `metadata.max.age.ms`: how often the group's leader looks the
    /// subscribed topics up again and rebalances when partitions were added
    /// or a subscribed topic was created since the last assignment.
    /// Default: 5 min.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.consumer.metadata_max_age = age;
        self
    }

    /// Kafka's `group.protocol`: [`GroupProtocol::Classic`](crate::GroupProtocol::Classic)
    /// (JoinGroup and SyncGroup, the group's leader assigning with
    /// [`assignors`](Self::assignors)) or [`GroupProtocol::Consumer`](crate::GroupProtocol::Consumer)
    /// (KIP-848, Kafka 4.0 on: the broker assigns, with
    /// [`group_remote_assignor`](Self::group_remote_assignor), and a
    /// rebalance moves only the partitions that change). Members of both
    /// may share a group on Kafka 4. Default: classic.
    pub fn group_protocol(mut self, protocol: kavari_group::GroupProtocol) -> Self {
        self.consumer.group_protocol = protocol;
        self
    }

    /// Kafka's `group.remote.assignor`: under the consumer group protocol,
    /// the broker's assignor by name (`uniform` or `range` on Apache
    /// Kafka). Default: the broker's (`uniform`).
    pub fn group_remote_assignor(mut self, assignor: impl Into<String>) -> Self {
        self.consumer.remote_assignor = Some(assignor.into());
        self
    }

    /// Makes the manager's subscriptions a share group's (KIP-932, Kafka
    /// 4.2 on) instead of a consumer group's: any number of members
    /// receive records of the same partitions, each record acquired for the
    /// broker's lock duration and acknowledged one by one. A handler's
    /// `Ok` accepts the record; a retriable error releases it, and the
    /// broker delivers it again (to any member) up to its delivery limit
    /// ([`share_delivery_limit`](Self::share_delivery_limit));
    /// a permanent error, a failure on the last delivery, or poison rejects
    /// it, dead-lettered first under [`FailurePolicy::DeadLetter`](crate::FailurePolicy::DeadLetter).
    /// Records run side by side up to the [`processing_order`](Self::processing_order)'s
    /// `max_in_flight` (one at a time under `Partition`): **order is not
    /// kept**, not even per partition. On shutdown the running handlers
    /// finish and whatever else the member holds is released at once; a
    /// member that dies leaves its records to the lock timeout. Batch
    /// handlers and `exactly_once` are refused with it; the test kit
    /// handles a share group's records as a consumer group's. A new share
    /// group starts where [`auto_offset_reset`](Self::auto_offset_reset)
    /// says (Kavari sets the group's `share.auto.offset.reset` on start;
    /// Kafka's own default is the partitions' ends). Default: none.
    pub fn share_group(mut self, group: impl Into<String>) -> Self {
        self.consumer.share_group = Some(group.into());
        self
    }

    /// The broker's `group.share.delivery.count.limit` (5 by default): a
    /// record whose handler fails on this delivery is given up (by the
    /// failure policy) rather than released for one the broker would not
    /// make. Default: 5.
    pub fn share_delivery_limit(mut self, deliveries: u16) -> Self {
        self.consumer.share_delivery_limit = deliveries;
        self
    }

    /// Kafka's `partition.assignment.strategy`, in preference order: any of
    /// [`crate::assignor`]'s ([`RangeAssignor`](crate::assignor::RangeAssignor),
    /// [`RoundRobinAssignor`](crate::assignor::RoundRobinAssignor),
    /// [`CooperativeStickyAssignor`](crate::assignor::CooperativeStickyAssignor)),
    /// or your own [`Assignor`](crate::assignor::Assignor). Default: `range`,
    /// then `cooperative-sticky`, as the Java client.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kavari::Kavari;
    /// use kavari::assignor::CooperativeStickyAssignor;
    ///
    /// let builder = Kavari::builder("127.0.0.1:9092")
    ///     .group_id("billing")
    ///     // Incremental rebalances: partitions that stay are not revoked.
    ///     .assignors(vec![Arc::new(CooperativeStickyAssignor)]);
    /// ```
    pub fn assignors(mut self, assignors: Vec<Arc<dyn kavari_group::assignor::Assignor>>) -> Self {
        self.consumer.assignors = Some(assignors);
        self
    }

    /// The client id sent to the broker (Kafka's `client.id`). Default: `kavari`.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// The longest any single request may take before it counts as failed:
    /// connect, metadata, produce. Kafka's `request.timeout.ms`. Default: 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// TLS on every connection to the cluster (`security.protocol=SSL`):
    /// the broker's certificate checked against a CA file or the system's
    /// roots, and its host name (see [`Tls::builder`](crate::Tls::builder)).
    /// A certificate the client does not trust or that names another host
    /// fails publishes at once with [`ProduceErrorKind::Authentication`](crate::publish::ProduceErrorKind::Authentication)
    /// and turns a consumer's health `Failed`; it is not retried as a
    /// network fault. Default: plaintext.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: kavari_wire::tls::Tls) -> Self {
        self.security = self.security.with_tls(tls);
        self
    }

    /// SASL authentication on every connection (`security.protocol`
    /// `SASL_PLAINTEXT`, or `SASL_SSL` with [`tls`](Self::tls)): PLAIN,
    /// SCRAM-SHA-256 or SCRAM-SHA-512 ([`Sasl`](crate::Sasl)). Credentials
    /// the broker refuses fail publishes at once with
    /// [`ProduceErrorKind::Authentication`](crate::publish::ProduceErrorKind::Authentication)
    /// and turn a consumer's health `Failed`; the error names the broker
    /// and the mechanism, never the password. Default: none.
    pub fn sasl(mut self, sasl: kavari_wire::sasl::Sasl) -> Self {
        self.security = self.security.with_sasl(sasl);
        self
    }

    /// Idempotent publishing (Kafka's `enable.idempotence`): every batch
    /// carries a producer id and a sequence number, so a batch sent again
    /// after a lost answer is written once, and a failed batch is sent
    /// again before anything after it, keeping each partition's order. The
    /// partition retries failed batches itself (by the publishing
    /// retry policy, within `delivery_timeout`); `acks` is all.
    ///
    /// Default: on where the cluster supports it (brokers since 0.11),
    /// with a warning and at-least-once publishing where it does not.
    /// `true` requires it: publishes fail where the cluster cannot do it.
    /// `false` turns it off: a failed batch's publishes retry in new
    /// batches, behind later ones, and a lost answer can mean a duplicate.
    pub fn enable_idempotence(mut self, enable: bool) -> Self {
        self.producer.idempotence = if enable {
            crate::publish::Idempotence::Required
        } else {
            crate::publish::Idempotence::Off
        };
        self
    }

    /// TLS and SASL at once, as [`Security::from_vars`](crate::Security::from_vars)
    /// reads them from `KAVARI_*` variables (tools that take the library's
    /// connection settings use this). Default: plaintext.
    pub fn security(mut self, security: kavari_wire::Security) -> Self {
        self.security = security;
        self
    }

    /// How long `shutdown()` waits for publishes in flight. Default: 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// When a failed publish is tried again, within
    /// [`delivery_timeout`](Self::delivery_timeout). Default: as the Java
    /// producer, 100 ms doubling to 1 s, for as long as the delivery timeout
    /// lasts (`ExponentialRetryPolicy::new(u32::MAX).cap(1 s)`); the Python
    /// library's is `FibonacciRetryPolicy::new(3)`.
    pub fn publishing_retry_policy(mut self, policy: impl RetryPolicy) -> Self {
        self.publishing_retry = Arc::new(policy);
        self
    }

    /// The longest a publish keeps trying before it goes to the dead-letter
    /// topic (or back to the caller), counted from the `publish` call; no
    /// attempt starts after it. Kafka's `delivery.timeout.ms`: long enough
    /// that a leader election or a broker restart does not dead-letter
    /// anything. A record not sent by then is given up unsent; one sent and
    /// not answered gets the request timeout more, then comes back as
    /// [`PublishError::Unconfirmed`](crate::PublishError::Unconfirmed).
    /// Default: 120 s.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.producer.delivery_timeout = timeout;
        self
    }

    /// How long a batch waits for more records after its first one. Kafka's
    /// `linger.ms`. Default: 5 ms, as librdkafka and the Java client (4.0).
    /// A batch may go sooner: when another partition of the same broker has
    /// a batch due, the batches the broker's other partitions are filling go
    /// with it, in the same produce request (as with the Java producer).
    ///
    /// With `Duration::ZERO` a batch goes out as soon as fewer than five of
    /// its partition's requests are in flight: a lone publish waits for no
    /// timer, and under load batches still form behind the five in flight.
    /// That trades more (smaller) requests at moderate rates for latency and,
    /// in `benches/RESULTS.md`, throughput.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.producer.linger = linger;
        self
    }

    /// The largest record batch of a partition, in bytes of key, value,
    /// headers and per-record framing. Kafka's `batch.size`; keep it below
    /// the broker's `message.max.bytes` (1 MiB by default). Default: 512 KiB.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.producer.max_batch_bytes = bytes;
        self
    }

    /// The largest message publish accepts; a larger one is not retried and
    /// goes to the dead-letter topic. Kafka's `max.request.size`. Default: 1 MiB.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.producer.max_message_bytes = bytes;
        self
    }

    /// Batch compression. Default: [`Compression::None`].
    pub fn compression(mut self, compression: Compression) -> Self {
        self.producer.compression = compression;
        self
    }

    /// How keys map to partitions. Default: [`Partitioner::Murmur2`], as the
    /// Java client.
    pub fn partitioner(mut self, partitioner: Partitioner) -> Self {
        self.producer.partitioner = partitioner;
        self
    }

    /// The suffix of dead-letter topics (`<topic><suffix>`), or `None` to
    /// hand failed publishes back instead (a consumer then needs
    /// [`on_handler_failure`](Self::on_handler_failure) and
    /// [`on_poison`](Self::on_poison) other than `DeadLetter`). Default:
    /// `Some(".dlq")`.
    pub fn dead_letter_suffix(mut self, suffix: Option<&str>) -> Self {
        self.producer.dlq_suffix = suffix.map(str::to_string);
        self
    }

    /// Puts `prefix` in front of every topic this manager publishes to,
    /// subscribes to and dead-letters to: `topic_prefix("staging.")` makes
    /// `#[kavari(topic = "orders")]` mean `staging.orders` (and its dead
    /// letters `staging.orders.dlq`). For per-environment clusters shared by
    /// several stages, and for tests that need topics of their own. Applied
    /// after [`topic_for`](Self::topic_for). Default: none.
    ///
    /// A publish to a prefixed topic allocates its topic name; without a
    /// mapping the type's `&'static str` is used as is.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.producer.topic_names.set_prefix(prefix.into());
        self
    }

    /// Uses `topic` for message type `M` instead of its
    /// `#[kavari(topic = "...")]`, for publishing, subscribing and dead
    /// letters; a [`topic_prefix`](Self::topic_prefix) still goes in front.
    /// Other types on the derive's topic stay there.
    ///
    /// ```no_run
    /// # use kavari::{KafkaMessage, Kavari};
    /// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
    /// #[kavari(topic = "orders")]
    /// struct OrderPlaced { id: u64 }
    ///
    /// # async fn demo() -> Result<(), kavari::ConfigError> {
    /// let manager = Kavari::builder("127.0.0.1:9092")
    ///     .topic_for::<OrderPlaced>("orders-v2")
    ///     .topic_prefix("staging.") // OrderPlaced goes to staging.orders-v2
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn topic_for<M: crate::message::KafkaMessage>(mut self, topic: impl Into<String>) -> Self {
        self.producer.topic_names.rename::<M>(topic.into());
        self
    }

    /// How many records each partition may hold waiting for a batch before
    /// `publish` waits (backpressure). Default: 65,536.
    pub fn max_queued_per_partition(mut self, records: usize) -> Self {
        self.producer.queue_capacity = records;
        self
    }

    /// How many bytes of records each partition may hold waiting for a
    /// batch before `publish` waits (backpressure); a record larger than
    /// this still goes, alone. [`buffer_memory`](Self::buffer_memory) bounds
    /// all partitions together. Default: 32 MiB.
    pub fn max_queued_bytes_per_partition(mut self, bytes: usize) -> Self {
        self.producer.queue_capacity_bytes = bytes;
        self
    }

    /// How many bytes of records all partitions together may hold waiting
    /// to be sent before `publish` waits (backpressure), as the Java
    /// producer's `buffer.memory`. A partition with nothing waiting still
    /// takes one record. Default: 32 MiB.
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.producer.buffer_memory = bytes;
        self
    }

    /// How long a topic no publish went to keeps its route (its partition
    /// batchers and their tasks) before it is forgotten and, if published
    /// to again, looked up anew. The Java producer's `metadata.max.idle.ms`.
    /// Default: 5 min.
    pub fn metadata_max_idle(mut self, idle: Duration) -> Self {
        self.producer.metadata_max_idle = idle;
        self
    }
}
