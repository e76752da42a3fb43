//! What can go wrong when publishing, and whether trying again can help.

use std::fmt;

use kavari_wire::{ResponseError, WireError};

use crate::codec::{EncodeError, EncodedMessage};

/// Where a message went, once the broker acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The topic written (borrowed for a message type's own topic).
    pub topic: std::borrow::Cow<'static, str>,
    /// The partition written.
    pub partition: i32,
    /// The record's offset in that partition.
    pub offset: Offset,
}

/// Where an acknowledged record is in its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offset {
    /// The broker wrote it at this offset.
    At(i64),
    /// The broker already held it: an idempotent retry of a batch whose
    /// first answer was lost (`DUPLICATE_SEQUENCE_NUMBER`). It is in the
    /// log once, at an offset the broker does not repeat.
    Duplicate,
}

impl Offset {
    /// The offset, when the broker said it.
    pub fn get(self) -> Option<i64> {
        match self {
            Offset::At(offset) => Some(offset),
            Offset::Duplicate => None,
        }
    }

    /// From the broker's base offset plus the record's place in its batch;
    /// a negative base offset is the broker's way to say "a duplicate".
    pub(crate) fn in_batch(base: i64, index: usize) -> Self {
        match i64::try_from(index) {
            Ok(index) if base >= 0 => Offset::At(base.saturating_add(index)),
            _ => Offset::Duplicate,
        }
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Offset::At(offset) => write!(f, "{offset}"),
            Offset::Duplicate => f.write_str("duplicate"),
        }
    }
}

/// The broad class of a produce failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProduceErrorKind {
    /// No connection to the broker, or it broke.
    Connection,
    /// The request got no answer within the request timeout.
    Timeout,
    /// The topic is not (yet) known to the cluster.
    UnknownTopic,
    /// The record is larger than the client's or the broker's limit.
    MessageTooLarge,
    /// The cluster refused this client access to the topic (or cluster):
    /// an ACL is missing.
    Authorization,
    /// The client could not authenticate with the cluster as configured:
    /// TLS refused the broker's certificate (untrusted, or not for the
    /// host) or the broker refused the credentials. Not retried.
    Authentication,
    /// The broker refused the request with an error code.
    Broker,
    /// The publisher is shutting down.
    ShuttingDown,
    /// A produce request was sent and no answer came in time (it timed out,
    /// or its connection broke): the record may or may not be in the
    /// topic. It is not dead-lettered, which could write it twice; the
    /// record is handed back ([`PublishError::Unconfirmed`]).
    Unconfirmed,
}

/// One failed attempt to produce a record. Cheap to clone: a batch's failure
/// is handed to every message in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceError {
    kind: ProduceErrorKind,
    retriable: bool,
    /// Boxed: a publish in flight holds its future, which holds this.
    detail: Box<str>,
    /// The broker's error code, when it gave one.
    code: Option<ResponseError>,
    /// Set when the batch was retried already by its partition (this
    /// many attempts): the outcome is final.
    batch_attempts: Option<u16>,
    /// Whether an attempt was sent and got no answer (a timeout, a broken
    /// connection): its batch may be in the log.
    maybe_written: bool,
}

impl ProduceError {
    pub(crate) fn new(kind: ProduceErrorKind, retriable: bool, detail: impl Into<String>) -> Self {
        Self {
            kind,
            retriable,
            detail: detail.into().into_boxed_str(),
            code: None,
            batch_attempts: None,
            maybe_written: false,
        }
    }

    /// Whether an attempt that failed so was sent and not answered: the
    /// broker may have written it.
    pub(crate) fn maybe_written(&self) -> bool {
        self.maybe_written
    }

    /// Marks the error as one of an attempt the broker may have written.
    pub(crate) fn with_maybe_written(mut self, maybe: bool) -> Self {
        self.maybe_written |= maybe;
        self
    }

    /// The final error of a publish whose record may be in the log: the
    /// kind is [`ProduceErrorKind::Unconfirmed`], the detail keeps why.
    pub(crate) fn unconfirmed(self) -> Self {
        let detail = format!(
            "{}; the record may or may not have been written",
            self.detail
        );
        Self {
            kind: ProduceErrorKind::Unconfirmed,
            retriable: false,
            detail: detail.into_boxed_str(),
            maybe_written: true,
            ..self
        }
    }

    /// The error of an attempt after which `delivery_timeout` ran out
    /// before another could be made.
    pub(crate) fn then_out_of_time(self) -> Self {
        let detail = format!("{}; then delivery_timeout ran out", self.detail);
        Self {
            detail: detail.into_boxed_str(),
            ..self
        }
    }

    /// A failure of an answer to a produce request that was written: a
    /// timeout, a broken connection or an answer that does not read leaves
    /// the batch maybe written, as does the broker's own timeout; a broker
    /// error code otherwise says it was not.
    pub(crate) fn from_answer(context: &str, e: &WireError) -> Self {
        let maybe = match e {
            WireError::Connection { .. }
            | WireError::Timeout { .. }
            | WireError::Malformed { .. } => true,
            WireError::Broker { error, .. } => matches!(
                error,
                ResponseError::RequestTimedOut | ResponseError::NetworkException
            ),
            _ => false,
        };
        Self::from_wire(context, e).with_maybe_written(maybe)
    }

    /// The broker's error code, when it gave one.
    pub(crate) fn code(&self) -> Option<ResponseError> {
        self.code
    }

    /// Marks the error final after `attempts` of its batch.
    pub(crate) fn after_attempts(mut self, attempts: u32) -> Self {
        self.batch_attempts = Some(u16::try_from(attempts).unwrap_or(u16::MAX));
        self
    }

    /// The attempts of the record's batch, when its partition retried it.
    pub(crate) fn batch_attempts(&self) -> Option<u32> {
        self.batch_attempts.map(u32::from)
    }

    pub(crate) fn shutting_down() -> Self {
        Self::new(
            ProduceErrorKind::ShuttingDown,
            false,
            "the publisher is shutting down",
        )
    }

    /// The kind of a broker's error code, for the paths that act on it;
    /// whether a retry may help is kavari-wire's one classification
    /// ([`kavari_wire::is_retriable_code`], as the Java client's
    /// `RetriableException`s).
    pub(crate) fn from_code(context: &str, e: ResponseError, message: Option<&str>) -> Self {
        use ProduceErrorKind as K;
        use ResponseError as E;
        let detail = match message {
            Some(m) => format!("{context}: {e} ({m})"),
            None => format!("{context}: {e}"),
        };
        let kind = match e {
            E::UnknownTopicOrPartition | E::UnknownTopicId => K::UnknownTopic,
            E::MessageTooLarge | E::RecordListTooLarge => K::MessageTooLarge,
            E::TopicAuthorizationFailed
            | E::ClusterAuthorizationFailed
            | E::TransactionalIdAuthorizationFailed => K::Authorization,
            E::RequestTimedOut => K::Timeout,
            // A broker on its way down or up: the Java client sees the
            // disconnect rather than this code.
            E::NetworkException | E::BrokerNotAvailable => K::Connection,
            _ => K::Broker,
        };
        let mut error = Self::new(kind, kavari_wire::is_retriable_code(e), detail);
        error.code = Some(e);
        error
    }

    /// Classifies a failure of the connection layer (retriable as
    /// [`WireError::is_retriable`] says: a transport failure, where the
    /// next attempt connects afresh, or a retriable code).
    pub(crate) fn from_wire(context: &str, e: &WireError) -> Self {
        use ProduceErrorKind as K;
        let kind = match e {
            WireError::Connection { .. } => K::Connection,
            WireError::Timeout { .. } => K::Timeout,
            e if e.is_authentication() => K::Authentication,
            WireError::Broker { error, message, .. } => {
                return Self::from_code(context, *error, message.as_deref());
            }
            _ => K::Broker,
        };
        Self::new(kind, e.is_retriable(), format!("{context}: {e}"))
    }

    /// The class of failure.
    pub fn kind(&self) -> ProduceErrorKind {
        self.kind
    }

    /// Whether another attempt may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

impl fmt::Display for ProduceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for ProduceError {}

/// Why [`publish`](crate::Kavari::publish) did not deliver a message to its
/// topic.
///
/// Its message names the cause (`publish to shop failed after 3
/// attempt(s): topic shop does not exist (create it first); …`), so `{e}`
/// is enough for a log line; for that reason it has no `source()`, which
/// would print the cause twice in a chain. [`kind`](Self::kind) tells the
/// common causes apart:
///
/// ```
/// use kavari::PublishError;
/// use kavari::ProduceErrorKind;
///
/// fn advice(e: &PublishError) -> &'static str {
///     match e.kind() {
///         Some(ProduceErrorKind::UnknownTopic) => "create the topic",
///         Some(ProduceErrorKind::Authorization) => "grant this client the topic's ACLs",
///         Some(ProduceErrorKind::MessageTooLarge) => "send smaller messages",
///         Some(ProduceErrorKind::Timeout | ProduceErrorKind::Connection) => "check the brokers",
///         _ => "see the message",
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The message could not be serialized; nothing was sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Every attempt failed, and the message was written to the dead-letter
    /// topic instead, with the cause in its `original_error` header.
    #[error("publish failed: {cause}; the message went to dead-letter topic {} at offset {}", dlq.topic, dlq.offset)]
    DeadLettered {
        /// Where the dead letter was written.
        dlq: Delivery,
        /// The last error of the original publish.
        cause: ProduceError,
    },
    /// The publish's time ran out (`delivery_timeout`, then the request
    /// timeout for an answer to what was sent) with a request sent and not
    /// answered: the record may or may not be in the topic. It is not
    /// dead-lettered, which could write it twice; it is handed back, and
    /// publishing it again may write it twice.
    #[error(
        "publish to {} is unconfirmed after {attempts} attempt(s): {cause}; the record is returned",
        message.topic
    )]
    Unconfirmed {
        /// The last error; its kind is [`ProduceErrorKind::Unconfirmed`].
        cause: ProduceError,
        /// How many attempts were made.
        attempts: u32,
        /// The encoded record.
        message: Box<EncodedMessage>,
    },
    /// Every attempt failed and the dead-letter topic could not be written
    /// either (or dead letters are off, or the cluster refused this client's
    /// TLS or credentials, which a dead letter would meet alike): the record
    /// is handed back so the caller loses nothing.
    #[error(
        "publish to {} failed after {attempts} attempt(s): {cause}{}; the record is returned",
        message.topic,
        DlqFailure(dlq_error.as_ref())
    )]
    Failed {
        /// The last error.
        cause: ProduceError,
        /// How many attempts were made.
        attempts: u32,
        /// Why the dead-letter write failed, if one was tried.
        dlq_error: Option<ProduceError>,
        /// The encoded record, to store or send again.
        message: Box<EncodedMessage>,
    },
}

/// The dead-letter part of [`PublishError::Failed`]'s message.
struct DlqFailure<'a>(Option<&'a ProduceError>);

impl fmt::Display for DlqFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(e) => write!(f, "; the dead-letter write failed too: {e}"),
            None => Ok(()),
        }
    }
}

impl PublishError {
    /// The record handed back by [`PublishError::Failed`] and
    /// [`PublishError::Unconfirmed`].
    pub fn into_message(self) -> Option<EncodedMessage> {
        match self {
            PublishError::Failed { message, .. } | PublishError::Unconfirmed { message, .. } => {
                Some(*message)
            }
            _ => None,
        }
    }

    /// The last produce error, unless the message could not be encoded.
    pub fn cause(&self) -> Option<&ProduceError> {
        match self {
            PublishError::Encode(_) => None,
            PublishError::DeadLettered { cause, .. }
            | PublishError::Failed { cause, .. }
            | PublishError::Unconfirmed { cause, .. } => Some(cause),
        }
    }

    /// The class of the last produce error: what to match on to tell an
    /// unknown topic, a missing ACL, a too large message or an unreachable
    /// cluster apart. `None` when the message could not be encoded.
    pub fn kind(&self) -> Option<ProduceErrorKind> {
        self.cause().map(ProduceError::kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the publish path does next hangs on this: retry, dead-letter at
    /// once, or refresh the topic.
    #[test]
    fn broker_codes_are_classified_by_what_a_retry_can_do() {
        use ProduceErrorKind as K;
        use ResponseError as E;
        let cases = [
            (E::NotLeaderOrFollower, K::Broker, true),
            (E::LeaderNotAvailable, K::Broker, true),
            (E::NotEnoughReplicas, K::Broker, true),
            (E::RequestTimedOut, K::Timeout, true),
            (E::NetworkException, K::Connection, true),
            (E::BrokerNotAvailable, K::Connection, true),
            (E::UnknownTopicOrPartition, K::UnknownTopic, true),
            (E::MessageTooLarge, K::MessageTooLarge, false),
            (E::RecordListTooLarge, K::MessageTooLarge, false),
            (E::TopicAuthorizationFailed, K::Authorization, false),
            (E::ClusterAuthorizationFailed, K::Authorization, false),
            (E::InvalidRecord, K::Broker, false),
            (E::Unknown(-99), K::Broker, false),
        ];
        for (code, kind, retriable) in cases {
            let e = ProduceError::from_code("producing to t/0", code, Some("why"));
            assert_eq!(e.kind(), kind, "{code:?}");
            assert_eq!(e.is_retriable(), retriable, "{code:?}");
            assert!(e.to_string().starts_with("producing to t/0: "), "{e}");
            assert!(e.to_string().ends_with("(why)"), "{e}");
        }
    }

    #[test]
    fn wire_failures_are_retriable_except_version_mismatches() {
        let cases = [
            (
                WireError::Connection {
                    address: "b:9092".into(),
                    detail: "refused".into(),
                },
                Some(ProduceErrorKind::Connection),
                true,
            ),
            (
                WireError::Timeout {
                    api: "Produce",
                    address: "b:9092".into(),
                    after_ms: 10,
                },
                Some(ProduceErrorKind::Timeout),
                true,
            ),
            (
                WireError::UnsupportedVersion {
                    api: "Produce",
                    offered: Some((0, 2)),
                    min: 3,
                    max: 12,
                },
                None,
                false,
            ),
            (
                WireError::Broker {
                    api: "Produce",
                    error: ResponseError::NotLeaderOrFollower,
                    message: None,
                },
                None,
                true,
            ),
        ];
        for (wire, kind, retriable) in cases {
            let e = ProduceError::from_wire("x", &wire);
            if let Some(kind) = kind {
                assert_eq!(e.kind(), kind, "{wire}");
            }
            assert_eq!(e.is_retriable(), retriable, "{wire}");
        }
    }

    fn encoded(topic: &'static str) -> Box<EncodedMessage> {
        Box::new(EncodedMessage {
            topic: topic.into(),
            key: None,
            value: vec![],
            headers: Default::default(),
        })
    }

    /// What a user prints with `{e}` must say why, once.
    #[test]
    fn every_publish_error_names_its_cause_once() {
        use std::error::Error as _;
        let unknown = ProduceError::new(
            ProduceErrorKind::UnknownTopic,
            true,
            "topic shop does not exist (create it first)",
        );
        let denied = ProduceError::from_code(
            "producing to shop/0",
            ResponseError::TopicAuthorizationFailed,
            None,
        );
        let cases = [
            (
                PublishError::Failed {
                    cause: unknown.clone(),
                    attempts: 3,
                    dlq_error: Some(ProduceError::new(
                        ProduceErrorKind::UnknownTopic,
                        true,
                        "topic shop.dlq does not exist (create it first)",
                    )),
                    message: encoded("shop"),
                },
                ProduceErrorKind::UnknownTopic,
                vec![
                    "shop failed after 3 attempt(s): topic shop does not exist",
                    "dead-letter write failed too: topic shop.dlq does not exist",
                ],
            ),
            (
                PublishError::Failed {
                    cause: denied.clone(),
                    attempts: 1,
                    dlq_error: None,
                    message: encoded("shop"),
                },
                ProduceErrorKind::Authorization,
                vec!["producing to shop/0: ", "Authorization"],
            ),
            (
                PublishError::DeadLettered {
                    dlq: Delivery {
                        topic: "shop.dlq".into(),
                        partition: 0,
                        offset: Offset::At(7),
                    },
                    cause: ProduceError::new(
                        ProduceErrorKind::MessageTooLarge,
                        false,
                        "message of 2000000 bytes exceeds max_message_bytes 1048576",
                    ),
                },
                ProduceErrorKind::MessageTooLarge,
                vec![
                    "exceeds max_message_bytes",
                    "dead-letter topic shop.dlq at offset 7",
                ],
            ),
        ];
        for (e, kind, parts) in cases {
            let shown = e.to_string();
            for part in parts {
                assert!(shown.contains(part), "{shown:?} lacks {part:?}");
            }
            assert_eq!(e.kind(), Some(kind), "{shown}");
            assert!(e.source().is_none(), "the cause is in the message only");
        }
    }
}
