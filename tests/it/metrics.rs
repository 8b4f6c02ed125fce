//! The `metrics` handler: traffic through every handler moves the counters
//! by exactly what was sent; HTTP and bare-text scrapes; Prometheus's own
//! checker (`promtool check metrics`) accepts what `curl` gets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::common::{LIMIT, TestServer, ask, connect, connect_lines, listener, read_to_end};

/// One figure per line: `name{labels} value`, keyed by `name{labels}`.
fn figures(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (key.to_owned(), value)
        })
        .collect()
}

/// A figure of listener `listener` (whose handler is `handler`), with
/// more labels (sorted, as the exposition sorts them) after `listener`.
pub(crate) fn of(
    figures: &HashMap<String, f64>,
    name: &str,
    handler: &str,
    listener: &str,
    more: &str,
) -> f64 {
    let key = format!("{name}{{handler=\"{handler}\",listener=\"{listener}\"{more}}}");
    *figures
        .get(&key)
        .unwrap_or_else(|| panic!("no figure {key} in the scrape"))
}

/// GETs `path` over HTTP/1.1; returns the head and the body.
async fn get(addr: SocketAddr, request: &str) -> (String, String) {
    let mut conn = connect(addr).await;
    conn.write_all(request.as_bytes()).await.expect("send");
    let reply = String::from_utf8(read_to_end(&mut conn).await).expect("UTF-8");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (head.to_owned(), body.to_owned())
}

pub(crate) async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (head, body) = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    figures(&body)
}

/// Waits until every connection but `but` has been closed and counted.
async fn settled(server: &TestServer, but: usize) {
    let deadline = Instant::now() + LIMIT;
    while server.handle().status().connections > but {
        assert!(Instant::now() < deadline, "connections did not close");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn every_handler(root: &std::path::Path) -> String {
    [
        listener("echo", "echo", ""),
        listener("keywords", "keyword-bot", "max_message_bytes = 16"),
        listener("random", "random-bot", ""),
        listener(
            "files",
            "download",
            &format!("root = '{}'", root.to_str().expect("UTF-8 path")),
        ),
        listener("metrics", "metrics", ""),
    ]
    .concat()
}

#[tokio::test]
async fn traffic_through_every_handler_moves_the_counters_by_exactly_what_was_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f.bin"), vec![7u8; 1000]).expect("write file");
    let server = TestServer::start(&every_handler(dir.path()));

    // echo: 6 bytes each way, and a connection that says nothing.
    let mut echo = connect(server.addr("echo")).await;
    echo.write_all(b"hello\n").await.expect("send");
    echo.shutdown().await.expect("half-close");
    assert_eq!(read_to_end(&mut echo).await, b"hello\n");
    drop(echo);
    drop(connect(server.addr("echo")).await);

    // keyword-bot: two answers, then a message over its 16-byte limit.
    let mut bot = connect_lines(server.addr("keywords")).await;
    ask(&mut bot, "hello\n").await;
    ask(&mut bot, "???\n").await;
    drop(bot);
    let mut long = connect(server.addr("keywords")).await;
    long.write_all(&[b'x'; 40]).await.expect("send");
    long.write_all(b"\n").await.expect("send");
    assert_eq!(read_to_end(&mut long).await, b"ERR message too long\n");
    drop(long);

    // random-bot: one answer, then the farewell.
    let mut random = connect_lines(server.addr("random")).await;
    assert_eq!(ask(&mut random, "a\n").await, "a");
    assert_eq!(ask(&mut random, "bye\n").await, "bye");
    drop(random);

    // download: a 1000-byte file, then a refusal.
    let mut file = connect(server.addr("files")).await;
    file.write_all(b"f.bin\n").await.expect("send");
    assert_eq!(read_to_end(&mut file).await.len(), 1000);
    drop(file);
    let mut refused = connect(server.addr("files")).await;
    refused.write_all(b"../x\n").await.expect("send");
    assert_eq!(
        read_to_end(&mut refused).await,
        b"ERR '..' is not allowed\n"
    );
    drop(refused);

    settled(&server, 0).await;
    let m = scrape(server.addr("metrics")).await;
    let closed = |handler: &str, listener: &str, reason: &str| {
        of(
            &m,
            "switchboard_connections_closed_total",
            handler,
            listener,
            &format!(",reason=\"{reason}\""),
        )
    };
    let total = |name: &str, handler: &str, listener: &str| of(&m, name, handler, listener, "");

    assert_eq!(
        total("switchboard_connections_accepted_total", "echo", "echo"),
        2.0
    );
    assert_eq!(closed("echo", "echo", "client_closed"), 2.0);
    assert_eq!(
        total("switchboard_received_bytes_total", "echo", "echo"),
        6.0
    );
    assert_eq!(total("switchboard_sent_bytes_total", "echo", "echo"), 6.0);
    assert_eq!(total("switchboard_connections_open", "echo", "echo"), 0.0);
    assert_eq!(
        total(
            "switchboard_connection_duration_seconds_count",
            "echo",
            "echo"
        ),
        2.0
    );

    let bot = ("keyword-bot", "keywords");
    assert_eq!(
        total("switchboard_connections_accepted_total", bot.0, bot.1),
        2.0
    );
    assert_eq!(
        total("switchboard_messages_answered_total", bot.0, bot.1),
        2.0
    );
    assert_eq!(closed(bot.0, bot.1, "client_closed"), 1.0);
    assert_eq!(closed(bot.0, bot.1, "limit"), 1.0);
    assert_eq!(
        of(
            &m,
            "switchboard_error_replies_total",
            bot.0,
            bot.1,
            ",reason=\"message too long\""
        ),
        1.0
    );
    // "hello\n" + "???\n" + 41 bytes, before the limit ended the read.
    assert_eq!(
        total("switchboard_received_bytes_total", bot.0, bot.1),
        (6 + 4 + 41) as f64
    );

    let rb = ("random-bot", "random");
    assert_eq!(
        total("switchboard_messages_answered_total", rb.0, rb.1),
        2.0
    );
    assert_eq!(closed(rb.0, rb.1, "farewell"), 1.0);
    assert_eq!(total("switchboard_sent_bytes_total", rb.0, rb.1), 6.0);

    let dl = ("download", "files");
    assert_eq!(total("switchboard_files_sent_total", dl.0, dl.1), 1.0);
    assert_eq!(
        total("switchboard_file_bytes_sent_total", dl.0, dl.1),
        1000.0
    );
    assert_eq!(closed(dl.0, dl.1, "completed"), 1.0);
    assert_eq!(closed(dl.0, dl.1, "refused"), 1.0);
    assert_eq!(
        of(
            &m,
            "switchboard_error_replies_total",
            dl.0,
            dl.1,
            ",reason=\"'..' is not allowed\""
        ),
        1.0
    );
    assert_eq!(
        total("switchboard_sent_bytes_total", dl.0, dl.1),
        (1000 + "ERR '..' is not allowed\n".len()) as f64
    );

    // The scrape sees itself open; the reasons that did not happen are 0.
    assert_eq!(
        total("switchboard_connections_open", "metrics", "metrics"),
        1.0
    );
    assert_eq!(closed("echo", "echo", "idle"), 0.0);
    assert_eq!(closed("echo", "echo", "dropped"), 0.0);
    assert_eq!(m["switchboard_build_info{version=\"0.1.0\"}"], 1.0);
    assert_eq!(m["switchboard_reloads_total{result=\"ok\"}"], 0.0);
    assert!(
        m["process_open_fds"] >= 6.0,
        "five listeners and a connection"
    );
    assert!(m["process_resident_memory_bytes"] > 0.0);

    // A second scrape counts the first one as a completed connection.
    settled(&server, 0).await;
    let again = scrape(server.addr("metrics")).await;
    assert_eq!(
        of(
            &again,
            "switchboard_connections_closed_total",
            "metrics",
            "metrics",
            ",reason=\"completed\""
        ),
        1.0
    );
    server.shutdown().await;
}

/// An HTTP request that a download rule refuses (404, 403, 429, 503) is
/// counted as the raw protocol counts its `ERR` line: under the same
/// reason, so that an operator sees both protocols' refusals in one
/// series. A status that no rule chose (a 400) is not.
#[tokio::test]
async fn http_refusals_on_the_download_port_are_counted_as_err_lines_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = std::fs::File::create(dir.path().join("big.bin")).expect("big.bin");
    big.set_len(64 << 20).expect("sparse");
    std::fs::write(dir.path().join(".hidden"), b"h").expect("hidden");
    let server = TestServer::start(
        &[
            listener(
                "files",
                "download",
                &format!(
                    "root = '{}'\nmax_downloads = 4\nmax_downloads_per_source = 1",
                    dir.path().to_str().expect("UTF-8 path")
                ),
            ),
            listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let addr = server.addr("files");
    // A stalled download holds 127.0.0.1's one slot.
    let mut stalled = connect(addr).await;
    stalled.write_all(b"big.bin\n").await.expect("send");
    let mut some = [0u8; 1024];
    tokio::time::timeout(
        LIMIT,
        tokio::io::AsyncReadExt::read_exact(&mut stalled, &mut some),
    )
    .await
    .expect("no data")
    .expect("read");
    for (path, status) in [
        ("/missing", "404"),
        ("/missing", "404"),
        ("/.hidden", "403"),
        ("/big.bin", "429"),
        ("/%zz", "400"),
    ] {
        let (head, _) = get(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {head}"
        );
    }
    let m = scrape(server.addr("metrics")).await;
    let counted = |reason: &str| {
        of(
            &m,
            "switchboard_error_replies_total",
            "download",
            "files",
            &format!(",reason=\"{reason}\""),
        )
    };
    assert_eq!(counted("not found"), 2.0);
    assert_eq!(counted("hidden files are not served"), 1.0);
    assert_eq!(counted("too many downloads from your address"), 1.0);
    let all: f64 = m
        .iter()
        .filter(|(key, _)| {
            key.starts_with("switchboard_error_replies_total{")
                && key.contains("listener=\"files\"")
        })
        .map(|(_, value)| value)
        .sum();
    assert_eq!(all, 4.0, "the 400 is not a rule's refusal");
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test]
async fn netcat_gets_the_bare_text_and_http_gets_statuses() {
    let server = TestServer::start(&listener(
        "metrics",
        "metrics",
        "request_timeout = \"300ms\"",
    ));
    let addr = server.addr("metrics");

    // netcat: an empty line, or nothing at all before closing its side.
    for request in [&b"\n"[..], b""] {
        let mut conn = connect(addr).await;
        conn.write_all(request).await.expect("send");
        conn.shutdown().await.expect("half-close");
        let text = String::from_utf8(read_to_end(&mut conn).await).expect("UTF-8");
        assert!(text.starts_with("# HELP "), "{text}");
        assert!(text.contains("\nswitchboard_build_info{"), "{text}");
        // Process-wide: no labels, and none in this process so far.
        assert!(
            text.contains(
                "\n# TYPE switchboard_panics_total counter\nswitchboard_panics_total 0\n"
            ),
            "{text}"
        );
    }

    let (head, body) = get(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .expect("a number");
    assert_eq!(length, body.len());

    let (head, body) = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(body.is_empty(), "HEAD has no body: {body}");
    let (head, _) = get(addr, "GET /other HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    let (head, _) = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nAllow: GET, HEAD"), "{head}");
    let many_headers = format!("GET /metrics HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(101));
    let (head, _) = get(addr, &many_headers).await;
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");

    // The absolute form of a target, and a query, name the same path.
    let (head, _) = get(addr, "GET http://localhost/metrics?x=1 HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let (head, _) = get(addr, "OPTIONS * HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");

    // What cannot be read in full is still answered in HTTP.
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000));
    let (head, _) = get(addr, &long_target).await;
    assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
    let long_header = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
    let (head, _) = get(addr, &long_header).await;
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
    // A request that never ends is cut at the request timeout, with a 408.
    let mut slow = connect(addr).await;
    slow.write_all(b"GET /metrics HTTP/1.1\r\n")
        .await
        .expect("send");
    let started = Instant::now();
    let reply = String::from_utf8(read_to_end(&mut slow).await).expect("UTF-8");
    assert!(
        reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{reply}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    server.shutdown().await;
}

/// True when `tool` runs here; required when CI says so.
fn have(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("SWITCHBOARD_REQUIRE_PROMTOOL").is_some() {
        panic!("{tool} is required (SWITCHBOARD_REQUIRE_PROMTOOL is set) but does not run");
    }
    found
}

#[tokio::test]
async fn promtool_accepts_what_curl_scrapes() {
    if !(have("curl") && have("promtool")) {
        eprintln!("skipped: curl or promtool (Debian's prometheus package) is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&every_handler(dir.path()));
    // Some traffic first, so that every family has series.
    let mut bot = connect_lines(server.addr("keywords")).await;
    ask(&mut bot, "hello\n").await;
    drop(bot);
    settled(&server, 0).await;
    let url = format!("http://{}/metrics", server.addr("metrics"));
    let checked = tokio::task::spawn_blocking(move || {
        let scraped = std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", &url])
            .output()
            .expect("curl");
        assert!(scraped.status.success(), "curl {url}: {:?}", scraped.status);
        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool");
        use std::io::Write as _;
        promtool
            .stdin
            .take()
            .expect("stdin")
            .write_all(&scraped.stdout)
            .expect("write to promtool");
        (
            scraped.stdout,
            promtool.wait_with_output().expect("promtool"),
        )
    })
    .await
    .expect("curl and promtool");
    let (scraped, checked) = checked;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && report.trim().is_empty(),
        "promtool check metrics: {:?}\n{report}\n--- scrape:\n{}",
        checked.status,
        String::from_utf8_lossy(&scraped)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_series_of_a_listener_a_reload_removed_leave_the_scrape() {
    let kept = [
        listener("kept", "echo", ""),
        listener("metrics", "metrics", ""),
    ]
    .concat();
    let grace = "[server]\nshutdown_grace = \"100ms\"\n";
    let mut server = TestServer::start(&format!("{grace}{}{kept}", listener("gone", "echo", "")));
    let mut conn = connect(server.addr("gone")).await;
    conn.write_all(b"x").await.expect("send");
    conn.shutdown().await.expect("half-close");
    assert_eq!(read_to_end(&mut conn).await, b"x");
    drop(conn);
    settled(&server, 0).await;
    let text = |m: &HashMap<String, f64>| m.keys().cloned().collect::<Vec<_>>().join("\n");
    let before = scrape(server.addr("metrics")).await;
    assert!(text(&before).contains("listener=\"gone\""));

    server
        .reload(&format!("{grace}{kept}"))
        .await
        .expect("reload");
    // Gone after the grace (100 ms) and a second more; polled, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(server.addr("metrics")).await;
        if !text(&now).contains("listener=\"gone\"") {
            assert!(text(&now).contains("listener=\"kept\""));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removed listener's series stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}
