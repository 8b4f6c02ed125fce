//! One client cannot keep a worker from the other connections: work that a
//! client's buffered input makes without any wait of the server's (no read
//! that blocks, no write) still yields the worker at tokio's budget.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{TestServer, listener};

/// Streams `chunk` to `addr` from a thread of its own until `stop`, never
/// reading: the server always finds input buffered.
fn stream_until(
    addr: SocketAddr,
    chunk: &'static [u8],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut conn = TcpStream::connect(addr).expect("connect the flooder");
        conn.set_write_timeout(Some(Duration::from_millis(100)))
            .expect("write timeout");
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match conn.write(chunk) {
                Ok(n) => sent += n as u64,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        sent
    })
}

/// A round trip of `ping` on a fresh connection, from a blocking socket
/// (off the runtime, so that only the server's worker is measured).
fn round_trip(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr).expect("connect the bystander");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    conn.write_all(b"ping\n").expect("send ping");
    let mut reply = [0u8; 5];
    conn.read_exact(&mut reply).expect("the bystander's reply");
    assert_eq!(&reply, b"pong\n");
    started.elapsed()
}

/// Blank lines get no reply, so no write spends the connection's budget:
/// a client that streams them made its task answer up to 4 KiB of blank
/// lines per read and 128 reads per turn (about 512 000 lines, 60-130 ms
/// in a release build, far more in a debug one) before the worker ran
/// anything else. With one worker, a bystander's round trip waited that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_client_streaming_blank_lines_does_not_hold_the_worker() {
    let server = TestServer::start(&listener(
        "kw",
        "keyword-bot",
        "[[listener.rules]]\nkeywords = [\"ping\"]\nreply = \"pong\"",
    ));
    let addr = server.addr("kw");
    let stop = Arc::new(AtomicBool::new(false));
    static BLANK: [u8; 65536] = [b'\n'; 65536];
    let flooder = stream_until(addr, &BLANK, stop.clone());
    let times = tokio::task::spawn_blocking(move || {
        // The flood under way first.
        std::thread::sleep(Duration::from_millis(200));
        let mut times: Vec<Duration> = (0..15)
            .map(|_| {
                let t = round_trip(addr);
                std::thread::sleep(Duration::from_millis(10));
                t
            })
            .collect();
        times.sort();
        times
    })
    .await
    .expect("bystander");
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().expect("flooder");
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(40),
        "a bystander's round trip took {median:?} (median; all: {times:?}) while one client \
         streamed {sent} bytes of blank lines"
    );
}
