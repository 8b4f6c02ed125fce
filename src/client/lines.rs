//! `send` and `chat`: line clients for echo, keyword-bot and random-bot (or
//! any line server), in UTF-8 or GBK, over TCP (here) or UDP (`datagram`,
//! which they hand over to when asked). Every wait is bounded, and so is
//! `send`'s whole run.
//!
//! A reply is a line. `send` half-closes after its last message, so the
//! last reply (and the server's last words) may end with the server's
//! close instead of a newline, as the tutorial's servers do; a reply cut
//! by a close before that, or a close before every message had its reply,
//! is an error that says how many replies came.
//!
//! With `--tls` the connection is TLS (`stream`); there a close without
//! the server's `close_notify` may have cut what came, so it is an error
//! wherever it comes, the wait for last words included.

use std::io;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::time::{Instant, timeout_at};

use super::MAX_LINE;
use super::line_client::{LineOptions, Messages, Printer, Sent, linger_until, too_late};
use super::stream::{Stream, is_truncation};
use crate::conn::text::TextEncoding;

/// What the server said next.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    /// A line, without its line ending.
    Line(Vec<u8>),
    /// Bytes without a newline, then a clean close.
    Cut(Vec<u8>),
    /// A clean close.
    Closed,
}

/// Reads one line (without its line ending) of at most [`MAX_LINE`] bytes,
/// or what came before a clean close. The bytes of a line not yet
/// complete are kept in `partial`, so that a read cancelled (by `select!`
/// or a deadline) loses nothing.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    partial: &mut Vec<u8>,
) -> io::Result<Said> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if partial.is_empty() {
                Said::Closed
            } else {
                Said::Cut(std::mem::take(partial))
            });
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if partial.len() + take > MAX_LINE + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a reply line longer than {MAX_LINE} bytes"),
            ));
        }
        partial.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            let mut line = std::mem::take(partial);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Said::Line(line));
        }
    }
}

/// The server's side of a connection: its lines, and the one being read.
struct Replies {
    reader: BufReader<ReadHalf<Stream>>,
    partial: Vec<u8>,
}

impl Replies {
    async fn next(&mut self) -> io::Result<Said> {
        read_line(&mut self.reader, &mut self.partial).await
    }
}

/// What to try against a port that does not speak TLS.
const PLAIN_HINT: &str = "try without --tls";

/// Connects by `until` (with the TLS handshake, by `until` too, with
/// `--tls`), and splits the connection into buffered replies and the
/// writing half.
async fn open(options: &LineOptions, until: Instant) -> io::Result<(Replies, WriteHalf<Stream>)> {
    let stream = Stream::open(&options.addr, options.tls.as_ref(), until, PLAIN_HINT).await?;
    let (read, write) = tokio::io::split(stream);
    let replies = Replies {
        reader: BufReader::new(read),
        partial: Vec::new(),
    };
    Ok((replies, write))
}

/// Writes `text` and a newline, in `enc`, by `until` (a server that does
/// not read cannot hold the client).
async fn send_line<W: AsyncWrite + Unpin>(
    write: &mut W,
    enc: TextEncoding,
    text: &str,
    until: Instant,
) -> io::Result<()> {
    let mut line = enc.encode(text).into_owned();
    line.push(b'\n');
    match timeout_at(until, write.write_all(&line)).await {
        Ok(written) => written,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the server does not read what is sent",
        )),
    }
}

/// Sends each of `messages` (each line of `input` when there are none) as
/// a line and prints the reply line to `out`, half-closing after the last
/// message; then prints what else the server says until it closes, is
/// quiet for a second, or the deadline comes. The last reply may end with
/// the server's close instead of a newline; a close before every message
/// has had its reply (or in the middle of an earlier one) is an error. The
/// whole run is bounded by `options.timeout`: a message whose reply has
/// not come by then is an error. Returns how many replies came, and how
/// many were `ERR ...` lines.
pub async fn send<I, W>(
    options: &LineOptions,
    messages: Vec<String>,
    input: I,
    out: &mut W,
) -> io::Result<Sent>
where
    I: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if options.udp {
        return super::datagram::send(options, messages, input, out).await;
    }
    let deadline = super::after(options.timeout);
    let mut printer = Printer::new(out, options, true);
    let given = messages.len();
    let exchange = async {
        let (mut replies, mut write) = open(options, deadline).await?;
        let mut messages = Messages::new(messages, input);
        let (mut sent, mut got) = (0, 0);
        // One message ahead, to half-close as soon as the last is sent.
        let mut next = messages.next().await?;
        let mut half_closed = false;
        while let Some(message) = next.take() {
            send_line(&mut write, options.encoding, &message, deadline).await?;
            sent += 1;
            next = messages.next().await?;
            if next.is_none() {
                let _ = timeout_at(deadline, write.shutdown()).await;
                half_closed = true;
            }
            let of = if given > 0 {
                given
            } else {
                sent + usize::from(next.is_some())
            };
            let said = replies.next().await.map_err(|e| {
                if is_truncation(&e) {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "the server closed the connection without TLS close_notify after \
                             {got} of {of} replies: what came may be truncated"
                        ),
                    )
                } else {
                    e
                }
            })?;
            match said {
                Said::Line(reply) => printer.reply(&reply).await?,
                // The last reply, ended by the close: it is whole.
                Said::Cut(reply) if half_closed => {
                    printer.reply(&reply).await?;
                    return Ok(None);
                }
                Said::Cut(reply) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the server closed the connection in the middle of reply {sent} \
                             ({} bytes without a newline); {got} of {of} replies came",
                            reply.len()
                        ),
                    ));
                }
                Said::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the server closed the connection after {got} of {of} replies"),
                    ));
                }
            }
            got += 1;
        }
        if !half_closed {
            let _ = timeout_at(deadline, write.shutdown()).await;
        }
        Ok::<_, io::Error>(Some(replies))
    };
    let replies = match timeout_at(deadline, exchange).await {
        Ok(Ok(Some(replies))) => replies,
        Ok(Ok(None)) => return Ok(printer.sent()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(too_late("no reply", options.timeout)),
    };
    let mut replies = replies;
    linger(&mut replies, &mut printer, deadline).await?;
    Ok(printer.sent())
}

/// Prints the server's remaining lines until it closes, is quiet for
/// [`LINGER`](super::line_client::LINGER), or `until` comes.
async fn linger<W: AsyncWrite + Unpin>(
    replies: &mut Replies,
    printer: &mut Printer<'_, W>,
    until: Instant,
) -> io::Result<()> {
    // Checked before each read: a read that never has to wait (a flood of
    // lines) is never timed out, whatever its deadline.
    while Instant::now() < until {
        match timeout_at(linger_until(until), replies.next()).await {
            Ok(Ok(Said::Line(reply))) => printer.reply(&reply).await?,
            // The client has half-closed: words ended by the close are whole.
            Ok(Ok(Said::Cut(reply))) => return printer.reply(&reply).await,
            // A line over the cap is the server's fault, said as such.
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => return Err(e),
            // Over TLS, a close without close_notify may have cut the
            // last words: not an end to take as whole.
            Ok(Err(e)) if is_truncation(&e) => {
                return Err(io::Error::new(
                    e.kind(),
                    "the server closed the connection without TLS close_notify after the \
                     last reply: its last words may be truncated",
                ));
            }
            // The close, a reset, or quiet: the last words are over.
            Ok(Ok(Said::Closed)) | Ok(Err(_)) | Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// An interactive chat: each line of `input` is sent, and every line the
/// server sends is printed as it arrives. An empty line or the end of
/// `input` ends it (after the server's last words, for at most
/// `options.timeout`); so does the server's close, which is said on
/// `out` unless it follows a farewell (`options.farewell`: over TCP, a
/// bot closes after its goodbye to one; over UDP, the chat ends after the
/// reply). The connect and each write are bounded by `options.timeout`;
/// the chat itself lasts as long as the user wants.
pub async fn chat<I, W>(options: &LineOptions, input: I, out: &mut W) -> io::Result<()>
where
    I: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if options.udp {
        return super::datagram::chat(options, input, out).await;
    }
    let (mut replies, mut write) = open(options, super::after(options.timeout)).await?;
    let mut printer = Printer::new(out, options, false);
    let mut input = input.lines();
    let enc = options.encoding;
    // After a farewell, the server's close is the expected end, not news.
    let mut farewell_sent = false;
    loop {
        tokio::select! {
            line = input.next_line() => match line? {
                Some(line) if !line.is_empty() => {
                    send_line(&mut write, enc, &line, super::after(options.timeout)).await?;
                    farewell_sent = options.is_farewell(&line);
                }
                _ => {
                    let until = super::after(options.timeout);
                    let _ = timeout_at(until, write.shutdown()).await;
                    return linger(&mut replies, &mut printer, until).await;
                }
            },
            reply = replies.next() => match reply? {
                Said::Line(reply) => printer.reply(&reply).await?,
                Said::Cut(reply) => {
                    printer.reply(&reply).await?;
                    printer.line(b"(the server closed the connection)").await?;
                    return Ok(());
                }
                Said::Closed => {
                    if !farewell_sent {
                        printer.line(b"(the server closed the connection)").await?;
                    }
                    return Ok(());
                }
            },
        }
    }
}
