//! What the line clients share, over TCP (`lines`) and UDP (`datagram`):
//! their options, the messages `send` sends, and how a reply is printed.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

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
    /// Bound of the connect and of each wait for a reply.
    pub timeout: Duration,
    /// Talk UDP: one datagram per message.
    pub udp: bool,
}

/// Prints a reply line (without its line ending) to `out`.
pub(super) async fn print<W: AsyncWrite + Unpin>(out: &mut W, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes()).await?;
    out.write_all(b"\n").await?;
    out.flush().await
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
