//! A byte stream that counts what is read and written through it: the
//! connection's totals come from here, at no cost beyond an addition.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that counts the bytes read and written through it.
#[derive(Debug)]
pub(super) struct Metered<S> {
    inner: S,
    received: u64,
    sent: u64,
}

impl<S> Metered<S> {
    pub(super) fn new(inner: S) -> Self {
        Metered {
            inner,
            received: 0,
            sent: 0,
        }
    }

    /// The stream itself (its reads and writes are not counted).
    pub(super) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Counts bytes written past this wrapper (sendfile).
    pub(super) fn count_sent(&mut self, bytes: u64) {
        self.sent += bytes;
    }

    /// Bytes received and sent so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.received, self.sent)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.received += (buf.filled().len() - before) as u64;
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.sent += n as u64;
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
