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

fn have(tool: &str) -> bool {
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
async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run the client"))
        .await
        .expect("client thread")
}

fn url(addr: SocketAddr, path: &str) -> String {
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
async fn exchange_bytes(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
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
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    String::from_utf8_lossy(&exchange_bytes(addr, request).await).to_string()
}

/// The value of header `name` in a response head.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
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

#[tokio::test]
async fn a_browser_gets_an_html_listing_with_escaped_names_and_curl_gets_text() {
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
    let text = exchange(
        addr,
        b"GET / HTTP/1.1\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.ends_with("\r\n\r\na.txt\nbig.bin\nsub/\n"), "{text}");
}
