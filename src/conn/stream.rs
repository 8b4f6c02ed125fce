//! What a connection's stream can do beyond reading and writing, one
//! capability a trait (as pingora's `protocols` does), so that each path
//! asks for exactly what it needs and a stream that wraps a socket (TLS,
//! say) offers what it can:
//!
//! - [`SocketOptions`]: the TCP socket under the stream, for its options
//!   (`SO_LINGER` to end with RST, `SO_SNDBUF`). A TLS stream over TCP has
//!   one too: its reset and its send buffer work the same.
//! - [`PlaintextSocket`]: the socket to which the stream's bytes go as they
//!   are, so a path may bypass the stream: `sendfile(2)` straight to it, a
//!   `peek` to wait for data without a buffer. Only a plain TCP socket is
//!   one; through TLS every byte must pass the stream.
//!
//! [`Io`] is a stream with both, each of which may say "none here" (an
//! in-memory stream of the unit tests has neither).

use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The TCP socket under a stream, for socket options.
pub(crate) trait SocketOptions {
    /// The socket's descriptor, if the stream has one.
    fn socket(&self) -> Option<BorrowedFd<'_>> {
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

/// What a connection's stream must be: a TCP socket in production (later
/// a TLS stream too), an in-memory `tokio::io::duplex` in unit tests.
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
}

impl PlaintextSocket for TcpStream {
    fn plaintext(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl SocketOptions for tokio::io::DuplexStream {}
impl PlaintextSocket for tokio::io::DuplexStream {}
