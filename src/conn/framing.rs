//! Message framing shared by the download handler and both bots.
//!
//! TCP is a byte stream: one read may hold several messages or half of one.
//! A message ends at `\n` (a `\r` before it is stripped too). Because the seed
//! tutorial's clients send a message with no newline and then wait for the
//! answer, bytes that arrived with no newline followed by a quiet gap
//! (`message_gap`) also count as one message. Once a client has ended a
//! message with a newline it is line-based, and the gap no longer applies on
//! that connection: a network pause inside a line does not split it. Memory
//! is bounded by `max_message_bytes` whatever the client sends, and time by
//! `message_timeout` from a message's first byte to its end (drip-feeding a
//! line does not keep a connection), and by an optional deadline of the
//! caller's (the connection's first message).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::Instant;

use super::timer::{ConnTimer, Deadline};

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
    /// A message was not complete within its time (the limit is carried).
    #[error("no complete message within {}", humantime::format_duration(*.0))]
    TooSlow(Duration),
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
    message_timeout: Duration,
    /// When the first byte of the message being read arrived.
    message_started: Option<Instant>,
    /// When the first byte of the last message returned arrived, if it
    /// came before the read that ended the message.
    returned_started: Option<Instant>,
    eof: bool,
    /// A newline has been seen: messages end at newlines only.
    line_based: bool,
    /// The last message returned ended at a newline (not at a quiet gap or
    /// the peer's close).
    ended_at_newline: bool,
}

/// Limits of a [`MessageReader`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameLimits {
    /// Longest message.
    pub max_message_bytes: usize,
    /// Quiet gap that ends a message without newline.
    pub message_gap: Duration,
    /// Longest wait for the next byte while no message is under way (or
    /// inside a line, once the connection is line-based).
    pub idle_timeout: Duration,
    /// Longest time from a message's first byte to its end.
    pub message_timeout: Duration,
}

impl MessageReader {
    /// A reader with the given limits; allocates nothing until data arrives.
    pub(crate) fn new(limits: FrameLimits) -> Self {
        MessageReader {
            buf: BytesMut::new(),
            scanned: 0,
            max_message_bytes: limits.max_message_bytes,
            message_gap: limits.message_gap,
            idle_timeout: limits.idle_timeout,
            message_timeout: limits.message_timeout,
            message_started: None,
            returned_started: None,
            eof: false,
            line_based: false,
            ended_at_newline: false,
        }
    }

    /// Takes the bytes buffered past the last message.
    pub(crate) fn take_buffered(&mut self) -> BytesMut {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// True when the last message returned ended at a newline; false when
    /// a quiet gap or the peer's close ended it (its last line may go on in
    /// the bytes still to come).
    pub(crate) fn ended_at_newline(&self) -> bool {
        self.ended_at_newline
    }

    /// When the first byte of the last message returned arrived; `None`
    /// when the message came whole with the read that returned it.
    pub(crate) fn returned_started(&self) -> Option<Instant> {
        self.returned_started
    }

    /// True when no bytes are buffered (and so no buffer is allocated).
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// True when a whole line is already buffered (a client that sends
    /// before its replies come): [`MessageReader::next`] returns it
    /// without reading. The bytes searched in vain are not searched again.
    pub(crate) fn line_buffered(&mut self) -> bool {
        if memchr::memchr(b'\n', &self.buf[self.scanned..]).is_some() {
            return true;
        }
        self.scanned = self.buf.len();
        false
    }

    /// The next message without its line ending; `None` once the peer has
    /// closed and every byte was returned. `deadline` (when, and the limit
    /// it stands for) also bounds it. Its waits are on the connection's
    /// `timer`. Cancel-safe: bytes already read stay buffered if the
    /// returned future is dropped.
    pub(crate) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        deadline: Option<(Instant, Duration)>,
        timer: &mut ConnTimer,
    ) -> Result<Option<BytesMut>, FrameError> {
        loop {
            if let Some(found) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
                let end = self.scanned + found;
                self.line_based = true;
                self.ended_at_newline = true;
                // A buffer that ends with this line is taken whole: no
                // second handle on it to count (`split_to`'s shared form).
                let mut message = if end + 1 == self.buf.len() {
                    std::mem::take(&mut self.buf)
                } else {
                    self.buf.split_to(end + 1)
                };
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
                self.ended_at_newline = false;
                return self.finish(message).map(Some);
            }

            let was_empty = self.buf.is_empty();
            if !was_empty && self.message_started.is_none() {
                // The first byte came with the read that just returned.
                self.message_started = Some(Instant::now());
            }
            let wait = if was_empty || self.line_based {
                self.idle_timeout
            } else {
                self.message_gap
            };
            // The earlier of the message's own deadline and the caller's.
            let message_deadline = self
                .message_started
                .map(|started| (started + self.message_timeout, self.message_timeout));
            let deadline = match (message_deadline, deadline) {
                (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
            // Never read more than the longest acceptable message plus "\r\n".
            let room = self.max_message_bytes + 2 - self.buf.len();
            // The wait ends at the message's (or the caller's) deadline,
            // the read's own limit (`wait`) if that comes first.
            let now = Instant::now();
            let (until, cut_at) = match deadline {
                Some((at, limit)) if at <= now + wait => (at, Some(limit)),
                _ => (now + wait, None),
            };
            let read = {
                let mut read = std::pin::pin!(self.read_more(io, room));
                let mut deadline = Deadline::new(timer, until);
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(read) = read.as_mut().poll(cx) {
                        return Poll::Ready(Ok(read));
                    }
                    deadline.poll_elapsed(cx).map(Err)
                })
                .await
            };
            match read {
                Ok(Ok(0)) => self.eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(FrameError::Io(e)),
                Err(()) if let Some(limit) = cut_at => return Err(FrameError::TooSlow(limit)),
                Err(()) if self.buf.is_empty() || self.line_based => {
                    return Err(FrameError::Idle(self.idle_timeout));
                }
                // The quiet gap: what has arrived is one message.
                Err(()) => {
                    let message = self.buf.split();
                    self.ended_at_newline = false;
                    return self.finish(message).map(Some);
                }
            }
        }
    }

    /// One read of at most `room` bytes (and [`READ_CHUNK`]) appended to the
    /// buffer. Into an empty buffer the read goes through a buffer on the
    /// stack, copied into one of the size that came: a connection waiting
    /// for its next message holds no buffer (no peek before the read), and
    /// a message that came whole costs one allocation of its size.
    async fn read_more<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        room: usize,
    ) -> io::Result<usize> {
        if !self.buf.is_empty() {
            self.buf.reserve(READ_CHUNK.min(room));
            return (&mut *io).take(room as u64).read_buf(&mut self.buf).await;
        }
        let buf = &mut self.buf;
        std::future::poll_fn(|cx| read_into_empty(Pin::new(&mut *io), cx, buf, room)).await
    }

    fn finish(&mut self, mut message: BytesMut) -> Result<BytesMut, FrameError> {
        self.scanned = 0;
        self.returned_started = self.message_started;
        if message.last() == Some(&b'\r') {
            message.truncate(message.len() - 1);
        }
        if self.buf.is_empty() {
            // Nothing is pending: an idle connection keeps no buffer.
            self.buf = BytesMut::new();
            self.message_started = None;
        } else {
            // What is left is the start of the next message.
            self.message_started = Some(Instant::now());
        }
        if message.len() > self.max_message_bytes {
            return Err(FrameError::TooLong(self.max_message_bytes));
        }
        Ok(message)
    }
}

/// See [`MessageReader::read_more`]: one read through a stack buffer,
/// whose bytes are copied into `buf` (empty).
fn read_into_empty<R: AsyncRead>(
    io: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> Poll<io::Result<usize>> {
    let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read = ReadBuf::uninit(&mut chunk[..READ_CHUNK.min(room)]);
    ready!(io.poll_read(cx, &mut read))?;
    *buf = BytesMut::from(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const GAP: Duration = Duration::from_millis(50);
    const IDLE: Duration = Duration::from_secs(60);
    const WHOLE: Duration = Duration::from_secs(30);

    fn reader(max: usize) -> MessageReader {
        MessageReader::new(FrameLimits {
            max_message_bytes: max,
            message_gap: GAP,
            idle_timeout: IDLE,
            message_timeout: WHOLE,
        })
    }

    #[tokio::test]
    async fn splits_lines_and_strips_crlf() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"one\r\ntwo\nthree").await.unwrap();
        drop(client);
        let mut r = reader(100);
        assert_eq!(
            &r.next(&mut server, None, &mut None).await.unwrap().unwrap()[..],
            b"one"
        );
        assert_eq!(
            &r.next(&mut server, None, &mut None).await.unwrap().unwrap()[..],
            b"two"
        );
        assert_eq!(
            &r.next(&mut server, None, &mut None).await.unwrap().unwrap()[..],
            b"three"
        );
        assert!(
            r.next(&mut server, None, &mut None)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_gap_ends_a_message_without_newline() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"hel").await.unwrap();
        let mut r = reader(100);
        let mut timer = None;
        let next = r.next(&mut server, None, &mut timer);
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
        assert_eq!(
            &r.next(&mut server, None, &mut None).await.unwrap().unwrap()[..],
            b"first"
        );
        let mut timer = None;
        let next = r.next(&mut server, None, &mut timer);
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
        let err = r.next(&mut server, None, &mut None).await.unwrap_err();
        assert!(matches!(err, FrameError::Idle(d) if d == IDLE));
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_dripped_byte_by_byte_is_cut_at_the_message_timeout() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut r = reader(100);
        client.write_all(b"first\n").await.unwrap();
        assert_eq!(
            &r.next(&mut server, None, &mut None).await.unwrap().unwrap()[..],
            b"first"
        );
        let dripper = tokio::spawn(async move {
            // A byte every 10 s, each well within the idle timeout.
            for _ in 0..10 {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            client
        });
        let started = Instant::now();
        let err = r.next(&mut server, None, &mut None).await.unwrap_err();
        assert!(matches!(err, FrameError::TooSlow(d) if d == WHOLE), "{err}");
        assert!(started.elapsed() <= WHOLE + Duration::from_millis(1));
        drop(dripper.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_deadline_bounds_a_message_too() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let mut r = reader(100);
        let first = Duration::from_secs(10);
        let deadline = Some((Instant::now() + first, first));
        let err = r.next(&mut server, deadline, &mut None).await.unwrap_err();
        assert!(matches!(err, FrameError::TooSlow(d) if d == first), "{err}");
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
            r.next(&mut server, None, &mut None).await,
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

    /// A stream that hands out its bytes in the given pieces, one per read,
    /// never waiting (so the quiet gap never ends a message).
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if let Some(mut piece) = self.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.push_front(piece.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// The messages of `stream` cut into pieces at `cuts`.
    fn messages(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = std::collections::VecDeque::new();
        let mut from = 0;
        for point in points.into_iter().chain([stream.len()]) {
            // An empty read is the end of the stream: no empty pieces.
            if point > from {
                pieces.push_back(stream[from..point].to_vec());
            }
            from = point;
        }
        let mut io = Pieces(pieces);
        let mut r = reader(1 << 20);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut out = Vec::new();
        while let Some(message) = runtime.block_on(r.next(&mut io, None, &mut None)).unwrap() {
            out.push(message.to_vec());
        }
        out
    }

    proptest::proptest! {
        /// However the stream is split into reads, the messages are the same:
        /// its lines, without their line endings.
        #[test]
        fn splitting_the_stream_anywhere_gives_the_same_messages(
            stream in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::prelude::any::<u8>(),
                    1 => proptest::strategy::Just(b'\n'),
                    1 => proptest::strategy::Just(b'\r'),
                ],
                0..400,
            ),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..20),
        ) {
            let expected: Vec<Vec<u8>> = {
                let mut lines: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
                if lines.last().is_some_and(|l| l.is_empty()) {
                    lines.pop();
                }
                lines
                    .into_iter()
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                    .collect()
            };
            proptest::prop_assert_eq!(messages(&stream, &cuts), expected);
        }
    }

    #[tokio::test]
    async fn a_buffered_line_is_seen_before_it_is_read() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut r = reader(100);
        assert!(!r.line_buffered(), "nothing read yet");
        client.write_all(b"one\ntwo\nthr").await.unwrap();
        assert_eq!(
            &r.next(&mut server, None, &mut None).await.unwrap().unwrap()[..],
            b"one"
        );
        assert!(r.line_buffered(), "\"two\" is buffered");
        assert_eq!(
            &r.next(&mut server, None, &mut None).await.unwrap().unwrap()[..],
            b"two"
        );
        // "thr" is no line yet, asked twice (the second search starts past it).
        assert!(!r.line_buffered());
        assert!(!r.line_buffered());
        client.write_all(b"ee\n").await.unwrap();
        assert_eq!(
            &r.next(&mut server, None, &mut None).await.unwrap().unwrap()[..],
            b"three"
        );
        assert!(!r.line_buffered());
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
        assert_eq!(
            r.next(&mut server, None, &mut None)
                .await
                .unwrap()
                .unwrap()
                .len(),
            10
        );
        assert!(matches!(
            r.next(&mut server, None, &mut None).await,
            Err(FrameError::TooLong(10))
        ));
    }
}
