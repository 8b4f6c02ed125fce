//! The client side of the download port's attack tests: connections from
//! distinct sources with small receive windows, HTTP requests, responses
//! read by their `Content-Length`, and the server's send queues as the
//! kernel counts them.

use std::fs;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Duration, Instant, sleep, timeout};

use crate::common::{LIMIT, connect_from, read_to_end};

/// A connection from `127.0.0.N` with a small receive buffer, so that what
/// it does not read stays queued on the server's side.
pub async fn small_window_from(n: u8, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, n]), 0))
        .expect("bind the source address");
    timeout(LIMIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// An HTTP/1.1 request for `target` with `fields` (each ending in CRLF).
pub fn http(method: &str, target: &str, fields: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{fields}\r\n").into_bytes()
}

/// The status line of an HTTP response (of its first 80 characters).
pub fn status(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(&reply[..reply.len().min(80)]);
    text.lines().next().unwrap_or_default().to_owned()
}

/// Sends `request` from `127.0.0.N` and reads until the server closes.
pub async fn fetch_from(n: u8, addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect_from(n, addr).await;
    stream.write_all(request).await.expect("send");
    read_to_end(&mut stream).await
}

/// The bytes queued to send on the server's sockets of local port `port`
/// (`tx_queue` in /proc/net/tcp).
pub fn server_send_queues(port: u16) -> u64 {
    let table = fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let tx = fields.get(4)?.split(':').next()?;
            (local == port).then(|| u64::from_str_radix(tx, 16).ok())?
        })
        .sum()
}

/// Reads one HTTP response with a `Content-Length` off `stream` whole
/// (bounded): its head and body.
pub async fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut after = Vec::new();
    let reply = read_next_response(stream, &mut after).await;
    assert!(after.is_empty(), "{} bytes after the response", after.len());
    reply
}

/// Reads the next HTTP response with a `Content-Length` off `stream`
/// whole (bounded), beginning with the bytes read before in `carry`, in
/// which what was read past it is left.
pub async fn read_next_response(stream: &mut TcpStream, carry: &mut Vec<u8>) -> Vec<u8> {
    let mut reply = std::mem::take(carry);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            if reply.len() >= end + 4 + len {
                *carry = reply.split_off(end + 4 + len);
                return reply;
            }
        }
        let n = timeout(LIMIT, stream.read(&mut chunk))
            .await
            .expect("the response came in time")
            .expect("read");
        assert!(n > 0, "closed mid-response after {} bytes", reply.len());
        reply.extend_from_slice(&chunk[..n]);
    }
}

/// The most the server's sockets of `port` queue over `for_how_long`,
/// sampled every 100 ms.
pub async fn most_queued(port: u16, for_how_long: Duration) -> u64 {
    let start = Instant::now();
    let mut most = 0;
    while start.elapsed() < for_how_long {
        sleep(Duration::from_millis(100)).await;
        most = most.max(server_send_queues(port));
    }
    most
}

/// The status `127.0.0.N` gets now for a GET of `small.txt` (a body: it
/// needs a slot) on a fresh connection.
pub async fn small_status(n: u8, addr: SocketAddr) -> String {
    status(&fetch_from(n, addr, &http("GET", "/small.txt", "Connection: close\r\n")).await)
}

/// The CPU time (user and system, in clock ticks) of the calling thread:
/// the in-process server's, on a current-thread test runtime.
pub fn thread_cpu_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/thread-self/stat").expect("stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}
