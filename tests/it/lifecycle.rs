//! What every listener shares: the connection limit, the idle timeout,
//! graceful shutdown and its grace period, and binding again at once while
//! the last run's connections sit in TIME_WAIT.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::timeout;

use crate::common::{
    LIMIT, TestServer, connect, connect_lines, listener, private_listener, read_line, read_to_end,
};

async fn echo_once(stream: &mut tokio::net::TcpStream, data: &[u8]) {
    stream.write_all(data).await.unwrap();
    let mut got = vec![0; data.len()];
    timeout(LIMIT, stream.read_exact(&mut got))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(got, data);
}

#[tokio::test]
async fn at_max_connections_the_next_client_waits_and_is_then_served() {
    let server = TestServer::start(&listener("echo", "echo", "max_connections = 1"));
    let addr = server.addr("echo");
    let mut first = connect(addr).await;
    echo_once(&mut first, b"first").await;

    // The second connect succeeds (the kernel queues it in the backlog) but is
    // not served while the first holds the only slot.
    let mut second = connect(addr).await;
    second.write_all(b"second").await.unwrap();
    let mut got = [0u8; 6];
    let early = timeout(Duration::from_millis(300), second.read_exact(&mut got)).await;
    assert!(
        early.is_err(),
        "second client was served beyond max_connections"
    );

    drop(first);
    timeout(LIMIT, second.read_exact(&mut got))
        .await
        .expect("second client never served")
        .unwrap();
    assert_eq!(&got, b"second");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    const IDLE: &str = "idle_timeout = \"500ms\"\nmessage_gap = \"10ms\"";
    let server = TestServer::start(&format!(
        "{}{}{}",
        listener("echo", "echo", IDLE),
        listener("kw", "keyword-bot", IDLE),
        listener("busy", "echo", "idle_timeout = \"1s\"")
    ));
    for name in ["echo", "kw"] {
        let started = Instant::now();
        let mut stream = connect(server.addr(name)).await;
        assert!(read_to_end(&mut stream).await.is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "{name} closed before the idle timeout"
        );
    }
    // Activity resets the timer: a client talking every 250ms (4x below the
    // 1s timeout) stays connected for 2s, twice the timeout.
    let started = Instant::now();
    let mut stream = connect(server.addr("busy")).await;
    for _ in 0..8 {
        echo_once(&mut stream, b"ping").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the client was not connected longer than the idle timeout: the test proves nothing"
    );
    echo_once(&mut stream, b"still here").await;
}

fn big_file(dir: &tempfile::TempDir, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), data).unwrap();
}

fn download_listener(dir: &tempfile::TempDir, extra: &str) -> String {
    listener(
        "files",
        "download",
        &format!("root = '{}'\n{extra}", dir.path().display()),
    )
}

/// The size of the file [`download_in_flight`] sends.
const BIG: usize = 8 << 20;

/// A download listener on `127.0.0.N` and a client that has read the first
/// MiB of an 8 MiB file: the rest is still to be sent.
async fn download_in_flight(
    n: u8,
) -> (
    tempfile::TempDir,
    TestServer,
    tokio::net::TcpStream,
    Vec<u8>,
) {
    let dir = tempfile::tempdir().unwrap();
    big_file(&dir, BIG);
    let config = download_listener(&dir, "chunk_size = 16384")
        .replace("127.0.0.1:0", &format!("127.0.0.{n}:0"));
    let server = TestServer::start(&config);
    let mut stream = connect(server.addr("files")).await;
    stream.write_all(b"big.bin\n").await.unwrap();
    let mut head = vec![0u8; 1 << 20];
    timeout(LIMIT, stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    (dir, server, stream, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_inflight_download_finish_and_stops_accepting() {
    // Its own loopback address: the closed port is checked at the end.
    let (_dir, server, mut stream, head) = download_in_flight(14).await;
    let (addr, len) = (server.addr("files"), BIG);

    // SIGTERM's equivalent, while most of the file is still to be sent.
    server.begin_shutdown();
    let rest = read_to_end(&mut stream).await;
    assert_eq!(
        head.len() + rest.len(),
        len,
        "download cut short by shutdown"
    );
    assert!(
        rest.iter()
            .enumerate()
            .all(|(i, b)| *b == ((head.len() + i) % 251) as u8)
    );

    let report = server.shutdown().await;
    assert_eq!(report.abandoned, 0);
    let refused = TcpSocket::new_v4().unwrap().connect(addr).await;
    assert!(refused.is_err(), "listener still accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_clients_are_refused_within_a_second_of_shutdown_while_a_download_finishes() {
    // Its own loopback address: no other test is given this port.
    let (_dir, server, mut stream, head) = download_in_flight(16).await;
    let (addr, len) = (server.addr("files"), BIG);

    server.begin_shutdown();
    // The download is not read meanwhile: it is still in flight when the
    // port closes. Connects that land before the close are dropped unserved.
    let started = Instant::now();
    loop {
        match TcpSocket::new_v4().unwrap().connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            // Queued in the backlog as the socket closed: reset, not served.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect failed otherwise: {e}"),
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(1),
                "still accepting connections 1 s after shutdown began"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rest = read_to_end(&mut stream).await;
    assert_eq!(
        head.len() + rest.len(),
        len,
        "download cut short by shutdown"
    );
    assert_eq!(server.shutdown().await.abandoned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    big_file(&dir, 64 << 20);
    let toml = format!(
        "[server]\nshutdown_grace = \"300ms\"\n{}",
        download_listener(&dir, "")
    );
    let server = TestServer::start(&toml);
    let mut stalled = connect(server.addr("files")).await;
    stalled.write_all(b"big.bin\n").await.unwrap();
    let mut some = [0u8; 1024];
    timeout(LIMIT, stalled.read_exact(&mut some))
        .await
        .unwrap()
        .unwrap();
    // The client stops reading: its download cannot finish.
    let started = Instant::now();
    let report = server.shutdown().await;
    assert_eq!(report.abandoned, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The abandoned connection was dropped, not left running: reading what
    // is still in flight ends (EOF or reset) instead of waiting forever.
    let mut rest = Vec::new();
    let ended = timeout(LIMIT, stalled.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the abandoned connection is still open");
    // Only what sat in the socket buffers arrives; a download left running
    // would deliver all 64 MiB.
    assert!(
        rest.len() + some.len() < 64 << 20,
        "the download went on after the grace period"
    );
}

#[tokio::test]
async fn the_same_port_binds_again_right_after_shutdown_despite_time_wait() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"data").unwrap();
    let server = TestServer::start(&download_listener(&dir, ""));
    let addr = server.addr("files");
    // The server closes first after each download: its side of each
    // connection goes to TIME_WAIT on this port.
    for _ in 0..5 {
        let mut stream = connect(addr).await;
        stream.write_all(b"f\n").await.unwrap();
        assert_eq!(read_to_end(&mut stream).await, b"data");
    }
    server.shutdown().await;

    // Without SO_REUSEADDR the port is not bindable now: the check below is meaningful.
    let plain = TcpSocket::new_v4().unwrap();
    assert!(
        plain.bind(addr).is_err(),
        "no TIME_WAIT on {addr}: the test proves nothing"
    );
    drop(plain);

    let again =
        TestServer::start(&download_listener(&dir, "").replace("127.0.0.1:0", &addr.to_string()));
    assert_eq!(again.addr("files"), addr);
    let mut stream = connect(addr).await;
    stream.write_all(b"f\n").await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, b"data");
}

#[tokio::test]
async fn listeners_are_independent_and_one_bad_client_harms_no_other() {
    let server = TestServer::start(&format!(
        "{}{}",
        listener(
            "kw",
            "keyword-bot",
            "max_message_bytes = 64\n[[listener.rules]]\nkeywords = [\"hello\"]\nreply = \"hi\""
        ),
        listener("echo", "echo", "")
    ));
    let mut good = connect_lines(server.addr("kw")).await;
    let mut bad = connect(server.addr("kw")).await;
    bad.write_all(&[b'z'; 1000]).await.unwrap();
    assert_eq!(read_to_end(&mut bad).await, b"ERR message too long\n");
    good.get_mut().write_all(b"hello\n").await.unwrap();
    assert_eq!(read_line(&mut good).await, "hi");
    let mut echo = connect(server.addr("echo")).await;
    echo_once(&mut echo, b"fine").await;
}

/// The timer field (`tr`) of the established server-side socket on `port`
/// in /proc/net/tcp: 2 while a keepalive timer is pending, 0 when none is.
fn server_socket_timer(port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
        let established = fields[3] == "01";
        let timer = fields[5].split(':').next()?;
        (local_port == port && established).then(|| timer.parse().ok())?
    })
}

#[tokio::test]
async fn accepted_sockets_have_tcp_keepalive_unless_it_is_off() {
    let config = [
        private_listener(17, "on", "echo", "tcp_keepalive = \"7s\""),
        private_listener(17, "off", "echo", "tcp_keepalive = \"0s\""),
    ]
    .concat();
    let server = TestServer::start(&config);
    let mut timers = Vec::new();
    for name in ["on", "off"] {
        let mut conn = connect(server.addr(name)).await;
        // Echoed: the server has accepted it and set its options.
        echo_once(&mut conn, b"x").await;
        timers.push((name, server_socket_timer(server.addr(name).port()), conn));
    }
    let shown: Vec<(&str, Option<u32>)> = timers.iter().map(|(n, t, _)| (*n, *t)).collect();
    assert_eq!(shown, [("on", Some(2)), ("off", Some(0))]);
    drop(timers);
    server.shutdown().await;
}

/// The timer field (`tr`) and its time left in hundredths of a second
/// (`tm->when`) of the server-side socket of `client`'s connection to
/// `port`, from /proc/net/tcp.
fn server_side_timer(port: u16, client: &tokio::net::TcpStream) -> Option<(u32, u32)> {
    let client_port = client.local_addr().expect("the client's address").port();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port_of = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
        let (timer, when) = fields.get(5)?.split_once(':')?;
        (port_of(fields.get(1)?)? == port && port_of(fields.get(2)?)? == client_port)
            .then(|| Some((timer.parse().ok()?, u32::from_str_radix(when, 16).ok()?)))?
    })
}

/// Accepted sockets take their options from the listening socket while the
/// route keeps the listener's keepalive; after a reload that changes it
/// they set their own, longer or off.
#[tokio::test]
async fn a_reload_that_changes_tcp_keepalive_reaches_the_connections_after_it() {
    let with = |keepalive: &str| {
        private_listener(
            18,
            "ka",
            "echo",
            &format!("tcp_keepalive = \"{keepalive}\""),
        )
    };
    let mut server = TestServer::start(&with("7s"));
    let addr = server.addr("ka");
    let mut conns = Vec::new();
    for keepalive in ["7s", "300s", "0s", "7s"] {
        if !conns.is_empty() {
            server.reload(&with(keepalive)).await.expect("reload");
        }
        let mut conn = connect(addr).await;
        // Echoed: the server has accepted it and set its options.
        echo_once(&mut conn, b"x").await;
        let timer = server_side_timer(addr.port(), &conn);
        conns.push((keepalive, timer, conn));
    }
    let seen: Vec<(&str, Option<(u32, u32)>)> = conns.iter().map(|(k, t, _)| (*k, *t)).collect();
    // Keepalive's timer (2) runs out within 7 s (700 hundredths), or
    // within 300 s and later than 7 s; none (0) when it is off.
    let expected = |keepalive: &str, timer: Option<(u32, u32)>| match (keepalive, timer) {
        ("7s", Some((2, when))) => when <= 700,
        ("300s", Some((2, when))) => when > 700 && when <= 30_000,
        ("0s", Some((0, _))) => true,
        _ => false,
    };
    assert!(
        seen.iter()
            .all(|(keepalive, timer)| expected(keepalive, *timer)),
        "{seen:?}"
    );
    drop(conns);
    server.shutdown().await;
}

/// Reads what is left of `stream` (bounded in time): the bytes, and how it
/// ended (`Ok`: a clean end, FIN; `Err`: the error, such as a reset).
async fn read_rest(stream: &mut tokio::net::TcpStream) -> (Vec<u8>, std::io::Result<usize>) {
    let mut rest = Vec::new();
    let end = timeout(LIMIT, stream.read_to_end(&mut rest))
        .await
        .expect("the connection neither ended nor was reset");
    (rest, end)
}

/// A server whose shutdown grace is 300 ms, serving a 64 MiB file, and a
/// client (from `127.0.0.N`) that sent `request` and read its first KiB,
/// then stops reading: the download cannot finish within the grace.
async fn stalled_download(
    n: u8,
    request: &[u8],
) -> (tempfile::TempDir, TestServer, tokio::net::TcpStream) {
    let dir = tempfile::tempdir().unwrap();
    big_file(&dir, 64 << 20);
    let toml = format!(
        "[server]\nshutdown_grace = \"300ms\"\n{}",
        download_listener(&dir, "min_send_rate = 0")
    );
    let server = TestServer::start(&toml);
    let mut stalled = crate::common::connect_from(n, server.addr("files")).await;
    stalled.write_all(request).await.unwrap();
    let mut some = [0u8; 1024];
    timeout(LIMIT, stalled.read_exact(&mut some))
        .await
        .unwrap()
        .unwrap();
    (dir, server, stalled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_download_cut_by_the_shutdown_grace_ends_in_a_reset_not_a_clean_end() {
    let (_dir, server, mut stalled) = stalled_download(21, b"big.bin\n").await;
    assert_eq!(server.shutdown().await.abandoned, 1);
    // The raw protocol has no length: only the reset tells the client that
    // the file is not whole.
    let (rest, end) = read_rest(&mut stalled).await;
    let error = end.expect_err("a download cut by the grace ended like a whole file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert!(rest.len() < 64 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_body_cut_by_the_shutdown_grace_ends_in_a_reset() {
    let (_dir, server, mut stalled) =
        stalled_download(22, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(server.shutdown().await.abandoned, 1);
    let (_, end) = read_rest(&mut stalled).await;
    let error = end.expect_err("an HTTP body cut by the grace ended with FIN");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}

#[tokio::test]
async fn a_whole_reply_still_ends_cleanly_even_with_unread_input_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    big_file(&dir, 1 << 20);
    let server = TestServer::start(&download_listener(&dir, ""));
    // Input the server never reads follows the request: the close drains
    // it, so the kernel does not answer it with RST.
    let mut stream = connect(server.addr("files")).await;
    let mut request = b"big.bin\n".to_vec();
    request.extend_from_slice(&[b'x'; 4096]);
    stream.write_all(&request).await.unwrap();
    let (got, end) = read_rest(&mut stream).await;
    assert_eq!(end.expect("a whole file ends with FIN"), 1 << 20);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    // And over HTTP, with the connection closed after the response.
    let mut stream = connect(server.addr("files")).await;
    stream
        .write_all(b"GET /big.bin HTTP/1.1\r\nConnection: close\r\n\r\nunread")
        .await
        .unwrap();
    let (got, end) = read_rest(&mut stream).await;
    end.expect("a whole HTTP response ends with FIN");
    assert!(got.len() > 1 << 20 && got.starts_with(b"HTTP/1.1 200"));
    server.shutdown().await;
}
