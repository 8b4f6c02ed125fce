//! The socket a TLS handshake reads from, with a cap on the bytes it may
//! read until the handshake is done.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP socket whose reads stop with an error after a number of bytes,
/// until the cap is lifted: what a TLS handshake reads from. rustls holds
/// a handshake message of up to 64 KiB until it is whole, so without a
/// cap every unauthenticated client could make the server hold that much
/// until `handshake_timeout`, where a real ClientHello is a few KiB.
#[derive(Debug)]
pub struct Capped {
    tcp: TcpStream,
    /// Bytes still allowed (`None`: no cap).
    left: Option<usize>,
}

/// The error a capped read ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client sent more than a handshake needs")]
pub struct CapReached;

impl Capped {
    /// `tcp`, of which at most `cap` bytes will be read.
    pub fn new(tcp: TcpStream, cap: usize) -> Capped {
        Capped {
            tcp,
            left: Some(cap),
        }
    }

    /// Lifts the cap: the handshake is done.
    pub fn uncap(&mut self) {
        self.left = None;
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(left) = this.left else {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        };
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, CapReached)));
        }
        // Into the part of `buf` the cap allows (zeroed first: the crate
        // has no unsafe code, and this is the handshake's few reads only).
        let room = buf.remaining().min(left);
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        let polled = Pin::new(&mut this.tcp).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = polled {
            buf.advance(n);
            this.left = Some(left - n);
        }
        polled
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
