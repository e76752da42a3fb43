//! Errors of the group protocol, classified by what the member does next.

use kafka_protocol::ResponseError;
use kavari_wire::WireError;

/// A failure in the group protocol.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// Talking to the broker failed, or it answered with an error code.
    #[error(transparent)]
    Wire(#[from] WireError),
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
        Self::Wire(WireError::broker(api, error, message))
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Wire(WireError::Malformed {
            what,
            detail: detail.into(),
        })
    }

    /// The broker error code, when this is one.
    pub fn response_error(&self) -> Option<ResponseError> {
        match self {
            Self::Wire(e) => e.response_error(),
            _ => None,
        }
    }

    /// Whether the coordinator must be looked up again: it moved, is not
    /// available, or the connection to it broke.
    pub fn needs_new_coordinator(&self) -> bool {
        matches!(self, Self::Wire(e) if e.is_transport())
            || matches!(
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
        matches!(
            self,
            Self::Fatal(_) | Self::Wire(WireError::UnsupportedVersion { .. })
        ) || matches!(self, Self::Wire(e) if e.is_authentication())
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
