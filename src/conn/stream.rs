//! What a connection's stream can do beyond reading and writing, one
//! capability a trait (as pingora's `protocols` does), so that each path
//! asks for exactly what it needs and a stream that wraps a socket (TLS,
//! say) offers what it can:
//!
//! - [`SocketOptions`]: the TCP socket under the stream, for its options
//!   (`SO_LINGER` to end with RST, `SO_SNDBUF`, `TCP_NOTSENT_LOWAT`) and a
//!   wait on its send queue. A TLS stream over TCP has one too: its reset,
//!   its send buffer and its queue work the same.
//! - [`PlaintextSocket`]: the socket to which the stream's bytes go as they
//!   are, so a path may bypass the stream: `sendfile(2)` straight to it, a
//!   `peek` to wait for data without a buffer. Only a plain TCP socket is
//!   one; through TLS every byte must pass the stream.
//!
//! [`Io`] is a stream with both, each of which may say "none here" (an
//! in-memory stream of the unit tests has neither). [`ServerStream`] is
//! what an accepted connection is: TCP, or TLS over TCP ([`Capped`]: the
//! bytes a handshake may read are bounded).

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::tls::capped::Capped;

/// The TCP socket under a stream, for socket options.
pub(crate) trait SocketOptions {
    /// The socket's descriptor, if the stream has one.
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// The socket itself, for a wait on its readiness that the stream's
    /// reads and writes do not make (that its send queue is taken).
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

/// A stream whose bytes go to its socket unchanged, which a path may then
/// use directly (sendfile, peek).
pub(crate) trait PlaintextSocket {
    /// The socket, if every byte written to it is a byte of the stream.
    fn plaintext(&self) -> Option<&TcpStream> {
        None
    }
}

/// What a connection's stream must be: a [`ServerStream`] in production,
/// an in-memory `tokio::io::duplex` in unit tests.
pub(crate) trait Io:
    AsyncRead + AsyncWrite + Unpin + Send + Sync + SocketOptions + PlaintextSocket
{
}

impl<S> Io for S where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + SocketOptions + PlaintextSocket
{
}

impl SocketOptions for TcpStream {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }

    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl PlaintextSocket for TcpStream {
    fn plaintext(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl SocketOptions for tokio::io::DuplexStream {}
impl PlaintextSocket for tokio::io::DuplexStream {}

/// An accepted connection's stream: plaintext TCP, or TLS over TCP (boxed:
/// a TLS session's state is tens of KiB, which a plaintext connection
/// should not carry).
#[derive(Debug)]
pub(crate) enum ServerStream {
    /// The socket itself.
    Plain(TcpStream),
    /// TLS over the socket, after its handshake.
    Tls(Box<TlsStream<Capped>>),
}

impl SocketOptions for ServerStream {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.tcp().map(AsFd::as_fd)
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ServerStream::Plain(tcp) => Some(tcp),
            ServerStream::Tls(tls) => Some(tls.get_ref().0.tcp()),
        }
    }
}

impl PlaintextSocket for ServerStream {
    fn plaintext(&self) -> Option<&TcpStream> {
        match self {
            ServerStream::Plain(tcp) => Some(tcp),
            ServerStream::Tls(_) => None,
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            // A client that closes without TLS's close_notify has ended
            // its requests: to a server that reads requests it is an end of
            // stream. (The truncation close_notify guards against matters
            // to a reader of responses; our clients do check it.)
            ServerStream::Tls(tls) => match Pin::new(tls.as_mut()).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(()))
                }
                poll => poll,
            },
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            ServerStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            ServerStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(tcp) => tcp.is_write_vectored(),
            ServerStream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            ServerStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            ServerStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
