//! A node's `server.properties`: a pure function of the cluster's layout
//! and the client listener's security, so the settings the tests rely on
//! are in one place and unit-tested.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The ports of one node: clients, brokers among themselves, the KRaft
/// controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ports {
    /// The listener clients use (`CLIENT`), secured as the cluster says.
    pub(crate) client: u16,
    /// Plaintext, between brokers (`INTERNAL`).
    pub(crate) internal: u16,
    /// Plaintext, the KRaft quorum (`CONTROLLER`).
    pub(crate) controller: u16,
}

/// How the client listener is secured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientSecurity {
    /// TLS with the server key and certificate chain in this one PEM file.
    pub(crate) tls_keystore: Option<std::path::PathBuf>,
    /// TLS clients must present a certificate issued by this CA (PEM).
    pub(crate) client_ca: Option<std::path::PathBuf>,
    /// SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) with these users.
    pub(crate) users: Vec<(String, String)>,
    /// `connections.max.reauth.ms` (KIP-368), when set.
    pub(crate) reauthenticate_after: Option<Duration>,
    /// The SASL mechanisms offered; empty offers all four.
    pub(crate) mechanisms: Vec<String>,
}

/// Every SASL mechanism a test cluster can offer.
const MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

impl ClientSecurity {
    /// Kafka's name of the client listener's security protocol.
    pub(crate) fn protocol(&self) -> &'static str {
        match (self.tls_keystore.is_some(), !self.users.is_empty()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }
}

/// One node of a cluster whose every node is both broker and controller.
#[derive(Debug)]
pub(crate) struct NodeConfig<'a> {
    /// `node.id`.
    pub(crate) id: i32,
    /// Every node's id and ports, this one's included.
    pub(crate) nodes: &'a [(i32, Ports)],
    /// The address this node's clients are told (a proxy's, or its own).
    pub(crate) advertised: &'a str,
    /// `log.dirs`.
    pub(crate) data: &'a Path,
    /// The client listener's security.
    pub(crate) security: &'a ClientSecurity,
}

impl NodeConfig<'_> {
    /// The node's `server.properties`.
    pub(crate) fn render(&self) -> String {
        let ports = self
            .nodes
            .iter()
            .find(|(id, _)| *id == self.id)
            .map(|(_, p)| *p)
            .unwrap_or(Ports {
                client: 0,
                internal: 0,
                controller: 0,
            });
        let voters = self
            .nodes
            .iter()
            .map(|(id, p)| format!("{id}@127.0.0.1:{}", p.controller))
            .collect::<Vec<_>>()
            .join(",");
        // Three copies where three nodes exist, two of which must have a
        // write (acks=all), as production clusters are set up.
        let copies = self.nodes.len().clamp(1, 3);
        let in_sync = copies.min(2);
        let mut out = String::new();
        let mut line = |key: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{key}={value}");
        };
        line("process.roles", &"broker,controller");
        line("node.id", &self.id);
        line("controller.quorum.voters", &voters);
        line(
            "listeners",
            &format!(
                "CLIENT://127.0.0.1:{},INTERNAL://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                ports.client, ports.internal, ports.controller
            ),
        );
        line(
            "advertised.listeners",
            &format!(
                "CLIENT://{},INTERNAL://127.0.0.1:{}",
                self.advertised, ports.internal
            ),
        );
        line(
            "listener.security.protocol.map",
            &format!(
                "CLIENT:{},INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
                self.security.protocol()
            ),
        );
        line("inter.broker.listener.name", &"INTERNAL");
        line("controller.listener.names", &"CONTROLLER");
        line("log.dirs", &self.data.display());
        line("num.partitions", &1);
        line("default.replication.factor", &copies);
        line("min.insync.replicas", &in_sync);
        line("offsets.topic.replication.factor", &copies);
        // Fewer partitions than the default 50: each is a log to create
        // and load on every node, seconds on 2 cores.
        line("offsets.topic.num.partitions", &10);
        line("transaction.state.log.replication.factor", &copies);
        line("transaction.state.log.min.isr", &in_sync);
        line("transaction.state.log.num.partitions", &5);
        // A transaction past its timeout is aborted within a second, not
        // ten.
        line(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            &1000,
        );
        line("share.coordinator.state.topic.replication.factor", &copies);
        line("share.coordinator.state.topic.min.isr", &in_sync);
        // Tests join groups at once and use sessions shorter than Kafka's
        // 6 s minimum.
        line("group.initial.rebalance.delay.ms", &0);
        line("group.min.session.timeout.ms", &1000);
        line("group.consumer.min.session.timeout.ms", &1000);
        line("group.consumer.min.heartbeat.interval.ms", &500);
        // The consumer group protocol (KIP-848) sets members' heartbeats
        // and sessions on the broker: a member hears of a new assignment
        // within a second (Kafka's default is 5 s), and a killed member's
        // partitions move after 10 s (45 s).
        line("group.consumer.heartbeat.interval.ms", &1000);
        line("group.consumer.session.timeout.ms", &10_000);
        // Share groups (KIP-932) alike, and a record acquired by a member
        // that died is released after 10 s (Kafka: 30 s).
        line("group.share.min.heartbeat.interval.ms", &500);
        line("group.share.heartbeat.interval.ms", &1000);
        line("group.share.min.session.timeout.ms", &1000);
        line("group.share.session.timeout.ms", &10_000);
        line("group.share.min.record.lock.duration.ms", &1000);
        line("group.share.record.lock.duration.ms", &10_000);
        // A killed node is fenced (its partitions get new leaders) after
        // 4 s, not 9 s.
        line("broker.heartbeat.interval.ms", &500);
        line("broker.session.timeout.ms", &4000);
        // A test machine has 2 cores: fewer threads, a small cleaner buffer.
        line("num.network.threads", &2);
        line("num.io.threads", &4);
        line("num.replica.fetchers", &1);
        line("log.cleaner.dedupe.buffer.size", &(8 << 20));
        let security = self.security;
        if let Some(keystore) = &security.tls_keystore {
            line("listener.name.client.ssl.keystore.type", &"PEM");
            line(
                "listener.name.client.ssl.keystore.location",
                &keystore.display(),
            );
            if let Some(ca) = &security.client_ca {
                line("listener.name.client.ssl.client.auth", &"required");
                line("listener.name.client.ssl.truststore.type", &"PEM");
                line(
                    "listener.name.client.ssl.truststore.location",
                    &ca.display(),
                );
            }
        }
        if !security.users.is_empty() {
            let offered = if security.mechanisms.is_empty() {
                MECHANISMS.join(",")
            } else {
                security.mechanisms.join(",")
            };
            line("listener.name.client.sasl.enabled.mechanisms", &offered);
            let plain_users = security
                .users
                .iter()
                .map(|(name, password)| format!("user_{name}=\"{password}\""))
                .collect::<Vec<_>>()
                .join(" ");
            line(
                "listener.name.client.plain.sasl.jaas.config",
                &format!(
                    "org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
                ),
            );
            for scram in ["scram-sha-256", "scram-sha-512"] {
                line(
                    &format!("listener.name.client.{scram}.sasl.jaas.config"),
                    &"org.apache.kafka.common.security.scram.ScramLoginModule required;",
                );
            }
            // Unsigned tokens (Kafka's unsecured validator): enough to test
            // the exchange, never for production.
            line(
                "listener.name.client.oauthbearer.sasl.jaas.config",
                &"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            );
            if let Some(after) = security.reauthenticate_after {
                line("connections.max.reauth.ms", &after.as_millis());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<(i32, Ports)> {
        (1..=3)
            .map(|id| {
                let base = 20000 + u16::try_from(id).unwrap_or(0) * 10;
                (
                    id,
                    Ports {
                        client: base,
                        internal: base + 1,
                        controller: base + 2,
                    },
                )
            })
            .collect()
    }

    fn render(
        id: i32,
        nodes: &[(i32, Ports)],
        advertised: &str,
        security: &ClientSecurity,
    ) -> String {
        NodeConfig {
            id,
            nodes,
            advertised,
            data: Path::new("/tmp/node"),
            security,
        }
        .render()
    }

    fn property<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    #[test]
    fn a_node_of_three_lists_every_voter_and_keeps_three_copies_two_in_sync() {
        let nodes = three();
        let security = ClientSecurity::default();
        let text = render(2, &nodes, "127.0.0.1:7777", &security);
        assert_eq!(
            property(&text, "controller.quorum.voters"),
            Some("1@127.0.0.1:20012,2@127.0.0.1:20022,3@127.0.0.1:20032")
        );
        assert_eq!(
            property(&text, "listeners"),
            Some(
                "CLIENT://127.0.0.1:20020,INTERNAL://127.0.0.1:20021,CONTROLLER://127.0.0.1:20022"
            )
        );
        assert_eq!(
            property(&text, "advertised.listeners"),
            Some("CLIENT://127.0.0.1:7777,INTERNAL://127.0.0.1:20021")
        );
        assert_eq!(property(&text, "default.replication.factor"), Some("3"));
        assert_eq!(property(&text, "min.insync.replicas"), Some("2"));
        assert_eq!(
            property(&text, "listener.security.protocol.map"),
            Some("CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT")
        );
        assert_eq!(
            property(&text, "listener.name.client.sasl.enabled.mechanisms"),
            None
        );
    }

    #[test]
    fn a_single_node_keeps_one_copy() {
        let nodes = &three()[..1];
        let text = render(1, nodes, "127.0.0.1:1", &ClientSecurity::default());
        assert_eq!(property(&text, "default.replication.factor"), Some("1"));
        assert_eq!(property(&text, "min.insync.replicas"), Some("1"));
        assert_eq!(property(&text, "transaction.state.log.min.isr"), Some("1"));
    }

    #[test]
    fn sasl_over_tls_with_client_certificates_configures_the_client_listener_only() {
        let nodes = three();
        let security = ClientSecurity {
            tls_keystore: Some("/c/server-keystore.pem".into()),
            client_ca: Some("/c/ca.pem".into()),
            users: vec![("alice".into(), "s3cret".into())],
            reauthenticate_after: Some(Duration::from_secs(30)),
            mechanisms: Vec::new(),
        };
        let text = render(1, &nodes, "127.0.0.1:1", &security);
        assert_eq!(security.protocol(), "SASL_SSL");
        assert_eq!(
            property(&text, "listener.security.protocol.map"),
            Some("CLIENT:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT")
        );
        assert_eq!(
            property(&text, "listener.name.client.ssl.client.auth"),
            Some("required")
        );
        assert_eq!(
            property(&text, "listener.name.client.plain.sasl.jaas.config"),
            Some(
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_alice=\"s3cret\";"
            )
        );
        assert_eq!(property(&text, "connections.max.reauth.ms"), Some("30000"));
        assert_eq!(
            property(&text, "inter.broker.listener.name"),
            Some("INTERNAL")
        );
        assert_eq!(
            property(&text, "listener.name.client.sasl.enabled.mechanisms"),
            Some("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER")
        );
    }

    #[test]
    fn offered_mechanisms_can_be_narrowed() {
        let nodes = three();
        let security = ClientSecurity {
            users: vec![("alice".into(), "pw".into())],
            mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()],
            ..ClientSecurity::default()
        };
        let text = render(1, &nodes, "127.0.0.1:1", &security);
        assert_eq!(
            property(&text, "listener.name.client.sasl.enabled.mechanisms"),
            Some("SCRAM-SHA-256,SCRAM-SHA-512")
        );
    }
}
