//! `send --udp` and `chat --udp`: the line clients over UDP, as the
//! tutorial's UDP programs talk (`sendto`, then `recvfrom`): each message
//! is one datagram (with its newline), each reply one datagram. Every wait
//! is bounded, and so is `send`'s whole run; a reply longer than a datagram can be is impossible, so the
//! buffer is one datagram's most.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout, timeout_at};

use super::line_client::{LineOptions, Messages, Printer, Sent, linger_until, too_late};
use crate::conn::text::TextEncoding;

/// The most a UDP datagram holds.
const MAX_DATAGRAM: usize = 65_536;

/// A socket connected to the server (so that only its datagrams arrive,
/// and an ICMP "port unreachable" is an error here).
async fn open(options: &LineOptions) -> io::Result<UdpSocket> {
    super::check_address(&options.addr)?;
    let resolve = tokio::net::lookup_host(options.addr.as_str());
    let server: SocketAddr = match timeout(options.timeout, resolve).await {
        Ok(addrs) => addrs?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address"))?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "name lookup timed out",
            ));
        }
    };
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    Ok(socket)
}

/// `text` and a newline in `enc`, as one datagram.
fn datagram(enc: TextEncoding, text: &str) -> Vec<u8> {
    let mut bytes = enc.encode(text).into_owned();
    bytes.push(b'\n');
    bytes
}

/// A reply datagram without its line ending.
fn reply_line(reply: &[u8]) -> &[u8] {
    let reply = reply.strip_suffix(b"\n").unwrap_or(reply);
    reply.strip_suffix(b"\r").unwrap_or(reply)
}

/// What a refused datagram means here.
fn explain(e: io::Error, options: &LineOptions) -> io::Error {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        io::Error::new(
            e.kind(),
            format!("nothing listens on UDP {} (port unreachable)", options.addr),
        )
    } else {
        e
    }
}

/// `send --udp`: each message (each line of `input` when there are none)
/// as a datagram, and its reply printed; a reply that does not come by
/// the deadline (`options.timeout` for the whole run) is an error (UDP
/// does not say whether the request or the reply was lost).
pub(super) async fn send<I, W>(
    options: &LineOptions,
    messages: Vec<String>,
    input: I,
    out: &mut W,
) -> io::Result<Sent>
where
    I: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = super::after(options.timeout);
    let mut printer = Printer::new(out, options, true);
    let exchange = async {
        let socket = open(options).await?;
        let mut messages = Messages::new(messages, input);
        let enc = options.encoding;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Some(message) = messages.next().await? {
            socket
                .send(&datagram(enc, &message))
                .await
                .map_err(|e| explain(e, options))?;
            let n = socket
                .recv(&mut buf)
                .await
                .map_err(|e| explain(e, options))?;
            printer.reply(reply_line(&buf[..n])).await?;
        }
        Ok::<_, io::Error>(())
    };
    match timeout_at(deadline, exchange).await {
        Ok(done) => done.map(|()| printer.sent()),
        Err(_) => Err(too_late(
            "no reply (the datagram or its reply may be lost, or the server dropped it)",
            options.timeout,
        )),
    }
}

/// `chat --udp`: each line typed is a datagram, every datagram that comes
/// back is printed as it arrives; an empty line or the end of `input` ends
/// it, after the replies still on their way (a second of quiet, at most
/// `options.timeout` in all). A farewell (`options.farewell`) ends it
/// once its reply, the goodbye, came (after the replies still due to the
/// datagrams before it: each datagram has one), as the server's close
/// does over TCP; a reply that does not come within `options.timeout` is
/// an error.
pub(super) async fn chat<I, W>(options: &LineOptions, input: I, out: &mut W) -> io::Result<()>
where
    I: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let socket = open(options).await?;
    let mut printer = Printer::new(out, options, false);
    let mut input = input.lines();
    let enc = options.encoding;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Datagrams sent whose reply has not come: each has one.
    let mut unanswered = 0usize;
    loop {
        tokio::select! {
            line = input.next_line() => match line? {
                Some(line) if options.is_farewell(&line) => {
                    socket.send(&datagram(enc, &line)).await.map_err(|e| explain(e, options))?;
                    // The goodbye is the reply after those still due.
                    for _ in 0..=unanswered {
                        match timeout(options.timeout, socket.recv(&mut buf)).await {
                            Ok(received) => {
                                let n = received.map_err(|e| explain(e, options))?;
                                printer.reply(reply_line(&buf[..n])).await?;
                            }
                            Err(_) => {
                                return Err(too_late("no reply to the farewell", options.timeout));
                            }
                        }
                    }
                    return Ok(());
                }
                Some(line) if !line.is_empty() => {
                    socket.send(&datagram(enc, &line)).await.map_err(|e| explain(e, options))?;
                    unanswered += 1;
                }
                _ => break,
            },
            reply = socket.recv(&mut buf) => {
                let n = reply.map_err(|e| explain(e, options))?;
                unanswered = unanswered.saturating_sub(1);
                printer.reply(reply_line(&buf[..n])).await?;
            }
        }
    }
    // A "port unreachable" that comes back now still says nothing listens.
    // Checked before each receive: one that never has to wait (a flood of
    // datagrams) is never timed out, whatever its deadline.
    let until = super::after(options.timeout);
    while Instant::now() < until {
        let Ok(received) = timeout_at(linger_until(until), socket.recv(&mut buf)).await else {
            break;
        };
        let n = received.map_err(|e| explain(e, options))?;
        printer.reply(reply_line(&buf[..n])).await?;
    }
    Ok(())
}
