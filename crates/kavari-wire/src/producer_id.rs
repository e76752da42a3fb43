//! Producer ids for idempotent producing (KIP-98): InitProducerId without a
//! transactional id gives a producer id and epoch that the broker tracks
//! sequence numbers under; asking again with the current id and epoch
//! bumps the epoch (KIP-360, InitProducerId v3 and later), which lets a
//! producer start its sequences again without a new id.

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};

use crate::WireError;
use crate::cluster::Cluster;
use crate::connection::Connection;

/// A producer id and epoch, as written in every record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// The producer id.
    pub id: i64,
    /// The epoch.
    pub epoch: i16,
}

/// The first InitProducerId version that bumps an epoch (KIP-360).
const FIRST_BUMPING: i16 = 3;

/// Asks any broker for a producer identity. With `current`, asks for its
/// epoch to be bumped where the broker can (v3+); otherwise, or on older
/// brokers, for a new id.
pub async fn init_producer_id(
    cluster: &Cluster,
    current: Option<ProducerIdentity>,
) -> Result<ProducerIdentity, WireError> {
    let conn = cluster.any_broker().await?;
    request(&conn, current).await
}

async fn request(
    conn: &Connection,
    current: Option<ProducerIdentity>,
) -> Result<ProducerIdentity, WireError> {
    let version = conn.version::<InitProducerIdRequest>()?;
    let mut req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1);
    if let Some(c) = current.filter(|_| version >= FIRST_BUMPING) {
        req = req
            .with_producer_id(ProducerId(c.id))
            .with_producer_epoch(c.epoch);
    }
    let resp = conn.send(&req).await?;
    if let Some(e) = resp.error_code.err() {
        return Err(WireError::broker("InitProducerId", e, None));
    }
    Ok(ProducerIdentity {
        id: resp.producer_id.0,
        epoch: resp.producer_epoch,
    })
}
