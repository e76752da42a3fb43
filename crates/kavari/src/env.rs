//! Configuration from `KAVARI_*` environment variables, named after
//! librdkafka's properties (upper case, dots as underscores), so a team
//! moving from confluent-kafka or the Python library finds its settings.

use std::sync::Arc;
use std::time::Duration;

use kavari_group::assignor::{
    Assignor, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor,
};
use kavari_wire::Compression;

use crate::builder::{ConfigError, KavariBuilder};
use crate::consume::{FailurePolicy, OffsetReset, ProcessingOrder};
use crate::manager::Kavari;
use crate::partitioner::Partitioner;

/// The prefix of every variable `from_env` reads.
const PREFIX: &str = "KAVARI_";

/// Variables of the test kit and the benchmarks, not of a manager: passed
/// over, so a shell that runs both needs no cleaning.
const NOT_OURS: &[&str] = &[
    "KAVARI_CHAOS_SECS",
    "KAVARI_CHAOS_SEED",
    "KAVARI_BENCH_LINGER_MS",
];

/// TLS and SASL settings: read together, after the others, since what
/// each means depends on `KAVARI_SECURITY_PROTOCOL`.
use kavari_wire::security::VARIABLES as SECURITY;

impl Kavari {
    /// A builder configured from the environment's `KAVARI_*` variables;
    /// builder calls after it override them. See [`Kavari::from_vars`] for
    /// the variables.
    pub fn from_env() -> Result<KavariBuilder, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// A builder configured from `KAVARI_*` variables among `vars` (other
    /// names are ignored):
    ///
    /// | variable | librdkafka / Java | builder call |
    /// | --- | --- | --- |
    /// | `KAVARI_BROKERS` (required) | `bootstrap.servers` | [`Kavari::builder`] |
    /// | `KAVARI_CLIENT_ID` | `client.id` | `client_id` |
    /// | `KAVARI_GROUP_ID` | `group.id` | `group_id` |
    /// | `KAVARI_GROUP_INSTANCE_ID` | `group.instance.id` | `group_instance_id` |
    /// | `KAVARI_CLIENT_RACK` | `client.rack` | `client_rack` |
    /// | `KAVARI_AUTO_OFFSET_RESET` | `auto.offset.reset` (`earliest`, `latest`, `error`; `smallest`/`beginning`, `largest`/`end`) | `auto_offset_reset` |
    /// | `KAVARI_PARTITION_ASSIGNMENT_STRATEGY` | `partition.assignment.strategy` (comma list of `range`, `roundrobin`, `cooperative-sticky`) | `assignors` |
    /// | `KAVARI_SESSION_TIMEOUT_MS` | `session.timeout.ms` | `session_timeout` |
    /// | `KAVARI_HEARTBEAT_INTERVAL_MS` | `heartbeat.interval.ms` | `heartbeat_interval` |
    /// | `KAVARI_REQUEST_TIMEOUT_MS` | `request.timeout.ms` | `request_timeout` |
    /// | `KAVARI_DELIVERY_TIMEOUT_MS` | `delivery.timeout.ms` | `delivery_timeout` |
    /// | `KAVARI_LINGER_MS` | `linger.ms` | `linger` |
    /// | `KAVARI_ENABLE_IDEMPOTENCE` | `enable.idempotence` (`true`, `false`) | `enable_idempotence` |
    /// | `KAVARI_COMPRESSION_TYPE` | `compression.type` (`none`, `gzip`, `snappy`, `lz4`, `zstd`) | `compression` |
    /// | `KAVARI_PARTITIONER` | `partitioner` (`murmur2`, `murmur2_random`; `crc32`, `consistent_random`: the Python library's and librdkafka's default) | `partitioner` |
    /// | `KAVARI_AUTO_COMMIT_INTERVAL_MS` | `auto.commit.interval.ms` (`0`: after every record) | `commit_interval` |
    /// | `KAVARI_TOPIC_PREFIX` | (none) | `topic_prefix` |
    /// | `KAVARI_ON_POISON` | (none: `dead_letter`, `block`, `skip`) | `on_poison` |
    /// | `KAVARI_ON_FAILURE` | (none: `dead_letter`, `block`, `skip`) | `on_handler_failure` |
    /// | `KAVARI_PROCESSING_ORDER` | (none: `partition`, `key:N`, `unordered:N` with N records in flight) | `processing_order` |
    /// | `KAVARI_TRANSACTIONAL_ID` | `transactional.id` | `transactional_id` |
    /// | `KAVARI_TRANSACTION_TIMEOUT_MS` | `transaction.timeout.ms` | `transaction_timeout` |
    /// | `KAVARI_EXACTLY_ONCE` | (none: the transactional id prefix of exactly-once handling) | `exactly_once` |
    /// | `KAVARI_GROUP_PROTOCOL` | `group.protocol` (`classic` or `consumer`) | `group_protocol` |
    /// | `KAVARI_GROUP_REMOTE_ASSIGNOR` | `group.remote.assignor` | `group_remote_assignor` |
    /// | `KAVARI_SHARE_GROUP` | (none: the share group the subscriptions belong to) | `share_group` |
    /// | `KAVARI_RECORDS_PER_TRANSACTION` | (none: records of a partition per exactly-once transaction, default 100) | `records_per_transaction` |
    /// | `KAVARI_SECURITY_PROTOCOL` | `security.protocol` (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`) | `tls`, `sasl` |
    /// | `KAVARI_SASL_MECHANISM` (or `…_MECHANISMS`) | `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`; OAUTHBEARER is `Sasl::oauthbearer` in code) | `sasl` |
    /// | `KAVARI_SASL_USERNAME`, `KAVARI_SASL_PASSWORD` | `sasl.username`, `sasl.password` | `sasl` |
    /// | `KAVARI_SSL_CA_LOCATION` | `ssl.ca.location` (PEM; default: the system's roots) | `tls` |
    /// | `KAVARI_SSL_CERTIFICATE_LOCATION`, `KAVARI_SSL_KEY_LOCATION` | `ssl.certificate.location`, `ssl.key.location` (PEM, both or neither) | `tls` |
    /// | `KAVARI_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM` | `ssl.endpoint.identification.algorithm` (`https`, `none`) | `tls` |
    ///
    /// A `KAVARI_` variable it does not know, or a value it cannot parse,
    /// is an error naming it: a typo must not fall back to a default. So is
    /// a SASL or TLS setting that the security protocol would not use (a
    /// configuration meant for a secured cluster never runs in plaintext),
    /// a SASL protocol without mechanism, user name and password, and
    /// `SSL`/`SASL_SSL` in a build without the `tls` feature. No error shows
    /// the password.
    ///
    /// ```
    /// use kavari::Kavari;
    ///
    /// let vars = [
    ///     ("KAVARI_BROKERS", "kafka-1:9092,kafka-2:9092"),
    ///     ("KAVARI_GROUP_ID", "billing"),
    ///     ("KAVARI_AUTO_OFFSET_RESET", "latest"),
    /// ];
    /// let builder = Kavari::from_vars(vars.map(|(k, v)| (k.to_string(), v.to_string())))?
    ///     .client_id("billing-7"); // a builder call overrides the environment
    /// # let _ = builder;
    /// # Ok::<(), kavari::ConfigError>(())
    /// ```
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<KavariBuilder, ConfigError> {
        let mut ours: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(PREFIX) && !NOT_OURS.contains(&k.as_str()))
            .collect();
        ours.sort();
        let brokers = ours
            .iter()
            .find(|(k, _)| k == "KAVARI_BROKERS")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                ConfigError("KAVARI_BROKERS is not set (host:port[,host:port…])".into())
            })?;
        let mut builder = Kavari::builder(brokers);
        for (name, value) in &ours {
            if !SECURITY.contains(&name.as_str()) {
                builder = apply(builder, name, value.trim())?;
            }
        }
        let security = |name: &str| {
            ours.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_string())
        };
        secure(builder, security)
    }
}

/// Applies the TLS and SASL variables, read by `var`.
fn secure(
    b: KavariBuilder,
    var: impl Fn(&str) -> Option<String>,
) -> Result<KavariBuilder, ConfigError> {
    let security = kavari_wire::Security::from_vars(var).map_err(|e| ConfigError(e.to_string()))?;
    Ok(b.security(security))
}

/// Applies one variable.
fn apply(b: KavariBuilder, name: &str, value: &str) -> Result<KavariBuilder, ConfigError> {
    let bad = |expected: &str| ConfigError(format!("{name}={value:?}: expected {expected}"));
    let ms = || millis(value).ok_or_else(|| bad("a whole number of milliseconds"));
    Ok(match name {
        "KAVARI_BROKERS" => b,
        "KAVARI_CLIENT_ID" => b.client_id(value),
        "KAVARI_GROUP_ID" => b.group_id(value),
        "KAVARI_GROUP_INSTANCE_ID" => b.group_instance_id(value),
        "KAVARI_CLIENT_RACK" => b.client_rack(value),
        "KAVARI_AUTO_OFFSET_RESET" => {
            b.auto_offset_reset(match value.to_ascii_lowercase().as_str() {
                "earliest" | "smallest" | "beginning" => OffsetReset::Earliest,
                "latest" | "largest" | "end" => OffsetReset::Latest,
                "error" => OffsetReset::Error,
                _ => return Err(bad("earliest, latest or error")),
            })
        }
        "KAVARI_PARTITION_ASSIGNMENT_STRATEGY" => {
            let mut assignors: Vec<Arc<dyn Assignor>> = Vec::new();
            for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                assignors.push(match part.to_ascii_lowercase().as_str() {
                    "range" => Arc::new(RangeAssignor),
                    "roundrobin" => Arc::new(RoundRobinAssignor),
                    "cooperative-sticky" => Arc::new(CooperativeStickyAssignor),
                    _ => return Err(bad("a comma list of range, roundrobin, cooperative-sticky")),
                });
            }
            if assignors.is_empty() {
                return Err(bad("a comma list of range, roundrobin, cooperative-sticky"));
            }
            b.assignors(assignors)
        }
        "KAVARI_SESSION_TIMEOUT_MS" => b.session_timeout(ms()?),
        "KAVARI_HEARTBEAT_INTERVAL_MS" => b.heartbeat_interval(ms()?),
        "KAVARI_REQUEST_TIMEOUT_MS" => b.request_timeout(ms()?),
        "KAVARI_DELIVERY_TIMEOUT_MS" => b.delivery_timeout(ms()?),
        "KAVARI_LINGER_MS" => b.linger(ms()?),
        "KAVARI_ENABLE_IDEMPOTENCE" => {
            b.enable_idempotence(match value.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(bad("true or false")),
            })
        }
        "KAVARI_COMPRESSION_TYPE" => b.compression(match value.to_ascii_lowercase().as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return Err(bad("none, gzip, snappy, lz4 or zstd")),
        }),
        "KAVARI_PARTITIONER" => b.partitioner(match value.to_ascii_lowercase().as_str() {
            "murmur2" | "murmur2_random" => Partitioner::Murmur2,
            "crc32" | "consistent_random" => Partitioner::Crc32,
            _ => return Err(bad("murmur2 (murmur2_random) or crc32 (consistent_random)")),
        }),
        "KAVARI_AUTO_COMMIT_INTERVAL_MS" => b.commit_interval(ms()?),
        "KAVARI_TOPIC_PREFIX" => b.topic_prefix(value),
        "KAVARI_ON_POISON" => b.on_poison(policy(value).ok_or_else(|| bad(POLICIES))?),
        "KAVARI_ON_FAILURE" => b.on_handler_failure(policy(value).ok_or_else(|| bad(POLICIES))?),
        "KAVARI_TRANSACTIONAL_ID" => b.transactional_id(value),
        "KAVARI_TRANSACTION_TIMEOUT_MS" => b.transaction_timeout(ms()?),
        "KAVARI_EXACTLY_ONCE" => b.exactly_once(value),
        "KAVARI_GROUP_PROTOCOL" => {
            b.group_protocol(value.parse().map_err(|_| bad("classic or consumer"))?)
        }
        "KAVARI_GROUP_REMOTE_ASSIGNOR" => b.group_remote_assignor(value),
        "KAVARI_SHARE_GROUP" => b.share_group(value),
        "KAVARI_RECORDS_PER_TRANSACTION" => b.records_per_transaction(
            value
                .parse()
                .map_err(|_| bad("a number of records, at least 1"))?,
        ),
        "KAVARI_PROCESSING_ORDER" => {
            b.processing_order(processing_order(value).ok_or_else(|| bad(ORDERS))?)
        }
        _ => {
            return Err(ConfigError(format!(
                "unknown variable {name} (Kavari reads KAVARI_BROKERS, KAVARI_CLIENT_ID, KAVARI_GROUP_ID, … see Kavari::from_vars)"
            )));
        }
    })
}

/// The values of a failure policy's variable.
const POLICIES: &str = "dead_letter, block or skip";

/// A failure policy by name.
fn policy(value: &str) -> Option<FailurePolicy> {
    match value.to_ascii_lowercase().replace('-', "_").as_str() {
        "dead_letter" | "deadletter" | "dlq" => Some(FailurePolicy::DeadLetter),
        "block" => Some(FailurePolicy::Block),
        "skip" => Some(FailurePolicy::Skip),
        _ => None,
    }
}

/// The values of the processing order's variable.
const ORDERS: &str = "partition, key:N or unordered:N (N records in flight)";

/// A processing order by name: `partition`, `key:64`, `unordered:16`.
fn processing_order(value: &str) -> Option<ProcessingOrder> {
    let value = value.trim().to_ascii_lowercase();
    let (name, in_flight) = match value.split_once(':') {
        Some((name, n)) => (name, Some(n.trim().parse::<usize>().ok()?)),
        None => (value.as_str(), None),
    };
    match (name.trim(), in_flight) {
        ("partition", None) => Some(ProcessingOrder::Partition),
        ("key", Some(max_in_flight)) => Some(ProcessingOrder::Key { max_in_flight }),
        ("unordered", Some(max_in_flight)) => Some(ProcessingOrder::Unordered { max_in_flight }),
        _ => None,
    }
}

/// A whole number of milliseconds.
fn millis(value: &str) -> Option<Duration> {
    value.parse::<u64>().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_variable_is_read() {
        let b = Kavari::from_vars(vars(&[
            ("KAVARI_BROKERS", "a:9092, b:9092"),
            ("KAVARI_CLIENT_ID", "svc"),
            ("KAVARI_GROUP_ID", "g"),
            ("KAVARI_GROUP_INSTANCE_ID", "pod-0"),
            ("KAVARI_AUTO_OFFSET_RESET", "largest"),
            (
                "KAVARI_PARTITION_ASSIGNMENT_STRATEGY",
                "cooperative-sticky, range",
            ),
            ("KAVARI_SESSION_TIMEOUT_MS", "45000"),
            ("KAVARI_HEARTBEAT_INTERVAL_MS", "3000"),
            ("KAVARI_REQUEST_TIMEOUT_MS", "20000"),
            ("KAVARI_DELIVERY_TIMEOUT_MS", "60000"),
            ("KAVARI_LINGER_MS", "0"),
            ("KAVARI_ENABLE_IDEMPOTENCE", "false"),
            ("KAVARI_COMPRESSION_TYPE", "zstd"),
            ("KAVARI_PARTITIONER", "consistent_random"),
            ("KAVARI_AUTO_COMMIT_INTERVAL_MS", "250"),
            ("KAVARI_TOPIC_PREFIX", "staging."),
            ("KAVARI_ON_POISON", "block"),
            ("KAVARI_ON_FAILURE", "skip"),
            ("KAVARI_PROCESSING_ORDER", "key:64"),
            ("KAVARI_TRANSACTIONAL_ID", "billing-0"),
            ("KAVARI_TRANSACTION_TIMEOUT_MS", "15000"),
            ("KAVARI_RECORDS_PER_TRANSACTION", "10"),
            ("KAVARI_CLIENT_RACK", "eu-west-1a"),
            ("KAVARI_SECURITY_PROTOCOL", "plaintext"),
            ("HOME", "/root"),
            ("KAVARI_CHAOS_SECS", "5"),
        ]))
        .expect("valid");
        let shown = format!("{b:?}");
        for part in [
            "a:9092, b:9092",
            "client_id: \"svc\"",
            "group_id: Some(\"g\")",
            "group_instance_id: Some(\"pod-0\")",
            "auto_offset_reset: Latest",
            "session_timeout: 45s",
            "heartbeat_interval: 3s",
            "request_timeout: 20s",
            "delivery_timeout: 60s",
            "linger: 0ns",
            "idempotence: Off",
            "compression: Zstd",
            "partitioner: Crc32",
            "commit_interval: 250ms",
            "prefix: \"staging.\"",
            "on_poison: Block",
            "on_handler_failure: Skip",
            "order: Key { max_in_flight: 64 }",
            "transactional_id: Some(\"billing-0\")",
            "transaction_timeout: Some(15s)",
            "records_per_transaction: 10",
            "client_rack: Some(\"eu-west-1a\")",
            "CooperativeStickyAssignor",
        ] {
            assert!(shown.contains(part), "{part} not in {shown}");
        }
        assert!(b.validate().is_ok());
    }

    // With TLS in the build (kavari-wire's feature, which the test kit
    // turns on), what is wrong with the TLS settings; without it, which
    // feature SSL needs.
    const TLS_CA_ERROR: &str = "/nonexistent/ca.pem";
    const TLS_PAIR_ERROR: &str = "set both or neither";
    const TLS_ALGORITHM_ERROR: &str = "KAVARI_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=\"dns\"";
    const NO_TLS: &str = "needs TLS: build with the tls-graviola";

    #[test]
    fn secured_settings_are_read_together() {
        let b = Kavari::from_vars(vars(&[
            ("KAVARI_BROKERS", "a:9093"),
            ("KAVARI_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAVARI_SASL_MECHANISMS", "scram-sha-256"),
            ("KAVARI_SASL_USERNAME", "svc"),
            ("KAVARI_SASL_PASSWORD", "hunter2-secret"),
        ]))
        .expect("valid");
        let shown = format!("{b:?}");
        assert!(
            shown.contains("SCRAM-SHA-256") && shown.contains("svc"),
            "{shown}"
        );
        assert!(
            !shown.contains("hunter2"),
            "the password never shows: {shown}"
        );
    }

    #[test]
    fn unknown_variables_and_bad_values_are_named() {
        let cases: [(&[(&str, &str)], &str); 21] = [
            (&[], "KAVARI_BROKERS is not set"),
            (&[("KAVARI_GROUPID", "g")], "KAVARI_GROUPID"),
            (
                &[("KAVARI_AUTO_OFFSET_RESET", "newest")],
                "KAVARI_AUTO_OFFSET_RESET=\"newest\"",
            ),
            (
                &[("KAVARI_SESSION_TIMEOUT_MS", "10s")],
                "KAVARI_SESSION_TIMEOUT_MS=\"10s\"",
            ),
            (
                &[("KAVARI_COMPRESSION_TYPE", "brotli")],
                "KAVARI_COMPRESSION_TYPE",
            ),
            (
                &[("KAVARI_PARTITION_ASSIGNMENT_STRATEGY", "sticky")],
                "KAVARI_PARTITION_ASSIGNMENT_STRATEGY",
            ),
            (
                &[("KAVARI_SECURITY_PROTOCOL", "TLS")],
                "KAVARI_SECURITY_PROTOCOL",
            ),
            (
                &[("KAVARI_SASL_PASSWORD", "secret")],
                "KAVARI_SASL_PASSWORD is set, but KAVARI_SECURITY_PROTOCOL=PLAINTEXT",
            ),
            (
                &[
                    ("KAVARI_SECURITY_PROTOCOL", "SSL"),
                    ("KAVARI_SASL_USERNAME", "u"),
                ],
                "KAVARI_SASL_USERNAME is set",
            ),
            (
                &[("KAVARI_SSL_CA_LOCATION", "/ca.pem")],
                "KAVARI_SSL_CA_LOCATION is set",
            ),
            (
                &[
                    ("KAVARI_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                    ("KAVARI_SASL_USERNAME", "u"),
                    ("KAVARI_SASL_PASSWORD", "secret"),
                ],
                "needs KAVARI_SASL_MECHANISM",
            ),
            (
                &[
                    ("KAVARI_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                    ("KAVARI_SASL_MECHANISM", "SCRAM-SHA-512"),
                    ("KAVARI_SASL_USERNAME", "u"),
                ],
                "needs KAVARI_SASL_PASSWORD",
            ),
            (
                &[
                    ("KAVARI_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                    ("KAVARI_SASL_MECHANISM", "GSSAPI"),
                    ("KAVARI_SASL_USERNAME", "u"),
                    ("KAVARI_SASL_PASSWORD", "secret"),
                ],
                "KAVARI_SASL_MECHANISM=\"GSSAPI\"",
            ),
            (
                &[
                    ("KAVARI_SECURITY_PROTOCOL", "SASL_SSL"),
                    ("KAVARI_SASL_MECHANISM", "OAUTHBEARER"),
                ],
                "its tokens come from a provider in code",
            ),
            (
                &[
                    ("KAVARI_SECURITY_PROTOCOL", "SSL"),
                    ("KAVARI_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
                ],
                TLS_CA_ERROR,
            ),
            (
                &[
                    ("KAVARI_SECURITY_PROTOCOL", "SSL"),
                    ("KAVARI_SSL_KEY_LOCATION", "/key.pem"),
                ],
                TLS_PAIR_ERROR,
            ),
            (
                &[
                    ("KAVARI_SECURITY_PROTOCOL", "SSL"),
                    ("KAVARI_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "dns"),
                ],
                TLS_ALGORITHM_ERROR,
            ),
            (
                &[("KAVARI_ON_POISON", "later")],
                "KAVARI_ON_POISON=\"later\": expected dead_letter, block or skip",
            ),
            (
                &[("KAVARI_PARTITIONER", "random")],
                "KAVARI_PARTITIONER=\"random\": expected murmur2",
            ),
            (
                &[("KAVARI_PROCESSING_ORDER", "key")],
                "KAVARI_PROCESSING_ORDER=\"key\": expected partition, key:N",
            ),
            (
                &[("KAVARI_PROCESSING_ORDER", "partition:3")],
                "KAVARI_PROCESSING_ORDER=\"partition:3\": expected",
            ),
        ];
        for (extra, expected) in cases {
            let mut v = vars(extra);
            if !expected.starts_with("KAVARI_BROKERS") {
                v.push(("KAVARI_BROKERS".into(), "a:9092".into()));
            }
            let e = Kavari::from_vars(v).expect_err(expected);
            assert!(
                e.0.contains(expected) || e.0.contains(NO_TLS),
                "{e} lacks {expected:?}"
            );
            assert!(!e.0.contains("secret"), "no secret in errors: {e}");
        }
    }
}
