//! Hostile clients against `max_downloads_per_source`: one source trying
//! to hold more than its share of the download slots (keep-alive and
//! pipelining, every kind of body, answers that take no slot), to leak a
//! count so that it is locked out after its sends end (aborted sends, idle
//! timeouts), or to be counted as two sources (IPv4-mapped IPv6), and
//! reloads that change the share while sends are held.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};

use crate::common::{self, LIMIT, TestServer, connect_from, read_to_end};
use crate::download_clients::{
    fetch_from, http, read_next_response, read_response, server_send_queues, small_window_from,
    status,
};

const TOO_MANY: &[u8] = b"ERR too many downloads from your address\n";

/// A download listener serving `root`, with `extra` keys.
fn files(root: &Path, extra: &str) -> String {
    common::listener(
        "files",
        "download",
        &format!("root = '{}'\nmin_send_rate = 0\n{extra}", root.display()),
    )
}

/// A root with a 64 MiB sparse `big.bin`, `small.txt` (`small`) and a
/// folder `dir` of a few files (a listing, and `dir.tar`).
fn root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::File::create(dir.path().join("big.bin"))
        .and_then(|f| f.set_len(64 << 20))
        .expect("big.bin");
    fs::write(dir.path().join("small.txt"), b"small").expect("small.txt");
    fs::create_dir(dir.path().join("dir")).expect("dir");
    for i in 0..4 {
        fs::write(dir.path().join(format!("dir/f{i}.txt")), [b'x'; 100]).expect("file");
    }
    // A folder whose archive does not fit in the socket buffers.
    fs::create_dir(dir.path().join("bigdir")).expect("bigdir");
    fs::File::create(dir.path().join("bigdir/big.bin"))
        .and_then(|f| f.set_len(64 << 20))
        .expect("bigdir/big.bin");
    dir
}

/// Sends `request` on `stream` and reads its first bytes, which must not
/// be a refusal: the send is under way, and the client then reads nothing
/// (it holds its slot).
async fn stall(stream: &mut TcpStream, request: &[u8]) {
    stream.write_all(request).await.expect("send");
    let mut first = [0u8; 64];
    let n = timeout(LIMIT, stream.read(&mut first))
        .await
        .expect("no data")
        .expect("read");
    let first = &first[..n];
    assert!(
        n > 0 && !first.starts_with(b"ERR") && !first.starts_with(b"HTTP/1.1 429"),
        "{request:?} was not sent: {:?}",
        String::from_utf8_lossy(first)
    );
}

/// A stalled download from `127.0.0.N` of `request`.
async fn stalled_from(n: u8, addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = small_window_from(n, addr).await;
    stall(&mut stream, request).await;
    stream
}

/// Waits (bounded) until `127.0.0.N` is served `small.txt` again: the
/// server has noticed that the source's sends ended.
async fn served_again(n: u8, addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut last = Vec::new();
    while tokio::time::Instant::now() < deadline {
        last = fetch_from(n, addr, b"small.txt\n").await;
        if last == b"small" {
            return;
        }
        sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "127.0.0.{n} is still refused after its sends ended: {:?}",
        String::from_utf8_lossy(&last)
    );
}

/// How many stalled downloads `127.0.0.N` gets now (at most `up_to`),
/// kept in `held`; the request after the last is refused (for the source,
/// or busy).
async fn take_all(n: u8, addr: SocketAddr, up_to: usize, held: &mut Vec<TcpStream>) -> usize {
    for taken in 0..up_to {
        let mut stream = small_window_from(n, addr).await;
        stream.write_all(b"big.bin\n").await.expect("send");
        let mut first = [0u8; 64];
        let got = timeout(LIMIT, stream.read(&mut first))
            .await
            .expect("no data")
            .expect("read");
        if first[..got].starts_with(b"ERR") {
            let refusal = &first[..got];
            assert!(
                refusal == TOO_MANY || refusal == b"ERR busy\n",
                "127.0.0.{n}'s refusal: {:?}",
                String::from_utf8_lossy(refusal)
            );
            return taken;
        }
        held.push(stream);
    }
    up_to
}

/// Keep-alive and pipelining do not multiply a connection's slots: a
/// connection sends one body at a time, so the requests pipelined behind
/// a stalled one (files, ranges, a listing, an archive) wait, and hold
/// nothing. Two such connections fill a share of 2: every kind of body
/// (raw and HTTP: file, range, listing, archive) is then refused for the
/// source while another source is served, and what takes no slot (HEAD,
/// a 304, a 301, a 416) is still answered.
#[tokio::test]
async fn pipelined_requests_behind_a_stalled_body_hold_no_slot() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 8\nmax_downloads_per_source = 2",
    ));
    let addr = server.addr("files");
    let mut pipeline = http("GET", "/big.bin", "");
    for target in ["/big.bin", "/dir/", "/dir.tar", "/bigdir.tar", "/small.txt"] {
        pipeline.extend(http("GET", target, ""));
    }
    pipeline.extend(http("GET", "/big.bin", "Range: bytes=1-\r\n"));
    let held = [
        stalled_from(2, addr, &pipeline).await,
        stalled_from(2, addr, &pipeline).await,
    ];
    for raw in [&b"small.txt\n"[..], b"\n", b"dir\n", b"dir.tar\n"] {
        assert_eq!(fetch_from(2, addr, raw).await, TOO_MANY, "{raw:?}");
    }
    let close = "Connection: close\r\n";
    for (target, fields) in [
        ("/small.txt", close.to_owned()),
        ("/big.bin", format!("Range: bytes=0-9\r\n{close}")),
        ("/dir/", close.to_owned()),
        ("/dir.tar", close.to_owned()),
        ("/dir.tar", format!("Range: bytes=512-\r\n{close}")),
    ] {
        let reply = fetch_from(2, addr, &http("GET", target, &fields)).await;
        assert_eq!(
            status(&reply),
            "HTTP/1.1 429 Too Many Requests",
            "GET {target}"
        );
    }
    for (method, target, fields, expected) in [
        ("HEAD", "/big.bin", "", "HTTP/1.1 200 OK"),
        ("HEAD", "/dir.tar", "", "HTTP/1.1 200 OK"),
        ("HEAD", "/dir/", "", "HTTP/1.1 200 OK"),
        (
            "GET",
            "/small.txt",
            "If-None-Match: *\r\n",
            "HTTP/1.1 304 Not Modified",
        ),
        ("GET", "/dir", "", "HTTP/1.1 301 Moved Permanently"),
        (
            "GET",
            "/small.txt",
            "Range: bytes=100-\r\n",
            "HTTP/1.1 416 Range Not Satisfiable",
        ),
    ] {
        let reply = fetch_from(2, addr, &http(method, target, &format!("{fields}{close}"))).await;
        assert_eq!(status(&reply), expected, "{method} {target} {fields:?}");
    }
    assert_eq!(fetch_from(3, addr, b"small.txt\n").await, b"small");
    drop(held);
    served_again(2, addr).await;
    server.shutdown().await;
}

/// A thousand 429s on one keep-alive connection count nothing: once the
/// source's sends end it gets its whole share again, no more.
#[tokio::test]
async fn refusals_on_a_keep_alive_connection_count_nothing() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 8\nmax_downloads_per_source = 2",
    ));
    let addr = server.addr("files");
    let held = [
        stalled_from(2, addr, b"big.bin\n").await,
        stalled_from(2, addr, b"big.bin\n").await,
    ];
    let mut flood = Vec::new();
    for _ in 0..1000 {
        flood.extend(http("GET", "/small.txt", ""));
    }
    let replies = fetch_from(2, addr, &flood).await;
    let text = String::from_utf8_lossy(&replies);
    assert_eq!(
        text.matches("HTTP/1.1 429 Too Many Requests\r\n").count(),
        1000
    );
    drop(held);
    served_again(2, addr).await;
    let mut again = Vec::new();
    assert_eq!(take_all(2, addr, 5, &mut again).await, 2);
    drop(again);
    server.shutdown().await;
}

/// Sends cut short every way a client can (a reset mid-file, mid-archive
/// and mid-listing, a close before the answer, a reset with requests
/// pipelined behind a body, a half-close, a request cut mid-line) give
/// their slots back: after a few hundred of them from one source, the
/// source gets exactly its share, and the listener all its slots.
#[tokio::test]
async fn aborted_sends_give_their_slots_back() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 4\nmax_downloads_per_source = 2",
    ));
    let addr = server.addr("files");
    let aborts: Vec<_> = (0..8u8)
        .map(|worker| {
            tokio::spawn(async move {
                for round in 0..25u8 {
                    let mut stream = small_window_from(2, addr).await;
                    let request: Vec<u8> = match (worker + round) % 6 {
                        0 => b"big.bin\n".to_vec(),
                        1 => b"bigdir.tar\n".to_vec(),
                        2 => [http("GET", "/big.bin", ""), http("GET", "/dir/", "")].concat(),
                        3 => http("GET", "/bigdir.tar", "Range: bytes=1000-\r\n"),
                        4 => b"big".to_vec(),
                        _ => http("GET", "/dir/", ""),
                    };
                    // A write may fail: the server has already refused or closed.
                    let _ = stream.write_all(&request).await;
                    match round % 3 {
                        0 => {
                            let mut some = [0u8; 512];
                            // Some of the answer if it comes soon (a request cut
                            // mid-line gets none until its timeout).
                            let _ =
                                timeout(Duration::from_millis(200), stream.read(&mut some)).await;
                            // A reset, not a close.
                            let _ = stream.set_zero_linger();
                        }
                        1 => {
                            let _ = stream.shutdown().await;
                        }
                        _ => {}
                    }
                    drop(stream);
                }
            })
        })
        .collect();
    for abort in aborts {
        timeout(LIMIT, abort)
            .await
            .expect("aborts in time")
            .expect("task");
    }
    served_again(2, addr).await;
    let mut held = Vec::new();
    assert_eq!(
        take_all(2, addr, 5, &mut held).await,
        2,
        "127.0.0.2's share"
    );
    assert_eq!(
        take_all(3, addr, 5, &mut held).await,
        2,
        "127.0.0.3's share"
    );
    assert_eq!(
        fetch_from(4, addr, b"small.txt\n").await,
        b"ERR busy\n",
        "the listener's 4 slots are held"
    );
    drop(held);
    server.shutdown().await;
}

/// A stalled reader's slot comes back when its write times out
/// (`idle_timeout`): the source is not locked out after its sends end.
#[tokio::test]
async fn a_send_ended_by_the_idle_timeout_gives_its_slot_back() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 8\nmax_downloads_per_source = 2\nidle_timeout = \"500ms\"",
    ));
    let addr = server.addr("files");
    let _held = [
        stalled_from(2, addr, b"big.bin\n").await,
        stalled_from(2, addr, &http("GET", "/bigdir.tar", "")).await,
    ];
    assert_eq!(fetch_from(2, addr, b"small.txt\n").await, TOO_MANY);
    // Still not reading: the server gives up on both within about 0.5 s.
    served_again(2, addr).await;
    server.shutdown().await;
}

/// On a dual-stack `[::]` listener a client's IPv4 address and its
/// IPv4-mapped IPv6 form are one source: two ways in, one share.
#[tokio::test]
async fn an_ipv4_mapped_address_is_the_same_source_as_its_ipv4_form() {
    let dir = root();
    let toml = files(
        dir.path(),
        "max_downloads = 8\nmax_downloads_per_source = 2",
    )
    .replace("127.0.0.1:0", "[::]:0");
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("skipped: no IPv6 on this host");
        return;
    }
    let server = TestServer::start(&toml);
    let port = server.addr("files").port();
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let held = stalled_from(2, v4, b"big.bin\n").await;
    let from = Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped();
    let to = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
    let socket = TcpSocket::new_v6().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    socket
        .bind(SocketAddr::new(from.into(), 0))
        .expect("bind ::ffff:127.0.0.2");
    let mut second = timeout(LIMIT, socket.connect(SocketAddr::new(to.into(), port)))
        .await
        .expect("connect timed out")
        .expect("connect");
    stall(&mut second, b"big.bin\n").await;
    assert_eq!(
        fetch_from(2, v4, b"small.txt\n").await,
        TOO_MANY,
        "a third download from 127.0.0.2, in either form"
    );
    assert_eq!(fetch_from(3, v4, b"small.txt\n").await, b"small");
    drop((held, second));
    server.shutdown().await;
}

/// A reload that changes `max_downloads_per_source` (or `max_downloads`)
/// while one source holds its share: the new share applies to the sends
/// under way, so toggling it back and forth never lets the source hold
/// more than the larger of the two, nor take the whole listener from the
/// others.
#[tokio::test]
async fn reloads_that_change_the_share_do_not_add_up_shares() {
    let dir = root();
    let config = |max: usize, share: usize| {
        files(
            dir.path(),
            &format!("max_downloads = {max}\nmax_downloads_per_source = {share}"),
        )
    };
    let mut server = TestServer::start(&config(8, 2));
    let addr = server.addr("files");
    let mut held = Vec::new();
    assert_eq!(take_all(2, addr, 8, &mut held).await, 2);
    let mut most = held.len();
    for (max, share) in [(8, 3), (8, 2), (8, 3), (8, 2), (8, 3), (9, 3), (8, 3)] {
        server.reload(&config(max, share)).await.expect("reload");
        take_all(2, addr, 8, &mut held).await;
        most = most.max(held.len());
        assert!(
            held.len() <= 3,
            "after a reload to max_downloads = {max}, max_downloads_per_source = {share}, \
             127.0.0.2 holds {} sends",
            held.len()
        );
    }
    assert_eq!(most, 3);
    assert_eq!(
        fetch_from(3, addr, b"small.txt\n").await,
        b"small",
        "another source is still served"
    );
    drop(held);
    served_again(2, addr).await;
    server.shutdown().await;
}

/// Reloads that change `max_downloads` while its slots are all held: the
/// sends under way keep counting against the new one, so toggling it
/// back and forth never lets the listener send more than the larger of
/// the two at once.
#[tokio::test]
async fn reloads_that_change_max_downloads_do_not_add_up_the_limits() {
    let dir = root();
    let config = |max: usize| {
        files(
            dir.path(),
            &format!("max_downloads = {max}\nmax_downloads_per_source = 2"),
        )
    };
    let mut server = TestServer::start(&config(4));
    let addr = server.addr("files");
    let mut held = Vec::new();
    // Sources 127.0.0.2 to .9, two sends each at most, until refused.
    let fill = |held: &mut Vec<TcpStream>| {
        let mut streams = std::mem::take(held);
        async move {
            for n in 2..10 {
                take_all(n, addr, 2, &mut streams).await;
            }
            streams
        }
    };
    held = fill(&mut held).await;
    assert_eq!(held.len(), 4);
    for max in [5, 4, 5, 4, 5] {
        server.reload(&config(max)).await.expect("reload");
        held = fill(&mut held).await;
        assert!(
            held.len() <= 5,
            "after a reload to max_downloads = {max}, {} sends at once",
            held.len()
        );
    }
    assert_eq!(held.len(), 5);
    drop(held);
    served_again(2, addr).await;
    server.shutdown().await;
}

/// A PROXY protocol v1 header naming `client` (`a.b.c.d`).
fn proxy_v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 1000 80\r\n").into_bytes()
}

/// A PROXY protocol v2 LOCAL header: the balancer speaking for itself.
const PROXY_V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// Behind a trusted balancer (127.0.0.9): its own connections (LOCAL, its
/// health checks) are counted as the balancer, one share for all of them,
/// and take nothing from the clients it names; a header sent by a source
/// that is not trusted is only data (a name not found), not a way to be
/// counted as someone else.
#[tokio::test]
async fn a_balancers_own_connections_share_one_count_and_headers_are_trusted_only_from_it() {
    let dir = root();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 8\nmax_downloads_per_source = 2\nproxy_protocol = \"any\"\n\
         trusted_proxies = [\"127.0.0.9\"]",
    ));
    let addr = server.addr("files");
    let with = |header: &[u8], request: &[u8]| [header, request].concat();
    let local = [
        stalled_from(9, addr, &with(PROXY_V2_LOCAL, b"big.bin\n")).await,
        stalled_from(9, addr, &with(PROXY_V2_LOCAL, b"big.bin\n")).await,
    ];
    assert_eq!(
        fetch_from(9, addr, &with(PROXY_V2_LOCAL, b"small.txt\n")).await,
        TOO_MANY,
        "a third LOCAL download"
    );
    assert_eq!(
        fetch_from(9, addr, &with(&proxy_v1("192.0.2.1"), b"small.txt\n")).await,
        b"small",
        "a client behind the balancer"
    );
    let client = [
        stalled_from(9, addr, &with(&proxy_v1("192.0.2.1"), b"big.bin\n")).await,
        stalled_from(9, addr, &with(&proxy_v1("192.0.2.1"), b"big.bin\n")).await,
    ];
    assert_eq!(
        fetch_from(9, addr, &with(&proxy_v1("192.0.2.1"), b"small.txt\n")).await,
        TOO_MANY
    );
    // Not trusted: the header is the start of a name, and the sender is
    // counted as itself.
    let untrusted = fetch_from(3, addr, &with(&proxy_v1("192.0.2.2"), b"small.txt\n")).await;
    assert!(untrusted.starts_with(b"ERR "), "{untrusted:?}");
    assert_ne!(untrusted, TOO_MANY);
    drop((local, client));
    server.shutdown().await;
}

/// The root's 300 KiB file: it fits in a send's socket buffers, so its
/// send ends (and gives its slot back) before the client has read it.
const FITS: u64 = 300 << 10;

/// Found by the share's attacker's pass, fixed since: an HTTP body that
/// fits in the socket buffers gave its slot back as soon as it was
/// written, while the kernel still held it for a client that did not read;
/// the keep-alive connection then waited for its next request for
/// `idle_timeout` (5 min). One source with many such connections held far
/// more kernel memory than `max_downloads` × the send buffer that the
/// slots are meant to bound (measured: 500 connections, 143.6 MiB for over
/// 30 s, the source holding none of its 2 slots). Now a body's slot is its
/// unread tail's until the client has taken it. (The raw protocol closes
/// after the body: an unread close becomes a reset within about a second.)
#[tokio::test]
async fn unread_keep_alive_bodies_stay_within_the_slots_memory_bound() {
    let dir = root_with_fits();
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 4\nmax_downloads_per_source = 2\nsend_buffer = 262144\nsend_budget = 0",
    ));
    let addr = server.addr("files");
    let mut unread = Vec::new();
    for _ in 0..40 {
        let mut stream = small_window_from(2, addr).await;
        stream
            .write_all(&http("GET", "/fits.bin", ""))
            .await
            .expect("send");
        unread.push(stream);
    }
    // What stalled readers may hold: each of the 4 slots its send buffer
    // (doubled by the kernel), and some slack.
    let bound = 4 * 2 * 262_144 + (1 << 20);
    let mut queued = 0;
    for _ in 0..20 {
        sleep(Duration::from_millis(100)).await;
        queued = queued.max(server_send_queues(addr.port()));
    }
    assert!(
        queued <= bound,
        "one source's unread bodies hold {queued} bytes in the kernel, over {bound}"
    );
    drop(unread);
    server.shutdown().await;
}

/// A root (as [`root`]) with `fits.bin`, a body that the socket buffers
/// hold whole.
fn root_with_fits() -> tempfile::TempDir {
    let dir = root();
    fs::File::create(dir.path().join("fits.bin"))
        .and_then(|f| f.set_len(FITS))
        .expect("fits.bin");
    dir
}

/// [`root_with_fits`] served with one slot a source, a send buffer that
/// does not grow, and `extra` keys.
fn fits_with_a_share_of_one(extra: &str) -> (tempfile::TempDir, TestServer) {
    let dir = root_with_fits();
    let server = TestServer::start(&files(
        dir.path(),
        &format!(
            "max_downloads = 4\nmax_downloads_per_source = 1\nsend_buffer = 262144\n\
             send_budget = 0\n{extra}"
        ),
    ));
    (dir, server)
}

/// A connection from 127.0.0.2 with a small receive buffer that asked for
/// `fits.bin`, and the first bytes of its answer, read.
async fn fits_begun(addr: SocketAddr) -> (TcpStream, [u8; 16]) {
    let mut stream = small_window_from(2, addr).await;
    stream
        .write_all(&http("GET", "/fits.bin", ""))
        .await
        .expect("send");
    let mut first = [0u8; 16];
    timeout(LIMIT, stream.read_exact(&mut first))
        .await
        .expect("the response began")
        .expect("read");
    (stream, first)
}

/// The unread tail's other side: a client that reads its body whole and
/// then keeps its connection idle gives the slot back at once (a browser
/// holds its connections open for minutes). Before it reads, the tail holds
/// the source's only slot; once it has read, another connection of the
/// source is served within a moment, while the first one stays open.
#[tokio::test]
async fn a_body_read_whole_gives_its_slot_back_while_its_connection_idles() {
    let (_dir, server) = fits_with_a_share_of_one("");
    let addr = server.addr("files");
    let (mut reader, first) = fits_begun(addr).await;
    // Unread: its tail (all of it fits in the buffers) holds the slot.
    for _ in 0..3 {
        let other = fetch_from(2, addr, &http("GET", "/small.txt", "Connection: close\r\n")).await;
        assert_eq!(status(&other), "HTTP/1.1 429 Too Many Requests");
    }
    let mut rest = read_response(&mut reader).await;
    rest.splice(0..0, first);
    assert_eq!(status(&rest), "HTTP/1.1 200 OK");
    assert!(rest.len() as u64 > FITS);
    // Read whole, the connection idle: the slot comes back.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let other = fetch_from(2, addr, &http("GET", "/small.txt", "Connection: close\r\n")).await;
        if status(&other) == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot of a body read whole did not come back: {}",
            status(&other)
        );
        sleep(Duration::from_millis(10)).await;
    }
    // The idle connection is still served.
    reader
        .write_all(&http("GET", "/small.txt", ""))
        .await
        .expect("send");
    assert_eq!(status(&read_response(&mut reader).await), "HTTP/1.1 200 OK");
    server.shutdown().await;
}

/// A client that asks again on its connection (at once, or pipelined
/// behind a body it has not read yet) is served under the slot its last
/// body's tail holds: one connection, one slot, never a 429 from its own
/// tail, with a share of one.
#[tokio::test]
async fn a_connection_that_keeps_asking_is_served_under_its_one_slot() {
    let (_dir, server) = fits_with_a_share_of_one("");
    let addr = server.addr("files");
    let mut stream = connect_from(2, addr).await;
    for round in 0..20 {
        stream
            .write_all(&http("GET", "/fits.bin", ""))
            .await
            .expect("send");
        let reply = read_response(&mut stream).await;
        assert_eq!(status(&reply), "HTTP/1.1 200 OK", "round {round}");
    }
    // Three pipelined, the first two unread when the next comes.
    stream
        .write_all(&http("GET", "/fits.bin", "").repeat(3))
        .await
        .expect("send");
    let mut carry = Vec::new();
    for body in 0..3 {
        let reply = read_next_response(&mut stream, &mut carry).await;
        assert_eq!(status(&reply), "HTTP/1.1 200 OK", "pipelined body {body}");
    }
    server.shutdown().await;
}

/// Answers that take no slot, pipelined behind an unread body, do not let
/// its tail go: the slot stays held while the client reads nothing.
#[tokio::test]
async fn answers_without_a_body_behind_an_unread_one_keep_its_slot() {
    let (_dir, server) = fits_with_a_share_of_one("");
    let addr = server.addr("files");
    let mut unread = small_window_from(2, addr).await;
    let mut requests = http("GET", "/fits.bin", "");
    for target in ["/small.txt", "/missing", "/dir"] {
        requests.extend(http("HEAD", target, ""));
    }
    requests.extend(http("GET", "/missing", ""));
    unread.write_all(&requests).await.expect("send");
    // The server answers the four after the body, and then waits; the
    // client has read nothing. Long enough for a tail whose slot was given
    // back to show it (the first two looks come within 300 ms).
    sleep(Duration::from_millis(400)).await;
    let other = fetch_from(2, addr, &http("GET", "/small.txt", "Connection: close\r\n")).await;
    assert_eq!(status(&other), "HTTP/1.1 429 Too Many Requests");
    drop(unread);
    served_again(2, addr).await;
    server.shutdown().await;
}

/// A tail still unread at its deadline ends the connection, and its slot
/// comes back. Without `min_send_rate` the deadline is the idle timeout,
/// and the end a close (a client that reads on gets the rest): one that
/// still does not read is reset by the kernel within about a second, and
/// its queue is gone.
#[tokio::test]
async fn a_tail_unread_past_its_deadline_ends_the_connection_and_its_queue() {
    let (_dir, server) = fits_with_a_share_of_one("idle_timeout = \"500ms\"");
    let addr = server.addr("files");
    let (mut unread, first) = fits_begun(addr).await;
    served_again(2, addr).await;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while server_send_queues(addr.port()) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unread queue outlived its connection"
        );
        sleep(Duration::from_millis(20)).await;
    }
    // What the client's own buffer holds reads on up to the reset, which
    // is an error, not an end: the body is short of its length.
    let mut got = first.len() as u64;
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        match timeout(LIMIT, unread.read(&mut chunk))
            .await
            .expect("read in time")
        {
            Ok(0) => break None,
            Ok(n) => got += n as u64,
            Err(e) => break Some(e.kind()),
        }
    };
    assert_eq!(
        end,
        Some(std::io::ErrorKind::ConnectionReset),
        "after {got} bytes"
    );
    assert!(got < FITS, "{got} bytes of {FITS} read before the reset");
    server.shutdown().await;
}

/// Found by this pass: a HEAD of a folder's archive takes no slot but
/// walks the folder, and the listener walks only 4 folders at once
/// (refusing the rest as busy). One source that flooded HEADs of a big
/// folder's `.tar` kept every walk turn, and every other source's archive
/// was answered 503 (measured: 40 of 40 GETs of a small folder's `.tar`
/// from another source during a flood of HEADs of a 30 000-entry folder's).
/// GETs within the source's share (32 > 4 walks) could do the same. Fixed:
/// one walk at a time per source (its next is told 429).
#[tokio::test]
async fn one_sources_archive_heads_do_not_take_every_walk_from_the_others() {
    let dir = root();
    let many = dir.path().join("many");
    fs::create_dir(&many).expect("many");
    for i in 0..10_000 {
        fs::File::create(many.join(format!("f{i:05}"))).expect("file");
    }
    let server = TestServer::start(&files(
        dir.path(),
        "max_downloads = 64\nmax_downloads_per_source = 8",
    ));
    let addr = server.addr("files");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut heads = http("HEAD", "/many.tar", "").repeat(19);
                heads.extend(http("HEAD", "/many.tar", "Connection: close\r\n"));
                for _ in 0..200 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let mut stream = connect_from(2, addr).await;
                    let _ = stream.write_all(&heads).await;
                    let _ = timeout(LIMIT, read_to_end(&mut stream)).await;
                }
            })
        })
        .collect();
    sleep(Duration::from_millis(300)).await;
    let mut served = 0;
    for _ in 0..20 {
        let reply = fetch_from(3, addr, &http("GET", "/dir.tar", "Connection: close\r\n")).await;
        if status(&reply) == "HTTP/1.1 200 OK" {
            served += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in flood {
        timeout(LIMIT, task)
            .await
            .expect("flood ends")
            .expect("task");
    }
    assert!(
        served >= 10,
        "127.0.0.3 was served {served} of 20 archives during 127.0.0.2's HEAD flood"
    );
    server.shutdown().await;
}
