//! A client's connection, plaintext or TLS, as one stream type: the
//! clients read and write it without knowing which. Over TLS, a close
//! without the server's `close_notify` is not an end of stream but an
//! error ([`Truncated`]): what came may be cut short, and only the reader
//! knows whether that matters (an HTTP body has its length; a raw
//! download or a line reply does not). A TLS failure after the handshake
//! (TLS 1.3 refuses a missing client certificate there) is said as the
//! handshake's would be.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::tls::{ClientTls, rustls_error};

/// A connection to a server.
pub(crate) enum Stream {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsConnection>),
}

/// A TLS connection, and what its errors are explained with.
pub(crate) struct TlsConnection {
    stream: TlsStream<TcpStream>,
    tls: ClientTls,
    addr: String,
    plain_hint: &'static str,
}

/// The error of a TLS connection that ended without the server's
/// `close_notify`: what it sent may be truncated.
#[derive(Debug, thiserror::Error)]
#[error("the server closed the connection without TLS close_notify: what it sent may be truncated")]
pub(crate) struct Truncated;

/// True when `e` is a TLS connection's end without `close_notify`.
pub(crate) fn is_truncation(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Truncated>())
}

impl Stream {
    /// Connects to `addr` by `until`, with a TLS handshake (done by
    /// `until` too) when `tls` is given. `plain_hint` says what to try
    /// against a port that does not speak TLS.
    pub(crate) async fn open(
        addr: &str,
        tls: Option<&ClientTls>,
        until: Instant,
        plain_hint: &'static str,
    ) -> io::Result<Stream> {
        let limit = until.saturating_duration_since(Instant::now());
        let tcp = super::connect(addr, limit).await?;
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => {
                let stream = tls.handshake(tcp, addr, until, plain_hint).await?;
                Ok(Stream::Tls(Box::new(TlsConnection {
                    stream,
                    tls: tls.clone(),
                    addr: addr.to_owned(),
                    plain_hint,
                })))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(conn) => match Pin::new(&mut conn.stream).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, Truncated)))
                }
                Poll::Ready(Err(e)) if rustls_error(&e).is_some() => {
                    Poll::Ready(Err(conn.tls.explain(e, &conn.addr, conn.plain_hint)))
                }
                poll => poll,
            },
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(conn) => Pin::new(&mut conn.stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(conn) => Pin::new(&mut conn.stream).poll_flush(cx),
        }
    }

    /// Over TLS: `close_notify`, then the TCP half-close.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(conn) => Pin::new(&mut conn.stream).poll_shutdown(cx),
        }
    }
}
