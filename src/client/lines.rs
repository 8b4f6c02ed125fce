//! `send` and `chat`: line clients for echo, keyword-bot and random-bot (or
//! any line server), in UTF-8 or GBK, over TCP (here) or UDP (`datagram`,
//! which they hand over to when asked).

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;

use super::line_client::{LINGER, LineOptions, Messages, print};
use super::{MAX_LINE, connect};
use crate::conn::text::TextEncoding;

/// Reads one line (without its line ending) of at most [`MAX_LINE`] bytes;
/// `None` at the end of the stream.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if line.len() + take > MAX_LINE + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a reply line longer than {MAX_LINE} bytes"),
            ));
        }
        line.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// Connects, and splits the connection into buffered replies and the
/// writing half.
async fn open(options: &LineOptions) -> io::Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let (read, write) = connect(&options.addr, options.timeout).await?.into_split();
    Ok((BufReader::new(read), write))
}

/// Writes `text` and a newline, in `enc`.
async fn send_line<W: AsyncWrite + Unpin>(
    write: &mut W,
    enc: TextEncoding,
    text: &str,
) -> io::Result<()> {
    let mut line = enc.encode(text).into_owned();
    line.push(b'\n');
    write.write_all(&line).await
}

/// Sends each of `messages` (each line of `input` when there are none) as
/// a line and prints the reply line to `out`; after the last one, prints
/// what else the server says until it closes or is quiet for a second.
/// Ends early, without an error, when the server closes.
pub async fn send<I, W>(
    options: &LineOptions,
    messages: Vec<String>,
    input: I,
    out: &mut W,
) -> io::Result<()>
where
    I: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if options.udp {
        return super::datagram::send(options, messages, input, out).await;
    }
    let (mut replies, mut write) = open(options).await?;
    let mut messages = Messages::new(messages, input);
    let enc = options.encoding;
    while let Some(message) = messages.next().await? {
        send_line(&mut write, enc, &message).await?;
        match timeout(options.timeout, read_line(&mut replies)).await {
            Ok(Ok(Some(reply))) => print(out, &enc.decode(&reply)).await?,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no reply within {}",
                        humantime::format_duration(options.timeout)
                    ),
                ));
            }
        }
    }
    let _ = write.shutdown().await;
    linger(&mut replies, enc, out).await
}

/// Prints the server's remaining lines until it closes or is quiet for [`LINGER`].
async fn linger<R, W>(replies: &mut R, enc: TextEncoding, out: &mut W) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while let Ok(Ok(Some(reply))) = timeout(LINGER, read_line(replies)).await {
        print(out, &enc.decode(&reply)).await?;
    }
    Ok(())
}

/// An interactive chat: each line of `input` is sent, and every line the
/// server sends is printed as it arrives. An empty line or the end of
/// `input` ends it (after the server's last words); so does the server's
/// close, which is said on `out`.
pub async fn chat<I, W>(options: &LineOptions, input: I, out: &mut W) -> io::Result<()>
where
    I: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if options.udp {
        return super::datagram::chat(options, input, out).await;
    }
    let (mut replies, mut write) = open(options).await?;
    let mut input = input.lines();
    let enc = options.encoding;
    loop {
        tokio::select! {
            line = input.next_line() => match line? {
                Some(line) if !line.is_empty() => send_line(&mut write, enc, &line).await?,
                _ => {
                    let _ = write.shutdown().await;
                    return linger(&mut replies, enc, out).await;
                }
            },
            reply = read_line(&mut replies) => match reply? {
                Some(reply) => print(out, &enc.decode(&reply)).await?,
                None => {
                    print(out, "(the server closed the connection)").await?;
                    return Ok(());
                }
            },
        }
    }
}
