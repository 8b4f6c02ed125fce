//! The PROXY protocol, spoken by hand from loopback source addresses: a
//! trusted proxy's header names the client that logs, `{peer}`, the access
//! lists and the per-source limits see; other sources cannot spoof one; a
//! bad, oversized or slow header is closed within its deadline. The same
//! through a real HAProxy and nginx is in `balancers.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::common::{LIMIT, TestServer, connect_from, listener, read_to_end};

/// A keyword-bot that says who it thinks the client is, behind a proxy at
/// 127.0.0.2, with `extra` keys.
fn bot(extra: &str) -> String {
    listener(
        "bot",
        "keyword-bot",
        &format!(
            "proxy_protocol = \"any\"\ntrusted_proxies = [\"127.0.0.2\"]\n{extra}\n\
             [[listener.rules]]\nkeywords = [\"who\"]\nreply = \"you are {{peer}}\"\n"
        ),
    )
}

fn v1(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().expect("address");
    format!(
        "PROXY TCP4 {} 127.0.0.1 {} 10086\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

fn v2(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().expect("address");
    let IpAddr::V4(ip) = client.ip() else {
        panic!("IPv4 only here")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&ip.octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&10086u16.to_be_bytes());
    h
}

/// True when the server closed (or reset: it had unread input) without
/// sending a byte.
async fn closed_without_a_byte(conn: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    match timeout(LIMIT, conn.read_to_end(&mut got)).await {
        Ok(Ok(_)) => got.is_empty(),
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset && got.is_empty(),
        Err(_) => false,
    }
}

/// Sends `first` (a header and a question, in one write) and reads the
/// reply line.
async fn ask_with(conn: TcpStream, first: &[u8]) -> String {
    let mut conn = BufReader::new(conn);
    conn.get_mut().write_all(first).await.expect("send");
    let mut line = String::new();
    timeout(LIMIT, conn.read_line(&mut line))
        .await
        .expect("reply timed out")
        .expect("read");
    line.trim_end().to_owned()
}

#[tokio::test]
async fn a_trusted_proxys_header_names_the_client_in_v1_and_v2_even_in_one_segment() {
    let server = TestServer::start(&bot(""));
    let addr = server.addr("bot");
    let mut first = v2("192.0.2.7:4242");
    first.extend_from_slice(b"who?\n");
    let reply = ask_with(connect_from(2, addr).await, &first).await;
    assert_eq!(reply, "you are 192.0.2.7:4242");
    let mut first = v1("198.51.100.9:5353");
    first.extend_from_slice(b"who?\n");
    let reply = ask_with(connect_from(2, addr).await, &first).await;
    assert_eq!(reply, "you are 198.51.100.9:5353");
}

#[tokio::test]
async fn a_local_header_keeps_the_proxys_own_address() {
    let server = TestServer::start(&bot(""));
    let mut first = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    first.extend_from_slice(b"who?\n");
    let conn = connect_from(2, server.addr("bot")).await;
    let local = conn.local_addr().expect("addr");
    let reply = ask_with(conn, &first).await;
    assert_eq!(reply, format!("you are {local}"));
}

#[tokio::test]
async fn an_untrusted_source_cannot_spoof_its_address_and_is_refused_when_required() {
    let server = TestServer::start(&bot(""));
    let addr = server.addr("bot");
    // Not a proxy: its "header" is only a message, and it stays itself.
    let conn = connect_from(3, addr).await;
    let local = conn.local_addr().expect("addr");
    let mut conn = BufReader::new(conn);
    conn.get_mut()
        .write_all(&v1("192.0.2.7:4242"))
        .await
        .expect("send");
    let mut line = String::new();
    timeout(LIMIT, conn.read_line(&mut line))
        .await
        .expect("reply")
        .expect("read");
    assert!(!line.contains("192.0.2.7"), "{line}");
    line.clear();
    conn.get_mut().write_all(b"who?\n").await.expect("send");
    timeout(LIMIT, conn.read_line(&mut line))
        .await
        .expect("reply")
        .expect("read");
    assert_eq!(line.trim_end(), format!("you are {local}"));

    let server = TestServer::start(&bot("proxy_protocol_required = true"));
    let mut conn = connect_from(3, server.addr("bot")).await;
    let _ = conn.write_all(&v2("192.0.2.7:4242")).await;
    assert!(closed_without_a_byte(&mut conn).await);
    // The proxy itself is still served.
    let mut first = v2("192.0.2.7:4242");
    first.extend_from_slice(b"who?\n");
    let reply = ask_with(connect_from(2, server.addr("bot")).await, &first).await;
    assert_eq!(reply, "you are 192.0.2.7:4242");
}

#[tokio::test]
async fn the_per_source_limit_and_access_lists_apply_to_the_client_behind_the_proxy() {
    let server = TestServer::start(&bot(
        "max_connections_per_source = 1\ndeny = [\"192.0.2.66\"]",
    ));
    let addr = server.addr("bot");
    // One connection of client .7 open through the proxy...
    let mut first = v2("192.0.2.7:1000");
    first.extend_from_slice(b"who?\n");
    let mut held = BufReader::new(connect_from(2, addr).await);
    held.get_mut().write_all(&first).await.expect("send");
    let mut line = String::new();
    timeout(LIMIT, held.read_line(&mut line))
        .await
        .expect("reply")
        .expect("read");
    assert_eq!(line.trim_end(), "you are 192.0.2.7:1000");
    // ...so its second is over the limit, while client .8, through the
    // same proxy, is served: the proxy's own address is not the source.
    let mut second = connect_from(2, addr).await;
    second.write_all(&v2("192.0.2.7:1001")).await.expect("send");
    assert_eq!(
        read_to_end(&mut second).await,
        b"ERR too many connections from your address\n"
    );
    let mut other = v1("192.0.2.8:1002");
    other.extend_from_slice(b"who?\n");
    assert_eq!(
        ask_with(connect_from(2, addr).await, &other).await,
        "you are 192.0.2.8:1002"
    );
    // A denied client is closed without a byte.
    let mut denied = connect_from(2, addr).await;
    denied
        .write_all(&v2("192.0.2.66:1003"))
        .await
        .expect("send");
    assert!(closed_without_a_byte(&mut denied).await);
    drop(held);
}

#[tokio::test]
async fn a_bad_oversized_or_missing_header_from_a_proxy_is_closed_without_a_byte() {
    let server = TestServer::start(&bot(""));
    let addr = server.addr("bot");
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    oversized.extend_from_slice(&[0u8; 64]);
    for bad in [
        b"who?\n".to_vec(),
        b"PROXY TCP4 1.2.3.999 127.0.0.1 1 2\r\nwho?\n".to_vec(),
        [b"PROXY ".as_slice(), &[b'9'; 200]].concat(),
        oversized,
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04\x01\x02\x03\x04who?\n".to_vec(),
    ] {
        let mut conn = connect_from(2, addr).await;
        let _ = conn.write_all(&bad).await;
        let started = Instant::now();
        assert!(closed_without_a_byte(&mut conn).await, "{bad:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{bad:?}: not at once"
        );
    }
}

#[tokio::test]
async fn a_slow_header_is_closed_at_proxy_header_timeout() {
    let server = TestServer::start(&bot("proxy_header_timeout = \"300ms\""));
    let mut conn = connect_from(2, server.addr("bot")).await;
    conn.write_all(b"PROXY TCP4 192.0.2.7").await.expect("send");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = timeout(LIMIT, conn.read(&mut buf))
        .await
        .expect("closed in time");
    let elapsed = started.elapsed();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn probe_sends_the_header_from_a_trusted_address() {
    let toml = listener(
        "bot",
        "keyword-bot",
        "proxy_protocol = \"v1\"\ntrusted_proxies = [\"127.0.0.0/8\"]\nproxy_protocol_required = true\n\
         [[listener.rules]]\nkeywords = [\"x\"]\nreply = \"{peer}\"\n",
    );
    let server = TestServer::start(&toml);
    let mut config = switchboard::Config::from_toml(&toml, "t.toml").expect("config");
    config.listeners[0].bind = server.addr("bot");
    let results = switchboard::probe(&config, &[], LIMIT)
        .await
        .expect("probe");
    assert!(results[0].ok(), "{:?}", results[0].outcome);
}

#[tokio::test]
async fn a_denied_proxy_is_refused_and_its_health_checks_skip_allow_and_per_source_limits() {
    // The balancer 127.0.0.2 is not in `allow` (which lists clients), and
    // the per-source limit is 1: its LOCAL health checks still pass, and
    // several at once.
    let server = TestServer::start(&bot(
        "allow = [\"192.0.2.0/24\"]\nmax_connections_per_source = 1",
    ));
    let addr = server.addr("bot");
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(b"who?\n");
    let mut held = Vec::new();
    for _ in 0..3 {
        let conn = connect_from(2, addr).await;
        let me = conn.local_addr().expect("addr");
        let mut conn = BufReader::new(conn);
        conn.get_mut().write_all(&local).await.expect("send");
        let mut line = String::new();
        timeout(LIMIT, conn.read_line(&mut line))
            .await
            .expect("reply")
            .expect("read");
        assert_eq!(line.trim_end(), format!("you are {me}"));
        held.push(conn);
    }
    // A client outside `allow`, through the proxy, is refused.
    let mut outside = connect_from(2, addr).await;
    outside
        .write_all(&v2("198.51.100.1:1"))
        .await
        .expect("send");
    assert!(closed_without_a_byte(&mut outside).await);

    // A proxy that `deny` lists is refused even with a good header.
    let server = TestServer::start(&bot("deny = [\"127.0.0.2\"]"));
    let mut conn = connect_from(2, server.addr("bot")).await;
    let _ = conn.write_all(&v2("192.0.2.7:4242")).await;
    assert!(closed_without_a_byte(&mut conn).await);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_header_on_its_way() {
    let server = TestServer::start(&bot("proxy_header_timeout = \"60s\""));
    let mut conn = connect_from(2, server.addr("bot")).await;
    conn.write_all(b"PROXY ").await.expect("send");
    // Until the server has taken the connection in (bounded).
    for _ in 0..200 {
        if server.handle().status().connections == 1 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.handle().status().connections, 1);
    let started = Instant::now();
    let report = server.shutdown().await;
    // The default grace is 10 s: a drain that waited for the header would take it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        report.abandoned, 0,
        "the header wait ended at the drain, not the grace"
    );
    assert!(closed_without_a_byte(&mut conn).await);
}

/// A download's share of the slots (`max_downloads_per_source`) is the
/// client's that the header names, not the balancer's: two clients behind
/// the one proxy each get theirs.
#[tokio::test]
async fn the_download_share_is_counted_per_client_behind_a_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = std::fs::File::create(dir.path().join("big.bin")).expect("big.bin");
    big.set_len(64 << 20).expect("sparse");
    std::fs::write(dir.path().join("small.txt"), b"small").expect("small.txt");
    let server = TestServer::start(&listener(
        "files",
        "download",
        &format!(
            "root = '{}'\nmax_downloads = 4\nmax_downloads_per_source = 1\n\
             proxy_protocol = \"v1\"\ntrusted_proxies = [\"127.0.0.2\"]\n",
            dir.path().display()
        ),
    ));
    let addr = server.addr("files");
    // 192.0.2.7 stalls a download: it holds its one slot.
    let mut stalled = connect_from(2, addr).await;
    let mut first = v1("192.0.2.7:1000");
    first.extend_from_slice(b"big.bin\n");
    stalled.write_all(&first).await.expect("send");
    let mut some = [0u8; 1024];
    timeout(LIMIT, stalled.read_exact(&mut some))
        .await
        .expect("no data")
        .expect("read");
    let fetch = |client: &'static str| async move {
        let mut conn = connect_from(2, addr).await;
        let mut request = v1(client);
        request.extend_from_slice(b"small.txt\n");
        conn.write_all(&request).await.expect("send");
        read_to_end(&mut conn).await
    };
    assert_eq!(
        fetch("192.0.2.8:1000").await,
        b"small",
        "another client behind the same proxy"
    );
    assert_eq!(
        fetch("192.0.2.7:1001").await,
        b"ERR too many downloads from your address\n",
        "the stalled client's second download"
    );
    drop(stalled);
    server.shutdown().await;
}
