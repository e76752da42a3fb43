//! One TCP connection to a broker: 4-byte length framing, correlation ids,
//! ApiVersions negotiation, pipelined requests, a timeout on every request.
//!
//! Kafka answers a connection's requests in the order they were sent, so
//! requests are written as they come and a reader task hands each answer to
//! the oldest waiting request. The group member still keeps JoinGroup and
//! SyncGroup, which the broker holds for a whole rebalance, on a connection
//! of their own: answers behind them would wait as long.
//!
//! A produce request is framed around its record batches and written from
//! their own buffers (`produce.rs`).

mod produce;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, ElectLeadersRequest, ElectLeadersResponse, FetchRequest, FetchResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::WireError;
use crate::response_shape::{Shape, apis};
use crate::segments::{Segment, Segments};
use crate::stream::{ReadHalf, Transport, WriteHalf};

/// The largest response frame accepted (a guard against corrupt lengths).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Pairs a request with its response and bounds the versions Kavari speaks
/// (kafka-protocol's own `Request` trait needs its `broker` feature).
pub trait Request: Encodable + HeaderVersion + Send + Sync {
    /// The API key.
    const KEY: ApiKey;
    /// The API's name, for errors and logs.
    const NAME: &'static str;
    /// The lowest version Kavari can use.
    const MIN: i16;
    /// The highest version Kavari has code for.
    const MAX: i16;
    /// The response type.
    type Response: Decodable + HeaderVersion + Send;
    /// The response's wire shape, walked before it is decoded.
    const SHAPE: &'static Shape;
}

macro_rules! request {
    ($req:ty => $resp:ty, $key:ident, $min:expr, $max:expr, $shape:ident) => {
        impl Request for $req {
            const KEY: ApiKey = ApiKey::$key;
            const NAME: &'static str = stringify!($key);
            const MIN: i16 = $min;
            const MAX: i16 = $max;
            type Response = $resp;
            const SHAPE: &'static Shape = &apis::$shape;
        }
    };
}

request!(ApiVersionsRequest => ApiVersionsResponse, ApiVersions, 0, 3, API_VERSIONS);
// v4 brings allow_auto_topic_creation: Kavari never creates a topic by
// asking for its metadata, and before v4 a broker may.
request!(MetadataRequest => MetadataResponse, Metadata, 4, 12, METADATA);
request!(FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator, 0, 4, FIND_COORDINATOR);
request!(JoinGroupRequest => JoinGroupResponse, JoinGroup, 1, 9, JOIN_GROUP);
request!(SyncGroupRequest => SyncGroupResponse, SyncGroup, 0, 5, SYNC_GROUP);
request!(HeartbeatRequest => HeartbeatResponse, Heartbeat, 0, 4, HEARTBEAT);
request!(LeaveGroupRequest => LeaveGroupResponse, LeaveGroup, 0, 5, LEAVE_GROUP);
request!(OffsetCommitRequest => OffsetCommitResponse, OffsetCommit, 2, 8, OFFSET_COMMIT);
request!(OffsetFetchRequest => OffsetFetchResponse, OffsetFetch, 1, 8, OFFSET_FETCH);
// v3 is the first with record batches (magic 2); v12 is the last that names
// topics (v13 identifies them by id).
request!(ProduceRequest => ProduceResponse, Produce, 3, 12, PRODUCE);
// v4 brings isolation levels and aborted transactions; v12 is the last that
// names topics (v13 identifies them by id).
request!(FetchRequest => FetchResponse, Fetch, 4, 12, FETCH);
// v1 asks by timestamp; v2 brings the isolation level.
request!(ListOffsetsRequest => ListOffsetsResponse, ListOffsets, 1, 7, LIST_OFFSETS);
request!(CreateTopicsRequest => CreateTopicsResponse, CreateTopics, 2, 7, CREATE_TOPICS);
request!(CreatePartitionsRequest => CreatePartitionsResponse, CreatePartitions, 0, 3, CREATE_PARTITIONS);
// v1 brings the election type (preferred or unclean).
request!(ElectLeadersRequest => ElectLeadersResponse, ElectLeaders, 1, 2, ELECT_LEADERS);
// v2 is the first flexible version; v4 is the last before KIP-890's
// transaction changes.
request!(InitProducerIdRequest => InitProducerIdResponse, InitProducerId, 0, 4, INIT_PRODUCER_ID);
request!(DescribeGroupsRequest => DescribeGroupsResponse, DescribeGroups, 0, 5, DESCRIBE_GROUPS);
// v4 brings the group's state.
request!(ListGroupsRequest => ListGroupsResponse, ListGroups, 0, 4, LIST_GROUPS);
// v6 names topics by id.
request!(DeleteTopicsRequest => DeleteTopicsResponse, DeleteTopics, 1, 5, DELETE_TOPICS);
request!(DescribeConfigsRequest => DescribeConfigsResponse, DescribeConfigs, 1, 4, DESCRIBE_CONFIGS);
// v1 carries the mechanism's bytes in SaslAuthenticate requests (v0 sent
// them raw, outside the protocol).
request!(SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake, 1, 1, SASL_HANDSHAKE);
request!(SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate, 0, 2, SASL_AUTHENTICATE);

/// Requests written but not yet answered, oldest first, and why the
/// connection broke once it has.
#[derive(Debug, Default)]
struct Awaiting {
    waiting: VecDeque<(i32, oneshot::Sender<Bytes>)>,
    broken: Option<String>,
}

/// What the connection and its reader task share.
#[derive(Debug, Default)]
struct ConnectionState {
    in_flight: std::sync::Mutex<Awaiting>,
    /// Mirrors `in_flight.broken.is_some()`, readable without the lock.
    broken: AtomicBool,
    /// This connection in the open-connections gauge.
    open: crate::metrics::OpenConnection,
}

impl ConnectionState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Awaiting> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection broken (the first reason wins) and fails every
    /// request waiting for an answer at once.
    fn poison(&self, why: &str) {
        let waiting = {
            let mut st = self.lock();
            if st.broken.is_none() {
                st.broken = Some(why.to_string());
            }
            self.broken.store(true, Ordering::Relaxed);
            std::mem::take(&mut st.waiting)
        };
        self.open.closed();
        drop(waiting); // their receivers now fail
    }

    fn why_broken(&self) -> String {
        self.lock()
            .broken
            .clone()
            .unwrap_or_else(|| "connection closed".into())
    }
}

/// The socket's write half and the buffer requests are framed in, kept
/// between requests so a large one (a produce request carries whole record
/// batches) does not allocate and fault in fresh memory each time.
#[derive(Debug)]
struct Writer {
    stream: WriteHalf,
    frame: BytesMut,
}

/// A frame buffer larger than this is released after its request.
const KEEP_FRAME: usize = 4 * 1024 * 1024;

/// A written request's answer, once the reader hands it over.
#[derive(Debug)]
struct Answer {
    rx: oneshot::Receiver<Bytes>,
    version: i16,
    correlation_id: i32,
}

/// Marks the connection broken unless disarmed: a request abandoned halfway
/// through its write leaves the stream out of step.
struct WriteGuard<'a>(&'a ConnectionState, bool);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.poison("a request was abandoned while being written");
        }
    }
}

/// A connection to one broker. Requests are pipelined: each is written as
/// soon as the socket is free and answered in order by a reader task, so
/// callers on several partitions or groups share one connection without
/// waiting for each other's round trips.
#[derive(Debug)]
pub struct Connection {
    address: String,
    client_id: StrBytes,
    writer: Mutex<Writer>,
    shared: Arc<ConnectionState>,
    reader: JoinHandle<()>,
    next_correlation: AtomicI32,
    /// Broker's (min, max) per API key.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
    /// When to stop taking requests for a new, freshly authenticated
    /// connection: before the broker's SASL session ends (KIP-368).
    renew_at: Option<Instant>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects (with `TCP_NODELAY`) over `transport` and negotiates API
    /// versions; every request through [`send`](Self::send) is bounded by
    /// `timeout`. [`Cluster::connect`](crate::cluster::Cluster::connect)
    /// adds SASL.
    pub(crate) async fn connect(
        address: &str,
        client_id: &str,
        timeout: Duration,
        transport: Transport<'_>,
    ) -> Result<Self, WireError> {
        let (read, write) = crate::stream::open(address, transport, timeout).await?;
        let shared = Arc::new(ConnectionState::default());
        let reader = tokio::spawn(read_responses(read, Arc::clone(&shared)));
        let mut conn = Self {
            address: address.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            writer: Mutex::new(Writer {
                stream: write,
                frame: BytesMut::new(),
            }),
            shared,
            reader,
            next_correlation: AtomicI32::new(1),
            versions: HashMap::new(),
            timeout,
            renew_at: None,
        };
        conn.negotiate().await?;
        conn.shared.open.opened(address);
        Ok(conn)
    }

    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Has the connection replaced before an authenticated session of
    /// `lifetime` ends (KIP-368).
    pub(crate) fn session_lasts(&mut self, lifetime: Duration) {
        self.renew_at = Some(Instant::now() + renew_within(lifetime));
    }

    /// Whether to connect again rather than send on this connection: it
    /// broke (a failed read or write, a timeout, an answer out of step;
    /// every further request fails), or its SASL session is about to end
    /// (requests already sent still get their answers).
    pub fn is_broken(&self) -> bool {
        self.shared.broken.load(Ordering::Relaxed)
            || self.renew_at.is_some_and(|at| Instant::now() >= at)
    }

    async fn negotiate(&mut self) -> Result<(), WireError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kavari"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp = self.send_at(&req, 3, self.timeout).await?;
        if resp.error_code == ResponseError::UnsupportedVersion.code() {
            // The broker answers at v0 with the versions it knows; ask at v0.
            resp = self
                .send_at(&ApiVersionsRequest::default(), 0, self.timeout)
                .await?;
        }
        if let Some(e) = resp.error_code.err() {
            return Err(WireError::broker("ApiVersions", e, None));
        }
        self.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// The highest version of `R` both sides speak.
    pub fn version<R: Request>(&self) -> Result<i16, WireError> {
        let offered = self.versions.get(&(R::KEY as i16)).copied();
        match offered {
            Some((min, max)) if max >= R::MIN && min <= R::MAX => Ok(max.min(R::MAX)),
            _ => Err(WireError::UnsupportedVersion {
                api: R::NAME,
                offered,
                min: R::MIN,
                max: R::MAX,
            }),
        }
    }

    /// Sends `req` at the negotiated version with the connection's timeout.
    pub async fn send<R: Request>(&self, req: &R) -> Result<R::Response, WireError> {
        self.send_with_timeout(req, self.timeout).await
    }

    /// Sends `req` at the negotiated version with an explicit timeout
    /// (JoinGroup waits up to the rebalance timeout).
    pub async fn send_with_timeout<R: Request>(
        &self,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        let version = self.version::<R>()?;
        self.send_at(req, version, timeout).await
    }

    /// Sends `req` at `version` and decodes the response. A timeout breaks
    /// the connection: an unanswered request means the broker or the path to
    /// it is gone, and every request behind it fails at once.
    pub async fn send_at<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        // Waiting for the socket counts against the timeout too.
        let deadline = Instant::now() + timeout;
        let answer = self.write_request(req, version, timeout, deadline).await?;
        self.await_answer::<R>(answer, timeout, deadline).await
    }

    /// Writes `req` at the negotiated version and returns once it is
    /// written, with a future of its answer. The broker answers in the order
    /// requests were written, so a caller that writes its next request only
    /// after this returns keeps its requests in order while several are in
    /// flight. The connection's timeout covers the write and the answer.
    pub async fn send_pipelined<R: Request + 'static>(
        self: &Arc<Self>,
        req: &R,
    ) -> Result<impl Future<Output = Result<R::Response, WireError>> + Send + 'static, WireError>
    {
        let version = self.version::<R>()?;
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let answer = self.write_request(req, version, timeout, deadline).await?;
        let conn = Arc::clone(self);
        Ok(async move { conn.await_answer::<R>(answer, timeout, deadline).await })
    }

    async fn write_request<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Answer, WireError> {
        if self.shared.broken.load(Ordering::Relaxed) {
            return Err(self.conn_err(self.shared.why_broken()));
        }
        let write = async {
            let mut writer = self.writer.lock().await;
            self.write_locked(&mut writer, |frame, id| {
                self.encode(frame, req, version, id)?;
                Ok(vec![Segment::Frame(0..frame.len())])
            })
            .await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(written) => {
                let (rx, correlation_id) = written?;
                Ok(Answer {
                    rx,
                    version,
                    correlation_id,
                })
            }
            Err(_) => Err(self.timed_out(R::NAME, timeout)),
        }
    }

    /// Writes a request framed by `frame_into` (given the frame buffer and
    /// the correlation id) as the segments it returns, in one vectored
    /// write, with the writer held; returns where its answer will come.
    async fn write_locked<'a>(
        &self,
        writer: &mut Writer,
        frame_into: impl FnOnce(&mut BytesMut, i32) -> Result<Vec<Segment<'a>>, WireError>,
    ) -> Result<(oneshot::Receiver<Bytes>, i32), WireError> {
        let Writer { stream, frame } = writer;
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let segments = frame_into(frame, correlation_id)?;
        let mut whole = Segments::new(frame, segments).ok_or_else(|| WireError::Malformed {
            what: "request",
            detail: "a frame segment outside the frame".into(),
        })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(why) = &st.broken {
                return Err(self.conn_err(why.clone()));
            }
            st.waiting.push_back((correlation_id, tx));
        }
        let mut guard = WriteGuard(&self.shared, false);
        // A TLS stream may keep the last record until flushed.
        let written = match stream.write_all_buf(&mut whole).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.shared.poison(&format!("write: {e}"));
            return Err(self.conn_err(format!("write: {e}")));
        }
        guard.1 = true;
        drop(whole);
        if frame.capacity() > KEEP_FRAME {
            *frame = BytesMut::new();
        }
        Ok((rx, correlation_id))
    }

    async fn await_answer<R: Request>(
        &self,
        answer: Answer,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<R::Response, WireError> {
        let (version, correlation_id) = (answer.version, answer.correlation_id);
        let body = self.await_body::<R>(answer, timeout, deadline).await?;
        self.decode::<R>(body, version, correlation_id)
    }

    async fn await_body<R: Request>(
        &self,
        answer: Answer,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Bytes, WireError> {
        match tokio::time::timeout_at(deadline, answer.rx).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(self.conn_err(self.shared.why_broken())),
            Err(_) => Err(self.timed_out(R::NAME, timeout)),
        }
    }

    /// Breaks the connection after a request went unanswered.
    fn timed_out(&self, api: &'static str, timeout: Duration) -> WireError {
        self.shared
            .poison(&format!("{api} request got no answer within {timeout:?}"));
        self.reader.abort();
        WireError::Timeout {
            api,
            address: self.address.clone(),
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn header<R: Request>(&self, version: i16, correlation_id: i32) -> RequestHeader {
        RequestHeader::default()
            .with_request_api_key(R::KEY as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()))
    }

    /// Frames `req` into `buf` (emptied first).
    fn encode<R: Request>(
        &self,
        buf: &mut BytesMut,
        req: &R,
        version: i16,
        correlation_id: i32,
    ) -> Result<(), WireError> {
        let header = self.header::<R>(version, correlation_id);
        let header_version = R::header_version(version);
        let encode_err = |e: &dyn std::fmt::Display| WireError::Malformed {
            what: R::NAME,
            detail: format!("cannot encode v{version} request: {e}"),
        };
        // Sized up front: a produce request carries whole record batches,
        // and growing into them would copy them again and again.
        let size = header
            .compute_size(header_version)
            .and_then(|h| Ok(h + req.compute_size(version)?))
            .map_err(|e| encode_err(&e))?;
        buf.clear();
        buf.reserve(4 + size);
        buf.put_i32(0); // length, filled in below
        header
            .encode(buf, header_version)
            .and_then(|()| req.encode(buf, version))
            .map_err(|e| encode_err(&e))?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| WireError::Malformed {
            what: R::NAME,
            detail: "request larger than 2 GiB".into(),
        })?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// The body after the response header, checked to answer `correlation_id`.
    fn strip_header<R: Request>(
        &self,
        mut body: Bytes,
        version: i16,
        correlation_id: i32,
    ) -> Result<Bytes, WireError> {
        // ApiVersions responses always use header v0, whatever the version.
        let header_version = if R::KEY == ApiKey::ApiVersions {
            0
        } else {
            R::Response::header_version(version)
        };
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| self.malformed(R::NAME, format!("response header: {e}")))?;
        if header.correlation_id != correlation_id {
            self.shared.poison("answer out of step");
            return Err(self.malformed(
                R::NAME,
                format!(
                    "correlation id {} for request {correlation_id}",
                    header.correlation_id
                ),
            ));
        }
        Ok(body)
    }

    fn decode<R: Request>(
        &self,
        body: Bytes,
        version: i16,
        correlation_id: i32,
    ) -> Result<R::Response, WireError> {
        let body = self.strip_header::<R>(body, version, correlation_id)?;
        decode_response::<R>(body, version).map_err(|e| match e {
            WireError::Malformed { what, detail } => self.malformed(what, detail),
            other => other,
        })
    }

    /// Sends `req` at `version` with `timeout` and returns the response's
    /// body after its header, undecoded: for the fetch path, which reads
    /// the body with its own bounds-checked reader and slices record
    /// batches out of it without copying.
    pub async fn send_raw<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Bytes, WireError> {
        let deadline = Instant::now() + timeout;
        let answer = self.write_request(req, version, timeout, deadline).await?;
        let correlation_id = answer.correlation_id;
        let body = self.await_body::<R>(answer, timeout, deadline).await?;
        self.strip_header::<R>(body, version, correlation_id)
    }

    /// The request timeout this connection was made with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn conn_err(&self, detail: String) -> WireError {
        // The broker ended the TLS session with an alert (after the
        // handshake, as TLS 1.3 refuses a client certificate), or answered
        // in another protocol: the same on every attempt, so not a network
        // fault.
        if detail.starts_with(TLS_ALERT) {
            return WireError::Tls {
                address: self.address.clone(),
                detail,
            };
        }
        if detail.starts_with(FOREIGN) {
            return WireError::ProtocolMismatch {
                address: self.address.clone(),
                detail,
            };
        }
        WireError::Connection {
            address: self.address.clone(),
            detail,
        }
    }

    /// A malformed-response error naming this broker.
    pub fn malformed(&self, what: &'static str, detail: String) -> WireError {
        WireError::Malformed {
            what,
            detail: format!("from {}: {detail}", self.address),
        }
    }
}

/// How soon to replace a connection whose SASL session lasts `lifetime`:
/// at 85 % of it, and at least a minute before it ends when it is long
/// enough, so requests in flight finish inside the session.
fn renew_within(lifetime: Duration) -> Duration {
    let margin = (lifetime / 20 * 3).max(Duration::from_secs(60).min(lifetime / 2));
    lifetime.saturating_sub(margin)
}

/// Decodes a response body (after its header) as `R`'s response at
/// `version`, once its wire shape shows that no length in it claims more
/// than the bytes left: a corrupt answer is an error, never an allocation
/// the size of what it claims.
pub fn decode_response<R: Request>(
    mut body: Bytes,
    version: i16,
) -> Result<R::Response, WireError> {
    let malformed = |detail: String| WireError::Malformed {
        what: R::NAME,
        detail: format!("v{version} response: {detail}"),
    };
    let trailing = match R::SHAPE.check(&body, version, R::NAME) {
        Ok(trailing) => trailing,
        Err(WireError::Malformed { detail, .. }) => return Err(malformed(detail)),
        Err(other) => return Err(other),
    };
    let resp = R::Response::decode(&mut body, version).map_err(|e| malformed(e.to_string()))?;
    if trailing > 0 {
        tracing::trace!(
            api = R::NAME,
            left = trailing,
            "response had trailing bytes"
        );
    }
    Ok(resp)
}

/// How a connection's broken reason begins when the broker ended the TLS
/// session with an alert.
const TLS_ALERT: &str = "the broker ended the TLS session with alert";

/// How a connection's broken reason begins when the broker answered in
/// another protocol than Kafka over the configured transport.
const FOREIGN: &str = "answered in ";

/// What a response frame's first four bytes say when they are no Kafka
/// length: another protocol, and the setting that reaches it (a plaintext
/// client reads a TLS listener's alert as a length of about 350 MB).
fn foreign_protocol(first: [u8; 4]) -> Option<String> {
    let speaks = match first {
        // A TLS record: handshake, alert, change cipher spec or data, any
        // version from SSL 3 to TLS 1.3.
        [0x14..=0x17, 0x03, 0x00..=0x04, _] => {
            "TLS, and this client connected in plaintext: set              KAVARI_SECURITY_PROTOCOL=SSL (or SASL_SSL), or Kavari::builder(…).tls(…),              or use the listener's plaintext port"
        }
        [b'H', b'T', b'T', b'P'] => {
            "HTTP, not Kafka: this is a web server's port, not a Kafka listener's"
        }
        [b'S', b'S', b'H', b'-'] => "SSH, not Kafka: this is not a Kafka listener's port",
        _ => return None,
    };
    Some(format!("{FOREIGN}{speaks}"))
}

/// Why a read failed, in words: a TLS alert from the broker says what it
/// refused (a broker requiring a client certificate sends one after the
/// TLS 1.3 handshake, when it reads the client's empty certificate).
fn read_failure(e: &std::io::Error) -> String {
    #[cfg(feature = "tls")]
    if let Some(rustls::Error::AlertReceived(alert)) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        use rustls::AlertDescription as A;
        let hint = match alert {
            A::CertificateRequired | A::BadCertificate | A::HandshakeFailure => {
                ": the broker requires a client certificate it trusts \
                 (ssl.certificate.location and ssl.key.location)"
            }
            A::UnknownCA => ": the broker does not trust the client certificate's issuer",
            A::CertificateExpired => ": the client certificate has expired",
            _ => "",
        };
        return format!("{TLS_ALERT} {alert:?}{hint}");
    }
    format!("read: {e}")
}

/// Reads responses in order and hands each to the request waiting first;
/// any failure breaks the connection and fails every waiting request.
async fn read_responses(mut read: ReadHalf, shared: Arc<ConnectionState>) {
    let why = loop {
        let mut len = [0u8; 4];
        if let Err(e) = read.read_exact(&mut len).await {
            break read_failure(&e);
        }
        let len = i32::from_be_bytes(len);
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_FRAME && *l >= 4)
        else {
            break foreign_protocol(len.to_be_bytes())
                .unwrap_or_else(|| format!("malformed response frame length {len}"));
        };
        let mut body = vec![0u8; len];
        if let Err(e) = read.read_exact(&mut body).await {
            break read_failure(&e);
        }
        // Every response header begins with the correlation id.
        let correlation_id = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let next = shared.lock().waiting.pop_front();
        match next {
            Some((expected, tx)) if expected == correlation_id => {
                // The caller may have given up already; the stream stays in step.
                let _ = tx.send(Bytes::from(body));
            }
            Some((expected, _)) => {
                break format!(
                    "answer with correlation id {correlation_id} for request {expected}"
                );
            }
            None => break format!("unrequested answer with correlation id {correlation_id}"),
        }
    };
    tracing::debug!(why, "broker connection closed");
    shared.poison(&why);
}

#[cfg(test)]
mod tests {
    #[test]
    fn answers_in_other_protocols_are_named() {
        // A TLS 1.2 alert, as a TLS listener answers a plaintext request.
        let tls = foreign_protocol([0x15, 0x03, 0x03, 0x00]).expect("TLS");
        assert!(tls.contains("KAVARI_SECURITY_PROTOCOL=SSL"), "{tls}");
        let http = foreign_protocol(*b"HTTP").expect("HTTP");
        assert!(http.contains("HTTP, not Kafka"), "{http}");
        // A Kafka frame length, even a large one, is not another protocol.
        assert_eq!(foreign_protocol(1_000_000i32.to_be_bytes()), None);
        assert_eq!(foreign_protocol((-1i32).to_be_bytes()), None);
    }

    #[test]
    fn sasl_sessions_are_renewed_well_before_they_end() {
        let h = Duration::from_secs(3600);
        assert_eq!(renew_within(h), h - h * 15 / 100);
        // A minute before the end when 15 % is less.
        let m = Duration::from_secs(300);
        assert_eq!(renew_within(m), Duration::from_secs(240));
        // Half of a session too short for a minute's margin.
        let s = Duration::from_secs(10);
        assert_eq!(renew_within(s), Duration::from_secs(5));
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A peer that is not a sane broker: it reads the first request and
    /// writes `answer`, then holds the connection open.
    async fn peer(answer: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
            s.read_exact(&mut body).await.unwrap();
            s.write_all(&answer).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        address
    }

    async fn connect(answer: Vec<u8>) -> WireError {
        let address = peer(answer).await;
        Connection::connect(&address, "test", Duration::from_secs(2), Transport::Plain)
            .await
            .expect_err("a broken answer")
    }

    /// Garbage from the network is an error for the caller, never a panic or
    /// a hang, and it says what was wrong.
    #[tokio::test]
    async fn broken_answers_are_errors_not_panics_or_hangs() {
        // A frame length of -1, and one past the 64 MiB cap.
        for len in [-1i32, i32::MAX] {
            let e = connect(len.to_be_bytes().to_vec()).await;
            assert!(e.to_string().contains("frame length"), "{e}");
        }
        // A frame too short to hold a correlation id.
        let e = connect(2i32.to_be_bytes().iter().chain(&[0, 0]).copied().collect()).await;
        assert!(e.to_string().contains("frame length"), "{e}");
        // An answer to some other request (ApiVersions was correlation id 1).
        let mut other = 8i32.to_be_bytes().to_vec();
        other.extend(77i32.to_be_bytes());
        other.extend([0, 0, 0, 0]);
        let e = connect(other).await;
        assert!(e.to_string().contains("correlation id 77"), "{e}");
        // The right correlation id with a body that does not decode.
        let mut garbage = 7i32.to_be_bytes().to_vec();
        garbage.extend(1i32.to_be_bytes());
        garbage.extend([0xff, 0xff, 0xff]);
        let e = connect(garbage).await;
        assert!(matches!(e, WireError::Malformed { .. }), "{e}");
        // Half an answer, then silence: the timeout ends it.
        let e = connect(100i32.to_be_bytes().to_vec()).await;
        assert!(matches!(e, WireError::Timeout { .. }), "{e}");
    }
}
