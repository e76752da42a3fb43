//! Errors of the group protocol, classified by what the member does next.

use kafka_protocol::ResponseError;

/// A failure in the group protocol.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// No connection to the broker or coordinator, or it broke.
    #[error("connection to {address} failed: {detail}")]
    Connection {
        /// The address.
        address: String,
        /// What went wrong.
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
    /// A response or a member's metadata did not decode.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What did not decode.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// This member was fenced or the group cannot take it: it stops.
    #[error("fatal group error: {0}")]
    Fatal(String),
    /// The member has been closed.
    #[error("the group member is closed")]
    Closed,
    /// Commits need a generation: the member is not in a stable group now.
    #[error("not a member of a stable group generation (state: {0})")]
    NotInGeneration(&'static str),
}

impl GroupError {
    pub(crate) fn broker(api: &'static str, error: ResponseError, message: Option<String>) -> Self {
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

    /// Whether the coordinator must be looked up again: it moved, is not
    /// available, or the connection to it broke.
    pub fn needs_new_coordinator(&self) -> bool {
        matches!(
            self,
            Self::Connection { .. } | Self::Timeout { .. } | Self::Malformed { .. }
        ) || matches!(
            self.response_error(),
            Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable)
        )
    }

    /// Whether the member's generation is gone and it must rejoin.
    pub fn needs_rejoin(&self) -> bool {
        matches!(
            self.response_error(),
            Some(
                ResponseError::IllegalGeneration
                    | ResponseError::UnknownMemberId
                    | ResponseError::RebalanceInProgress
            )
        )
    }

    /// Errors after which the member stops and reports.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal(_) | Self::UnsupportedVersion { .. })
            || matches!(
                self.response_error(),
                Some(
                    ResponseError::FencedInstanceId
                        | ResponseError::InconsistentGroupProtocol
                        | ResponseError::GroupAuthorizationFailed
                        | ResponseError::InvalidGroupId
                        | ResponseError::GroupMaxSizeReached
                        | ResponseError::InvalidSessionTimeout
                        | ResponseError::UnsupportedVersion
                )
            )
    }
}
