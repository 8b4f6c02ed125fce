//! What the line clients share, over TCP (`lines`) and UDP (`datagram`):
//! their options, the messages `send` sends, how a reply is printed
//! (escaped unless `--raw`), and the bounds of a run: `send`'s deadline
//! and its cap on all the replies it prints.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::terminal::Shown;
use crate::conn::text::TextEncoding;

/// After the last message, how long to wait for more of the server's
/// lines (a goodbye) before closing.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// What the line clients need to know.
#[derive(Debug, Clone)]
pub struct LineOptions {
    /// `host:port`.
    pub addr: String,
    /// The server's text encoding.
    pub encoding: TextEncoding,
    /// `send`: the deadline of the whole run (connect, every message and
    /// reply, and the wait for the server's last words). `chat`: the bound
    /// of the connect, of each write, and of the wait for last words.
    pub timeout: Duration,
    /// Talk UDP: one datagram per message.
    pub udp: bool,
    /// How the server's words are written: escaped, or raw (`--raw`).
    pub shown: Shown,
}

/// Most bytes of replies `send` prints in one run.
pub(super) const MAX_REPLIES: usize = 16 * 1024 * 1024;

/// Writes the server's reply lines to `out`, as `options` says (escaped
/// unless `--raw`), counting them against [`MAX_REPLIES`] when `capped`.
pub(super) struct Printer<'a, W> {
    out: &'a mut W,
    encoding: TextEncoding,
    shown: Shown,
    capped: bool,
    printed: usize,
}

impl<'a, W: AsyncWrite + Unpin> Printer<'a, W> {
    pub(super) fn new(out: &'a mut W, options: &LineOptions, capped: bool) -> Self {
        Printer {
            out,
            encoding: options.encoding,
            shown: options.shown,
            capped,
            printed: 0,
        }
    }

    /// Prints a reply line (its bytes, without the line ending).
    pub(super) async fn reply(&mut self, line: &[u8]) -> io::Result<()> {
        self.printed = self.printed.saturating_add(line.len());
        if self.capped && self.printed > MAX_REPLIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the server sent more than {MAX_REPLIES} bytes of replies"),
            ));
        }
        let shown = self.shown.render(line, self.encoding);
        self.line(&shown).await
    }

    /// Prints a line of the client's own.
    pub(super) async fn line(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes).await?;
        self.out.write_all(b"\n").await?;
        self.out.flush().await
    }
}

/// The error of a run whose deadline (or bound) `limit` passed while `doing`.
pub(super) fn too_late(doing: &str, limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{doing} within {}", humantime::format_duration(limit)),
    )
}

/// When to stop waiting for the server's last words: after [`LINGER`]
/// of quiet, and never after `until`.
pub(super) fn linger_until(until: Instant) -> Instant {
    (Instant::now() + LINGER).min(until)
}

/// What `send` sends: the messages given, or when there are none, the
/// lines of its input.
pub(super) struct Messages<I> {
    given: Option<std::vec::IntoIter<String>>,
    input: tokio::io::Lines<I>,
}

impl<I: AsyncBufRead + Unpin> Messages<I> {
    pub(super) fn new(given: Vec<String>, input: I) -> Self {
        Messages {
            given: (!given.is_empty()).then(|| given.into_iter()),
            input: input.lines(),
        }
    }

    /// The next message; `None` after the last.
    pub(super) async fn next(&mut self) -> io::Result<Option<String>> {
        match &mut self.given {
            Some(given) => Ok(given.next()),
            None => self.input.next_line().await,
        }
    }
}
