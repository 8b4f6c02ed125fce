//! `send --udp` and `chat --udp`: the line clients over UDP, as the
//! tutorial's UDP programs talk (`sendto`, then `recvfrom`): each message
//! is one datagram (with its newline), each reply one datagram. Every wait
//! is bounded; a reply longer than a datagram can be is impossible, so the
//! buffer is one datagram's most.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::line_client::{LINGER, LineOptions, Messages, print};
use crate::conn::text::TextEncoding;

/// The most a UDP datagram holds.
const MAX_DATAGRAM: usize = 65_536;

/// A socket connected to the server (so that only its datagrams arrive,
/// and an ICMP "port unreachable" is an error here).
async fn open(options: &LineOptions) -> io::Result<UdpSocket> {
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

/// A reply datagram as text, without its line ending.
fn reply_text(enc: TextEncoding, reply: &[u8]) -> String {
    let reply = reply.strip_suffix(b"\n").unwrap_or(reply);
    let reply = reply.strip_suffix(b"\r").unwrap_or(reply);
    enc.decode(reply).into_owned()
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
/// as a datagram, and its reply printed; a reply that does not come within
/// the timeout is an error (UDP does not say whether the request or the
/// reply was lost).
pub(super) async fn send<I, W>(
    options: &LineOptions,
    messages: Vec<String>,
    input: I,
    out: &mut W,
) -> io::Result<()>
where
    I: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let socket = open(options).await?;
    let mut messages = Messages::new(messages, input);
    let enc = options.encoding;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Some(message) = messages.next().await? {
        socket
            .send(&datagram(enc, &message))
            .await
            .map_err(|e| explain(e, options))?;
        match timeout(options.timeout, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => print(out, &reply_text(enc, &buf[..n])).await?,
            Ok(Err(e)) => return Err(explain(e, options)),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no reply within {} (the datagram or its reply may be lost, \
                         or the server dropped it)",
                        humantime::format_duration(options.timeout)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `chat --udp`: each line typed is a datagram, every datagram that comes
/// back is printed as it arrives; an empty line or the end of `input` ends
/// it, after the replies still on their way (up to a second).
pub(super) async fn chat<I, W>(options: &LineOptions, input: I, out: &mut W) -> io::Result<()>
where
    I: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let socket = open(options).await?;
    let mut input = input.lines();
    let enc = options.encoding;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            line = input.next_line() => match line? {
                Some(line) if !line.is_empty() => {
                    socket.send(&datagram(enc, &line)).await.map_err(|e| explain(e, options))?;
                }
                _ => break,
            },
            reply = socket.recv(&mut buf) => {
                let n = reply.map_err(|e| explain(e, options))?;
                print(out, &reply_text(enc, &buf[..n])).await?;
            }
        }
    }
    // A "port unreachable" that comes back now still says nothing listens.
    while let Ok(received) = timeout(LINGER, socket.recv(&mut buf)).await {
        let n = received.map_err(|e| explain(e, options))?;
        print(out, &reply_text(enc, &buf[..n])).await?;
    }
    Ok(())
}
