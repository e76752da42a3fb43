//! What can go wrong talking to a broker, and one classification of broker
//! error codes by what a caller can do about them.

use kafka_protocol::ResponseError;

/// A failure between the client and a broker.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// No connection to the broker, or it broke.
    #[error("connection to {address} failed: {detail}")]
    Connection {
        /// The address.
        address: String,
        /// What went wrong.
        detail: String,
    },
    /// TLS refused the broker (a certificate not trusted, a name it does
    /// not carry, no common protocol): the same on every attempt.
    #[error("TLS with {address} failed: {detail}")]
    Tls {
        /// The address.
        address: String,
        /// What rustls reported.
        detail: String,
    },
    /// The listener speaks another protocol than the client is set to: TLS
    /// met in plaintext, plaintext met with TLS, or not Kafka at all (an
    /// HTTP server): the same on every attempt, until the security
    /// protocol or the address changes.
    #[error("{address} {detail}")]
    ProtocolMismatch {
        /// The address.
        address: String,
        /// What the other side speaks, and which setting to change.
        detail: String,
    },
    /// The broker refused the client's SASL credentials or mechanism.
    #[error(
        "authentication failed{} with {mechanism} at {address}: {detail}",
        user.as_deref().map(|u| format!(" for user {u:?}")).unwrap_or_default()
    )]
    Authentication {
        /// The address.
        address: String,
        /// The SASL mechanism.
        mechanism: &'static str,
        /// The user name, for the mechanisms that have one.
        user: Option<String>,
        /// Why (the broker's message; never the password).
        detail: String,
    },
    /// A request got no answer in time.
    #[error("{api} request to {address} timed out after {after_ms} ms")]
    Timeout {
        /// The API.
        api: &'static str,
        /// The address.
        address: String,
        /// The timeout.
        after_ms: u64,
    },
    /// The broker answered with an error code.
    #[error("{api} failed: {error:?}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        /// The API.
        api: &'static str,
        /// The error.
        error: ResponseError,
        /// The broker's message, if any.
        message: Option<String>,
    },
    /// The broker speaks no version of an API that Kavari can use.
    #[error(
        "the broker supports no usable version of {api} (it offers {offered:?}, Kavari speaks {min}..={max})"
    )]
    UnsupportedVersion {
        /// The API.
        api: &'static str,
        /// What the broker offered, if anything.
        offered: Option<(i16, i16)>,
        /// Kavari's lowest.
        min: i16,
        /// Kavari's highest.
        max: i16,
    },
    /// The partition's log was truncated under the consumer's position
    /// (an unclean leader election: records it read are gone), and no
    /// reset policy lets it go on.
    #[error(
        "the log of {partition} was truncated under offset {offset}{}; auto_offset_reset is Error",
        diverged_at.map(|d| format!(" (the new log diverges at {d})")).unwrap_or_default()
    )]
    LogTruncated {
        /// The partition.
        partition: String,
        /// The consumer's position.
        offset: i64,
        /// Where the new log diverges, when the leader said.
        diverged_at: Option<i64>,
    },
    /// A response or record batch did not decode.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What did not decode.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

impl WireError {
    /// Whether the client cannot reach the cluster as configured (TLS
    /// refused, credentials refused, a listener of another security
    /// protocol): retrying changes nothing until the configuration does.
    pub fn is_authentication(&self) -> bool {
        use ResponseError as E;
        match self {
            Self::Tls { .. } | Self::Authentication { .. } | Self::ProtocolMismatch { .. } => true,
            Self::Broker { error, .. } => matches!(
                error,
                E::SaslAuthenticationFailed | E::UnsupportedSaslMechanism | E::IllegalSaslState
            ),
            _ => false,
        }
    }

    /// A broker's error code for `api`.
    pub fn broker(api: &'static str, error: ResponseError, message: Option<String>) -> Self {
        Self::Broker {
            api,
            error,
            message,
        }
    }

    /// The broker error code, when this is one.
    pub fn response_error(&self) -> Option<ResponseError> {
        match self {
            Self::Broker { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Whether the connection is at fault (broken, silent, or out of step)
    /// rather than the request: connect again and retry.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Self::Connection { .. } | Self::Timeout { .. } | Self::Malformed { .. }
        )
    }

    /// Whether a newer instance of this transactional producer took its
    /// place (`PRODUCER_FENCED`): this one must never write again. (A
    /// stale epoch alone, `INVALID_PRODUCER_EPOCH`, may be the producer's
    /// own transaction timing out: asking for its id again with its
    /// current epoch tells which.)
    pub fn is_fenced(&self) -> bool {
        self.response_error() == Some(ResponseError::ProducerFenced)
    }

    /// Whether another attempt may succeed: a transport failure, or a broker
    /// code the protocol marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Broker { error, .. } => is_retriable_code(*error),
            other => other.is_transport(),
        }
    }
}

/// Broker codes after which the cluster's metadata is stale: the partition's
/// leader moved, or the client's view of its leader epoch is out of date.
pub fn needs_metadata_refresh(e: ResponseError) -> bool {
    use ResponseError as E;
    matches!(
        e,
        E::NotLeaderOrFollower
            | E::LeaderNotAvailable
            | E::UnknownTopicOrPartition
            | E::FencedLeaderEpoch
            | E::UnknownLeaderEpoch
            | E::ReplicaNotAvailable
            | E::KafkaStorageError
            | E::OffsetNotAvailable
            | E::NotCoordinator
    )
}

/// Whether a broker code may clear on retry, as the Java client classifies
/// its exceptions (`RetriableException`), plus broker restarts seen as codes.
pub fn is_retriable_code(e: ResponseError) -> bool {
    use ResponseError as E;
    e.is_retriable() || matches!(e, E::NetworkException | E::BrokerNotAvailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified_by_what_a_retry_can_do() {
        use ResponseError as E;
        let table = [
            (E::NotLeaderOrFollower, true, true),
            (E::FencedLeaderEpoch, true, true),
            (E::UnknownTopicOrPartition, true, true),
            (E::RequestTimedOut, true, false),
            (E::BrokerNotAvailable, true, false),
            (E::MessageTooLarge, false, false),
            (E::TopicAuthorizationFailed, false, false),
            (E::CorruptMessage, true, false),
        ];
        for (code, retriable, refresh) in table {
            assert_eq!(is_retriable_code(code), retriable, "{code:?} retriable");
            assert_eq!(needs_metadata_refresh(code), refresh, "{code:?} refresh");
        }
        let timeout = WireError::Timeout {
            api: "Fetch",
            address: "b:9092".into(),
            after_ms: 1,
        };
        assert!(timeout.is_transport() && timeout.is_retriable());
        let fenced = WireError::broker("Fetch", E::TopicAuthorizationFailed, None);
        assert!(!fenced.is_transport() && !fenced.is_retriable());
    }
}
