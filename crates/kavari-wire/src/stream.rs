//! The byte stream under a connection: plain TCP, or TLS over it, split
//! into the halves the connection's writer and reader task own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::WireError;
use crate::sasl::Sasl;

/// How connections to a cluster are secured: TLS or not, SASL or not
/// (Kafka's `security.protocol`: `PLAINTEXT` by default, `SSL` with TLS,
/// `SASL_PLAINTEXT` with SASL, `SASL_SSL` with both).
#[derive(Debug, Clone, Default)]
pub struct Security {
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Tls>,
    sasl: Option<Sasl>,
}

impl Security {
    /// Plain TCP, no authentication.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// TLS on every connection.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: crate::tls::Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// SASL authentication on every connection.
    pub fn with_sasl(mut self, sasl: Sasl) -> Self {
        self.sasl = Some(sasl);
        self
    }

    /// The SASL mechanism and credentials, if any.
    pub fn sasl(&self) -> Option<&Sasl> {
        self.sasl.as_ref()
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

#[cfg(feature = "tls")]
type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The half a connection reads answers from.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Plain(OwnedReadHalf),
    #[cfg(feature = "tls")]
    Tls(tokio::io::ReadHalf<TlsStream>),
}

/// The half a connection writes requests to.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Plain(OwnedWriteHalf),
    #[cfg(feature = "tls")]
    Tls(tokio::io::WriteHalf<TlsStream>),
}

/// Connects to `address` (with `TCP_NODELAY`) and secures the connection
/// as `security` says, all within `timeout`.
pub(crate) async fn open(
    address: &str,
    security: &Security,
    timeout: Duration,
) -> Result<(ReadHalf, WriteHalf), WireError> {
    let conn_err = |detail: String| WireError::Connection {
        address: address.to_string(),
        detail,
    };
    let open = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| conn_err(e.to_string()))?;
        // Requests are written whole; Nagle would only hold the last segment
        // of a large one back for the broker's delayed ACK.
        let _ = tcp.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &security.tls {
            let stream = tls.handshake(address, tcp).await?;
            let (read, write) = tokio::io::split(stream);
            return Ok((ReadHalf::Tls(read), WriteHalf::Tls(write)));
        }
        #[cfg(not(feature = "tls"))]
        let _ = security;
        let (read, write) = tcp.into_split();
        Ok((ReadHalf::Plain(read), WriteHalf::Plain(write)))
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(opened) => opened,
        Err(_) => Err(conn_err(format!("connect timed out after {timeout:?}"))),
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
