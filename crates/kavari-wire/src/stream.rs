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

/// What carries a connection's bytes: plain TCP, or TLS over it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport<'a> {
    Plain,
    #[cfg(feature = "tls")]
    Tls(&'a crate::tls::Tls),
    #[cfg(not(feature = "tls"))]
    #[allow(dead_code)]
    Never(std::marker::PhantomData<&'a ()>),
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

/// Connects to `address` (with `TCP_NODELAY`) over `transport`, all within
/// `timeout`.
pub(crate) async fn open(
    address: &str,
    transport: Transport<'_>,
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
        match transport {
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => {
                let stream = tls.handshake(address, tcp).await?;
                let (read, write) = tokio::io::split(stream);
                Ok((ReadHalf::Tls(read), WriteHalf::Tls(write)))
            }
            _ => {
                let (read, write) = tcp.into_split();
                Ok((ReadHalf::Plain(read), WriteHalf::Plain(write)))
            }
        }
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
