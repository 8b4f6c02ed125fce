//! Hostile (and merely busy) pipelining clients against the wait before a
//! pipelined HTTP request is answered (`until_taken`: the last answer must
//! be taken first). Ways to queue answers with no slot anyway, to make the
//! server spin, and ways in which a client that reads could lose.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::common::{self, LIMIT, TestServer, connect_from};
use crate::download_clients::{
    http, most_queued, server_send_queues, small_status, small_window_from, status,
    thread_cpu_ticks,
};

/// A download listener serving `root` with `extra` keys, `min_send_rate = 0`
/// unless `extra` sets it.
fn files(root: &Path, extra: &str) -> String {
    let rate = if extra.contains("min_send_rate") {
        ""
    } else {
        "min_send_rate = 0\n"
    };
    common::listener(
        "files",
        "download",
        &format!("root = '{}'\n{rate}{extra}", root.display()),
    )
}

/// A root with `small.txt`, `b1k.bin`, `b16k.bin` (no tail), `b20k.bin`,
/// `fits.bin` (300 KiB) and a folder `dir` (a listing).
fn root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("small.txt"), b"small").expect("small.txt");
    for (name, len) in [
        ("b1k.bin", 1 << 10),
        ("b16k.bin", 16 << 10),
        ("b20k.bin", 20 << 10),
        ("fits.bin", 300 << 10),
    ] {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        fs::write(dir.path().join(name), body).expect("file");
    }
    fs::create_dir(dir.path().join("dir")).expect("dir");
    for i in 0..4 {
        fs::write(dir.path().join(format!("dir/f{i}.txt")), [b'x'; 100]).expect("file");
    }
    dir
}

/// The listener of the memory tests: 4 slots, 2 a source, a send buffer
/// that does not grow.
const FOUR_SLOTS: &str =
    "max_downloads = 4\nmax_downloads_per_source = 2\nsend_buffer = 262144\nsend_budget = 0";

/// What stalled readers may hold on [`FOUR_SLOTS`]: each slot its send
/// buffer, doubled by the kernel, and 1 MiB of slack.
const BOUND_4_SLOTS: u64 = 4 * 2 * 262_144 + (1 << 20);

/// One parsed response: its status line, whether its head asked to close,
/// and its body.
struct Reply {
    status: String,
    body: Vec<u8>,
}

/// Reads `count` responses to HEAD (`heads[i]`) or other requests off
/// `stream` as they come.
async fn read_replies<R: AsyncRead + Unpin>(
    stream: &mut R,
    heads: &[bool],
) -> Result<Vec<Reply>, String> {
    let mut replies = Vec::with_capacity(heads.len());
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    while replies.len() < heads.len() {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = if heads[replies.len()] {
                0
            } else {
                head.lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| format!("no Content-Length in {head:?}"))?
            };
            if buf.len() >= end + 4 + len {
                replies.push(Reply {
                    status: status(&buf[..end]),
                    body: buf[end + 4..end + 4 + len].to_vec(),
                });
                buf.drain(..end + 4 + len);
                continue;
            }
        }
        let n = match timeout(LIMIT, stream.read(&mut chunk)).await {
            Err(_) => return Err(format!("stalled after {} replies", replies.len())),
            Ok(Err(e)) => return Err(format!("{e} after {} replies", replies.len())),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(format!("closed after {} replies", replies.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(replies)
}

/// `rounds` requests of `request`, each written `gap` after the last, on
/// a small-window connection from `127.0.0.N` that reads nothing.
async fn spaced_unread(
    n: u8,
    addr: SocketAddr,
    request: Vec<u8>,
    rounds: usize,
    gap: Duration,
) -> TcpStream {
    let mut stream = small_window_from(n, addr).await;
    for _ in 0..rounds {
        if stream.write_all(&request).await.is_err() {
            break;
        }
        sleep(gap).await;
    }
    stream
}

/// Times `count` requests of `request` on one connection from
/// `127.0.0.N`: all pipelined at once, or each after the last answer.
async fn timed(
    n: u8,
    addr: SocketAddr,
    request: &[u8],
    head: bool,
    count: usize,
    pipelined: bool,
) -> (Duration, Vec<String>) {
    let mut stream = connect_from(n, addr).await;
    let start = Instant::now();
    let mut statuses = Vec::with_capacity(count);
    if pipelined {
        let (mut rd, mut wr) = stream.split();
        let all = request.repeat(count);
        let heads = vec![head; count];
        let (sent, replies) = tokio::join!(wr.write_all(&all), read_replies(&mut rd, &heads));
        sent.expect("send");
        statuses.extend(replies.expect("replies").into_iter().map(|r| r.status));
    } else {
        for _ in 0..count {
            stream.write_all(request).await.expect("send");
            let replies = read_replies(&mut stream, &[head]).await.expect("reply");
            statuses.extend(replies.into_iter().map(|r| r.status));
        }
    }
    (start.elapsed(), statuses)
}

/// Reads `total` bytes off `stream`, `step` bytes every `every` (a steady
/// reader on a slow link); the error or end that came first, if any.
async fn read_steadily(
    stream: &mut TcpStream,
    total: usize,
    step: usize,
    every: Duration,
) -> Result<(), String> {
    let mut got = 0;
    let mut chunk = vec![0u8; step];
    let start = Instant::now();
    let mut next = start;
    while got < total {
        next += every;
        tokio::time::sleep_until(next).await;
        let mut this = 0;
        while this < step && got < total {
            let want = (step - this).min(total - got);
            match timeout(LIMIT, stream.read(&mut chunk[..want])).await {
                Err(_) => return Err(format!("stalled after {got} bytes")),
                Ok(Err(e)) => return Err(format!("{e} after {got} bytes, {:?}", start.elapsed())),
                Ok(Ok(0)) => {
                    return Err(format!("closed after {got} bytes, {:?}", start.elapsed()));
                }
                Ok(Ok(n)) => {
                    got += n;
                    this += n;
                }
            }
        }
    }
    Ok(())
}

/// `n` small-window connections from `127.0.0.2`, each pipelining a
/// thousand HEADs and reading nothing: each waits in `until_taken`.
async fn stalled_pipelines(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let pipeline = http("HEAD", "/fits.bin", "").repeat(1000);
    let mut unread = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = small_window_from(2, addr).await;
        stream.write_all(&pipeline).await.expect("send");
        unread.push(stream);
    }
    unread
}

/// A TLS connection (trusting `ca`) from `127.0.0.N` with a small receive
/// buffer.
async fn small_window_tls_from(
    n: u8,
    addr: SocketAddr,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = small_window_from(n, addr).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    timeout(
        LIMIT,
        tokio_rustls::TlsConnector::from(crate::certs::client_config(ca, None)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

/// Bodies of `root()`'s files: byte `i` is `i % 251`.
fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A client that sends each request only after the server has answered
/// the last one (a few milliseconds apart) and reads nothing is not a
/// pipelining client: its requests are never in the buffer when the last
/// answer goes out, so it is not held back by the wait for the last answer
/// to be taken. It stays under the bound anyway: once the socket's (small,
/// never grown) send buffer is full, the next body's write waits under its
/// slot, and the requests that come meanwhile are pipelined ones. Measured
/// (40 connections from one source, 60 GETs of a 16 KiB file 2 ms apart):
/// 1.67 MB queued, 41.8 KB a connection (pipelined at once: 12.6 KB a
/// connection); 1 KiB files: 2.6 KB, HEADs: 0.6 KB, listings: 4.3 KB.
#[tokio::test]
async fn requests_spaced_after_each_answer_and_never_read_stay_under_the_bound() {
    let dir = root();
    let server = TestServer::start(&files(dir.path(), FOUR_SLOTS));
    let addr = server.addr("files");
    let clients: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(spaced_unread(
                2,
                addr,
                http("GET", "/b16k.bin", ""),
                60,
                Duration::from_millis(2),
            ))
        })
        .collect();
    let queued = most_queued(addr.port(), Duration::from_millis(1200)).await;
    let mut unread = Vec::new();
    for client in clients {
        unread.push(
            timeout(LIMIT, client)
                .await
                .expect("in time")
                .expect("client"),
        );
    }
    assert!(
        queued <= BOUND_4_SLOTS,
        "one source's spaced 16 KiB GETs hold {queued} bytes, over {BOUND_4_SLOTS}"
    );
    drop(unread);
    server.shutdown().await;
}

/// A pipelining client that reads as the answers come gets every answer,
/// in order, right, and about as fast as a client that waits for each:
/// a thousand HEADs, a thousand small files, three hundred listings, and
/// a mix of 1 KiB, 20 KiB and 300 KiB bodies and ranges. Measured
/// (debug build, per request, pipelined vs one at a time): HEAD 51 vs
/// 70 µs, 5-byte file 62 vs 90 µs, 1 KiB 75 vs 94 µs, listing 91 vs 85 µs,
/// 20 KiB 170 vs 109 µs, 300 KiB 827 vs 253 µs (see below).
#[tokio::test]
async fn a_pipelining_client_that_reads_gets_every_answer_in_order_and_fast() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 64\nmax_downloads_per_source = 1",
    ));
    let addr = server.addr("files");
    for (method, target, count) in [
        ("HEAD", "/fits.bin", 1000usize),
        ("GET", "/small.txt", 1000),
        ("GET", "/dir/", 300),
    ] {
        let request = http(method, target, "");
        let head = method == "HEAD";
        let (one_by_one, s1) = timed(2, addr, &request, head, count, false).await;
        let (pipelined, s2) = timed(2, addr, &request, head, count, true).await;
        let not_ok: Vec<_> = s1
            .iter()
            .chain(&s2)
            .filter(|s| !s.contains("200"))
            .collect();
        assert!(not_ok.is_empty(), "{method} {target}: {not_ok:?}");
        assert!(
            pipelined <= one_by_one * 2 + Duration::from_millis(50),
            "{count} pipelined {method} {target} took {pipelined:?}, one at a time {one_by_one:?}"
        );
    }
    // A mix, with ranges, checked byte for byte.
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for round in 0..30usize {
        for (target, len) in [
            ("/b1k.bin", 1usize << 10),
            ("/b20k.bin", 20 << 10),
            ("/fits.bin", 300 << 10),
        ] {
            requests.extend(http("GET", target, ""));
            expected.push(("HTTP/1.1 200 OK", body_of(len)));
            let from = round * 97 % (len - 100);
            requests.extend(http(
                "GET",
                target,
                &format!("Range: bytes={from}-{}\r\n", from + 99),
            ));
            expected.push((
                "HTTP/1.1 206 Partial Content",
                body_of(len)[from..from + 100].to_vec(),
            ));
        }
        requests.extend(http("HEAD", "/b20k.bin", ""));
        expected.push(("HTTP/1.1 200 OK", Vec::new()));
    }
    let heads: Vec<bool> = expected.iter().map(|(_, b)| b.is_empty()).collect();
    let mut stream = connect_from(3, addr).await;
    let (mut rd, mut wr) = stream.split();
    let (sent, replies) = tokio::join!(wr.write_all(&requests), read_replies(&mut rd, &heads));
    sent.expect("send");
    let replies = replies.expect("every answer");
    for (i, (reply, (status, body))) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(reply.status, *status, "answer {i}");
        assert!(reply.body == *body, "answer {i}: the body differs");
    }
    server.shutdown().await;
}

/// Found by this pass: a pipelined request waits for the last answer to be
/// taken by looking at the socket after 1 ms, then 2, 4...: a client that
/// takes a body in less than a millisecond (loopback, a fast LAN) still
/// waits the whole first millisecond, before each pipelined body. A body
/// that fits in the client's window is taken at once and loses nothing; a
/// larger one does. Measured (debug build, one connection, read as it
/// comes, best of three, three runs): 40 GETs of a 300 KiB file pipelined
/// took 29.5-31.8 ms (0.75 ms a body), one at a time 10.5-11.6 ms
/// (0.27 ms a body): 2.8 times slower for pipelining (50 bodies, once:
/// 0.83 vs 0.25 ms a body); 20 KiB bodies 1.6 times. docs/download.md says a
/// client that reads as it pipelines "is answered as fast as before".
///
/// Fixed as suggested: the wait is for the socket's wake under
/// `TCP_NOTSENT_LOWAT` 1 (the kernel wakes the writer once nothing is left
/// unsent), not timed looks. After it, in this debug build: 16.1 ms
/// pipelined, 10.3 ms one at a time (1.6 times); in a release build
/// (a Python client, 40 GETs on one connection, best of five) 0.054 ms
/// a body pipelined against 0.101 ms one at a time, so the bound here is
/// twice, which the timed looks (2.8 times) did not meet.
#[tokio::test]
async fn pipelined_large_bodies_read_at_once_come_as_fast_as_one_at_a_time() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 64\nmax_downloads_per_source = 8",
    ));
    let addr = server.addr("files");
    let request = http("GET", "/fits.bin", "");
    let mut one_by_one = Duration::MAX;
    let mut pipelined = Duration::MAX;
    for _ in 0..3 {
        one_by_one = one_by_one.min(timed(2, addr, &request, false, 40, false).await.0);
        pipelined = pipelined.min(timed(2, addr, &request, false, 40, true).await.0);
    }
    assert!(
        pipelined <= one_by_one * 2,
        "40 pipelined 300 KiB bodies took {pipelined:?}, one at a time {one_by_one:?}"
    );
    server.shutdown().await;
}

/// A pipelining client that reads steadily (16 KiB every 14 ms, about
/// 1.2 MB/s, through a 16 KiB window) is neither reset nor slowed by the
/// wait between bodies (the wait ends at the kernel's wake once a body is
/// taken, and a body takes 0.26 s to drain): six 300 KiB bodies come in the time the reads take.
/// Measured: 1.583 s for 1.582 s of reads (also 16 KiB every 7 and 28 ms:
/// 1 ms over).
#[tokio::test]
async fn a_steady_pipelining_reader_is_not_slowed_by_the_wait() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 64\nmax_downloads_per_source = 1\nsend_buffer = 262144\nsend_budget = 0",
    ));
    let addr = server.addr("files");
    // The head's length: read one whole answer.
    let mut one = connect_from(3, addr).await;
    one.write_all(&http("GET", "/fits.bin", ""))
        .await
        .expect("send");
    let mut all = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    while all.windows(4).position(|w| w == b"\r\n\r\n").is_none() {
        let n = timeout(LIMIT, one.read(&mut chunk))
            .await
            .expect("in time")
            .expect("read");
        all.extend_from_slice(&chunk[..n]);
    }
    let reply_len = all.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4 + (300 << 10);
    drop(one);
    let (step, every, count) = (16 << 10, Duration::from_millis(14), 6);
    let reads = every * ((reply_len * count).div_ceil(step) as u32);
    let mut stream = small_window_from(2, addr).await;
    let start = Instant::now();
    stream
        .write_all(&http("GET", "/fits.bin", "").repeat(count))
        .await
        .expect("send");
    let read = read_steadily(&mut stream, reply_len * count, step, every).await;
    let took = start.elapsed();
    assert_eq!(read, Ok(()));
    assert!(
        took <= reads + reads / 10,
        "{count} pipelined bodies read steadily took {took:?}, the reads {reads:?}"
    );
    server.shutdown().await;
}

/// Three hundred connections, each pipelining a thousand HEADs and reading
/// none, wait for their clients without spinning (their looks grow a
/// second apart), queue one answer head each (not a thousand), and end
/// promptly at a shutdown. Measured: 4 clock ticks of CPU in 2 s (test
/// runtime and server), 57 486 bytes queued (191 a connection), a shutdown
/// in 1.01 s (as with idle connections) with none abandoned.
#[tokio::test]
async fn many_stalled_pipelines_do_not_spin_queue_or_delay_a_shutdown() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 64\n[server]\nshutdown_grace = \"5s\"",
    ));
    let addr = server.addr("files");
    let unread = stalled_pipelines(addr, 300).await;
    // Past the fast first looks (1 + 2 + ... + 512 ms).
    sleep(Duration::from_millis(1100)).await;
    let before = thread_cpu_ticks();
    sleep(Duration::from_secs(2)).await;
    let used = thread_cpu_ticks() - before;
    let queued = server_send_queues(addr.port());
    let started = Instant::now();
    let report = server.shutdown().await;
    let took = started.elapsed();
    assert!(
        used < 50,
        "300 stalled pipelines took {used} ticks of CPU in 2 s"
    );
    assert!(
        queued <= 300 * 2048,
        "300 stalled pipelines of HEADs queue {queued} bytes"
    );
    assert_eq!(report.abandoned, 0);
    assert!(took < Duration::from_secs(2), "the shutdown took {took:?}");
    drop(unread);
}

/// A reload that changes the listener ends the connections that wait for
/// a pipelined request's turn (tail held): their slots come back at once,
/// no count leaks across it, and the clients see their connections end.
#[tokio::test]
async fn a_reload_ends_pipelines_waiting_for_their_turn_and_gives_their_slots_back() {
    let dir = root();
    let config = |share: usize| {
        files(
            dir.path(),
            &format!(
                "max_downloads = 8\nmax_downloads_per_source = {share}\nsend_buffer = 262144\n\
                 send_budget = 0"
            ),
        )
    };
    let mut server = TestServer::start(&config(2));
    let addr = server.addr("files");
    let pipeline = http("GET", "/fits.bin", "").repeat(5);
    let mut unread = Vec::new();
    for _ in 0..2 {
        let mut stream = small_window_from(2, addr).await;
        stream.write_all(&pipeline).await.expect("send");
        unread.push(stream);
    }
    sleep(Duration::from_millis(200)).await;
    assert_eq!(
        small_status(2, addr).await,
        "HTTP/1.1 429 Too Many Requests"
    );
    server.reload(&config(3)).await.expect("reload");
    let reloaded = Instant::now();
    while small_status(2, addr).await != "HTTP/1.1 200 OK" {
        assert!(
            reloaded.elapsed() < Duration::from_secs(1),
            "no slot back after the reload"
        );
        sleep(Duration::from_millis(20)).await;
    }
    // The old connections end: what they were sent, then the end.
    for mut stream in unread {
        let mut chunk = vec![0u8; 64 << 10];
        let ended = loop {
            match timeout(Duration::from_secs(2), stream.read(&mut chunk)).await {
                Err(_) => break false,
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(_)) => {}
            }
        };
        assert!(ended, "a pipeline retired by the reload is still open");
    }
    // Three new pipelines' tails, and no fourth.
    let mut again = Vec::new();
    for _ in 0..3 {
        let mut stream = small_window_from(2, addr).await;
        stream.write_all(&pipeline).await.expect("send");
        again.push(stream);
    }
    sleep(Duration::from_millis(200)).await;
    assert_eq!(
        small_status(2, addr).await,
        "HTTP/1.1 429 Too Many Requests"
    );
    drop(again);
    server.shutdown().await;
}

/// Over TLS the wait looks at the TCP socket under the session: 40
/// connections from one source, each pipelining 60 GETs of a 16 KiB file
/// and reading nothing, queue about one answer each, whether the requests
/// come in one TLS record or one record each; a TLS client that reads gets
/// every pipelined answer. Measured: 406 KB (one record) and 398 KB (a
/// record each) queued, about 10 KB a connection.
#[tokio::test]
async fn pipelining_over_tls_is_bounded_and_served() {
    let dir = root();
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = crate::certs::Pki::new(pki_dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let server = TestServer::start(&files(
        dir.path(),
        &format!("{FOUR_SLOTS}\n{}", pair.tls_table("")),
    ));
    let addr = server.addr("files");
    let request = http("GET", "/b16k.bin", "");
    let mut unread = Vec::new();
    for i in 0..40 {
        let mut stream = small_window_tls_from(2, addr, &pki.ca_pem).await;
        if i % 2 == 0 {
            for _ in 0..60 {
                stream.write_all(&request).await.expect("send");
            }
        } else {
            stream.write_all(&request.repeat(60)).await.expect("send");
        }
        stream.flush().await.expect("flush");
        unread.push(stream);
    }
    let queued = most_queued(addr.port(), Duration::from_millis(1000)).await;
    drop(unread);
    assert!(
        queued <= BOUND_4_SLOTS,
        "pipelines over TLS hold {queued} bytes, over {BOUND_4_SLOTS}"
    );
    let mut reader = small_window_tls_from(3, addr, &pki.ca_pem).await;
    let mixed = [http("GET", "/b20k.bin", ""), http("HEAD", "/fits.bin", "")].concat();
    let (mut rd, mut wr) = tokio::io::split(&mut reader);
    let heads: Vec<bool> = (0..100).map(|i| i % 2 == 1).collect();
    let (sent, replies) = tokio::join!(
        async {
            wr.write_all(&mixed.repeat(50)).await?;
            wr.flush().await
        },
        read_replies(&mut rd, &heads)
    );
    sent.expect("send");
    let replies = replies.expect("every answer");
    assert!(replies.iter().all(|r| r.status == "HTTP/1.1 200 OK"));
    assert!(replies[0].body == body_of(20 << 10));
    server.shutdown().await;
}
