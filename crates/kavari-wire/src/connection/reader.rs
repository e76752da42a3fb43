//! The connection's reader task: responses in order to the requests
//! waiting for them, and why a read failed, in words.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::{ConnectionState, MAX_FRAME};
use crate::stream::ReadHalf;

/// How a connection's broken reason begins when the broker ended the TLS
/// session with an alert.
pub(super) const TLS_ALERT: &str = "the broker ended the TLS session with alert";

/// How a connection's broken reason begins when the broker answered in
/// another protocol than Kafka over the configured transport.
pub(super) const FOREIGN: &str = "answered in ";

/// What a response frame's first four bytes say when they are no Kafka
/// length: another protocol, and the setting that reaches it (a plaintext
/// client reads a TLS listener's alert as a length of about 350 MB).
pub(super) fn foreign_protocol(first: [u8; 4]) -> Option<String> {
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
pub(super) async fn read_responses(mut read: ReadHalf, shared: Arc<ConnectionState>) {
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
        let body = match read_frame(&mut read, len).await {
            Ok(body) => body,
            Err(e) => break read_failure(&e),
        };
        // Every response header begins with the correlation id.
        let correlation_id = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let next = shared.lock().waiting.pop_front();
        match next {
            Some((expected, tx)) if expected == correlation_id => {
                // The caller may have given up already; the stream stays in step.
                let _ = tx.send(body);
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

/// A frame's `len` bytes (bounded by the caller), read into memory that is
/// not zeroed first: a fetch answer of a megabyte was written twice, once
/// with zeros, and the zeros were a tenth of a consumer's work per record.
async fn read_frame(read: &mut ReadHalf, len: usize) -> std::io::Result<Bytes> {
    let mut body = BytesMut::with_capacity(len);
    let mut frame = read.take(len as u64);
    while body.len() < len {
        if frame.read_buf(&mut body).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(body.freeze())
}
