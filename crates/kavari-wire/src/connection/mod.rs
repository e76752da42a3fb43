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
mod reader;
mod requests;

use reader::{FOREIGN, TLS_ALERT, read_responses};
pub use requests::Request;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::WireError;
use crate::segments::{Segment, Segments};
use crate::stream::{Transport, WriteHalf};

/// The largest response frame accepted (a guard against corrupt lengths).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Requests written but not yet answered, oldest first.
#[derive(Debug, Default)]
struct Awaiting {
    waiting: VecDeque<(i32, oneshot::Sender<Bytes>)>,
}

/// What the connection and its reader task share.
#[derive(Debug, Default)]
struct ConnectionState {
    in_flight: std::sync::Mutex<Awaiting>,
    /// Why the connection broke, once it has (the first reason; set with
    /// `in_flight` locked, so a request is either waiting when it breaks or
    /// refused after; read without the lock).
    broken: std::sync::OnceLock<String>,
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
            let _ = self.broken.set(why.to_string());
            std::mem::take(&mut st.waiting)
        };
        self.open.closed();
        drop(waiting); // their receivers now fail
    }

    fn why_broken(&self) -> String {
        self.broken
            .get()
            .cloned()
            .unwrap_or_else(|| "connection closed".into())
    }

    fn is_broken(&self) -> bool {
        self.broken.get().is_some()
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
        self.shared.is_broken() || self.renew_at.is_some_and(|at| Instant::now() >= at)
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
        if self.shared.is_broken() {
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
            if let Some(why) = self.shared.broken.get() {
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

#[cfg(test)]
mod tests;
