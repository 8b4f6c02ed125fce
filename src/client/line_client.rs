//! What the line clients share, over TCP (`lines`) and UDP (`datagram`):
//! their options, the messages `send` sends, how a reply is printed
//! (escaped unless `--raw`) and counted (`send` fails when one is an
//! `ERR ...` line), the words that end a chat over UDP, and the bounds of
//! a run: `send`'s deadline and its cap on all the replies it prints.

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
    /// `chat` over UDP: messages that end the chat once their reply came
    /// (the server's farewells; over TCP the server's close ends it).
    /// Compared trimmed and case-insensitively, as the server does; empty
    /// ones never match.
    pub farewell: Vec<String>,
    /// Talk TLS (`--tls`; TCP only).
    pub tls: Option<super::ClientTls>,
}

impl LineOptions {
    /// True when `message` is one of the farewells.
    pub(super) fn is_farewell(&self, message: &str) -> bool {
        let message = message.trim().to_lowercase();
        !message.is_empty()
            && self
                .farewell
                .iter()
                .any(|f| f.trim().to_lowercase() == message)
    }
}

/// What `send` got: how many reply lines, and how many of them were
/// refusals (`ERR ...` lines, as the servers say an error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Reply lines printed (the server's last words included).
    pub replies: usize,
    /// Of them, lines that are `ERR` or begin with `ERR `.
    pub refusals: usize,
}

/// True for a line that says an error: `ERR`, or `ERR ` and a reason.
fn is_refusal(line: &[u8]) -> bool {
    line == b"ERR" || line.starts_with(b"ERR ")
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
    sent: Sent,
    /// The hint to try `--encoding gbk` was given (once a run).
    encoding_hinted: bool,
}

/// True for a reply that is not UTF-8 but is GBK: the server is probably
/// a GBK listener, and `--encoding gbk` would show its words.
fn reads_as_gbk_not_utf8(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_err()
        && encoding_rs::GBK
            .decode_without_bom_handling_and_without_replacement(line)
            .is_some()
}

impl<'a, W: AsyncWrite + Unpin> Printer<'a, W> {
    pub(super) fn new(out: &'a mut W, options: &LineOptions, capped: bool) -> Self {
        Printer {
            out,
            encoding: options.encoding,
            shown: options.shown,
            capped,
            printed: 0,
            sent: Sent::default(),
            encoding_hinted: false,
        }
    }

    /// The reply lines printed so far, and the refusals among them.
    pub(super) fn sent(&self) -> Sent {
        self.sent
    }

    /// Prints a reply line (its bytes, without the line ending).
    pub(super) async fn reply(&mut self, line: &[u8]) -> io::Result<()> {
        // With its line ending: a flood of empty lines counts too.
        self.printed = self.printed.saturating_add(line.len() + 1);
        if self.capped && self.printed > MAX_REPLIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the server sent more than {MAX_REPLIES} bytes of replies"),
            ));
        }
        self.sent.replies += 1;
        if is_refusal(line) {
            self.sent.refusals += 1;
        }
        if self.encoding == TextEncoding::Utf8
            && !self.encoding_hinted
            && reads_as_gbk_not_utf8(line)
        {
            self.encoding_hinted = true;
            eprintln!(
                "switchboard: the server's words are not UTF-8 but read as GBK: \
                 for a GBK listener, add --encoding gbk"
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_in_gbk_is_told_from_utf8_and_from_noise() {
        assert!(reads_as_gbk_not_utf8(b"\xc4\xe3\xba\xc3")); // 你好 in GBK
        assert!(!reads_as_gbk_not_utf8("你好".as_bytes()));
        assert!(!reads_as_gbk_not_utf8(b"plain"));
        assert!(!reads_as_gbk_not_utf8(b"\xff\xff"));
    }

    #[test]
    fn refusals_are_err_lines_and_farewells_match_as_the_server_does() {
        for line in [&b"ERR"[..], b"ERR no such file", b"ERR "] {
            assert!(is_refusal(line), "{line:?}");
        }
        for line in [&b"ERROR"[..], b"err x", b" ERR x", b"", b"OK ERR x"] {
            assert!(!is_refusal(line), "{line:?}");
        }
        let options = LineOptions {
            addr: String::new(),
            encoding: TextEncoding::Utf8,
            timeout: Duration::from_secs(1),
            udp: true,
            shown: Shown::Escaped,
            farewell: vec!["bye".into(), " Ciao ".into(), "".into()],
            tls: None,
        };
        for message in ["bye", " BYE ", "ciao", "Ciao"] {
            assert!(options.is_farewell(message), "{message:?}");
        }
        for message in ["", "  ", "bye bye", "goodbye"] {
            assert!(!options.is_farewell(message), "{message:?}");
        }
    }
}
