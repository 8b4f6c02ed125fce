//! One client's connection as a handler sees it: the metered byte stream,
//! who the client is, its limits, the shutdown signal, and the helpers every
//! handler shares (bounded writes, framed reads raced against shutdown, a
//! close that does not lose the last reply).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::config::ListenerConfig;
use crate::framing::MessageReader;
use crate::handler::HandlerError;
use crate::text::TextEncoding;

/// After the last reply, how long (and how much) unread client input is
/// drained before the socket is dropped. Closing a socket with unread input
/// makes the kernel send RST, which can destroy the reply in flight.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 256 * 1024;

/// What a connection's stream must be: a TCP socket in production, an
/// in-memory `tokio::io::duplex` in unit tests. A TCP socket also offers the
/// fast paths: waiting for data without a buffer, and zero-copy file sends.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {
    /// The TCP socket under this stream, if it is one.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Io for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Io for tokio::io::DuplexStream {}

/// The per-listener settings a connection needs.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The listener's name.
    pub listener: Arc<str>,
    /// Close after this long without input; also bounds a stalled write.
    pub idle_timeout: Duration,
    /// Longest message a framed handler accepts.
    pub max_message_bytes: usize,
    /// Quiet gap that ends a message without newline.
    pub message_gap: Duration,
    /// Encoding of text on this listener.
    pub encoding: TextEncoding,
}

impl ConnectionSettings {
    /// The settings of a listener's config.
    pub fn from_config(config: &ListenerConfig) -> Self {
        ConnectionSettings {
            listener: Arc::from(config.name.as_str()),
            idle_timeout: config.idle_timeout,
            max_message_bytes: config.max_message_bytes,
            message_gap: config.message_gap,
            encoding: config.encoding,
        }
    }
}

/// What [`Connection::next_message`] saw.
#[derive(Debug)]
pub enum Incoming {
    /// A complete message, without its line ending.
    Message(BytesMut),
    /// The client closed its side and every message was returned.
    Closed,
    /// The server is shutting down.
    Shutdown,
}

/// A client connection handed to a handler.
pub struct Connection<S> {
    stream: Metered<S>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's settings.
    pub settings: ConnectionSettings,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl<S: Io> Connection<S> {
    /// Wraps an accepted stream.
    pub fn new(
        stream: S,
        peer: SocketAddr,
        settings: ConnectionSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Connection {
            stream: Metered::new(stream),
            peer,
            settings,
            shutdown,
        }
    }

    /// The byte stream, for handlers that do their own reads.
    pub fn stream(&mut self) -> &mut Metered<S> {
        &mut self.stream
    }

    /// A framed reader with this listener's limits.
    pub fn message_reader(&self) -> MessageReader {
        MessageReader::new(
            self.settings.max_message_bytes,
            self.settings.message_gap,
            self.settings.idle_timeout,
        )
    }

    /// The next message, or why there is none; shutdown wins over a read.
    pub async fn next_message(
        &mut self,
        reader: &mut MessageReader,
    ) -> Result<Incoming, HandlerError> {
        if reader.is_empty() {
            // Wait for data before the reader allocates its buffer.
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(Incoming::Shutdown),
                ready = self.readable() => ready?,
            }
        }
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Ok(Incoming::Shutdown),
            read = reader.next(&mut self.stream) => Ok(match read? {
                Some(message) => Incoming::Message(message),
                None => Incoming::Closed,
            }),
        }
    }

    /// Writes all of `bytes`; a client that reads nothing for the idle timeout
    /// fails the write instead of holding the connection forever.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), HandlerError> {
        let limit = self.settings.idle_timeout;
        match timeout(limit, self.stream.write_all(bytes)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(HandlerError::WriteStalled(limit)),
        }
    }

    /// Writes `text` in the listener's encoding, followed by "\n".
    pub async fn send_line(&mut self, text: &str) -> Result<(), HandlerError> {
        let encoded = self.settings.encoding.encode(text);
        let mut line = Vec::with_capacity(encoded.len() + 1);
        line.extend_from_slice(&encoded);
        line.push(b'\n');
        self.send(&line).await
    }

    /// Sends FIN after everything written, then drains (bounded in time and
    /// bytes) what the client still sends, so the kernel does not answer
    /// unread input with RST and destroy the last reply.
    pub async fn close(&mut self) {
        let deadline = Instant::now() + LINGER_TIME;
        if timeout_at(deadline, self.stream.shutdown()).await.is_err() {
            return;
        }
        let mut sink = tokio::io::sink();
        let mut unread = (&mut self.stream.inner).take(LINGER_BYTES);
        let _ = timeout_at(deadline, tokio::io::copy(&mut unread, &mut sink)).await;
    }

    /// Waits until the client has sent something (or closed), without
    /// holding a buffer meanwhile; bounded by the idle timeout. In-memory
    /// streams return at once.
    pub async fn readable(&self) -> Result<(), HandlerError> {
        let Some(tcp) = self.stream.inner.tcp() else {
            return Ok(());
        };
        let limit = self.settings.idle_timeout;
        // A one-byte peek, not `readable()`: tokio reports a new socket
        // readable before anything arrived, and only a real read (or peek)
        // that would block clears that.
        let mut probe = [0u8; 1];
        match timeout(limit, tcp.peek(&mut probe)).await {
            Ok(peeked) => peeked.map(drop).map_err(HandlerError::from),
            Err(_) => Err(HandlerError::Idle(limit)),
        }
    }

    /// Sends the first `len` bytes of `file`, at most `chunk` bytes a call.
    /// On a TCP socket this is sendfile(2): the bytes go from the page cache
    /// to the socket without a copy through user space, driven by the
    /// socket's readiness, so a slow client never holds a thread. Elsewhere
    /// the file is read into a buffer. Stops early if the file shrinks; a
    /// client that reads nothing for the idle timeout fails the send.
    pub async fn send_file(
        &mut self,
        file: std::fs::File,
        len: u64,
        chunk: usize,
    ) -> Result<u64, HandlerError> {
        let limit = self.settings.idle_timeout;
        let chunk = chunk.max(1);
        let mut offset = 0u64;
        if let Some(tcp) = self.stream.inner.tcp() {
            while offset < len {
                let want = usize::try_from(len - offset).map_or(chunk, |left| left.min(chunk));
                let send = async {
                    loop {
                        tcp.writable().await?;
                        let sent = tcp.try_io(Interest::WRITABLE, || {
                            rustix::fs::sendfile(tcp, &file, Some(&mut offset), want)
                                .map_err(io::Error::from)
                        });
                        match sent {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            other => return other,
                        }
                    }
                };
                let sent = timeout(limit, send)
                    .await
                    .map_err(|_| HandlerError::WriteStalled(limit))??;
                if sent == 0 {
                    break;
                }
                self.stream.bytes_out += sent as u64;
            }
            return Ok(offset);
        }
        let mut file = tokio::fs::File::from_std(file).take(len);
        let mut buf = vec![0u8; usize::try_from(len).map_or(chunk, |len| len.clamp(1, chunk))];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(offset);
            }
            self.send(&buf[..n]).await?;
            offset += n as u64;
        }
    }

    /// Bytes read from and written to the client so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.stream.bytes_in, self.stream.bytes_out)
    }
}

/// A stream that counts the bytes read and written through it.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    bytes_in: u64,
    bytes_out: u64,
}

impl<S> Metered<S> {
    fn new(inner: S) -> Self {
        Metered {
            inner,
            bytes_in: 0,
            bytes_out: 0,
        }
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
        this.bytes_in += (buf.filled().len() - before) as u64;
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
            this.bytes_out += n as u64;
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

/// Settings for handler unit tests: generous timeouts, 1 KiB messages, UTF-8.
#[cfg(test)]
pub(crate) fn test_settings() -> ConnectionSettings {
    ConnectionSettings {
        listener: "test".into(),
        idle_timeout: Duration::from_secs(30),
        max_message_bytes: 1024,
        message_gap: Duration::from_millis(50),
        encoding: TextEncoding::Utf8,
    }
}
