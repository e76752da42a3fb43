//! Finding a coordinator: the broker that keeps a consumer group's state,
//! or a transactional id's (FindCoordinator).

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;

use crate::WireError;
use crate::cluster::Cluster;

/// What a coordinator keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorOf {
    /// A consumer group.
    Group,
    /// A transactional id.
    Transaction,
}

impl CoordinatorOf {
    fn key_type(self) -> i8 {
        match self {
            Self::Group => 0,
            Self::Transaction => 1,
        }
    }
}

/// The address (`host:port`) of `key`'s coordinator, asked of any broker
/// (the bootstrap connection is dropped when the question fails, so the
/// next one asks another).
pub async fn coordinator_address(
    cluster: &Cluster,
    of: CoordinatorOf,
    key: &str,
) -> Result<String, WireError> {
    let broker = cluster.any_broker().await?;
    let version = broker.version::<FindCoordinatorRequest>()?;
    if of != CoordinatorOf::Group && version < 1 {
        return Err(WireError::Malformed {
            what: "FindCoordinator",
            detail: "the broker finds only group coordinators (v0)".into(),
        });
    }
    let key_str = StrBytes::from_string(key.to_string());
    let req = if version >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![key_str])
    } else {
        FindCoordinatorRequest::default().with_key(key_str)
    }
    .with_key_type(of.key_type());
    let resp = match broker.send(&req).await {
        Ok(r) => r,
        Err(e) => {
            cluster.forget_any_broker().await;
            return Err(e);
        }
    };
    let refused = |code: i16, message: Option<&StrBytes>| match code.err() {
        None => Ok(()),
        Some(e) => Err(WireError::broker(
            "FindCoordinator",
            e,
            message.map(|m| m.as_str().to_string()),
        )),
    };
    let (host, port) = if version >= 4 {
        let c = resp
            .coordinators
            .first()
            .ok_or_else(|| WireError::Malformed {
                what: "FindCoordinator",
                detail: "no coordinator in the response".into(),
            })?;
        refused(c.error_code, c.error_message.as_ref())?;
        (c.host.as_str().to_string(), c.port)
    } else {
        refused(resp.error_code, resp.error_message.as_ref())?;
        (resp.host.as_str().to_string(), resp.port)
    };
    Ok(format!("{host}:{port}"))
}
