//! Message framing shared by the download handler and both bots.
//!
//! TCP is a byte stream: one read may hold several messages or half of one.
//! A message ends at `\n` (a `\r` before it is stripped too). Because the seed
//! tutorial's clients send a message with no newline and then wait for the
//! answer, bytes that arrived with no newline followed by a quiet gap
//! (`message_gap`) also count as one message. Once a client has ended a
//! message with a newline it is line-based, and the gap no longer applies on
//! that connection: a network pause inside a line does not split it. Memory
//! is bounded by `max_message_bytes` whatever the client sends.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::timeout;

/// Bytes reserved per read; the buffer is allocated only when data arrives.
const READ_CHUNK: usize = 4096;

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// A message grew past `max_message_bytes` (the limit is carried).
    #[error("message longer than {0} bytes")]
    TooLong(usize),
    /// Nothing arrived for the idle timeout (carried).
    #[error("idle for {}", humantime::format_duration(*.0))]
    Idle(Duration),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Splits a byte stream into messages: newline-terminated, or ended by a quiet gap.
#[derive(Debug)]
pub(crate) struct MessageReader {
    buf: BytesMut,
    /// Bytes at the front of `buf` already searched for a newline.
    scanned: usize,
    max_message_bytes: usize,
    message_gap: Duration,
    idle_timeout: Duration,
    eof: bool,
    /// A newline has been seen: messages end at newlines only.
    line_based: bool,
}

impl MessageReader {
    /// A reader with the given limits; allocates nothing until data arrives.
    pub(crate) fn new(
        max_message_bytes: usize,
        message_gap: Duration,
        idle_timeout: Duration,
    ) -> Self {
        MessageReader {
            buf: BytesMut::new(),
            scanned: 0,
            max_message_bytes,
            message_gap,
            idle_timeout,
            eof: false,
            line_based: false,
        }
    }

    /// True when no bytes are buffered (and so no buffer is allocated).
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next message without its line ending; `None` once the peer has
    /// closed and every byte was returned. Cancel-safe: bytes already read
    /// stay buffered if the returned future is dropped.
    pub(crate) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<BytesMut>, FrameError> {
        loop {
            if let Some(found) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
                let end = self.scanned + found;
                self.line_based = true;
                let mut message = self.buf.split_to(end + 1);
                message.truncate(end);
                return self.finish(message).map(Some);
            }
            self.scanned = self.buf.len();
            // One byte of slack for a trailing '\r' whose '\n' is still on its way.
            if self.buf.len() > self.max_message_bytes + 1 {
                return Err(FrameError::TooLong(self.max_message_bytes));
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let message = self.buf.split();
                return self.finish(message).map(Some);
            }

            let wait = if self.buf.is_empty() || self.line_based {
                self.idle_timeout
            } else {
                self.message_gap
            };
            // Never read more than the longest acceptable message plus "\r\n".
            let room = self.max_message_bytes + 2 - self.buf.len();
            self.buf.reserve(READ_CHUNK.min(room));
            let mut limited = (&mut *io).take(room as u64);
            match timeout(wait, limited.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => self.eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(FrameError::Io(e)),
                Err(_) if self.buf.is_empty() || self.line_based => {
                    return Err(FrameError::Idle(self.idle_timeout));
                }
                // The quiet gap: what has arrived is one message.
                Err(_) => {
                    let message = self.buf.split();
                    return self.finish(message).map(Some);
                }
            }
        }
    }

    fn finish(&mut self, mut message: BytesMut) -> Result<BytesMut, FrameError> {
        self.scanned = 0;
        if message.last() == Some(&b'\r') {
            message.truncate(message.len() - 1);
        }
        if self.buf.is_empty() {
            // Nothing is pending: an idle connection keeps no buffer.
            self.buf = BytesMut::new();
        }
        if message.len() > self.max_message_bytes {
            return Err(FrameError::TooLong(self.max_message_bytes));
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const GAP: Duration = Duration::from_millis(50);
    const IDLE: Duration = Duration::from_secs(60);

    fn reader(max: usize) -> MessageReader {
        MessageReader::new(max, GAP, IDLE)
    }

    #[tokio::test]
    async fn splits_lines_and_strips_crlf() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"one\r\ntwo\nthree").await.unwrap();
        drop(client);
        let mut r = reader(100);
        assert_eq!(&r.next(&mut server).await.unwrap().unwrap()[..], b"one");
        assert_eq!(&r.next(&mut server).await.unwrap().unwrap()[..], b"two");
        assert_eq!(&r.next(&mut server).await.unwrap().unwrap()[..], b"three");
        assert!(r.next(&mut server).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_gap_ends_a_message_without_newline() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"hel").await.unwrap();
        let mut r = reader(100);
        let next = r.next(&mut server);
        tokio::pin!(next);
        // Less than the gap: the message is not complete yet.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut next)
                .await
                .is_err()
        );
        client.write_all(b"lo").await.unwrap();
        assert_eq!(&next.await.unwrap().unwrap()[..], b"hello");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_newline_the_gap_no_longer_splits_messages() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut r = reader(100);
        client.write_all(b"first\nwhat is your na").await.unwrap();
        assert_eq!(&r.next(&mut server).await.unwrap().unwrap()[..], b"first");
        let next = r.next(&mut server);
        tokio::pin!(next);
        // Ten gaps of quiet: still one unfinished line.
        assert!(tokio::time::timeout(GAP * 10, &mut next).await.is_err());
        client.write_all(b"me?\n").await.unwrap();
        assert_eq!(&next.await.unwrap().unwrap()[..], b"what is your name?");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_only_when_nothing_buffered() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let mut r = reader(100);
        let err = r.next(&mut server).await.unwrap_err();
        assert!(matches!(err, FrameError::Idle(d) if d == IDLE));
    }

    #[tokio::test]
    async fn too_long_is_an_error_and_memory_stays_bounded() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let chunk = [b'x'; 1000];
            for _ in 0..1000 {
                if client.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let mut r = reader(10_000);
        assert!(matches!(
            r.next(&mut server).await,
            Err(FrameError::TooLong(10_000))
        ));
        // BytesMut grows by doubling: at most twice the limit, whatever was sent.
        assert!(
            r.buf.capacity() <= 2 * (10_000 + 2),
            "buffer grew to {}",
            r.buf.capacity()
        );
        drop(server);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn exact_limit_is_accepted_one_more_is_not() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let mut data = vec![b'a'; 10];
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(&[b'b'; 11]);
        data.push(b'\n');
        client.write_all(&data).await.unwrap();
        let mut r = reader(10);
        assert_eq!(r.next(&mut server).await.unwrap().unwrap().len(), 10);
        assert!(matches!(
            r.next(&mut server).await,
            Err(FrameError::TooLong(10))
        ));
    }
}
