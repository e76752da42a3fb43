//! One TCP connection to a broker: 4-byte length framing, correlation ids,
//! ApiVersions negotiation, a timeout on every request.
//!
//! Requests on one connection are sent one at a time (Kafka answers a
//! connection's requests in order anyway). The member keeps JoinGroup and
//! SyncGroup, which may wait a whole rebalance, on a connection of their own,
//! so heartbeats and commits are never queued behind them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    RequestHeader, ResponseHeader, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::GroupError;

/// The largest response frame accepted (a guard against corrupt lengths).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Pairs a request with its response and bounds the versions Kavari speaks:
/// kafka-protocol's own `Request` trait needs the `broker` feature.
pub(crate) trait GroupRequest: Encodable + HeaderVersion + Send + Sync {
    const KEY: ApiKey;
    const NAME: &'static str;
    /// The lowest version Kavari can use.
    const MIN: i16;
    /// The highest version Kavari has code for.
    const MAX: i16;
    type Response: Decodable + HeaderVersion + Send;
}

macro_rules! group_request {
    ($req:ty => $resp:ty, $key:ident, $min:expr, $max:expr) => {
        impl GroupRequest for $req {
            const KEY: ApiKey = ApiKey::$key;
            const NAME: &'static str = stringify!($key);
            const MIN: i16 = $min;
            const MAX: i16 = $max;
            type Response = $resp;
        }
    };
}

group_request!(ApiVersionsRequest => ApiVersionsResponse, ApiVersions, 0, 3);
group_request!(MetadataRequest => MetadataResponse, Metadata, 1, 12);
group_request!(FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator, 0, 4);
group_request!(JoinGroupRequest => JoinGroupResponse, JoinGroup, 1, 9);
group_request!(SyncGroupRequest => SyncGroupResponse, SyncGroup, 0, 5);
group_request!(HeartbeatRequest => HeartbeatResponse, Heartbeat, 0, 4);
group_request!(LeaveGroupRequest => LeaveGroupResponse, LeaveGroup, 0, 5);
group_request!(OffsetCommitRequest => OffsetCommitResponse, OffsetCommit, 2, 8);
group_request!(OffsetFetchRequest => OffsetFetchResponse, OffsetFetch, 1, 8);

/// A connection to one broker.
#[derive(Debug)]
pub(crate) struct Connection {
    address: String,
    client_id: StrBytes,
    stream: Mutex<TcpStream>,
    next_correlation: AtomicI32,
    /// Broker's (min, max) per API key.
    versions: HashMap<i16, (i16, i16)>,
    /// Set when a request was abandoned mid-way: the stream is out of step.
    broken: AtomicBool,
    timeout: Duration,
}

impl Connection {
    /// Connects and negotiates API versions.
    pub(crate) async fn connect(
        address: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, GroupError> {
        let conn_err = |detail: String| GroupError::Connection {
            address: address.to_string(),
            detail,
        };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(conn_err(e.to_string())),
            Err(_) => return Err(conn_err(format!("connect timed out after {timeout:?}"))),
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Self {
            address: address.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            stream: Mutex::new(stream),
            next_correlation: AtomicI32::new(1),
            versions: HashMap::new(),
            broken: AtomicBool::new(false),
            timeout,
        };
        conn.negotiate().await?;
        Ok(conn)
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    async fn negotiate(&mut self) -> Result<(), GroupError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kavari-group"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp = self.send_at(&req, 3, self.timeout).await?;
        if resp.error_code == ResponseError::UnsupportedVersion.code() {
            // The broker answers at v0 with the versions it knows; ask at v0.
            resp = self
                .send_at(&ApiVersionsRequest::default(), 0, self.timeout)
                .await?;
        }
        if let Some(e) = resp.error_code.err() {
            return Err(GroupError::broker("ApiVersions", e, None));
        }
        self.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// The highest version of `R` both sides speak.
    pub(crate) fn version<R: GroupRequest>(&self) -> Result<i16, GroupError> {
        let offered = self.versions.get(&(R::KEY as i16)).copied();
        match offered {
            Some((min, max)) if max >= R::MIN && min <= R::MAX => Ok(max.min(R::MAX)),
            _ => Err(GroupError::UnsupportedVersion {
                api: R::NAME,
                offered,
                min: R::MIN,
                max: R::MAX,
            }),
        }
    }

    /// Sends `req` at the negotiated version with the connection's timeout.
    pub(crate) async fn send<R: GroupRequest>(&self, req: &R) -> Result<R::Response, GroupError> {
        self.send_with_timeout(req, self.timeout).await
    }

    /// Sends `req` at the negotiated version with an explicit timeout
    /// (JoinGroup waits up to the rebalance timeout).
    pub(crate) async fn send_with_timeout<R: GroupRequest>(
        &self,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, GroupError> {
        let version = self.version::<R>()?;
        self.send_at(req, version, timeout).await
    }

    /// Sends `req` at `version` and decodes the response.
    pub(crate) async fn send_at<R: GroupRequest>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, GroupError> {
        if self.is_broken() {
            return Err(self.conn_err("connection abandoned after an earlier failure".into()));
        }
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(req, version, correlation_id)?;
        // Waiting for the connection counts against the timeout too, and a
        // request queued behind one that broke the connection fails at once
        // instead of waiting out a timeout of its own.
        let exchange = async {
            let mut stream = self.stream.lock().await;
            if self.is_broken() {
                return Err(self.conn_err("connection abandoned after an earlier failure".into()));
            }
            stream
                .write_all(&frame)
                .await
                .map_err(|e| self.conn_err(format!("write: {e}")))?;
            let mut len = [0u8; 4];
            stream
                .read_exact(&mut len)
                .await
                .map_err(|e| self.conn_err(format!("read: {e}")))?;
            let len = i32::from_be_bytes(len);
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_FRAME && *l >= 4)
                .ok_or_else(|| self.malformed(R::NAME, format!("frame length {len}")))?;
            let mut body = vec![0u8; len];
            stream
                .read_exact(&mut body)
                .await
                .map_err(|e| self.conn_err(format!("read: {e}")))?;
            Ok::<_, GroupError>(Bytes::from(body))
        };
        let body = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                self.broken.store(true, Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => {
                self.broken.store(true, Ordering::Relaxed);
                return Err(GroupError::Timeout {
                    api: R::NAME,
                    address: self.address.clone(),
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
        };
        self.decode::<R>(body, version, correlation_id)
    }

    fn encode<R: GroupRequest>(
        &self,
        req: &R,
        version: i16,
        correlation_id: i32,
    ) -> Result<Bytes, GroupError> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::new();
        buf.put_i32(0); // length, filled in below
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(|e| GroupError::Malformed {
                what: R::NAME,
                detail: format!("cannot encode v{version} request: {e}"),
            })?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| GroupError::Malformed {
            what: R::NAME,
            detail: "request larger than 2 GiB".into(),
        })?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf.freeze())
    }

    fn decode<R: GroupRequest>(
        &self,
        mut body: Bytes,
        version: i16,
        correlation_id: i32,
    ) -> Result<R::Response, GroupError> {
        // ApiVersions responses always use header v0, whatever the version.
        let header_version = if R::KEY == ApiKey::ApiVersions {
            0
        } else {
            R::Response::header_version(version)
        };
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| self.malformed(R::NAME, format!("response header: {e}")))?;
        if header.correlation_id != correlation_id {
            self.broken.store(true, Ordering::Relaxed);
            return Err(self.malformed(
                R::NAME,
                format!(
                    "correlation id {} for request {correlation_id}",
                    header.correlation_id
                ),
            ));
        }
        let resp = R::Response::decode(&mut body, version)
            .map_err(|e| self.malformed(R::NAME, format!("v{version} response: {e}")))?;
        if body.has_remaining() {
            tracing::trace!(
                api = R::NAME,
                left = body.remaining(),
                "response had trailing bytes"
            );
        }
        Ok(resp)
    }

    fn conn_err(&self, detail: String) -> GroupError {
        GroupError::Connection {
            address: self.address.clone(),
            detail,
        }
    }

    fn malformed(&self, what: &'static str, detail: String) -> GroupError {
        GroupError::Malformed {
            what,
            detail: format!("from {}: {detail}", self.address),
        }
    }
}
