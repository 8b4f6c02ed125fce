//! HTTP/1.1 on the download port, against real clients: curl and wget
//! (Debian's packages) download, resume (`curl -C -`, `wget -c`), ask for
//! ranges, HEAD, missing files, traversal and unsatisfiable ranges; and by
//! hand over TCP: keep-alive and pipelining, conditional requests,
//! `If-Range`, methods, bounds on the head, HTML listings. The raw protocol
//! on the same port is unchanged (the raw tests in `download.rs` run
//! against the same handler).
//!
//! Without curl or wget the tests that need them say so and pass, unless
//! SWITCHBOARD_REQUIRE_HTTP_CLIENTS is set (as CI sets it).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::common::{self, LIMIT, TestServer};

pub(crate) fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("SWITCHBOARD_REQUIRE_HTTP_CLIENTS").is_some() {
        panic!("{tool} is required (SWITCHBOARD_REQUIRE_HTTP_CLIENTS is set) but does not run");
    }
    if !found {
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// A root with `big.bin` (1 MB of varied bytes), `a.txt`, a directory with
/// a name that needs escaping, and a secret beside the root.
fn root() -> (tempfile::TempDir, std::path::PathBuf) {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("big.bin"), big).expect("write");
    fs::write(root.join("a.txt"), b"hello world\n").expect("write");
    fs::write(root.join("sub/we ird<&>\".txt"), b"x\n").expect("write");
    fs::write(base.path().join("secret"), b"SECRET\n").expect("write");
    (base, root)
}

fn server(root: &Path) -> TestServer {
    TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'", root.display()),
    ))
}

/// Runs a client program off the runtime (it talks to this test's server).
pub(crate) async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run the client"))
        .await
        .expect("client thread")
}

pub(crate) fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

fn curl(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-s", "--max-time", "20"]).args(args);
    c
}

#[tokio::test]
async fn curl_downloads_ranges_heads_and_gets_the_right_errors() {
    if !have("curl") {
        return;
    }
    let (base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    let out = base.path().join("got.bin");
    let got = run(curl(&["-o", out.to_str().unwrap(), &url(addr, "/big.bin")])).await;
    assert!(got.status.success(), "{got:?}");
    assert_eq!(
        fs::read(&out).unwrap(),
        fs::read(root.join("big.bin")).unwrap()
    );

    let part = run(curl(&["-r", "10-19", &url(addr, "/big.bin")])).await;
    assert_eq!(part.stdout, fs::read(root.join("big.bin")).unwrap()[10..20]);

    let head = run(curl(&["-I", &url(addr, "/big.bin")])).await;
    let head = String::from_utf8_lossy(&head.stdout).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for field in [
        "Content-Length: 1000000\r\n",
        "Accept-Ranges: bytes\r\n",
        "ETag: \"",
        "Last-Modified: ",
    ] {
        assert!(head.contains(field), "{field:?} missing from {head}");
    }

    let code = |args: &[&str]| {
        let mut c = curl(args);
        c.args(["-o", "/dev/null", "-w", "%{http_code}"]);
        c
    };
    let status = |out: Output| String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(status(run(code(&[&url(addr, "/nope")])).await), "404");
    let traversal = status(run(code(&["--path-as-is", &url(addr, "/../secret")])).await);
    assert!(traversal == "403" || traversal == "404", "{traversal}");
    let encoded = run(curl(&["--path-as-is", &url(addr, "/%2e%2e/secret")])).await;
    assert!(!String::from_utf8_lossy(&encoded.stdout).contains("SECRET"));
    let past = run(curl(&["-D", "-", "-r", "2000000-", &url(addr, "/big.bin")])).await;
    let past = String::from_utf8_lossy(&past.stdout).to_string();
    assert!(past.starts_with("HTTP/1.1 416 "), "{past}");
    assert!(
        past.contains("Content-Range: bytes */1000000\r\n"),
        "{past}"
    );
    drop(base);
}

#[tokio::test]
async fn curl_and_wget_resume_a_download_cut_halfway_to_an_identical_file() {
    let (base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    let whole = fs::read(root.join("big.bin")).unwrap();
    if have("curl") {
        let out = base.path().join("curl.bin");
        // The first half, as a cut download leaves it...
        let cut = run(curl(&[
            "-r",
            "0-499999",
            "-o",
            out.to_str().unwrap(),
            &url(addr, "/big.bin"),
        ]))
        .await;
        assert!(cut.status.success());
        assert_eq!(fs::metadata(&out).unwrap().len(), 500_000);
        // ...and `curl -C -` asks for the rest.
        let resumed = run(curl(&[
            "-C",
            "-",
            "-o",
            out.to_str().unwrap(),
            &url(addr, "/big.bin"),
        ]))
        .await;
        assert!(resumed.status.success(), "{resumed:?}");
        assert!(
            fs::read(&out).unwrap() == whole,
            "curl -C - gave a different file"
        );
    }
    if have("wget") {
        let out = base.path().join("wget.bin");
        fs::write(&out, &whole[..400_000]).unwrap();
        let mut wget = Command::new("wget");
        wget.args(["-q", "-c", "--timeout=20", "--tries=1", "-O"])
            .arg(&out)
            .arg(url(addr, "/big.bin"));
        let resumed = run(wget).await;
        assert!(resumed.status.success(), "{resumed:?}");
        assert!(
            fs::read(&out).unwrap() == whole,
            "wget -c gave a different file"
        );
    }
}

/// Sends `request` and reads until the server closes (the request should
/// say `Connection: close`), bounded.
pub(crate) async fn exchange_bytes(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut conn = common::connect(addr).await;
    conn.write_all(request).await.expect("send");
    let mut got = Vec::new();
    timeout(LIMIT, conn.read_to_end(&mut got))
        .await
        .expect("the server did not close")
        .expect("read");
    got
}

/// [`exchange_bytes`] as text.
pub(crate) async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    String::from_utf8_lossy(&exchange_bytes(addr, request).await).to_string()
}

/// The value of header `name` in a response head.
pub(crate) fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .split("\r\n\r\n")
        .next()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test]
async fn keep_alive_pipelining_and_conditional_requests() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    // Three pipelined requests on one connection, the last one closing it.
    let raw = exchange_bytes(
        addr,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-5\r\nConnection: close\r\n\r\n",
    )
    .await;
    let big = fs::read(root.join("big.bin")).unwrap();
    assert!(
        raw.ends_with(&big[999_995..]),
        "the last 5 bytes end the stream"
    );
    let got = String::from_utf8_lossy(&raw).to_string();
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    assert_eq!(
        got.matches("hello world\n").count(),
        1,
        "HEAD has no body: {got}"
    );
    assert!(got.contains("HTTP/1.1 206 Partial Content"), "{got}");
    assert!(
        got.contains("Content-Range: bytes 999995-999999/1000000"),
        "{got}"
    );

    let first = exchange(addr, b"GET /a.txt HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    let etag = header(&first, "ETag").expect("an ETag").to_owned();
    let modified = header(&first, "Last-Modified")
        .expect("Last-Modified")
        .to_owned();
    let again = exchange(
        addr,
        format!("GET /a.txt HTTP/1.1\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 304 "), "{again}");
    assert!(!again.contains("hello world"));
    let since = exchange(
        addr,
        format!(
            "GET /a.txt HTTP/1.1\r\nIf-Modified-Since: {modified}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(since.starts_with("HTTP/1.1 304 "), "{since}");
    // If-Range with another tag: the whole file, not the range.
    let changed = exchange(
        addr,
        b"GET /a.txt HTTP/1.1\r\nRange: bytes=0-1\r\nIf-Range: \"other\"\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(changed.starts_with("HTTP/1.1 200 OK"), "{changed}");
    let same = exchange(
        addr,
        format!("GET /a.txt HTTP/1.1\r\nRange: bytes=0-1\r\nIf-Range: {etag}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        same.starts_with("HTTP/1.1 206 ") && same.ends_with("\r\n\r\nhe"),
        "{same}"
    );
}

#[tokio::test]
async fn methods_and_bounded_heads_get_their_status_then_a_close() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    let post = exchange(
        addr,
        b"POST /a.txt HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert_eq!(header(&post, "Allow"), Some("GET, HEAD"));
    let huge = format!(
        "GET /a.txt HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "y".repeat(10_000)
    );
    let got = exchange(addr, huge.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
    let mut many = String::from("GET /a.txt HTTP/1.1\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let got = exchange(addr, many.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(5000));
    let got = exchange(addr, long.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 414 "), "{got}");
    let bad = exchange(addr, b"GET /a%zz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
}

#[tokio::test]
async fn a_slow_head_gets_408_at_the_message_timeout() {
    let (_base, root) = root();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!(
            "root = '{}'\nmessage_timeout = \"300ms\"\nmessage_gap = \"50ms\"",
            root.display()
        ),
    ));
    let mut conn = common::connect(server.addr("files")).await;
    conn.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    timeout(LIMIT, conn.read_to_end(&mut got))
        .await
        .expect("closed")
        .expect("read");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A pause between keep-alive requests longer than message_timeout is
    // the idle timeout's business: the next request is served.
    let mut conn = common::connect(server.addr("files")).await;
    conn.write_all(b"HEAD /a.txt HTTP/1.1\r\n\r\n")
        .await
        .expect("send");
    let mut first = [0u8; 17];
    conn.read_exact(&mut first).await.expect("first response");
    assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The head in two parts: its deadline runs from its first byte.
    conn.write_all(b"HEAD /a.txt HTTP/1.1\r\n")
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.write_all(b"Connection: close\r\n\r\n")
        .await
        .expect("send");
    let mut rest = Vec::new();
    timeout(LIMIT, conn.read_to_end(&mut rest))
        .await
        .expect("closed")
        .expect("read");
    let rest = String::from_utf8_lossy(&rest);
    assert_eq!(rest.matches("HTTP/1.1 200 OK").count(), 1, "{rest}");
    assert!(!rest.contains("408"), "{rest}");
}

/// The raw protocol ends a first line without a newline at a quiet gap;
/// over HTTP the pause must change nothing: a request line whose line
/// ending (or whose CR's LF) comes after the gap is still one request with
/// its header fields, never a request without them followed by a second.
#[tokio::test]
async fn a_pause_inside_the_request_lines_ending_changes_nothing() {
    let (_base, root) = root();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'\nmessage_gap = \"20ms\"", root.display()),
    ));
    let addr = server.addr("files");
    let paused = |first: &'static [u8], rest: &'static [u8]| async move {
        let mut conn = common::connect(addr).await;
        conn.write_all(first).await.expect("send");
        // Ten quiet gaps: the raw protocol's framing has ended the line.
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.write_all(rest).await.expect("send");
        let mut got = Vec::new();
        timeout(LIMIT, conn.read_to_end(&mut got))
            .await
            .expect("the server did not close")
            .expect("read");
        String::from_utf8_lossy(&got).to_string()
    };
    for (first, rest) in [
        (
            &b"GET /a.txt HTTP/1.1\r"[..],
            &b"\nRange: bytes=1-3\r\nConnection: close\r\n\r\n"[..],
        ),
        (
            b"GET /a.txt HTTP/1.1",
            b"\r\nRange: bytes=1-3\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let got = paused(first, rest).await;
        assert!(got.starts_with("HTTP/1.1 206 "), "{got}");
        assert!(got.ends_with("\r\n\r\nell"), "{got}");
        assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
    }
    // The bytes of a second request line after the pause are a (bad)
    // header field of the first request, as they are without the pause.
    let smuggled = paused(
        b"GET /a.txt HTTP/1.1\r",
        b"\nGET /big.bin HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(smuggled.starts_with("HTTP/1.1 400 "), "{smuggled}");
    assert_eq!(smuggled.matches("HTTP/1.1 ").count(), 1, "{smuggled}");
}

#[tokio::test]
async fn a_browser_and_curl_get_an_html_listing_with_escaped_names_and_text_when_asked() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    let html = exchange(
        addr,
        b"GET /sub/ HTTP/1.1\r\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        header(&html, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let body = html.split("\r\n\r\n").nth(1).expect("a body");
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    assert!(body.contains("we ird&lt;&amp;&gt;&quot;.txt</a>"), "{body}");
    assert!(
        body.contains("href=\"/sub/we%20ird%3C%26%3E%22.txt\""),
        "{body}"
    );
    assert!(!body.contains("<&>"), "unescaped name in {body}");
    // curl and wget say `*/*`: HTML, as nginx's autoindex answers them.
    let any = exchange(
        addr,
        b"GET / HTTP/1.1\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        header(&any, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(any.contains(">big.bin</a>"), "{any}");
    let text = exchange(
        addr,
        b"GET / HTTP/1.1\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        header(&text, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(text.ends_with("\r\n\r\na.txt\nbig.bin\nsub/\n"), "{text}");
    // Either is chosen by `Accept`: a cache must not give one for the other.
    for response in [&html, &any, &text] {
        assert_eq!(header(response, "Vary"), Some("Accept"), "{response}");
    }
}

/// A directory of `count` files with names of about 220 characters.
fn long_names(dir: &Path, count: usize) {
    fs::create_dir_all(dir).expect("mkdir");
    for i in 0..count {
        fs::write(dir.join(format!("{i:05}{}", "n".repeat(215))), b"").expect("write");
    }
}

/// Connects with a small receive buffer, so that a client that stops
/// reading holds the server's send quickly.
async fn connect_small_window(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    timeout(LIMIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// The responses of a pipelined exchange, split by their heads: each
/// request is `true` when its response has a body (a GET).
fn split_responses(mut raw: &[u8], with_body: &[bool]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for &has_body in with_body {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a whole head")
            + 4;
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let len: usize = header(&head, "Content-Length")
            .expect("Content-Length")
            .parse()
            .expect("a number");
        raw = &raw[end..];
        let body_len = if has_body { len } else { 0 };
        out.push((head, raw[..body_len].to_vec()));
        raw = &raw[body_len..];
    }
    assert!(
        raw.is_empty(),
        "{} bytes after the last response",
        raw.len()
    );
    out
}

const HTML_LISTING: &[u8] = b"GET / HTTP/1.1\r\nAccept: text/html\r\n\r\n";

/// Finding 1: a listing is a send like a file's: it takes one of the
/// `max_downloads` slots, and a request past them is told busy (503 with
/// `Retry-After` over HTTP, `ERR busy` raw), while HEAD (no body) still
/// answers with the cached page's length.
#[tokio::test]
async fn listings_take_a_download_slot_and_are_refused_busy_past_max_downloads() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    long_names(&root, 3000);
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!(
            "root = '{}'\nmax_downloads = 3\nsend_buffer = 65536",
            root.display()
        ),
    ));
    let addr = server.addr("files");
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut conn = connect_small_window(addr).await;
        conn.write_all(HTML_LISTING).await.expect("send");
        let mut first = [0u8; 1024];
        timeout(LIMIT, conn.read_exact(&mut first))
            .await
            .expect("no data")
            .expect("read");
        stalled.push(conn); // and never reads again
    }
    let busy = exchange(
        addr,
        b"GET / HTTP/1.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
    assert_eq!(header(&busy, "Retry-After"), Some("1"), "{busy}");
    let raw = exchange(addr, b"\n").await;
    assert_eq!(raw, "ERR busy\n");
    let head = exchange(
        addr,
        b"HEAD / HTTP/1.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let len: usize = header(&head, "Content-Length").unwrap().parse().unwrap();
    assert!(len > 600_000 && len <= 4 << 20, "{len} bytes");
    // The slots come back when the stalled readers go.
    drop(stalled);
    let mut page = Vec::new();
    for _ in 0..100 {
        let got = exchange_bytes(
            addr,
            b"GET / HTTP/1.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
        )
        .await;
        if got.starts_with(b"HTTP/1.1 200 ") {
            page = got;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = split_responses(&page, &[true]).remove(0);
    assert_eq!(body.len(), len);
    assert!(body.ends_with(b"</html>\n"));
}

/// Finding 1: a pipelined flood of HEADs and GETs of a big listing, HTML
/// and text, renders each format once (the daemon logs each rendering;
/// a page once per 2 s of freshness), and every GET gets the same bytes,
/// as long as the HEADs said.
#[test]
fn a_pipelined_flood_of_listing_requests_renders_each_format_once() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    long_names(&root, 3000);
    let config = base.path().join("switchboard.toml");
    fs::write(
        &config,
        common::listener("files", "download", &format!("root = '{}'", root.display())),
    )
    .expect("config");
    let mut daemon = crate::cli::Daemon::start(&config);
    let addr = daemon.addr("files");
    let mut requests = Vec::new();
    let mut with_body = Vec::new();
    for i in 0..64 {
        let (method, accept) = match i % 4 {
            0 => ("GET", "text/html"),
            1 => ("HEAD", "text/html"),
            2 => ("GET", "text/plain"),
            _ => ("HEAD", "text/plain"),
        };
        let close = if i == 63 { "Connection: close\r\n" } else { "" };
        requests.extend_from_slice(
            format!("{method} / HTTP/1.1\r\nAccept: {accept}\r\n{close}\r\n").as_bytes(),
        );
        with_body.push(method == "GET");
    }
    let started = std::time::Instant::now();
    let mut conn = crate::cli::client(addr);
    std::io::Write::write_all(&mut conn, &requests).expect("send");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut conn, &mut raw).expect("read");
    let responses = split_responses(&raw, &with_body);
    for format in 0..2 {
        let mine: Vec<&(String, Vec<u8>)> = responses.iter().skip(format * 2).step_by(4).collect();
        let heads: Vec<&(String, Vec<u8>)> =
            responses.iter().skip(format * 2 + 1).step_by(4).collect();
        let body = &mine[0].1;
        assert!(body.len() > 600_000, "{} bytes", body.len());
        assert!(mine.iter().all(|(_, b)| b == body), "GETs differ");
        for (head, _) in heads {
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
            assert_eq!(
                header(head, "Content-Length"),
                Some(&*body.len().to_string())
            );
        }
    }
    // A request after the flood, to know its lines are all logged.
    let mut marker = crate::cli::client(addr);
    std::io::Write::write_all(
        &mut marker,
        b"GET /flood-done HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    let _ = std::io::Read::read_to_end(&mut marker, &mut Vec::new());
    daemon.wait_for_log("flood-done");
    let elapsed = started.elapsed();
    let log = daemon.log_now();
    let renders = |format: &str| {
        log.iter()
            .filter(|line| line.contains("listing rendered") && line.contains(format))
            .count() as u64
    };
    // The text (names only) is kept until the directory changes. A page
    // (sizes and times too) is built again once it is 2 s old: at most
    // once for each 2 s the flood took, however slow the machine.
    assert_eq!(renders("format=Text"), 1, "one text listing");
    let pages = renders("format=Html");
    assert!(
        (1..=1 + elapsed.as_secs() / 2).contains(&pages),
        "{pages} pages in {elapsed:?}"
    );
}

/// A writable tmpfs directory (tmpfs keeps any file time; ext4 clamps
/// times past 2446), or `None` with a message saying the test is skipped.
fn tmpfs_dir() -> Option<tempfile::TempDir> {
    for base in ["/dev/shm", "/run/user"] {
        if let Ok(dir) = tempfile::tempdir_in(base) {
            return Some(dir);
        }
    }
    eprintln!("skipped: no writable tmpfs (/dev/shm) for a file dated past year 9999");
    None
}

/// Finding 2: a file dated year 10000 or later (or before 1970) has no
/// HTTP-date: it is served without `Last-Modified` instead of panicking,
/// and date conditions on it are ignored.
#[tokio::test]
async fn a_file_dated_outside_http_dates_is_served_without_last_modified() {
    let Some(base) = tmpfs_dir() else {
        return;
    };
    let root = base.path().join("root");
    fs::create_dir(&root).expect("mkdir");
    let far = std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400 * 400);
    let old = std::time::UNIX_EPOCH - Duration::from_secs(86_400);
    for (name, time) in [("far.txt", far), ("old.txt", old)] {
        let path = root.join(name);
        fs::write(&path, b"dated\n").expect("write");
        let file = fs::File::options().write(true).open(&path).expect("open");
        file.set_modified(time).expect("set mtime");
        let kept = fs::metadata(&path)
            .expect("stat")
            .modified()
            .expect("mtime");
        assert_eq!(kept, time, "the tmpfs did not keep the time of {name}");
    }
    let server = server(&root);
    let addr = server.addr("files");
    for name in ["far.txt", "old.txt"] {
        let plain = exchange(
            addr,
            format!("GET /{name} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(plain.starts_with("HTTP/1.1 200 OK"), "{name}: {plain:?}");
        assert!(plain.ends_with("\r\n\r\ndated\n"), "{name}: {plain:?}");
        assert_eq!(header(&plain, "Last-Modified"), None, "{plain}");
        assert!(header(&plain, "ETag").is_some(), "{plain}");
        // Date conditions have nothing to compare with: ignored, and an
        // If-Range date never matches (the whole file).
        let conditions = [
            "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
            "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
            "Range: bytes=0-1\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT",
        ];
        for condition in conditions {
            let got = exchange(
                addr,
                format!("GET /{name} HTTP/1.1\r\n{condition}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
            assert!(got.starts_with("HTTP/1.1 200 OK"), "{condition}: {got:?}");
            assert!(got.ends_with("\r\n\r\ndated\n"), "{condition}: {got:?}");
        }
    }
    // The server goes on.
    let a = exchange(addr, b"HEAD /far.txt HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(a.starts_with("HTTP/1.1 200 OK"), "{a}");
}

/// Finding 8: framing and connection fields that are not valid get 400
/// and a close: what follows the head is never answered as a request.
#[tokio::test]
async fn invalid_framing_fields_get_400_and_a_close() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    // The "body" is a whole request: it must not be answered.
    let smuggled = b"GET /big.bin HTTP/1.1\r\n\r\n";
    let fields: &[&[u8]] = &[
        b"Content-Length: 25\xa0\r\n",
        b"Content-Length: +25\r\n",
        b"Content-Length: 25\r\nContent-Length: 26\r\n",
        b"Content-Length: 25, 26\r\n",
        b"Content-Length: 25\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\xa0\r\n",
        b"Connection: keep-alive\xa0\r\n",
        b"Connection: keep alive\r\n",
    ];
    for field in fields {
        let mut request = b"GET /a.txt HTTP/1.1\r\nHost: x\r\n".to_vec();
        request.extend_from_slice(field);
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(smuggled);
        let got = exchange(addr, &request).await;
        let shown = String::from_utf8_lossy(field);
        assert!(got.starts_with("HTTP/1.1 400 "), "{shown:?}: {got:?}");
        assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{shown:?}: {got:?}");
        assert_eq!(header(&got, "Connection"), Some("close"), "{shown:?}");
    }
    // A valid length: the body is not read as a request either (the
    // response closes the connection).
    let mut request = b"GET /a.txt HTTP/1.1\r\nContent-Length: 25\r\n\r\n".to_vec();
    request.extend_from_slice(smuggled);
    let got = exchange(addr, &request).await;
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
}

/// Finding 8: a `%` not followed by two hexadecimal digits is a 400, not
/// a guess (`%+a` used to decode as a newline).
#[tokio::test]
async fn bad_percent_escapes_get_400() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    for target in ["/a%+a.txt", "/a%-1.txt", "/a.txt%1", "/a.tx%7", "/%zz"] {
        let got = exchange(
            addr,
            format!("GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 400 "), "{target}: {got:?}");
    }
    let good = exchange(addr, b"GET /a%2etxt HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(good.ends_with("\r\n\r\nhello world\n"), "{good}");
}

/// Finding 8: `If-Match` and `If-Unmodified-Since` are preconditions
/// (412 when false, before `If-None-Match`'s 304), and an
/// `If-Modified-Since` in the future is ignored.
#[tokio::test]
async fn if_match_and_if_unmodified_since_fail_with_412_and_a_future_date_is_ignored() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    let first = exchange(addr, b"HEAD /a.txt HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    let etag = header(&first, "ETag").expect("ETag").to_owned();
    let modified = header(&first, "Last-Modified")
        .expect("Last-Modified")
        .to_owned();
    let ask = |condition: String| async move {
        exchange(
            addr,
            format!("GET /a.txt HTTP/1.1\r\n{condition}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
    };
    let cases = [
        (format!("If-Match: {etag}"), "200"),
        ("If-Match: *".to_owned(), "200"),
        ("If-Match: \"other\"".to_owned(), "412"),
        (format!("If-Match: W/{etag}"), "412"),
        (format!("If-Unmodified-Since: {modified}"), "200"),
        (
            "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT".to_owned(),
            "412",
        ),
        (
            format!("If-Match: \"other\"\r\nIf-None-Match: {etag}"),
            "412",
        ),
        (format!("If-None-Match: {etag}"), "304"),
        (
            "If-Modified-Since: Fri, 31 Dec 9999 23:59:59 GMT".to_owned(),
            "200",
        ),
        (format!("If-Modified-Since: {modified}"), "304"),
    ];
    for (condition, status) in cases {
        let got = ask(condition.clone()).await;
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status} ")),
            "{condition}: {got:?}"
        );
        if status == "200" {
            assert!(got.ends_with("hello world\n"), "{condition}: {got:?}");
        }
    }
}

/// The `bytes=` field of an access log line.
fn logged_bytes(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("bytes="))
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no bytes= in {line}"))
}

/// A daemon whose download listener serves a 64 MiB sparse `big.bin`,
/// with `server` (a `[server]` table, or nothing) before the listener.
fn big_file_daemon(server: &str) -> (tempfile::TempDir, crate::cli::Daemon) {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir(&root).expect("mkdir");
    let big = fs::File::create(root.join("big.bin")).expect("create");
    big.set_len(64 << 20).expect("sparse file");
    let config = base.path().join("switchboard.toml");
    let listener = common::listener("files", "download", &format!("root = '{}'", root.display()));
    fs::write(&config, format!("{server}{listener}")).expect("config");
    let daemon = crate::cli::Daemon::start(&config);
    (base, daemon)
}

/// Finding 11: the access log of a response cut short says what went
/// out: the status and range of the head, the body's bytes sent, and
/// `aborted`.
#[test]
fn the_access_log_of_an_aborted_download_says_what_was_sent() {
    let (_base, mut daemon) = big_file_daemon("");
    let addr = daemon.addr("files");
    for (range, status, logged_range) in [
        ("", "status=200", "range=-"),
        ("Range: bytes=1000-\r\n", "status=206", "1000-67108863"),
    ] {
        let mut conn = crate::cli::client(addr);
        std::io::Write::write_all(
            &mut conn,
            format!("GET /big.bin HTTP/1.1\r\n{range}\r\n").as_bytes(),
        )
        .expect("send");
        let mut some = vec![0u8; 256 * 1024];
        std::io::Read::read_exact(&mut conn, &mut some).expect("read");
        // Gone mid-file, with a reset.
        rustix::net::sockopt::set_socket_linger(&conn, Some(Duration::ZERO)).expect("SO_LINGER");
        drop(conn);
        let line = daemon.wait_for_log("http request");
        for expected in [status, logged_range, "aborted"] {
            assert!(line.contains(expected), "{expected} not in {line}");
        }
        let bytes = logged_bytes(&line);
        assert!((200 * 1024..64 << 20).contains(&bytes), "{bytes} in {line}");
    }
}

/// A download still going when the shutdown grace runs out is dropped
/// with its connection, and still gets its access log line: status, the
/// body's bytes sent, and `dropped`.
#[test]
fn the_access_log_of_a_download_dropped_at_the_end_of_the_grace_says_what_was_sent() {
    let (_base, mut daemon) = big_file_daemon("[server]\nshutdown_grace = \"300ms\"\n\n");
    let mut conn = crate::cli::client(daemon.addr("files"));
    std::io::Write::write_all(&mut conn, b"GET /big.bin HTTP/1.1\r\n\r\n").expect("send");
    let mut some = vec![0u8; 256 * 1024];
    std::io::Read::read_exact(&mut conn, &mut some).expect("read");
    // The client stops reading; the daemon is asked to stop.
    daemon.signal("TERM");
    let line = daemon.wait_for_log("http request");
    for expected in ["status=200", "range=-", "outcome=dropped"] {
        assert!(line.contains(expected), "{expected} not in {line}");
    }
    let bytes = logged_bytes(&line);
    assert!((200 * 1024..64 << 20).contains(&bytes), "{bytes} in {line}");
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
    drop(conn);
}

/// The HTTP-date of the second `time` is in (1970 to 9999).
fn http_date(time: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// Sets the modification time of `path`, and checks that it was kept.
fn set_mtime(path: &Path, time: std::time::SystemTime) {
    let file = fs::File::options().write(true).open(path).expect("open");
    file.set_modified(time).expect("set mtime");
    let kept = fs::metadata(path).expect("stat").modified().expect("mtime");
    assert_eq!(
        kept, time,
        "the file system did not keep the time of {path:?}"
    );
}

/// Attack F4 (a): an `If-Range` date matches only a `Last-Modified` that
/// is a strong validator (RFC 9110 §13.1.5): a file changed less than a
/// second ago may change again within the same second without its date
/// changing, so a resume with its date gets the whole file, never the
/// new version's bytes spliced onto the old one's. A file changed a while
/// ago still resumes.
#[tokio::test]
async fn an_if_range_date_of_a_file_changed_this_second_gets_the_whole_file() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    let resume = |modified: String| async move {
        exchange(
            addr,
            format!(
                "GET /ir.txt HTTP/1.1\r\nRange: bytes=5-\r\nIf-Range: {modified}\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
    };
    let head = || async move {
        exchange(addr, b"HEAD /ir.txt HTTP/1.1\r\nConnection: close\r\n\r\n").await
    };
    let path = root.join("ir.txt");
    // Changed ten seconds ago: its date is strong, the range applies.
    fs::write(&path, b"AAAAAAAAAA").expect("write");
    set_mtime(
        &path,
        std::time::SystemTime::now() - Duration::from_secs(10),
    );
    let first = head().await;
    let modified = header(&first, "Last-Modified").expect("Last-Modified");
    let got = resume(modified.to_owned()).await;
    assert!(got.starts_with("HTTP/1.1 206 "), "{got}");
    assert!(got.ends_with("\r\n\r\nAAAAA"), "{got}");
    // Written, fetched and rewritten within one second (the attacker's
    // sequence): the resume gets the whole new version. The server's
    // clock is only known to be within a second of the write when the
    // whole exchange took less than that, so a slow round is tried again.
    for _ in 0..5 {
        let written = std::time::SystemTime::now();
        fs::write(&path, b"AAAAAAAAAA").expect("write");
        set_mtime(&path, written);
        let first = head().await;
        let modified = header(&first, "Last-Modified")
            .expect("Last-Modified")
            .to_owned();
        assert_eq!(modified, http_date(written), "{first}");
        fs::write(&path, b"BBBBBBBBBB").expect("rewrite");
        set_mtime(&path, written);
        let got = resume(modified).await;
        if written.elapsed().unwrap_or(Duration::MAX) >= Duration::from_secs(1) {
            continue;
        }
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.ends_with("\r\n\r\nBBBBBBBBBB"), "{got}");
        assert_eq!(header(&got, "Content-Range"), None, "{got}");
        return;
    }
    eprintln!("skipped: no round within a second of the write (a slow machine)");
}

/// Attack F4 (b): a file dated in the future (an hour ahead, year 3000,
/// the last second of 9999) is served with `Last-Modified` equal to the
/// response's `Date`, never later (RFC 9110 §8.8.2.1), and `If-Range`
/// with either its own date or the one served gets the whole file (the
/// date served is "now": not a strong validator). Years past 2446 need a
/// tmpfs (ext4 clamps them); without one only the hour ahead is tried.
#[tokio::test]
async fn a_file_dated_in_the_future_is_served_as_modified_now() {
    let tmpfs = tmpfs_dir();
    let far = tmpfs.is_some();
    let base = tmpfs.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
    let root = base.path().join("root");
    fs::create_dir(&root).expect("mkdir");
    let now = std::time::SystemTime::now();
    let mut dated = vec![("hour.txt", now + Duration::from_secs(3600))];
    if far {
        dated.push((
            "y3000.txt",
            std::time::UNIX_EPOCH + Duration::from_secs(32_503_680_000),
        ));
        dated.push((
            "y9999.txt",
            std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799),
        ));
    }
    for (name, time) in &dated {
        let path = root.join(name);
        fs::write(&path, b"0123456789").expect("write");
        set_mtime(&path, *time);
    }
    let server = server(&root);
    let addr = server.addr("files");
    for (name, time) in &dated {
        let plain = exchange(
            addr,
            format!("GET /{name} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(plain.starts_with("HTTP/1.1 200 OK"), "{name}: {plain}");
        let served = header(&plain, "Last-Modified").expect("Last-Modified");
        assert_eq!(Some(served), header(&plain, "Date"), "{name}: {plain}");
        for validator in [http_date(*time), served.to_owned()] {
            let got = exchange(
                addr,
                format!(
                    "GET /{name} HTTP/1.1\r\nRange: bytes=5-\r\nIf-Range: {validator}\r\n\
                     Connection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
            assert!(
                got.starts_with("HTTP/1.1 200 OK"),
                "{name} {validator}: {got}"
            );
            assert!(got.ends_with("\r\n\r\n0123456789"), "{name}: {got}");
        }
    }
}

/// Attack F7: a listing exists, so `If-None-Match: *` is a 304 for it as
/// for a file; it has no entity tag, so `If-Match` with one is a 412 and
/// `If-None-Match` with one does not hold.
#[tokio::test]
async fn if_none_match_star_on_a_listing_is_304() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    let cases = [
        ("GET", "If-None-Match: *", "HTTP/1.1 304 "),
        ("HEAD", "If-None-Match: *", "HTTP/1.1 304 "),
        ("GET", "If-None-Match: \"x\"", "HTTP/1.1 200 OK"),
        ("GET", "If-Match: *", "HTTP/1.1 200 OK"),
        ("GET", "If-Match: \"x\"", "HTTP/1.1 412 "),
    ];
    for (method, condition, status) in cases {
        let got = exchange(
            addr,
            format!("{method} / HTTP/1.1\r\n{condition}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(got.starts_with(status), "{method} {condition}: {got}");
        if status == "HTTP/1.1 304 " {
            assert!(got.ends_with("\r\n\r\n"), "a 304 has no body: {got}");
        } else if method == "GET" && status == "HTTP/1.1 200 OK" {
            assert!(got.contains(">sub/</a>"), "{got}");
            assert!(got.ends_with("</html>\n"), "{got}");
        }
    }
}

/// Attack F7: `Range` is not a list, so a request with two `Range`
/// fields (different or the same) has no valid range: the whole file
/// (RFC 9110 §14.2 lets a server ignore `Range`), never one of them.
#[tokio::test]
async fn two_range_fields_are_ignored() {
    let (_base, root) = root();
    let server = server(&root);
    let addr = server.addr("files");
    for ranges in [
        "Range: bytes=0-1\r\nRange: bytes=6-10",
        "Range: bytes=6-\r\nRange: bytes=6-",
        "Range: bytes=6-\r\nRange: ",
    ] {
        let got = exchange(
            addr,
            format!("GET /a.txt HTTP/1.1\r\n{ranges}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{ranges:?}: {got}");
        assert!(got.ends_with("\r\n\r\nhello world\n"), "{ranges:?}: {got}");
    }
    // One of them alone is a range.
    let one = exchange(
        addr,
        b"GET /a.txt HTTP/1.1\r\nRange: bytes=6-\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        one.ends_with("\r\n\r\nworld\n") && one.starts_with("HTTP/1.1 206 "),
        "{one}"
    );
}

/// An idle keep-alive connection (waiting for its next request without a
/// buffer) is still closed by the idle timeout, and not before it.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let (_dir, root) = root();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'\nidle_timeout = \"700ms\"", root.display()),
    ));
    let mut conn = common::connect(server.addr("files")).await;
    conn.write_all(b"HEAD /a.txt HTTP/1.1\r\n\r\n")
        .await
        .expect("send");
    let mut first = [0u8; 17];
    conn.read_exact(&mut first).await.expect("first response");
    assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");
    let idle_since = std::time::Instant::now();
    let mut rest = Vec::new();
    timeout(LIMIT, conn.read_to_end(&mut rest))
        .await
        .expect("the idle keep-alive connection was never closed")
        .expect("read");
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(500) && idle < Duration::from_secs(5),
        "closed after {idle:?} idle"
    );
    // The rest of the first response's head, and nothing after it.
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("HTTP/1.1"), "{rest}");
}

/// The CRLF some clients send after a request (RFC 9112 §2.2: a server
/// should ignore at least one empty line before a request line) leaves a
/// keep-alive connection idle: no head has begun, so no 408 at the
/// `message_timeout`, and (issue 23) no buffer is held while it waits.
#[tokio::test]
async fn a_crlf_after_a_request_leaves_the_connection_idle() {
    let (_dir, root) = root();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!(
            "root = '{}'\nmessage_timeout = \"500ms\"\nidle_timeout = \"20s\"",
            root.display()
        ),
    ));
    let mut conn = common::connect(server.addr("files")).await;
    conn.write_all(b"HEAD /a.txt HTTP/1.1\r\n\r\n\r\n")
        .await
        .expect("send");
    // The first response (a HEAD: its head only), then well past the
    // message timeout: nothing more.
    let mut got = Vec::new();
    let waited = std::time::Instant::now();
    while waited.elapsed() < Duration::from_millis(1500) {
        let _ = timeout(Duration::from_millis(100), conn.read_buf(&mut got)).await;
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(!got.contains("408"), "{got}");
    // And the connection still serves.
    conn.write_all(b"HEAD /a.txt HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the second request");
    let all = common::read_to_end(&mut conn).await;
    assert!(
        String::from_utf8_lossy(&all).contains("HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&all)
    );
}

/// Keep-alive is bounded: of requests pipelined past
/// `MAX_REQUESTS_PER_CONNECTION` (1000) in one write, 1000 are answered,
/// the last with `Connection: close`, and then the connection ends.
#[tokio::test]
async fn pipelined_requests_past_the_keep_alive_bound_end_at_the_thousandth() {
    let (_dir, root) = root();
    let server = server(&root);
    let mut conn = common::connect(server.addr("files")).await;
    let requests = b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1005);
    let (mut read, mut write) = conn.split();
    let (_, all) = tokio::join!(write.write_all(&requests), async {
        // Until the end, or a reset (whatever came before it counts).
        let mut all = Vec::new();
        let read_all = async { while read.read_buf(&mut all).await.is_ok_and(|n| n > 0) {} };
        timeout(LIMIT, read_all)
            .await
            .expect("the connection was never closed");
        all
    });
    let text = String::from_utf8_lossy(&all);
    let answered = text.matches("HTTP/1.1 200 OK\r\n").count();
    assert_eq!(answered, 1000, "{} bytes back", all.len());
    let last = text
        .rsplit("HTTP/1.1 200 OK\r\n")
        .next()
        .unwrap_or_default();
    assert!(last.contains("Connection: close\r\n"), "{last}");
    assert_eq!(text.matches("Connection: close\r\n").count(), 1);
}

/// The first request's head is bounded by `message_timeout` from its first
/// byte, as every message is: a request line dripped just under the quiet
/// gap, then its header fields dripped too, gets its 408 at the message
/// timeout, not at the request line's time plus a whole timeout more.
#[tokio::test]
async fn a_dripped_first_head_gets_408_at_the_message_timeout_from_its_first_byte() {
    let (_dir, root) = root();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!(
            "root = '{}'\nmessage_timeout = \"1s\"\nmessage_gap = \"300ms\"",
            root.display()
        ),
    ));
    let mut conn = common::connect(server.addr("files")).await;
    conn.set_nodelay(true).expect("nodelay");
    let started = std::time::Instant::now();
    // The request line over about 0.6 s, a byte every 15 ms (under the gap).
    let line = format!("GET /a.txt?{} HTTP/1.1\r\n", "x".repeat(14));
    for byte in line.as_bytes() {
        conn.write_all(&[*byte]).await.expect("send a byte");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let line_took = started.elapsed();
    // Then header fields, a byte every 20 ms, until the server answers.
    let field = b"X-a: b\r\n";
    let mut got = [0u8; 12];
    let mut at = 0;
    let answered = loop {
        if conn
            .write_all(&field[at % field.len()..][..1])
            .await
            .is_err()
        {
            break None;
        }
        at += 1;
        match timeout(Duration::from_millis(20), conn.read(&mut got)).await {
            Ok(Ok(n)) if n > 0 => break Some(started.elapsed()),
            Ok(_) => break None,
            Err(_) if started.elapsed() > LIMIT => break None,
            Err(_) => {}
        }
    };
    let after = answered.expect("no answer to the dripped head");
    assert_eq!(
        &got,
        b"HTTP/1.1 408",
        "{:?} after {after:?} (the request line took {line_took:?})",
        String::from_utf8_lossy(&got)
    );
    assert!(
        after < Duration::from_millis(1400),
        "the 408 came {after:?} after the head's first byte (message_timeout 1 s)"
    );
}
