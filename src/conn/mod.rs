//! The connection layer: one client's connection as a handler sees it.
//!
//! A handler never touches the socket. It gets bounded operations only:
//! wait until readable, read a chunk, read a message, write, send a file.
//! Each of them enforces the idle timeout, and the reads race the server's
//! shutdown (and a reload's verdict, [`Signals`]), here and nowhere
//! else. The connection also counts its bytes and reports its totals to the
//! listener's metrics once, when it is dropped. A connection that is not
//! closed cleanly (a write cut short, its task aborted or panicking) ends
//! with RST, never FIN, so that an incomplete reply never looks complete.
//! It knows no config types: a listener hands it [`Settings`] and signals.

pub(crate) mod access;
mod file_send;
mod framing;
mod metered;
pub(crate) mod proxy_header;
pub(crate) mod send_budget;
pub(crate) mod signals;
mod stream;
pub(crate) mod text;
mod timer;
mod unsent;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
#[cfg(test)]
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

pub(crate) use framing::{FrameError, FrameLimits, MessageReader};
pub(crate) use signals::Signals;
pub(crate) use stream::{Io, ServerStream};

use access::{Outcome, ResponseRecord};
use file_send::{SendDeadlines, SendReport};
use metered::Metered;
use send_budget::{SendBuffer, SendGrant};
use text::TextEncoding;
use timer::ConnTimer;

use crate::metrics::{CloseReason, ListenerMetrics};

/// After the last reply, how long (and how much) unread client input is
/// drained before the socket is dropped. Closing a socket with unread input
/// makes the kernel send RST, which can destroy the reply in flight.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 256 * 1024;
/// The read size of that drain.
const LINGER_SCRATCH: usize = 4096;

/// The per-listener settings a connection needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    /// The listener's name.
    pub listener: Arc<str>,
    /// Close after this long without input; also bounds a stalled write.
    pub idle_timeout: Duration,
    /// Longest message a framed handler accepts.
    pub max_message_bytes: usize,
    /// Quiet gap that ends a message without newline.
    pub message_gap: Duration,
    /// The first message (echo: the first bytes) must arrive within this
    /// long of the connect.
    pub first_message_timeout: Duration,
    /// A message must be complete within this long of its first byte.
    pub message_timeout: Duration,
    /// Encoding of text on this listener.
    pub encoding: TextEncoding,
}

/// The slowest a client may read a file: after `grace`, the bytes sent must
/// keep up with `bytes_per_second` on average since the send began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MinRate {
    /// Bytes a second, on average.
    pub bytes_per_second: u64,
    /// Time before the rate counts (a connection's start is slow).
    pub grace: Duration,
}

impl MinRate {
    /// When `sent` bytes stop being enough: `started` + grace + the time
    /// those bytes take at the minimum rate.
    /// Any rate and any count are valid: the arithmetic is wide, and a
    /// deadline past what an `Instant` holds is a day after the start
    /// (later than any send is allowed to stall anyway).
    fn deadline(self, started: Instant, sent: u64) -> Instant {
        let rate = self.bytes_per_second.max(1);
        let nanos = u128::from(sent % rate) * 1_000_000_000 / u128::from(rate);
        let earned = Duration::from_secs(sent / rate).saturating_add(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ));
        started
            .checked_add(self.grace.saturating_add(earned))
            .unwrap_or_else(|| started + Duration::from_secs(86_400))
    }
}

/// How a wait for the client to take what was sent ended
/// ([`Connection::sent_taken_by`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentTaken {
    /// Nothing is left unsent.
    Taken,
    /// Its time came first.
    NotBy,
    /// The shutdown, or a reload's retirement of the route, came first.
    Ended,
}

/// How a wait for a protocol's next request ended
/// ([`Connection::next_request`]).
#[derive(Debug)]
pub(crate) enum NextRequest {
    /// The client sent something (or closed), or the server shuts down,
    /// as a read says it.
    Came(Result<Incoming<()>, ConnError>),
    /// The route was retired by a reload: the connection's rules are for
    /// new connections.
    Retired,
    /// The wait's wake-up time came first.
    Woken,
}

/// Why a connection operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// The client sent nothing for the idle timeout.
    #[error("idle timeout ({})", humantime::format_duration(*.0))]
    Idle(Duration),
    /// A message was longer than `max_message_bytes`.
    #[error("message longer than {0} bytes")]
    MessageTooLong(usize),
    /// The client read nothing for the idle timeout while the server wrote.
    #[error("client stopped reading for {}", humantime::format_duration(*.0))]
    WriteStalled(Duration),
    /// A message (or the first one) was not complete in time.
    #[error("no complete message within {}", humantime::format_duration(*.0))]
    TooSlow(Duration),
    /// The client read a file more slowly than the minimum rate (bytes a
    /// second, carried).
    #[error("client read slower than {0} bytes a second")]
    ReaderTooSlow(u64),
    /// The client left a response's end unread for the idle timeout (no
    /// minimum rate applied), holding it in the kernel: a close, after
    /// which the kernel resets a client that still does not read.
    #[error("client left a response unread for {}", humantime::format_duration(*.0))]
    ResponseUnread(Duration),
    /// A file's disk did not deliver the next bytes before the send's
    /// deadline (or every slot for reading off the workers stayed taken).
    #[error("the file's disk did not deliver in time")]
    DiskStalled,
    /// A reload changed the access lists, and they no longer admit the
    /// client (see [`signals::DENIED`]).
    #[error("access denied by the reloaded config")]
    Denied,
    /// A reload replaced the listener's settings before the client sent
    /// its first byte: the listener serves it under the new ones instead
    /// (see [`Connection::reroute`]); never a client's error.
    #[error("rerouted to the reloaded config")]
    Rerouted,
    /// The socket or a file failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl From<FrameError> for ConnError {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::TooLong(limit) => ConnError::MessageTooLong(limit),
            FrameError::Idle(after) => ConnError::Idle(after),
            FrameError::TooSlow(limit) => ConnError::TooSlow(limit),
            FrameError::Io(e) => ConnError::Io(e),
        }
    }
}

/// What a read saw.
#[derive(Debug)]
pub(crate) enum Incoming<T> {
    /// Data: a message without its line ending, a chunk's length, or `()`
    /// for "something arrived".
    Data(T),
    /// The client closed its side and every byte was returned.
    Closed,
    /// The server is shutting down.
    Shutdown,
}

/// A client connection handed to a handler.
pub(crate) struct Connection<S: Io> {
    stream: Metered<S>,
    reader: MessageReader,
    peer: SocketAddr,
    settings: Arc<Settings>,
    metrics: Arc<ListenerMetrics>,
    opened: Instant,
    /// The one timer of the connection's waits (see [`timer`]).
    timer: ConnTimer,
    /// Until the first message (echo: the first bytes) has arrived: when it
    /// must have (the settings' `first_message_timeout` after the accept).
    first_message_by: Option<Instant>,
    close_reason: CloseReason,
    /// The shutdown and a reload's verdicts, fired by the listener.
    signals: Signals,
    /// True while a write is under way, and after one failed or was cut
    /// short: the client holds an incomplete reply, so the end is a reset.
    writing: bool,
    /// True once FIN went out after the last reply ([`Connection::close`]).
    /// A connection dropped before that ends with RST.
    closed_cleanly: bool,
    /// True once a read returned the client's end (its FIN): nothing more
    /// can come from it.
    peer_closed: bool,
    /// The response being sent, logged by `Drop` if the task is dropped
    /// before the handler logs it. Boxed: only an HTTP response logged at
    /// `info` has one, and every connection would carry its room.
    response_in_flight: Option<Box<ResponseRecord>>,
    /// A sendfile under way: its bytes are counted when it ends, or by
    /// `Drop` if the task is dropped first.
    sendfile_progress: Option<SendfileProgress>,
    /// Send-buffer growth this connection's file sends earned from the
    /// listener's budget, kept while the socket may hold what it paid for:
    /// given back when the connection is dropped.
    send_grant: Option<SendGrant>,
}

/// Where a sendfile started, and how far it got.
#[derive(Debug, Clone, Copy)]
struct SendfileProgress {
    start: u64,
    offset: u64,
}

impl<S: Io> Connection<S> {
    /// Wraps an accepted stream; counts it as opened.
    pub(crate) fn new(
        stream: S,
        peer: SocketAddr,
        settings: Arc<Settings>,
        metrics: Arc<ListenerMetrics>,
        signals: Signals,
    ) -> Self {
        metrics.opened();
        let opened = Instant::now();
        Connection {
            stream: Metered::new(stream),
            reader: MessageReader::new(FrameLimits {
                max_message_bytes: settings.max_message_bytes,
                message_gap: settings.message_gap,
                idle_timeout: settings.idle_timeout,
                message_timeout: settings.message_timeout,
            }),
            peer,
            first_message_by: Some(opened + settings.first_message_timeout),
            settings,
            metrics,
            opened,
            timer: None,
            close_reason: CloseReason::Dropped,
            signals,
            writing: false,
            closed_cleanly: false,
            peer_closed: false,
            response_in_flight: None,
            sendfile_progress: None,
            send_grant: None,
        }
    }

    /// Counts this connection from `accepted` rather than from now: the
    /// first message's deadline and the duration include what came before
    /// the handler (the PROXY header, the wait for a first byte, the TLS
    /// handshake), so those waits do not add up to more than the limit.
    pub(crate) fn accepted_at(mut self, accepted: Instant) -> Self {
        self.opened = accepted;
        self.first_message_by = Some(accepted + self.settings.first_message_timeout);
        self
    }

    /// When it was opened (accepted, after [`Connection::accepted_at`]).
    pub(crate) fn opened(&self) -> Instant {
        self.opened
    }

    /// True while nothing of the client's has been read: no byte in, no
    /// message started. Until then a reload sends the connection to the
    /// listener's new settings ([`ConnError::Rerouted`]).
    fn untouched(&self) -> bool {
        self.first_message_by.is_some() && self.reader.is_empty() && self.bytes().0 == 0
    }

    /// Serves the connection, still untouched, under a reload's settings
    /// from now on: the limits of its first message and its framing (the
    /// listener renews its signals). Its first-message deadline still
    /// counts from the accept.
    pub(crate) fn reroute(&mut self, settings: Arc<Settings>) {
        debug_assert!(self.untouched(), "a connection is rerouted before any byte");
        self.reader = MessageReader::new(FrameLimits {
            max_message_bytes: settings.max_message_bytes,
            message_gap: settings.message_gap,
            idle_timeout: settings.idle_timeout,
            message_timeout: settings.message_timeout,
        });
        self.first_message_by = Some(self.opened + settings.first_message_timeout);
        self.settings = settings;
    }

    /// Its signals (the listener's registry holds them too).
    pub(crate) fn signals(&self) -> &Signals {
        &self.signals
    }

    /// True when a reload replaced the settings this connection was
    /// accepted with: a request-response protocol answers no further
    /// request on it (the new settings apply to new connections).
    pub(crate) fn route_retired(&self) -> bool {
        self.signals.fired() & signals::RETIRED != 0
    }

    /// [`Connection::read_chunk`] for a protocol waiting for its next
    /// request: `None` as soon as the route is retired (see
    /// [`Connection::route_retired`]), instead of waiting on.
    pub(crate) async fn read_chunk_until_retired(
        &mut self,
        buf: &mut BytesMut,
    ) -> Option<Result<Incoming<usize>, ConnError>> {
        // A denial always comes with a retirement: the retirement answers both.
        let (until, timed_out) = self.wait_limit();
        let mut read = std::pin::pin!(self.stream.read_buf(buf));
        let waited = wait_for(
            &self.signals,
            &mut self.timer,
            until,
            signals::RETIRED | signals::SHUTDOWN,
            |cx| read.as_mut().poll(cx),
        )
        .await;
        Some(match waited {
            Ok(read) => self.chunk_read(read),
            Err(Interrupted::TimedOut) => Err(timed_out),
            Err(Interrupted::Signal(fired)) if fired & signals::RETIRED != 0 => return None,
            Err(Interrupted::Signal(_)) => Ok(Incoming::Shutdown),
        })
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The listener's settings.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The signals a read waits on: the shutdown and a denial, and while
    /// the connection is untouched its retirement (a reroute).
    fn read_ends(&self) -> u8 {
        if self.untouched() {
            signals::RETIRED | signals::DENIED | signals::SHUTDOWN
        } else {
            signals::DENIED | signals::SHUTDOWN
        }
    }

    /// Waits until the client has sent something (or closed), without
    /// holding a buffer meanwhile; bounded by the idle timeout, and ended
    /// by shutdown. In-memory streams return at once.
    pub(crate) async fn readable(&mut self) -> Result<Incoming<()>, ConnError> {
        if self.signals.fired() & signals::DENIED != 0 {
            return Err(ConnError::Denied);
        }
        // Only a plaintext socket can be peeked; through anything else
        // (an in-memory stream, TLS) the read itself waits.
        let Some(tcp) = self.stream.get_ref().plaintext() else {
            return Ok(Incoming::Data(()));
        };
        let (until, timed_out) = self.wait_limit();
        let ends = self.read_ends();
        // Until the first bytes, a one-byte peek, not a readiness wait:
        // tokio reports a new socket readable before anything arrived, and
        // only a real read (or peek) that would block clears that. Later
        // (echo's pause after a read shorter than its buffer, which cleared
        // the readiness) the readiness is the client's next bytes: no
        // system call of its own, where the peek was one a pause.
        // Polled, not tokio's `peek` future: that one holds its own waiter
        // (232 bytes), and this wait is room in every idle connection's task.
        let peek = self.untouched();
        let mut probe = [0u8; 1];
        let peeked = wait_for(&self.signals, &mut self.timer, until, ends, |cx| {
            if peek {
                tcp.poll_peek(cx, &mut tokio::io::ReadBuf::new(&mut probe))
                    .map_ok(|_| ())
            } else {
                tcp.poll_read_ready(cx)
            }
        })
        .await;
        match peeked {
            Ok(peeked) => peeked.map(|_| Incoming::Data(())).map_err(ConnError::from),
            Err(Interrupted::TimedOut) => Err(timed_out),
            Err(Interrupted::Signal(fired)) => interrupted(fired),
        }
    }

    /// [`Connection::readable`] for a protocol waiting for its next
    /// request, without holding a buffer meanwhile; it ends as soon as the
    /// route is retired (see [`Connection::route_retired`]), or at
    /// `wake_at` if that comes before the idle timeout (on the
    /// connection's one timer: no timer of its own). A readiness wait, not
    /// a peek: after the last request's read (shorter than its buffer) the
    /// socket's readiness was cleared, so it costs no system call; a
    /// readiness left over only means a read that finds nothing and waits
    /// as [`Connection::read_chunk_until_retired`] does. Through anything
    /// but a plaintext socket it says at once that something came.
    ///
    /// Not `async` itself: the wait's limit is worked out before its future
    /// is made, which then holds only what it needs (an idle connection's
    /// task is room for it).
    pub(crate) fn next_request(
        &mut self,
        wake_at: Option<Instant>,
    ) -> impl Future<Output = NextRequest> + Send + '_ {
        let (idle_until, timed_out) = self.wait_limit();
        let (until, woken) = match wake_at {
            Some(wake_at) if wake_at < idle_until => (wake_at, true),
            _ => (idle_until, false),
        };
        async move {
            let Some(tcp) = self.stream.get_ref().plaintext() else {
                return NextRequest::Came(Ok(Incoming::Data(())));
            };
            // A denial always comes with a retirement: the retirement answers both.
            let ready = wait_for(
                &self.signals,
                &mut self.timer,
                until,
                signals::RETIRED | signals::SHUTDOWN,
                // Polled, as `readable`'s peek is (no waiter of its own).
                |cx| tcp.poll_read_ready(cx),
            )
            .await;
            NextRequest::Came(match ready {
                Ok(Ok(())) => Ok(Incoming::Data(())),
                Ok(Err(e)) => Err(e.into()),
                Err(Interrupted::TimedOut) if woken => return NextRequest::Woken,
                Err(Interrupted::TimedOut) => Err(timed_out),
                Err(Interrupted::Signal(fired)) if fired & signals::RETIRED != 0 => {
                    return NextRequest::Retired;
                }
                Err(Interrupted::Signal(_)) => Ok(Incoming::Shutdown),
            })
        }
    }

    /// Waits until the client has taken what was written to it (as
    /// [`Connection::sent_is_taken`] says), at most until `until`, and
    /// ended by the shutdown or a reload's retirement of the route. Not by
    /// looks on a timer: under the mark (`conn::unsent`) the kernel wakes
    /// the socket's writers once nothing is left unsent, so the wait ends
    /// as soon as a client that reads has read (on loopback, a 300 KiB
    /// body in a fraction of a millisecond). A stream without a socket
    /// queues nothing.
    pub(crate) async fn sent_taken_by(&mut self, until: Instant) -> SentTaken {
        let Some(tcp) = self.stream.get_ref().tcp() else {
            return SentTaken::Taken;
        };
        let socket = std::os::fd::AsFd::as_fd(tcp);
        let Ok(mark) = unsent::Mark::set(socket) else {
            return SentTaken::Taken;
        };
        let taken = loop {
            // Forget the readiness tokio remembers (the last write's), so
            // that the wait below is for a wake after this look. The
            // mark's unset wakes the writers again: a write after this
            // does not wait for a readiness it forgot.
            let _ = tcp.try_io(tokio::io::Interest::WRITABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
            if unsent::polls_taken(socket).unwrap_or(true) {
                break SentTaken::Taken;
            }
            let woken = wait_for(
                &self.signals,
                &mut self.timer,
                until,
                signals::RETIRED | signals::SHUTDOWN,
                |cx| tcp.poll_write_ready(cx),
            )
            .await;
            match woken {
                Ok(Ok(())) => {}
                // A socket that failed has no queue left.
                Ok(Err(_)) => break SentTaken::Taken,
                Err(Interrupted::TimedOut) => break SentTaken::NotBy,
                Err(Interrupted::Signal(_)) => break SentTaken::Ended,
            }
        };
        if let Err(e) = mark.unset() {
            tracing::debug!(error = %e, "cannot set TCP_NOTSENT_LOWAT back");
        }
        taken
    }

    /// How long a wait for the client may last: the idle timeout, or less
    /// until the first message is in; and the error when it runs out.
    fn wait_limit(&self) -> (Instant, ConnError) {
        let idle = self.settings.idle_timeout;
        let idle_until = Instant::now() + idle;
        match self.first_message_by {
            Some(by) if by < idle_until => {
                (by, ConnError::TooSlow(self.settings.first_message_timeout))
            }
            _ => (idle_until, ConnError::Idle(idle)),
        }
    }

    /// One read into `buf`'s spare capacity (at most what it has reserved),
    /// bounded by the idle timeout, and ended by shutdown.
    pub(crate) async fn read_chunk(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Incoming<usize>, ConnError> {
        let ends = self.read_ends();
        // Echo's read after `readable` finds its bytes there: tried once
        // before the timer is set (its reset and the clock); a verdict or
        // the shutdown is looked at first, as the wait would.
        if self.signals.fired() & ends == 0
            && let Poll::Ready(read) = self.read_once(buf).await
        {
            return self.chunk_read(read);
        }
        let (until, timed_out) = self.wait_limit();
        let mut read = std::pin::pin!(self.stream.read_buf(buf));
        let waited = wait_for(&self.signals, &mut self.timer, until, ends, |cx| {
            read.as_mut().poll(cx)
        })
        .await;
        match waited {
            Ok(read) => self.chunk_read(read),
            Err(Interrupted::TimedOut) => Err(timed_out),
            Err(Interrupted::Signal(fired)) => interrupted(fired),
        }
    }

    /// One read into `buf`'s spare capacity of what has already arrived,
    /// without waiting: `None` when nothing has. On a plaintext socket the
    /// read that would block clears its readiness, so that
    /// [`Connection::readable`] then waits for the client's next bytes
    /// without a buffer. The shutdown and a denial are looked at first, as
    /// [`Connection::read_chunk`] does.
    pub(crate) async fn read_chunk_now(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Incoming<usize>>, ConnError> {
        let fired = self.signals.fired() & (signals::DENIED | signals::SHUTDOWN);
        if fired != 0 {
            return interrupted(fired).map(Some);
        }
        match self.read_once(buf).await {
            Poll::Ready(read) => self.chunk_read(read).map(Some),
            Poll::Pending => Ok(None),
        }
    }

    /// One poll of a read into `buf`'s spare capacity: what has already
    /// arrived, or `Pending` (the task's waker registered) when nothing has.
    async fn read_once(&mut self, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let mut read = std::pin::pin!(self.stream.read_buf(buf));
        std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
    }

    /// What one read of a chunk came to.
    fn chunk_read(&mut self, read: io::Result<usize>) -> Result<Incoming<usize>, ConnError> {
        match read {
            Ok(0) => {
                self.peer_closed = true;
                Ok(Incoming::Closed)
            }
            Ok(n) => {
                self.first_message_by = None;
                Ok(Incoming::Data(n))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// When the first byte of the last message [`Connection::next_message`]
    /// returned arrived, if before the read that ended it: a handler that
    /// goes on reading the same request itself (download's HTTP head after
    /// its request line) keeps the request's deadline from there.
    pub(crate) fn last_message_started(&self) -> Option<Instant> {
        self.reader.returned_started()
    }

    /// The bytes read past the last message and not yet returned (a
    /// handler that switches protocol after the first line parses them
    /// itself from then on).
    pub(crate) fn take_buffered(&mut self) -> BytesMut {
        self.reader.take_buffered()
    }

    /// The next message, without its line ending: newline-terminated, or
    /// ended by the quiet gap; at most `max_message_bytes`. Shutdown wins
    /// over a read.
    pub(crate) async fn next_message(&mut self) -> Result<Incoming<BytesMut>, ConnError> {
        if let Some(early) = self.before_message().await? {
            return Ok(early);
        }
        self.read_message().await
    }

    /// [`Connection::next_message`] with the message's read boxed, made
    /// only once the client has sent its first byte: a handler that first
    /// waits for one message and then speaks another protocol (download's
    /// HTTP) does not carry room for the framing's read for the rest of
    /// the connection, while it waits between requests.
    pub(crate) async fn first_message(&mut self) -> Result<Incoming<BytesMut>, ConnError> {
        if let Some(early) = self.before_message().await? {
            return Ok(early);
        }
        Box::pin(self.read_message()).await
    }

    /// What comes before a message's read: the signals already fired, and
    /// until the first byte the wait for it. `Some`: the message is not to
    /// be read (a shutdown).
    async fn before_message(&mut self) -> Result<Option<Incoming<BytesMut>>, ConnError> {
        // The signals already fired, without waiting on them: a client
        // whose messages are always there is still stopped by them.
        let fired = self.signals.fired();
        if fired & signals::DENIED != 0 {
            return Err(ConnError::Denied);
        }
        if fired & signals::SHUTDOWN != 0 {
            return Ok(Some(Incoming::Shutdown));
        }
        if self.untouched() {
            // Until its first byte a reload reroutes the connection, so
            // the wait for that byte takes none (a peek), and races the
            // retirement too.
            if let Incoming::Shutdown = self.readable().await? {
                return Ok(Some(Incoming::Shutdown));
            }
            // Checked here, not raced with the read below: once that has
            // taken a byte, the connection is no longer untouched.
            if self.untouched() && self.route_retired() {
                return Err(ConnError::Rerouted);
            }
        }
        Ok(None)
    }

    /// The message's read (after [`Connection::before_message`]).
    async fn read_message(&mut self) -> Result<Incoming<BytesMut>, ConnError> {
        // The read first: the signals are looked at only when the read has
        // to wait. The reader holds no buffer while it waits for a
        // message's first byte.
        let signals = &self.signals;
        let first_message_by =
            (self.first_message_by).map(|by| (by, self.settings.first_message_timeout));
        let mut read = std::pin::pin!(self.reader.next(
            &mut self.stream,
            first_message_by,
            &mut self.timer
        ));
        let read = std::future::poll_fn(|cx| {
            if let Poll::Ready(read) = read.as_mut().poll(cx) {
                return Poll::Ready(Ok(read));
            }
            match signals.poll_fired(cx) & (signals::DENIED | signals::SHUTDOWN) {
                0 => Poll::Pending,
                fired => Poll::Ready(Err(fired)),
            }
        })
        .await;
        let read = match read {
            Ok(read) => read?,
            Err(fired) => return interrupted(fired),
        };
        Ok(match read {
            Some(message) => {
                self.first_message_by = None;
                Incoming::Data(message)
            }
            None => {
                self.peer_closed = true;
                Incoming::Closed
            }
        })
    }

    /// True when the next message is already read (a client that sends
    /// before its replies come): [`Connection::next_message`] returns it
    /// without waiting, unless a shutdown or a denial comes first.
    pub(crate) fn message_buffered(&mut self) -> bool {
        self.reader.line_buffered()
    }

    /// True when the last message [`Connection::next_message`] returned
    /// ended at a newline; false when a quiet gap ended it, so that its last
    /// line may go on in the bytes still to come.
    pub(crate) fn last_message_ended_at_newline(&self) -> bool {
        self.reader.ended_at_newline()
    }

    /// Writes all of `bytes`; a client that reads nothing for the idle timeout
    /// fails the write instead of holding the connection forever.
    /// A send that fails (or whose future is dropped) leaves the reply
    /// incomplete: the connection then ends with RST.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let limit = self.settings.idle_timeout;
        self.writing = true;
        // A short reply on a plaintext socket (a bot's) usually fits in the
        // socket's buffer at once: one write, without a timer to set up.
        // Polled, not `try_write`: the write spends the task's budget, so
        // a client whose buffered messages are answered without a read
        // cannot keep the worker from its other tasks.
        let mut bytes = bytes;
        if self.stream.get_ref().plaintext().is_some() {
            let stream = &mut self.stream;
            let first = std::future::poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut *stream).poll_write(cx, bytes))
            })
            .await;
            match first {
                Poll::Ready(Ok(written)) => {
                    bytes = &bytes[written..];
                    if bytes.is_empty() {
                        self.writing = false;
                        return Ok(());
                    }
                }
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => {}
            }
        }
        // The flush matters through TLS only: a write may leave the last
        // records in the session's buffer when the socket is full, and
        // nothing else would send them before the client's next request.
        // Polled, not `write_all` and `flush` futures: this wait is room in
        // every echo connection's task.
        let stream = &mut self.stream;
        let write = move |cx: &mut std::task::Context<'_>| -> Poll<io::Result<()>> {
            while !bytes.is_empty() {
                match Pin::new(&mut *stream).poll_write(cx, bytes) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(written)) => bytes = &bytes[written..],
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Pin::new(&mut *stream).poll_flush(cx)
        };
        // The connection's timer; no signal ends a write.
        let until = Instant::now() + limit;
        match wait_for(&self.signals, &mut self.timer, until, 0, write).await {
            Ok(Ok(())) => {
                self.writing = false;
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ConnError::WriteStalled(limit)),
        }
    }

    /// Writes `text` in the listener's encoding, followed by "\n".
    pub(crate) async fn send_line(&mut self, text: &str) -> Result<(), ConnError> {
        let encoded = self.settings.encoding.encode(text);
        let mut line = Vec::with_capacity(encoded.len() + 1);
        line.extend_from_slice(&encoded);
        line.push(b'\n');
        self.send(&line).await
    }

    /// Sends `head` (an HTTP response head; empty for the raw protocol),
    /// then the `len` bytes of `file` from `start`, at most `chunk` bytes a
    /// write through a buffer, and at most the larger of `chunk` and
    /// [`file_send::SENDFILE_STEP`] a sendfile call; returns the bytes of
    /// the file sent. A body of at most
    /// [`file_send::SMALL_BODY`] bytes that the page cache holds goes out
    /// with the head in one write.
    /// On a TCP socket this is sendfile(2): the bytes go from the page cache
    /// to the socket without a copy through user space, driven by the
    /// socket's readiness, so a slow client never holds a thread; ranges
    /// not in the page cache are read on the blocking pool first, so a slow
    /// disk never holds an async worker. Elsewhere the file is read into a
    /// buffer. Stops early if the file shrinks; a client that reads nothing
    /// for the idle timeout fails the send.
    /// A send that fails (or whose future is dropped) leaves the reply
    /// incomplete: the connection then ends with RST.
    /// The socket's send buffer starts at `buffer.base` (unless an earlier
    /// send on this connection grew it); a sendfile whose client frees
    /// room quickly grows it from `buffer.budget` (`send_budget`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_file(
        &mut self,
        head: &[u8],
        file: std::fs::File,
        start: u64,
        len: u64,
        chunk: usize,
        pace: Option<MinRate>,
        buffer: SendBuffer<'_>,
    ) -> Result<u64, ConnError> {
        // A range smaller than the buffer cannot fill it: no call needed.
        if buffer.base > 0 && len > buffer.base as u64 && self.send_grant.is_none() {
            self.set_send_buffer(buffer.base);
        }
        self.writing = true;
        let sent = self
            .send_file_pieces(head, file, start, len, chunk, pace, buffer)
            .await;
        self.writing = sent.is_err();
        sent
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_file_pieces(
        &mut self,
        head: &[u8],
        file: std::fs::File,
        start: u64,
        len: u64,
        chunk: usize,
        pace: Option<MinRate>,
        buffer: SendBuffer<'_>,
    ) -> Result<u64, ConnError> {
        let chunk = chunk.max(1);
        let end = start.saturating_add(len);
        let deadlines = SendDeadlines {
            stall: self.settings.idle_timeout,
            pace,
            started: Instant::now(),
        };
        if let Some(small) = usize::try_from(len)
            .ok()
            .filter(|&len| len <= file_send::SMALL_BODY)
        {
            let mut bytes = Vec::with_capacity(head.len() + small);
            bytes.extend_from_slice(head);
            if file_send::read_cached(&file, start, small, &mut bytes) {
                self.send(&bytes).await?;
                return Ok(len);
            }
        }
        if !head.is_empty() {
            self.send(head).await?;
        }
        if let Some(tcp) = self.stream.get_ref().plaintext() {
            let file = Arc::new(file);
            let mut report = SendReport::default();
            // The offset lives in the connection while the kernel sends,
            // so that a drop mid-send (the shutdown grace ran out) still
            // counts and logs what went out.
            let progress = self.sendfile_progress.insert(SendfileProgress {
                start,
                offset: start,
            });
            let grant = &mut self.send_grant;
            let mut kept_up = || {
                let (Some(budget), base) = (buffer.budget, buffer.base) else {
                    return;
                };
                if base == 0 {
                    return;
                }
                if let Some(bytes) = send_budget::grow(budget, base, grant)
                    && let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(tcp, bytes)
                {
                    tracing::debug!(error = %e, "cannot grow SO_SNDBUF");
                }
            };
            let sent = file_send::sendfile(
                tcp,
                &file,
                end,
                chunk.max(file_send::SENDFILE_STEP),
                &deadlines,
                &mut progress.offset,
                &mut report,
                &mut kept_up,
            )
            .await;
            let sent_bytes = progress.offset - start;
            self.sendfile_progress = None;
            // What went out, also on an error.
            self.stream.count_sent(sent_bytes);
            self.metrics.file_cache_misses(report.cache_misses);
            return sent.map(|()| sent_bytes);
        }
        // Through a buffer (TLS): each chunk is read on the worker straight
        // from the page cache when it holds all of it (`preadv2(RWF_NOWAIT)`
        // never waits for the disk), else on the blocking pool. A trip to the
        // blocking pool for every chunk (tokio::fs) cost two thread switches
        // and a copy each, a sixth of the server's CPU in an HTTPS download
        // (bench/ANALYSIS.md).
        let file = Arc::new(file);
        let mut buf =
            Vec::with_capacity(usize::try_from(len).map_or(chunk, |len| len.clamp(1, chunk)));
        let mut sent = 0u64;
        while sent < len {
            let offset = start.saturating_add(sent);
            let want = usize::try_from(len - sent).map_or(chunk, |left| left.min(chunk));
            buf.clear();
            if !file_send::read_cached(&file, offset, want, &mut buf) {
                self.metrics.file_cache_misses(1);
                // Bounded as a write is: a disk that does not deliver ends
                // the send (DiskStalled), as on the sendfile path.
                let (by, _) = deadlines.next_write(sent);
                buf = timeout_at(by, read_blocking(&file, offset, want, buf))
                    .await
                    .map_err(|_| ConnError::DiskStalled)??;
                if buf.is_empty() {
                    // The file is shorter now.
                    break;
                }
            }
            // Each write within the stall limit and the minimum rate, as
            // each sendfile call is: a reader that stalls is ended at its
            // deadline, not after a whole chunk's idle timeout.
            let mut at = 0;
            while at < buf.len() {
                let (by, late) = deadlines.next_write(sent);
                let wrote = timeout_at(by, self.stream.write(&buf[at..]))
                    .await
                    .map_err(|_| late)??;
                if wrote == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero).into());
                }
                at += wrote;
                sent += wrote as u64;
            }
        }
        // The records still in the TLS session's buffer go out too.
        let (by, late) = deadlines.next_write(sent);
        timeout_at(by, self.stream.flush())
            .await
            .map_err(|_| late)??;
        Ok(sent)
    }

    /// Sends FIN after everything written, then drains (bounded in time and
    /// bytes) what the client still sends, so the kernel does not answer
    /// unread input with RST and destroy the last reply. `reason` is what
    /// the metrics count the connection as. If a write was cut short (the
    /// client holds an incomplete reply), it resets instead
    /// ([`Connection::reset`]): a partial reply must not end like a whole one.
    pub(crate) async fn close(&mut self, reason: CloseReason) {
        if self.writing {
            self.reset(reason);
            return;
        }
        self.close_reason = reason;
        // What the socket still queues must not outlive the connection
        // for long: a client that half-closed without reading answers the
        // FIN at once, and the orphaned socket would keep its queue (up to
        // the autotuned or grown send buffer: megabytes, counted in no
        // limit, and a grant already given back) for as long as the client
        // holds a zero window and answers the kernel's probes. The kernel
        // resets it once the queue has waited this long unsent at a zero
        // window, or unacknowledged; a client that reads on is not affected.
        self.limit_unsent_time(LINGER_TIME);
        if self.peer_closed && self.stream.get_ref().plaintext().is_some() {
            // The client's FIN is in and read, so there is nothing to
            // drain, and closing the socket sends FIN after what it
            // queues, as a shutdown would: two system calls fewer for
            // every client that closes first (the common end).
            self.closed_cleanly = true;
            return;
        }
        // Both steps on the connection's timer: this wait is room in every
        // connection's task.
        let deadline = Instant::now() + LINGER_TIME;
        let stream = &mut self.stream;
        let shutdown = |cx: &mut std::task::Context<'_>| Pin::new(&mut *stream).poll_shutdown(cx);
        match ready_or_wait_for(&self.signals, &mut self.timer, deadline, 0, shutdown).await {
            Ok(Ok(())) => self.closed_cleanly = true,
            _ => return,
        }
        // Read through the meter: these bytes came from the client too.
        // Into a scratch buffer on the stack of each poll: `tokio::io::copy`
        // allocated (and zeroed) 8 KiB for every connection closed, most of
        // which have nothing left to read.
        let mut left = LINGER_BYTES;
        let stream = &mut self.stream;
        let drained = |cx: &mut std::task::Context<'_>| {
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); LINGER_SCRATCH];
            while left > 0 {
                let want = usize::try_from(left).map_or(LINGER_SCRATCH, |l| l.min(LINGER_SCRATCH));
                let mut buf = tokio::io::ReadBuf::uninit(&mut scratch[..want]);
                match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                        left -= buf.filled().len() as u64;
                    }
                    Poll::Ready(_) => break,
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(())
        };
        let answered = ready_or_wait_for(&self.signals, &mut self.timer, deadline, 0, drained)
            .await
            .is_ok();
        // A client that has not closed in time may not have read what a
        // grown send buffer queued either: a reset frees that queue now,
        // where a closed socket would keep it after its grant came back.
        if !answered && self.send_grant.is_some() {
            self.arm_reset();
        }
    }

    /// Whether the client has taken what was written to it: the socket
    /// queues nothing unsent (a reader that stopped leaves its tail there)
    /// and little in flight. Three system calls. A stream without a socket
    /// (the unit tests' in-memory one) queues nothing; a socket that cannot
    /// say is taken as taken, as it was before it was asked.
    pub(crate) fn sent_is_taken(&self) -> bool {
        let Some(socket) = self.stream.get_ref().socket() else {
            return true;
        };
        unsent::is_taken(socket).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot tell whether the send queue is taken");
            true
        })
    }

    /// Bounds the socket's send buffer to `bytes` (`SO_SNDBUF`), which also
    /// turns the kernel's autotuning off for it.
    pub(crate) fn set_send_buffer(&self, bytes: usize) {
        if let Some(socket) = self.stream.get_ref().socket()
            && let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(socket, bytes)
        {
            tracing::debug!(error = %e, "cannot set SO_SNDBUF");
        }
    }

    /// Ends the connection with a reset (RST) instead of a close, so that
    /// the client sees an error rather than a clean end of its data.
    /// `reason` is what the metrics count the connection as. (A connection
    /// dropped without [`Connection::close`] is reset too, when dropped.)
    pub(crate) fn reset(&mut self, reason: CloseReason) {
        self.close_reason = reason;
        self.closed_cleanly = false;
        self.arm_reset();
    }

    /// Sets `TCP_USER_TIMEOUT`: the kernel resets the connection once what
    /// it queued has waited `limit` for the client (unacknowledged, or
    /// unsent at a zero window), also after the socket was closed.
    fn limit_unsent_time(&self, limit: Duration) {
        let millis = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX);
        if let Some(socket) = self.stream.get_ref().socket()
            && let Err(e) = rustix::net::sockopt::set_tcp_user_timeout(socket, millis)
        {
            tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
    }

    /// Sets `SO_LINGER` to zero: the socket's close then sends RST.
    fn arm_reset(&self) {
        if let Some(socket) = self.stream.get_ref().socket()
            && let Err(e) = rustix::net::sockopt::set_socket_linger(socket, Some(Duration::ZERO))
        {
            tracing::debug!(error = %e, "cannot set SO_LINGER to reset the connection");
        }
    }

    /// Counts an `ERR` reply sent by the handler; `reason` is one of a
    /// fixed set of texts.
    pub(crate) fn count_error_reply(&self, reason: &'static str) {
        self.metrics.error_reply(reason);
    }

    /// True when a write failed or was cut short: the client holds an
    /// incomplete reply, and nothing more may follow it (no `ERR` line).
    pub(crate) fn reply_cut(&self) -> bool {
        self.writing
    }

    /// Bytes read from and written to the client so far.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        self.stream.counts()
    }

    /// A response starts: it is logged by [`Connection::end_response`],
    /// or, should the connection be dropped first, when it is.
    pub(crate) fn begin_response(&mut self, record: ResponseRecord) {
        self.response_in_flight = Some(Box::new(record));
    }

    /// The response under way ended as `outcome`: writes its log line.
    pub(crate) fn end_response(&mut self, outcome: Outcome) {
        if let Some(record) = self.response_in_flight.take() {
            record.log(self.stream.counts().1, outcome);
        }
    }
}

impl<S: Io> Drop for Connection<S> {
    /// The one place a connection's totals are counted: after a normal
    /// close, and also when the shutdown grace ran out and its task was
    /// dropped, or it panicked (counted as `dropped`). Unless FIN went out
    /// after a whole reply, the socket is reset: whatever was cut (a
    /// download at the end of the grace, a reply in flight) must reach the
    /// client as an error, not as a clean end.
    fn drop(&mut self) {
        if let Some(progress) = self.sendfile_progress.take() {
            self.stream
                .count_sent(progress.offset.saturating_sub(progress.start));
        }
        if let Some(record) = self.response_in_flight.take() {
            record.log(self.stream.counts().1, Outcome::Dropped);
        }
        if !self.closed_cleanly {
            self.arm_reset();
        }
        let (received, sent) = self.stream.counts();
        self.metrics
            .closed(self.close_reason, received, sent, self.opened.elapsed());
    }
}

/// Why a wait ended without its event.
enum Interrupted {
    /// These of the signals it waited on were fired.
    Signal(u8),
    /// Its deadline passed.
    TimedOut,
}

/// Polls `event` until it is ready, or one of the signals `ends` is fired
/// (looked at first: a verdict or the shutdown wins over the client), or
/// `until` passes, on the connection's `timer`, with no waiter of its own
/// for the signals. The timer is set at once: for the waits that usually
/// wait (an idle connection's), whose future is room in every idle task.
fn wait_for<'a, T>(
    signals: &'a Signals,
    timer: &'a mut ConnTimer,
    until: Instant,
    ends: u8,
    event: impl FnMut(&mut std::task::Context<'_>) -> Poll<T> + 'a,
) -> impl Future<Output = Result<T, Interrupted>> + 'a {
    let timer = timer::armed(timer, until);
    wait_with(signals, ends, event, move |cx| timer.as_mut().poll(cx))
}

/// [`wait_for`] that sets the timer only when `event` has to be waited
/// for: for the waits that are usually ready at once (a close's steps),
/// which then leave the timer (its reset and the clock) alone. Its future
/// is 24 bytes larger (the deadline kept until it is needed): not for a
/// wait that is room in a handler's future, as every idle connection pays
/// for that (echo's read after its readiness tries the read once first
/// instead: [`Connection::read_chunk`]).
fn ready_or_wait_for<'a, T>(
    signals: &'a Signals,
    timer: &'a mut ConnTimer,
    until: Instant,
    ends: u8,
    event: impl FnMut(&mut std::task::Context<'_>) -> Poll<T> + 'a,
) -> impl Future<Output = Result<T, Interrupted>> + 'a {
    let mut deadline = timer::Deadline::new(timer, until);
    wait_with(signals, ends, event, move |cx| deadline.poll_elapsed(cx))
}

/// The wait of [`wait_for`], on the timer `elapsed` polls.
fn wait_with<'a, T>(
    signals: &'a Signals,
    ends: u8,
    mut event: impl FnMut(&mut std::task::Context<'_>) -> Poll<T> + 'a,
    mut elapsed: impl FnMut(&mut std::task::Context<'_>) -> Poll<()> + 'a,
) -> impl Future<Output = Result<T, Interrupted>> + 'a {
    std::future::poll_fn(move |cx| {
        let fired = signals.poll_fired(cx) & ends;
        if fired != 0 {
            return Poll::Ready(Err(Interrupted::Signal(fired)));
        }
        if let Poll::Ready(ready) = event(cx) {
            return Poll::Ready(Ok(ready));
        }
        match elapsed(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Interrupted::TimedOut)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// What the signals `fired` (of those a read waits on) make of it: a
/// denial, the shutdown, or (only an untouched connection waits on it)
/// the retirement, a reroute.
fn interrupted<T>(fired: u8) -> Result<Incoming<T>, ConnError> {
    if fired & signals::DENIED != 0 {
        Err(ConnError::Denied)
    } else if fired & signals::SHUTDOWN != 0 {
        Ok(Incoming::Shutdown)
    } else {
        Err(ConnError::Rerouted)
    }
}

/// A connection over an in-memory stream, with test settings: generous
/// timeouts, 1 KiB messages, UTF-8.
#[cfg(test)]
pub(crate) fn test_connection<S: Io>(stream: S) -> Connection<S> {
    counted_test_connection(stream, ListenerMetrics::detached())
}

/// Like [`test_connection`], counted in `metrics`.
#[cfg(test)]
fn counted_test_connection<S: Io>(stream: S, metrics: Arc<ListenerMetrics>) -> Connection<S> {
    let settings = Settings {
        listener: "test".into(),
        idle_timeout: Duration::from_secs(30),
        max_message_bytes: 1024,
        message_gap: Duration::from_millis(50),
        first_message_timeout: Duration::from_secs(10),
        message_timeout: Duration::from_secs(30),
        encoding: TextEncoding::Utf8,
    };
    Connection::new(
        stream,
        "127.0.0.1:1".parse().expect("address"),
        Arc::new(settings),
        metrics,
        Signals::default(),
    )
}

/// A connected pair of loopback TCP sockets: (client, server).
#[cfg(test)]
pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (client, server)
}

/// Reads up to `want` bytes of `file` at `offset` into `buf` (emptied
/// first) on the blocking pool, so that a slow disk never holds an async
/// worker; fewer at the end of the file, none past it.
async fn read_blocking(
    file: &Arc<std::fs::File>,
    offset: u64,
    want: usize,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, ConnError> {
    use std::os::unix::fs::FileExt;
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        buf.clear();
        buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            match file.read_at(&mut buf[got..], offset.saturating_add(got as u64)) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    })
    .await
    .map_err(|e| ConnError::Io(io::Error::other(e)))?
    .map_err(ConnError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use tokio::time::timeout;

    /// A file send with the kernel's send buffer, never grown.
    const NO_GROWTH: SendBuffer<'static> = SendBuffer {
        base: 0,
        budget: None,
    };

    fn figure(metrics: &Metrics, line_start: &str) -> String {
        let text = String::from_utf8(metrics.render()).expect("UTF-8");
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .to_owned()
    }

    #[test]
    fn a_minimum_rate_earns_time_for_every_byte_sent() {
        let pace = MinRate {
            bytes_per_second: 1000,
            grace: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        assert_eq!(pace.deadline(t0, 0), t0 + Duration::from_secs(10));
        assert_eq!(pace.deadline(t0, 3000), t0 + Duration::from_secs(13));
        assert_eq!(pace.deadline(t0, 1500), t0 + Duration::from_millis(11_500));
        // The largest rates and counts a config and a file can give.
        let fastest = MinRate {
            bytes_per_second: u64::MAX,
            grace: Duration::ZERO,
        };
        let nanos = (u64::MAX - 1) as f64 / u64::MAX as f64 * 1e9;
        let late = fastest.deadline(t0, u64::MAX - 1) - t0;
        assert!(late.as_nanos().abs_diff(nanos as u128) < 2, "{late:?}");
        let slowest = MinRate {
            bytes_per_second: 1,
            grace: Duration::from_secs(10),
        };
        assert!(slowest.deadline(t0, u64::MAX) > t0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_read_too_slowly_fails_the_send() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 100_000]).expect("write");
        let (mut client, server) = tokio::io::duplex(1024);
        let mut conn = test_connection(server);
        // The client reads 100 bytes a second; the minimum is 1000.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 100];
            while let Ok(n) = client.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let pace = MinRate {
            bytes_per_second: 1000,
            grace: Duration::from_secs(10),
        };
        let file = std::fs::File::open(&path).expect("open");
        let sent = conn
            .send_file(&[], file, 0, 100_000, 512, Some(pace), NO_GROWTH)
            .await;
        assert!(
            matches!(sent, Err(ConnError::ReaderTooSlow(1000))),
            "{sent:?}"
        );
        drop(conn);
        reader.await.expect("reader");
    }

    #[tokio::test]
    async fn a_cold_file_is_read_off_the_worker_and_sent_whole() {
        let (_dir, file) = file_send::cold_file(3 << 20);
        let reopen = file.try_clone().expect("dup");
        let metrics = Arc::new(Metrics::new());
        let (client, server) = tcp_pair().await;
        let mut conn = counted_test_connection(server, metrics.listener("l", "download"));
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            got
        });
        let sent = conn
            .send_file(&[], file, 0, 3 << 20, 65536, None, NO_GROWTH)
            .await;
        assert_eq!(sent.expect("sent"), 3 << 20);
        let misses = |m: &Metrics| {
            figure(m, "switchboard_file_cache_misses_total{")
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a count")
        };
        // Read ahead 512 KiB a trip: 3 MiB cold is about 6 trips.
        let cold = misses(&metrics);
        assert!((1..=12).contains(&cold), "{cold} cache misses");
        // Sent again, now from the page cache: no trip to the blocking pool.
        let again = conn
            .send_file(&[], reopen, 0, 3 << 20, 65536, None, NO_GROWTH)
            .await;
        assert_eq!(again.expect("sent again"), 3 << 20);
        assert_eq!(
            misses(&metrics),
            cold,
            "a warm file went to the blocking pool"
        );
        conn.close(CloseReason::Completed).await;
        drop(conn);
        let got = reader.await.expect("reader");
        let want: Vec<u8> = (0..3usize << 20).map(|i| (i % 251) as u8).collect();
        assert_eq!(got.len(), 2 * want.len());
        assert!(got[..want.len()] == want[..] && got[want.len()..] == want[..]);
    }

    /// A stream over a TCP socket whose bytes are not the socket's (what a
    /// TLS stream is): it gives its socket for options, not for plaintext.
    /// It counts the bytes written through it.
    struct SocketOnly {
        tcp: TcpStream,
        written: u64,
    }

    impl tokio::io::AsyncRead for SocketOnly {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for SocketOnly {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let poll = std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf);
            if let std::task::Poll::Ready(Ok(n)) = poll {
                self.written += n as u64;
            }
            poll
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    impl stream::SocketOptions for SocketOnly {
        fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
            use std::os::fd::AsFd;
            Some(self.tcp.as_fd())
        }
    }

    impl stream::PlaintextSocket for SocketOnly {}

    /// Through a stream that is not plaintext, a file goes through the
    /// stream (never sendfile past it), whole; and a cut still ends in a
    /// reset, through the socket it gives for options.
    #[tokio::test]
    async fn a_stream_that_is_not_plaintext_gets_files_through_it_and_still_resets() {
        let (_dir, file) = file_send::cold_file(1 << 20);
        let (client, server) = tcp_pair().await;
        let server = SocketOnly {
            tcp: server,
            written: 0,
        };
        let mut conn = test_connection(server);
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            got
        });
        let sent = conn
            .send_file(b"head\n", file, 0, 1 << 20, 65536, None, NO_GROWTH)
            .await;
        assert_eq!(sent.expect("sent"), 1 << 20);
        assert_eq!(
            conn.stream.get_ref().written,
            5 + (1 << 20),
            "bytes went past the stream"
        );
        conn.close(CloseReason::Completed).await;
        drop(conn);
        let got = reader.await.expect("reader");
        let want: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
        assert!(got.starts_with(b"head\n") && got[5..] == want[..]);

        let (mut client, server) = tcp_pair().await;
        let mut conn = test_connection(SocketOnly {
            tcp: server,
            written: 0,
        });
        conn.send(b"part of a reply").await.expect("send");
        conn.reset(CloseReason::Completed);
        drop(conn);
        let mut got = Vec::new();
        let error = client
            .read_to_end(&mut got)
            .await
            .expect_err("ended with FIN");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    }

    #[tokio::test]
    async fn a_connection_whose_task_panics_is_reset_and_counted_as_dropped() {
        let metrics = Arc::new(Metrics::new());
        let (mut client, server) = tcp_pair().await;
        let mut conn = counted_test_connection(server, metrics.listener("l", "h"));
        let task = tokio::spawn(async move {
            conn.send(b"part of a reply").await.expect("send");
            panic!("a bug in a handler");
        });
        assert!(task.await.is_err_and(|e| e.is_panic()));
        let mut got = Vec::new();
        let end = client.read_to_end(&mut got).await;
        let error = end.expect_err("a panicking connection ended with FIN");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
        let dropped = "switchboard_connections_closed_total{handler=\"h\",listener=\"l\",reason=\"dropped\"} ";
        assert!(figure(&metrics, dropped).ends_with(" 1"));
        assert!(figure(&metrics, "switchboard_connections_open{").ends_with(" 0"));
    }

    #[tokio::test]
    async fn a_reply_cut_by_a_failed_write_ends_in_a_reset_and_a_whole_one_in_fin() {
        let (mut client, server) = tcp_pair().await;
        let mut conn = test_connection(server);
        conn.send(b"whole\n").await.expect("send");
        conn.close(CloseReason::Completed).await;
        drop(conn);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("a clean end");
        assert_eq!(got, b"whole\n");

        // A write that cannot finish (the client reads nothing) is cut by
        // the caller: the close that follows must be a reset.
        let (mut client, server) = tcp_pair().await;
        let mut conn = test_connection(server);
        let big = vec![1u8; 16 << 20];
        let cut = timeout(Duration::from_millis(200), conn.send(&big)).await;
        assert!(cut.is_err(), "16 MiB fit in the socket buffers");
        assert!(conn.reply_cut());
        conn.close(CloseReason::Completed).await;
        drop(conn);
        let end = timeout(Duration::from_secs(20), async {
            let mut sink = Vec::new();
            client.read_to_end(&mut sink).await
        })
        .await
        .expect("neither end nor reset");
        let error = end.expect_err("a cut reply ended with FIN");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    }

    #[tokio::test]
    async fn a_connection_counts_its_totals_once_when_dropped_and_dropped_unclosed() {
        let metrics = Arc::new(Metrics::new());
        let closed = |reason: &str| {
            format!(
                "switchboard_connections_closed_total{{handler=\"h\",listener=\"l\",reason=\"{reason}\"}} "
            )
        };
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = counted_test_connection(server, metrics.listener("l", "h"));
        assert!(figure(&metrics, "switchboard_connections_open{").ends_with(" 1"));
        client.write_all(b"hi\n").await.expect("send");
        assert!(matches!(conn.next_message().await, Ok(Incoming::Data(m)) if &m[..] == b"hi"));
        conn.send(b"abcd").await.expect("send");
        // Dropped without a close, as when the shutdown grace runs out.
        drop(conn);
        assert!(figure(&metrics, &closed("dropped")).ends_with(" 1"));
        assert!(figure(&metrics, "switchboard_connections_open{").ends_with(" 0"));
        assert!(figure(&metrics, "switchboard_received_bytes_total{").ends_with(" 3"));
        assert!(figure(&metrics, "switchboard_sent_bytes_total{").ends_with(" 4"));

        let (_client, server) = tokio::io::duplex(64);
        let mut conn = counted_test_connection(server, metrics.listener("l", "h"));
        conn.close(CloseReason::Completed).await;
        drop(conn);
        assert!(figure(&metrics, &closed("completed")).ends_with(" 1"));
        assert!(figure(&metrics, &closed("dropped")).ends_with(" 1"));
        assert!(figure(&metrics, "switchboard_connections_accepted_total{").ends_with(" 2"));
    }

    /// A chunk's read: once the client has sent something, the next wait
    /// is the idle timeout from the read's own start, not a deadline left
    /// on the timer by an earlier wait (the first message's), and one that
    /// finds its bytes there returns them at once.
    #[tokio::test(start_paused = true)]
    async fn a_chunk_s_read_waits_its_own_deadline_and_not_an_earlier_one() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = test_connection(server);
        let start = Instant::now();
        let mut buf = BytesMut::with_capacity(64);
        // Waits (the timer set to the first message's deadline, 10 s), and
        // is woken by the client's byte at 1 s.
        let (read, ()) = tokio::join!(conn.read_chunk(&mut buf), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            client.write_all(b"a").await.expect("send");
        });
        assert!(matches!(read, Ok(Incoming::Data(1))), "{read:?}");
        // There already: no wait at all.
        client.write_all(b"bc").await.expect("send");
        buf.clear();
        let read = conn.read_chunk(&mut buf).await;
        assert!(matches!(read, Ok(Incoming::Data(2))), "{read:?}");
        assert_eq!(Instant::now(), start + Duration::from_secs(1));
        // Silent from here: the idle timeout (30 s) from this read's start,
        // not the first message's 10 s still on the timer.
        buf.clear();
        let read = timeout(Duration::from_secs(120), conn.read_chunk(&mut buf))
            .await
            .expect("the idle wait is bounded");
        assert!(matches!(read, Err(ConnError::Idle(_))), "{read:?}");
        assert_eq!(Instant::now(), start + Duration::from_secs(31));
    }

    /// A verdict or the shutdown fired before a read wins over bytes that
    /// are already there (the read tried before the wait looks at them
    /// first, as the wait does), and one fired during a read's wait ends
    /// it at once.
    #[tokio::test(start_paused = true)]
    async fn signals_win_over_a_chunk_already_there_and_end_a_waiting_read() {
        for (signal, denied) in [(signals::DENIED, true), (signals::SHUTDOWN, false)] {
            let (mut client, server) = tokio::io::duplex(64);
            let mut conn = test_connection(server);
            client.write_all(b"there").await.expect("send");
            conn.signals().fire(signal);
            let mut buf = BytesMut::with_capacity(64);
            let read = conn.read_chunk(&mut buf).await;
            if denied {
                assert!(matches!(read, Err(ConnError::Denied)), "{read:?}");
            } else {
                assert!(matches!(read, Ok(Incoming::Shutdown)), "{read:?}");
            }
            assert!(buf.is_empty(), "read {buf:?} past the signal");
        }
        // During the wait: at the moment it is fired, not at a timeout.
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = test_connection(server);
        let signals = conn.signals().clone();
        let start = Instant::now();
        let mut buf = BytesMut::with_capacity(64);
        let (read, ()) = tokio::join!(conn.read_chunk(&mut buf), async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            signals.fire(signals::SHUTDOWN);
        });
        assert!(matches!(read, Ok(Incoming::Shutdown)), "{read:?}");
        assert_eq!(Instant::now(), start + Duration::from_secs(2));
    }

    /// A read whose task has spent its cooperative budget finds its bytes
    /// at the task's next turn: its first try is put off, not lost, and
    /// does not spin.
    #[tokio::test]
    async fn a_chunk_s_read_with_the_task_s_budget_spent_returns_at_its_next_turn() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = test_connection(server);
        client.write_all(b"there").await.expect("send");
        let read = timeout(Duration::from_secs(20), async {
            // The budget is 128 units: bounded.
            for _ in 0..1000 {
                if !tokio::task::coop::has_budget_remaining() {
                    break;
                }
                tokio::task::coop::consume_budget().await;
            }
            assert!(!tokio::task::coop::has_budget_remaining());
            let mut buf = BytesMut::with_capacity(64);
            let read = conn.read_chunk(&mut buf).await;
            (read, buf)
        })
        .await
        .expect("the read came back");
        assert!(matches!(read.0, Ok(Incoming::Data(5))), "{:?}", read.0);
        assert_eq!(&read.1[..], b"there");
    }

    /// The close's linger ends at its time whatever the client does: a
    /// silent one that neither closes nor sends, and one that drips a byte
    /// now and then (each byte wakes the drain, which must keep the
    /// deadline it started with).
    #[tokio::test(start_paused = true)]
    async fn a_close_s_linger_ends_at_its_time_whatever_the_client_does() {
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = test_connection(server);
        let start = Instant::now();
        timeout(10 * LINGER_TIME, conn.close(CloseReason::Completed))
            .await
            .expect("the linger is bounded");
        assert_eq!(Instant::now(), start + LINGER_TIME);

        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = test_connection(server);
        let start = Instant::now();
        let drip = async {
            for _ in 0..100 {
                tokio::time::sleep(LINGER_TIME / 4 + Duration::from_millis(10)).await;
                if client.write_all(b"x").await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            closed = timeout(10 * LINGER_TIME, conn.close(CloseReason::Completed)) => {
                closed.expect("the linger is bounded");
            }
            () = drip => panic!("the linger outlasted the drip"),
        }
        assert_eq!(Instant::now(), start + LINGER_TIME);
        let (received, _) = conn.bytes();
        assert_eq!(received, 3, "the drain read what came in its time");
    }
}
