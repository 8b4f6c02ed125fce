//! The clients against hostile servers: small servers written here (on
//! 127.0.0.1, port 0) that lie about lengths, change the file under a
//! resume, frame or encode the body unasked, drip, never end a line, send
//! terminal escape sequences, and list names and trees no mirror should
//! follow; each case drives the real binary, bounded in time. Every client
//! must exit non-zero or produce exactly the true file, never give an
//! incomplete `.part` the final name, and write nothing raw to stdout or
//! stderr: no ESC, no C1, no other control byte but tab and newline.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::cli::{switchboard, wait_output};
use crate::common::LIMIT;

/// What a hostile server does, step by step, after reading a request.
#[derive(Clone, Debug)]
enum Step {
    /// Writes these bytes.
    Write(Vec<u8>),
    /// Writes these bytes one at a time, a second apart.
    Drip(Vec<u8>),
    /// Writes a byte, forever (up to a bound far past any cap).
    Endless,
    /// Writes these bytes again and again as fast as the client reads
    /// them, for up to [`LIMIT`] (a flood of short lines).
    Flood(Vec<u8>),
    /// Resets the connection (RST).
    Reset,
    /// Keeps the connection open, writing nothing.
    Hold,
    /// Half-closes (FIN), then reads until the client closes, so that
    /// what the client sends after it is not answered with a reset.
    FinThenDrain,
}

/// Most bytes `Step::Endless` writes.
const ENDLESS_BOUND: usize = 64 * 1024 * 1024;
/// Most connections a hostile server accepts.
const MAX_CONNECTIONS: usize = 20_000;

/// The answer of a hostile server to one request.
type Respond = Arc<dyn Fn(&str) -> Vec<Step> + Send + Sync>;

/// Runs the steps on `stream`; a write the client refuses ends them.
async fn play(mut stream: TcpStream, steps: Vec<Step>) {
    for step in steps {
        let done = match step {
            Step::Write(bytes) => stream.write_all(&bytes).await.is_err(),
            Step::Drip(bytes) => {
                let mut failed = false;
                for b in bytes {
                    if stream.write_all(&[b]).await.is_err() {
                        failed = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                failed
            }
            Step::Endless => {
                let block = vec![b'a'; 64 * 1024];
                let mut sent = 0;
                while sent < ENDLESS_BOUND && stream.write_all(&block).await.is_ok() {
                    sent += block.len();
                }
                true
            }
            Step::Flood(bytes) => {
                let block = bytes.repeat((64 * 1024 / bytes.len().max(1)).max(1));
                let started = Instant::now();
                while started.elapsed() < LIMIT && stream.write_all(&block).await.is_ok() {}
                true
            }
            Step::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
            Step::Hold => {
                // Until the client goes away.
                let _ = tokio::time::timeout(LIMIT, stream.read(&mut [0u8; 1])).await;
                return;
            }
            Step::FinThenDrain => {
                let _ = stream.shutdown().await;
                let drain = async {
                    let mut buf = [0u8; 4096];
                    for _ in 0..1024 {
                        if matches!(stream.read(&mut buf).await, Ok(0) | Err(_)) {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(LIMIT, drain).await;
                return;
            }
        };
        if done {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// Reads a request: up to an empty line (HTTP) or the first newline
/// (the raw and line protocols), at most 16 KiB, within the limit.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while request.len() < 16 * 1024 {
            let Ok(n) = stream.read(&mut buf).await else {
                break;
            };
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
            let http = request.starts_with(b"GET ");
            if (http && request.windows(4).any(|w| w == b"\r\n\r\n"))
                || (!http && request.contains(&b'\n'))
            {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LIMIT, read).await;
    String::from_utf8_lossy(&request).into_owned()
}

/// A hostile TCP server; returns its address and the requests it read.
async fn serve(respond: Respond) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let respond = respond.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let request = read_request(&mut stream).await;
                let steps = respond(&request);
                if let Ok(mut seen) = seen.lock()
                    && seen.len() < 64
                {
                    seen.push(request);
                }
                play(stream, steps).await;
            });
        }
    });
    (addr, requests)
}

/// A hostile UDP server: answers every datagram with `reply`.
async fn serve_udp(reply: Vec<u8>) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = socket.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..64 {
            let Ok((_, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

/// Runs `switchboard ARGS` with `stdin`, off the runtime, bounded by
/// [`LIMIT`]; returns its output and how long it ran.
async fn run(args: &[&str], stdin: &[u8]) -> (Output, Duration) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = switchboard()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let mut input = child.stdin.take().expect("stdin");
        let _ = input.write_all(&stdin);
        drop(input);
        let out = wait_output(child, LIMIT);
        (out, started.elapsed())
    })
    .await
    .expect("client thread")
}

/// Panics if `bytes` (a client's stdout or stderr) hold anything a
/// terminal would act on: a C0 control but tab and newline, DEL, a C1
/// control, or a byte that is not UTF-8.
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{what} is not UTF-8 ({e}): {bytes:?}"));
    let bad = text.chars().find(|&c| {
        (c.is_control() && c != '\t' && c != '\n') || ('\u{80}'..='\u{9f}').contains(&c)
    });
    assert_eq!(bad, None, "{what} holds a control character: {text:?}");
}

fn assert_output_clean(out: &Output) {
    assert_clean("stdout", &out.stdout);
    assert_clean("stderr", &out.stderr);
}

/// An HTTP head with these fields, and the body.
fn http(status: &str, fields: &[&str], body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("HTTP/1.1 {status}\r\n").into_bytes();
    for field in fields {
        bytes.extend_from_slice(field.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"Connection: close\r\n\r\n");
    bytes.extend_from_slice(body);
    bytes
}

/// The true file the servers below serve (or fail to).
fn true_file() -> Vec<u8> {
    (0..20u8).map(|i| b'a' + i).collect()
}

/// What a `get` case must end with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// Exit 0 and exactly the true file, no `.part` left.
    TrueFile,
    /// This exit status, no file of the final name, and the `.part` as it
    /// was before (the 10 bytes a resume case starts with).
    RefusedKeepingPart(i32),
    /// This exit status, no file of the final name, a `.part` kept.
    CutKeepingPart(i32),
    /// This exit status and no file of the final name.
    Failed(i32),
}

/// A case of `get` against a hostile server.
struct GetCase {
    name: &'static str,
    /// Extra arguments (`-c`, `--raw`, `--timeout 2s`, ...).
    args: &'static [&'static str],
    /// A `.part` of the first 10 bytes, with its validator and total kept.
    resume: bool,
    respond: fn(&str) -> Vec<Step>,
    outcome: Outcome,
    /// The run must end within this many seconds.
    within: u64,
}

const ETAG: &str = "ETag: \"v1\"";

fn whole(_: &str) -> Vec<Step> {
    vec![Step::Write(http(
        "200 OK",
        &["Content-Length: 20", ETAG],
        &true_file(),
    ))]
}

fn short_then_fin(_: &str) -> Vec<Step> {
    vec![Step::Write(http(
        "200 OK",
        &["Content-Length: 1000", ETAG],
        &true_file(),
    ))]
}

fn short_then_reset(_: &str) -> Vec<Step> {
    let mut steps = short_then_fin("");
    steps.push(Step::Reset);
    steps
}

fn raw_reset_mid_file(_: &str) -> Vec<Step> {
    vec![Step::Write(vec![7u8; 100_000]), Step::Reset]
}

fn partial(etag: &str, range: &str, body: &[u8]) -> Vec<Step> {
    vec![Step::Write(http(
        "206 Partial Content",
        &[
            etag,
            &format!("Content-Range: bytes {range}"),
            &format!("Content-Length: {}", body.len()),
        ],
        body,
    ))]
}

fn changed_etag(_: &str) -> Vec<Step> {
    partial("ETag: \"v2\"", "10-19/20", b"XXXXXXXXXX")
}

fn range_start_mismatch(_: &str) -> Vec<Step> {
    partial(ETAG, "5-19/20", b"XXXXXXXXXXXXXXX")
}

fn range_total_mismatch(_: &str) -> Vec<Step> {
    partial(ETAG, "10-29/30", b"XXXXXXXXXXXXXXXXXXXX")
}

fn honest_resume(request: &str) -> Vec<Step> {
    // Only the request a careful client sends gets the rest.
    if request.contains("Range: bytes=10-\r\n")
        && request.contains("If-Range: \"v1\"\r\n")
        && request.contains("Accept-Encoding: identity\r\n")
    {
        partial(ETAG, "10-19/20", &true_file()[10..])
    } else {
        vec![Step::Write(http(
            "400 Bad Request",
            &["Content-Length: 0"],
            b"",
        ))]
    }
}

fn chunked_body() -> Vec<u8> {
    let file = true_file();
    let mut body = b"7;ext=x\r\n".to_vec();
    body.extend_from_slice(&file[..7]);
    body.extend_from_slice(b"\r\nd\r\n");
    body.extend_from_slice(&file[7..]);
    body.extend_from_slice(b"\r\n0\r\nX-Trailer: t\r\n\r\n");
    body
}

fn chunked(_: &str) -> Vec<Step> {
    vec![Step::Write(http(
        "200 OK",
        &["Transfer-Encoding: chunked", ETAG],
        &chunked_body(),
    ))]
}

fn chunked_cut(_: &str) -> Vec<Step> {
    let body = chunked_body();
    vec![Step::Write(http(
        "200 OK",
        &["Transfer-Encoding: chunked"],
        &body[..body.len() - 20],
    ))]
}

fn gzip(_: &str) -> Vec<Step> {
    // Whatever the bytes, they are not the file's.
    vec![Step::Write(http(
        "200 OK",
        &["Content-Encoding: gzip", "Content-Length: 20", ETAG],
        &true_file(),
    ))]
}

fn dripped_head(_: &str) -> Vec<Step> {
    vec![Step::Drip(http(
        "200 OK",
        &["Content-Length: 20"],
        &true_file(),
    ))]
}

fn dripped_body(_: &str) -> Vec<Step> {
    vec![
        Step::Write(http("200 OK", &["Content-Length: 20"], b"")),
        Step::Drip(true_file()),
    ]
}

fn endless_head(_: &str) -> Vec<Step> {
    vec![
        Step::Write(b"HTTP/1.1 200 OK\r\nX-Endless: ".to_vec()),
        Step::Endless,
    ]
}

#[tokio::test]
async fn get_against_hostile_servers_exits_non_zero_or_writes_the_true_file() {
    let cases = [
        GetCase {
            name: "a whole file",
            args: &[],
            resume: false,
            respond: whole,
            outcome: Outcome::TrueFile,
            within: 10,
        },
        GetCase {
            name: "a short body then FIN",
            args: &[],
            resume: false,
            respond: short_then_fin,
            outcome: Outcome::CutKeepingPart(4),
            within: 10,
        },
        GetCase {
            name: "a short body then RST",
            args: &[],
            resume: false,
            respond: short_then_reset,
            outcome: Outcome::CutKeepingPart(4),
            within: 10,
        },
        GetCase {
            name: "raw: reset mid-file",
            args: &["--raw"],
            resume: false,
            respond: raw_reset_mid_file,
            outcome: Outcome::CutKeepingPart(4),
            within: 10,
        },
        GetCase {
            name: "-c: a 206 of another ETag",
            args: &["-c"],
            resume: true,
            respond: changed_etag,
            outcome: Outcome::RefusedKeepingPart(1),
            within: 10,
        },
        GetCase {
            name: "-c: a 206 from another start",
            args: &["-c"],
            resume: true,
            respond: range_start_mismatch,
            outcome: Outcome::RefusedKeepingPart(1),
            within: 10,
        },
        GetCase {
            name: "-c: a 206 of another total",
            args: &["-c"],
            resume: true,
            respond: range_total_mismatch,
            outcome: Outcome::RefusedKeepingPart(1),
            within: 10,
        },
        GetCase {
            name: "-c: a 200 starts over",
            args: &["-c"],
            resume: true,
            respond: whole,
            outcome: Outcome::TrueFile,
            within: 10,
        },
        GetCase {
            name: "-c: an honest 206",
            args: &["-c"],
            resume: true,
            respond: honest_resume,
            outcome: Outcome::TrueFile,
            within: 10,
        },
        GetCase {
            name: "chunked",
            args: &[],
            resume: false,
            respond: chunked,
            outcome: Outcome::TrueFile,
            within: 10,
        },
        GetCase {
            name: "chunked, cut before the last chunk",
            args: &[],
            resume: false,
            respond: chunked_cut,
            outcome: Outcome::CutKeepingPart(4),
            within: 10,
        },
        GetCase {
            name: "gzip",
            args: &[],
            resume: false,
            respond: gzip,
            outcome: Outcome::Failed(1),
            within: 10,
        },
        GetCase {
            name: "a head dripped a byte a second",
            args: &["--timeout", "2s"],
            resume: false,
            respond: dripped_head,
            outcome: Outcome::Failed(1),
            within: 5,
        },
        GetCase {
            name: "a body dripped past the deadline",
            args: &["--deadline", "2s"],
            resume: false,
            respond: dripped_body,
            outcome: Outcome::CutKeepingPart(4),
            within: 5,
        },
        GetCase {
            name: "an endless head",
            args: &[],
            resume: false,
            respond: endless_head,
            outcome: Outcome::Failed(1),
            within: 10,
        },
    ];
    // The cases run at once: the drips take their seconds side by side.
    let mut runs = Vec::new();
    for case in cases {
        runs.push((case.name, tokio::spawn(get_case(case))));
    }
    let mut failed = Vec::new();
    for (name, run) in runs {
        if run.await.is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

async fn get_case(case: GetCase) {
    let name = case.name;
    let respond = case.respond;
    let (addr, _) = serve(Arc::new(move |request: &str| respond(request))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("file.bin");
    let part = dir.path().join("file.bin.part");
    if case.resume {
        fs::write(&part, &true_file()[..10]).expect("part");
        fs::write(dir.path().join("file.bin.part.etag"), "\"v1\"\n20\n").expect("validator");
    }
    let mut args = vec![
        "get",
        &addr,
        "file.bin",
        "-o",
        target.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(case.args);
    let (out, took) = run(&args, b"").await;
    assert_output_clean(&out);
    assert!(
        took < Duration::from_secs(case.within),
        "{name}: took {took:?}: {out:?}"
    );
    match case.outcome {
        Outcome::TrueFile => {
            assert!(out.status.success(), "{name}: {out:?}");
            assert_eq!(fs::read(&target).ok(), Some(true_file()), "{name}");
            assert!(!part.exists(), "{name}: the .part is left");
        }
        Outcome::RefusedKeepingPart(code) => {
            assert_eq!(out.status.code(), Some(code), "{name}: {out:?}");
            assert!(!target.exists(), "{name}: a file of the final name");
            assert_eq!(
                fs::read(&part).ok(),
                Some(true_file()[..10].to_vec()),
                "{name}"
            );
        }
        Outcome::CutKeepingPart(code) => {
            assert_eq!(out.status.code(), Some(code), "{name}: {out:?}");
            assert!(!target.exists(), "{name}: a file of the final name");
            assert!(part.exists(), "{name}: no .part kept");
        }
        Outcome::Failed(code) => {
            assert_eq!(out.status.code(), Some(code), "{name}: {out:?}");
            assert!(!target.exists(), "{name}: a file of the final name");
        }
    }
}

/// Escape sequences a hostile server sends a terminal: OSC 0 (window
/// title), OSC 52 (clipboard), CSI clear screen, C1 CSI (encoded and as
/// a raw byte), DEL, and a carriage return to fake a prompt.
const HOSTILE_TEXT: &[u8] =
    b"\x1b]0;owned\x07 \x1b]52;c;ZXZpbA==\x07 \x1b[2J\x1b[H \xc2\x9b31m \x9b2J \x7f\r$ sudo ";

#[tokio::test]
async fn send_and_chat_over_tcp_and_udp_escape_what_the_server_says_unless_raw() {
    let mut reply = HOSTILE_TEXT.to_vec();
    reply.push(b'\n');
    let line = reply.clone();
    let (tcp, _) = serve(Arc::new(move |_: &str| {
        vec![Step::Write(line.clone()), Step::Hold]
    }))
    .await;
    let udp = serve_udp(reply.clone()).await;
    for (what, args, input) in [
        (
            "send",
            vec!["send", &tcp, "hi", "--timeout", "3s"],
            &b""[..],
        ),
        ("chat", vec!["chat", &tcp, "--timeout", "1s"], &b"hi\n"[..]),
        ("send --udp", vec!["send", "--udp", &udp, "hi"], &b""[..]),
        (
            "chat --udp",
            vec!["chat", "--udp", &udp, "--timeout", "1s"],
            &b"hi\n"[..],
        ),
    ] {
        let (out, _) = run(&args, input).await;
        assert_output_clean(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("\\x1b]0;owned\\x07") && stdout.contains("\\u{9b}31m"),
            "{what}: {out:?}"
        );
        assert!(
            stdout.contains("\\x9b2J \\x7f\\x0d$ sudo"),
            "{what}: {stdout}"
        );
        // --raw: the bytes as they came.
        let mut raw = args.clone();
        raw.push("--raw");
        let (out, _) = run(&raw, input).await;
        assert!(
            out.stdout
                .windows(HOSTILE_TEXT.len())
                .any(|w| w == HOSTILE_TEXT),
            "{what} --raw: {out:?}"
        );
    }
}

#[tokio::test]
async fn get_escapes_a_servers_words_in_its_errors() {
    let mut err = b"ERR ".to_vec();
    err.extend_from_slice(HOSTILE_TEXT);
    err.push(b'\n');
    let (raw, _) = serve(Arc::new(move |_: &str| vec![Step::Write(err.clone())])).await;
    // HTTP fields may carry C1 controls (as obs-text); a reason phrase
    // with them reaches nobody (httparse gives it as empty).
    let (http_server, _) = serve(Arc::new(|request: &str| {
        let head: &[u8] = if request.contains("Range:") {
            b"HTTP/1.1 206 Partial Content\r\nETag: \"v2\xc2\x9b2J\"\r\n\
              Content-Range: bytes 10-19/20\r\nContent-Length: 10\r\n\r\n0123456789"
        } else {
            b"HTTP/1.1 404 \xc2\x9b2J gone \xc2\x85\r\nContent-Length: 0\r\n\r\n"
        };
        vec![Step::Write(head.to_vec())]
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out_file = dir.path().join("x");
    let out_path = out_file.to_str().expect("utf-8");
    let resumed = dir.path().join("r");
    fs::write(dir.path().join("r.part"), b"0123456789").expect("part");
    fs::write(dir.path().join("r.part.etag"), "\"v1\"\n20\n").expect("validator");
    let resumed = resumed.to_str().expect("utf-8");
    for (what, args, status, quoted) in [
        (
            "raw",
            vec!["get", &raw, "x", "--raw", "-o", out_path],
            3,
            true,
        ),
        (
            "raw listing",
            vec!["get", &raw, "d/", "-r", "--raw", "-o", out_path],
            3,
            true,
        ),
        (
            "http reason",
            vec!["get", &http_server, "x", "-o", out_path],
            3,
            false,
        ),
        (
            "http etag",
            vec!["get", &http_server, "r", "-c", "-o", resumed],
            1,
            true,
        ),
    ] {
        let (out, _) = run(&args, b"").await;
        assert_eq!(out.status.code(), Some(status), "{what}: {out:?}");
        assert_output_clean(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!quoted || stderr.contains("\\u{9b}"), "{what}: {stderr}");
    }
}

#[tokio::test]
async fn send_ends_by_its_deadline_while_the_server_trickles_lines() {
    let (addr, _) = serve(Arc::new(|_: &str| {
        let mut steps = vec![Step::Write(b"first\n".to_vec())];
        for _ in 0..30 {
            steps.push(Step::Drip(b"\n".to_vec()));
        }
        steps
    }))
    .await;
    let (out, took) = run(&["send", &addr, "hi", "--timeout", "2s"], b"").await;
    assert!(took < Duration::from_secs(4), "took {took:?}: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("first\n"),
        "{out:?}"
    );
    assert_output_clean(&out);
    // A reply that never comes whole is an error at the deadline.
    let (dripping, _) = serve(Arc::new(|_: &str| vec![Step::Drip(vec![b'x'; 30])])).await;
    let (out, took) = run(&["send", &dripping, "hi", "--timeout", "2s"], b"").await;
    assert!(took < Duration::from_secs(4), "took {took:?}: {out:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_output_clean(&out);
}

/// A flood of lines the client never has to wait for (empty ones count
/// for nothing against the cap on printed replies) must not outlast the
/// deadline of `send`, nor the wait for a chat's last words.
#[tokio::test]
async fn send_and_chat_end_by_their_deadline_while_the_server_floods_lines() {
    for line in [&b"\n"[..], b"ERR no\n"] {
        let (addr, _) = serve(Arc::new(move |_: &str| {
            vec![Step::Write(b"first\n".to_vec()), Step::Flood(line.to_vec())]
        }))
        .await;
        for args in [
            vec!["send", &addr, "hi", "--timeout", "2s"],
            vec!["chat", &addr, "--timeout", "2s"],
        ] {
            let (out, took) = run(&args, b"hi\n").await;
            assert!(
                took < Duration::from_secs(6),
                "{args:?} {line:?}: took {took:?}, status {:?}, {} bytes of output",
                out.status,
                out.stdout.len()
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).starts_with("first\n"),
                "{args:?}: {:?}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// After the last line typed, `chat --udp` waits for the replies still on
/// their way: a second of quiet, never past its timeout, however many
/// datagrams keep coming.
#[tokio::test]
async fn chat_over_udp_ends_by_its_timeout_while_the_server_floods_datagrams() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = socket.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let Ok((_, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let started = Instant::now();
        while started.elapsed() < LIMIT {
            for _ in 0..64 {
                let _ = socket.send_to(b"flood\n", from).await;
            }
            tokio::task::yield_now().await;
        }
    });
    let (out, took) = run(&["chat", "--udp", &addr, "--timeout", "2s"], b"hi\n").await;
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}, status {:?}, {} bytes of output",
        out.status,
        out.stdout.len()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("flood\n"),
        "{out:?}"
    );
}

#[tokio::test]
async fn an_endless_reply_line_is_cut_at_its_cap() {
    let (addr, _) = serve(Arc::new(|_: &str| vec![Step::Endless])).await;
    for args in [vec!["send", &addr, "hi"], vec!["chat", &addr]] {
        let (out, _) = run(&args, b"hi\n").await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("longer than"),
            "{out:?}"
        );
        assert_output_clean(&out);
    }
}

/// `get -r` against a server whose every listing is `listing`, and whose
/// every file is "content".
async fn mirror(listing: fn() -> Vec<u8>, extra: &[&str]) -> (Output, Duration, tempfile::TempDir) {
    let (addr, _) = serve(Arc::new(move |request: &str| {
        let target = request.split(' ').nth(1).unwrap_or("/");
        let body = if target.ends_with('/') {
            listing()
        } else {
            b"content".to_vec()
        };
        vec![Step::Write(http(
            "200 OK",
            &[&format!("Content-Length: {}", body.len())],
            &body,
        ))]
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let into = dir.path().join("mirror");
    let mut args = vec![
        "get",
        &addr,
        "/",
        "-r",
        "-q",
        "-o",
        into.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let (out, took) = run(&args, b"").await;
    (out, took, dir)
}

/// Counts the directories under `dir` (bounded).
fn count_dirs(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                count += 1;
                if count > 1_000_000 {
                    return count;
                }
                stack.push(entry.path());
            }
        }
    }
    count
}

#[tokio::test]
async fn get_r_skips_bad_names_with_bounded_warnings_and_keeps_the_rest() {
    fn listing() -> Vec<u8> {
        let mut names = vec![
            "n".repeat(5000),
            "../up.txt".to_owned(),
            "/etc/passwd".to_owned(),
            "\u{1b}]0;owned\u{7}".to_owned(),
            "c1\u{9b}2J".to_owned(),
            "del\u{7f}".to_owned(),
            "..".to_owned(),
        ];
        for i in 0..100 {
            names.push(format!("{i}\u{1b}[2J"));
        }
        names.push("ok.txt".to_owned());
        names.join("\n").into_bytes()
    }
    let (out, _, dir) = mirror(listing, &[]).await;
    assert!(out.status.success(), "{out:?}");
    assert_output_clean(&out);
    assert_eq!(
        fs::read(dir.path().join("mirror/ok.txt")).ok(),
        Some(b"content".to_vec())
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("skipped the name"), "{stderr}");
    assert!(stderr.lines().count() < 30, "{stderr}");
    assert!(
        stderr.len() < 16 * 1024,
        "{} bytes of warnings",
        stderr.len()
    );
}

#[tokio::test]
async fn get_r_stops_at_its_cap_on_directories() {
    fn listing() -> Vec<u8> {
        (0..20_000)
            .map(|i| format!("d{i}/\n"))
            .collect::<String>()
            .into_bytes()
    }
    let (out, _, dir) = mirror(listing, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("directories"),
        "{out:?}"
    );
    assert_output_clean(&out);
    let dirs = count_dirs(&dir.path().join("mirror"));
    assert!(dirs <= 10_000, "{dirs} directories created");
    // One directory named again and again is followed as often.
    fn again() -> Vec<u8> {
        "a/\n".repeat(20_000).into_bytes()
    }
    let (out, took, _dir) = mirror(again, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_output_clean(&out);
}

#[tokio::test]
async fn get_r_refuses_a_huge_listing_and_ends_a_dripped_one_in_time() {
    fn huge() -> Vec<u8> {
        "x.txt\n".repeat(3 * 1024 * 1024).into_bytes()
    }
    let (out, _, _dir) = mirror(huge, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("over"),
        "{out:?}"
    );
    assert_output_clean(&out);
    let (addr, _) = serve(Arc::new(|_: &str| {
        vec![
            Step::Write(http("200 OK", &["Content-Length: 30"], b"")),
            Step::Drip(vec![b'a'; 30]),
        ]
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let into = dir.path().join("m");
    let (out, took) = run(
        &[
            "get",
            &addr,
            "/",
            "-r",
            "--timeout",
            "2s",
            "-o",
            into.to_str().expect("utf-8"),
        ],
        b"",
    )
    .await;
    assert!(took < Duration::from_secs(5), "took {took:?}: {out:?}");
    assert!(!out.status.success(), "{out:?}");
    assert_output_clean(&out);
}

/// A raw-protocol request (not HTTP) gets `raw`; an HTTP one gets `http`.
fn by_protocol(request: &str, http: Vec<u8>, raw: &[u8]) -> Vec<Step> {
    if request.starts_with("GET ") {
        vec![Step::Write(http)]
    } else {
        vec![Step::Write(raw.to_vec())]
    }
}

fn closes_silently_then_raw(request: &str) -> Vec<Step> {
    by_protocol(request, Vec::new(), b"not the file")
}

fn leading_crlf(_: &str) -> Vec<Step> {
    let mut answer = b"\r\n".to_vec();
    answer.extend_from_slice(&http("200 OK", &["Content-Length: 20", ETAG], &true_file()));
    vec![Step::Write(answer)]
}

fn lowercase_http(request: &str) -> Vec<Step> {
    by_protocol(
        request,
        b"http/1.1 200 OK\r\nContent-Length: 20\r\n\r\nabcdefghijklmnopqrst".to_vec(),
        b"not the file",
    )
}

fn not_http_then_raw(request: &str) -> Vec<Step> {
    by_protocol(
        request,
        b"<html>not the file</html>".to_vec(),
        b"not the file",
    )
}

fn unsatisfied_then_whole(request: &str) -> Vec<Step> {
    if request.contains("Range:") {
        vec![Step::Write(http(
            "416 Range Not Satisfiable",
            &["Content-Range: bytes */20", "Content-Length: 0"],
            b"",
        ))]
    } else {
        whole(request)
    }
}

fn interim_heads(_: &str) -> Vec<Step> {
    let mut answer =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n".to_vec();
    answer.extend_from_slice(&http("200 OK", &["Content-Length: 20", ETAG], &true_file()));
    vec![Step::Write(answer)]
}

fn endless_interim_heads(_: &str) -> Vec<Step> {
    let mut answer = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(9);
    answer.extend_from_slice(&http("200 OK", &["Content-Length: 20", ETAG], &true_file()));
    vec![Step::Write(answer)]
}

fn chunked_range_short(_: &str) -> Vec<Step> {
    vec![Step::Write(http(
        "206 Partial Content",
        &[
            ETAG,
            "Content-Range: bytes 10-19/20",
            "Transfer-Encoding: chunked",
        ],
        b"5\r\nklmno\r\n0\r\n\r\n",
    ))]
}

#[tokio::test]
async fn get_takes_the_raw_protocol_only_from_a_server_that_answers_something_else() {
    let cases = [
        GetCase {
            name: "a close without a byte is no answer",
            args: &[],
            resume: false,
            respond: closes_silently_then_raw,
            outcome: Outcome::Failed(1),
            within: 10,
        },
        GetCase {
            name: "an empty line before the status line",
            args: &[],
            resume: false,
            respond: leading_crlf,
            outcome: Outcome::TrueFile,
            within: 10,
        },
        GetCase {
            name: "a lowercase http/1.1",
            args: &[],
            resume: false,
            respond: lowercase_http,
            outcome: Outcome::Failed(1),
            within: 10,
        },
        GetCase {
            name: "-c: a .part that came over HTTP, then an answer that is not HTTP",
            args: &["-c"],
            resume: true,
            respond: not_http_then_raw,
            outcome: Outcome::RefusedKeepingPart(1),
            within: 10,
        },
        GetCase {
            name: "-c: a .part that came over HTTP, then a close without a byte",
            args: &["-c"],
            resume: true,
            respond: closes_silently_then_raw,
            outcome: Outcome::RefusedKeepingPart(1),
            within: 10,
        },
        GetCase {
            name: "100 and 103 before the response",
            args: &[],
            resume: false,
            respond: interim_heads,
            outcome: Outcome::TrueFile,
            within: 10,
        },
        GetCase {
            name: "nine interim heads",
            args: &[],
            resume: false,
            respond: endless_interim_heads,
            outcome: Outcome::Failed(1),
            within: 10,
        },
        GetCase {
            name: "-c: a 416 with bytes */20 starts over",
            args: &["-c"],
            resume: true,
            respond: unsatisfied_then_whole,
            outcome: Outcome::TrueFile,
            within: 10,
        },
    ];
    let mut runs = Vec::new();
    for case in cases {
        runs.push((case.name, tokio::spawn(get_case(case))));
    }
    let mut failed = Vec::new();
    for (name, run) in runs {
        if run.await.is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

#[tokio::test]
async fn get_c_keeps_the_part_and_its_validator_when_the_answer_is_not_http() {
    let (addr, _) = serve(Arc::new(not_http_then_raw)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("f");
    fs::write(dir.path().join("f.part"), &true_file()[..10]).expect("part");
    fs::write(dir.path().join("f.part.etag"), "\"v1\"\n20\n").expect("validator");
    let target = target.to_str().expect("utf-8");
    let (out, _) = run(&["get", &addr, "f", "-c", "-o", target], b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not HTTP"),
        "{out:?}"
    );
    assert_eq!(
        fs::read(dir.path().join("f.part")).ok(),
        Some(true_file()[..10].to_vec())
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("f.part.etag")).ok(),
        Some("\"v1\"\n20\n".to_owned())
    );
}

#[tokio::test]
async fn get_c_renames_a_part_that_a_416_says_is_whole_and_says_no_summary_before_an_error() {
    // The .part has all 20 bytes; the 416 names its length and version.
    let (addr, _) = serve(Arc::new(|request: &str| {
        if request.contains("Range: bytes=20-") {
            vec![Step::Write(http(
                "416 Range Not Satisfiable",
                &["Content-Range: bytes */20", ETAG, "Content-Length: 0"],
                b"",
            ))]
        } else {
            vec![Step::Write(http("500 No", &["Content-Length: 0"], b""))]
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("f");
    fs::write(dir.path().join("f.part"), true_file()).expect("part");
    fs::write(dir.path().join("f.part.etag"), "\"v1\"\n20\n").expect("validator");
    let (out, _) = run(
        &[
            "get",
            &addr,
            "f",
            "-c",
            "-o",
            target.to_str().expect("utf-8"),
        ],
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(&target).ok(), Some(true_file()));
    assert!(!dir.path().join("f.part.etag").exists());
    // A 206 whose chunked body ends short of its range: exit 4, and no
    // "N bytes in ... resumed at" line, which is said of a whole file.
    let (addr, _) = serve(Arc::new(chunked_range_short)).await;
    fs::remove_file(&target).expect("rm");
    fs::write(dir.path().join("f.part"), &true_file()[..10]).expect("part");
    fs::write(dir.path().join("f.part.etag"), "\"v1\"\n20\n").expect("validator");
    let (out, _) = run(
        &[
            "get",
            &addr,
            "f",
            "-c",
            "-o",
            target.to_str().expect("utf-8"),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("bytes in"), "{stderr}");
    assert!(!target.exists());
}

#[tokio::test]
async fn get_never_reads_or_writes_the_validator_through_a_symlink() {
    let (addr, requests) = serve(Arc::new(whole)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim.txt");
    let secret = "\"TOKEN-secret\"\n20\n";
    for args in [&["-c"][..], &[][..]] {
        fs::write(&victim, secret).expect("victim");
        let target = dir.path().join("f");
        fs::write(dir.path().join("f.part"), &true_file()[..10]).expect("part");
        let link = dir.path().join("f.part.etag");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let mut argv = vec!["get", &addr, "f", "-o", target.to_str().expect("utf-8")];
        argv.extend_from_slice(args);
        let (out, _) = run(&argv, b"").await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("symlink"),
            "{out:?}"
        );
        assert_eq!(fs::read_to_string(&victim).ok().as_deref(), Some(secret));
        assert!(!target.exists());
    }
    let sent = requests.lock().expect("requests").join("");
    assert!(!sent.contains("TOKEN"), "{sent}");
}

/// `get -r` against a server of these listings (by directory path, the
/// rest empty; framed by `framing`, or else a length) whose every file
/// holds its own path.
async fn mirror_tree(
    listings: &'static [(&'static str, &'static [u8])],
    framing: &'static str,
) -> (Output, tempfile::TempDir) {
    let (addr, _) = serve(Arc::new(move |request: &str| {
        let target = request.split(' ').nth(1).unwrap_or("/");
        if target.ends_with('/') {
            let body = listings
                .iter()
                .find(|(dir, _)| *dir == target)
                .map_or(&b""[..], |(_, body)| body);
            let length = format!("Content-Length: {}", body.len());
            let framing = if framing.is_empty() { &length } else { framing };
            return vec![Step::Write(http("200 OK", &[framing], body))];
        }
        vec![Step::Write(http(
            "200 OK",
            &[&format!("Content-Length: {}", target.len())],
            target.as_bytes(),
        ))]
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let into = dir.path().join("m");
    let (out, _) = run(
        &[
            "get",
            &addr,
            "d/",
            "-r",
            "-o",
            into.to_str().expect("utf-8"),
        ],
        b"",
    )
    .await;
    (out, dir)
}

#[tokio::test]
async fn get_r_skips_names_that_collide_with_its_own_files_and_fails_incomplete() {
    for (listing, skipped) in [
        (&b"f.part\nf.part.etag\nf\n"[..], "\"f\""),
        (&b"f\nf.part\n"[..], "\"f.part\""),
        (&b"x/\nx\n"[..], "\"x\""),
        (&b"a.part/\na\n"[..], "\"a\""),
        (&[b'k'; 250][..], "\"kkkkk"),
    ] {
        let listings: &'static [(&'static str, &'static [u8])] =
            Box::leak(Box::new([("/d/", listing)]));
        let (out, dir) = mirror_tree(listings, "").await;
        assert_eq!(out.status.code(), Some(1), "{listing:?}: {out:?}");
        assert_output_clean(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("1 name(s) skipped"), "{stderr}");
        assert!(stderr.contains(&format!("skipped {skipped}")), "{stderr}");
        assert!(!stderr.contains("os error"), "{stderr}");
        // Every file written holds its own name's bytes.
        for entry in fs::read_dir(dir.path().join("m"))
            .expect("mirror")
            .flatten()
        {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let name = entry.file_name().into_string().expect("utf-8");
                assert_eq!(
                    fs::read_to_string(entry.path()).ok(),
                    Some(format!("/d/{name}")),
                    "{listing:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn get_r_skips_lines_that_are_not_utf8_and_escapes_names_like_the_terminal() {
    let (out, dir) =
        mirror_tree(&[("/d/", b"good\nbad\xff\xfename\n\x1b]0;t\x07\nok\n")], "").await;
    assert!(out.status.success(), "{out:?}");
    assert_output_clean(&out);
    assert!(dir.path().join("m/good").exists() && dir.path().join("m/ok").exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad\\xff\\xfename"), "{stderr}");
    assert!(stderr.contains("\\x1b]0;t\\x07"), "{stderr}");
    assert!(!stderr.contains("\\u{1b}"), "{stderr}");
}

#[tokio::test]
async fn get_r_refuses_a_listing_that_ends_at_a_close() {
    // No Content-Length, no chunked framing: a cut would look whole.
    let (out, dir) = mirror_tree(&[("/d/", b"a\nb\n")], "Content-Type: text/plain").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot tell whether the listing is whole"),
        "{out:?}"
    );
    assert!(!dir.path().join("m/a").exists());
}

#[tokio::test]
async fn get_r_refuses_a_file_that_is_not_http_after_an_http_listing() {
    let (addr, _) = serve(Arc::new(|request: &str| {
        if request.starts_with("GET /d/ ") {
            vec![Step::Write(http("200 OK", &["Content-Length: 2"], b"a\n"))]
        } else {
            vec![Step::Write(b"not the file".to_vec())]
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let into = dir.path().join("m");
    let (out, _) = run(
        &[
            "get",
            &addr,
            "d/",
            "-r",
            "-o",
            into.to_str().expect("utf-8"),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!into.join("a").exists(), "{out:?}");
}

#[tokio::test]
async fn send_fails_when_the_server_closes_before_every_reply_came() {
    // One reply, then a close: two of three messages are unanswered.
    let (one, _) = serve(Arc::new(|_: &str| {
        vec![Step::Write(b"one\n".to_vec()), Step::FinThenDrain]
    }))
    .await;
    let (out, _) = run(&["send", &one, "a", "b", "c"], b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, b"one\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("after 1 of 3 replies"),
        "{out:?}"
    );
    // A reply cut by the close, then more messages: exit 1, not printed whole.
    let (cut, _) = serve(Arc::new(|_: &str| {
        vec![Step::Write(b"half a rep".to_vec()), Step::FinThenDrain]
    }))
    .await;
    let (out, _) = run(&["send", &cut, "a", "b"], b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in the middle of reply 1"),
        "{out:?}"
    );
    // The last message's reply ended by the close (the tutorial's servers
    // write no newline): send has half-closed, so it is whole.
    for (args, stdin) in [
        (vec!["send", &cut, "a"], &b""[..]),
        (vec!["send", &cut], b"a\n"),
    ] {
        let (out, _) = run(&args, stdin).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(out.stdout, b"half a rep\n", "{args:?}");
    }
}

/// A server of tomorrow's listings: `/d` is redirected to `/d/`; `/d/`
/// is an HTML page unless `Accept` asks for `text/plain`, then the text
/// listing; `/d/a` is a file; `/e` redirects elsewhere; `/h` is a
/// directory's HTML listing served without a redirect.
fn listings_of_tomorrow(request: &str) -> Vec<Step> {
    let target = request.split(' ').nth(1).unwrap_or("/");
    let text = request
        .lines()
        .any(|l| l.eq_ignore_ascii_case("accept: text/plain"));
    let response = match target {
        "/d" => http(
            "301 Moved Permanently",
            &["Location: /d/", "Content-Length: 0"],
            b"",
        ),
        "/e" => http(
            "302 Found",
            &["Location: /elsewhere/", "Content-Length: 0"],
            b"",
        ),
        "/d/" if text => http(
            "200 OK",
            &[
                "Content-Type: text/plain; charset=utf-8",
                "Vary: Accept",
                "Content-Length: 2",
            ],
            b"a\n",
        ),
        "/d/" | "/h" => http(
            "200 OK",
            &[
                "Content-Type: text/html; charset=utf-8",
                "Vary: Accept",
                "Content-Length: 34",
            ],
            b"<html><a href=\"a\">a</a></html>\n\n\n\n",
        ),
        "/d/a" => http("200 OK", &["Content-Length: 3", ETAG], b"aaa"),
        _ => http("404 Not Found", &["Content-Length: 0"], b""),
    };
    vec![Step::Write(response)]
}

#[tokio::test]
async fn get_tells_a_directory_by_its_redirect_or_its_html_listing_and_r_asks_for_text() {
    let (addr, requests) = serve(Arc::new(listings_of_tomorrow)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("d");
    let path = target.to_str().expect("utf-8");
    for name in ["d", "d/"] {
        let (out, took) = run(&["get", &addr, name, "-o", path], b"").await;
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!(
                "{name} is a directory on the server; use get -r {name}"
            )),
            "{name}: {out:?}"
        );
        assert!(took < Duration::from_secs(10), "{name}: {took:?}");
        assert!(!target.exists(), "{name}");
    }
    // A server that answers a directory without its slash with its HTML
    // listing (no redirect): a listing, not a file.
    let (out, _) = run(&["get", &addr, "h", "-o", path], b"").await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!target.exists());
    // A redirect elsewhere is said, with where to.
    let (out, _) = run(&["get", &addr, "e", "-o", path], b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 302 Found (to /elsewhere/;"),
        "{out:?}"
    );
    // -r asks for the text listing, and mirrors from it.
    let into = dir.path().join("m");
    let (out, _) = run(
        &["get", &addr, "d", "-r", "-o", into.to_str().expect("utf-8")],
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(into.join("a")).ok(), Some(b"aaa".to_vec()));
    let seen = requests.lock().expect("requests").clone();
    let listing = seen
        .iter()
        .find(|r| r.starts_with("GET /d/ "))
        .expect("a listing request");
    assert!(listing.contains("\r\nAccept: text/plain\r\n"), "{listing}");
    assert_output_clean(&out);
}

#[tokio::test]
async fn get_r_refuses_an_html_listing() {
    // A server that sends its HTML page whatever Accept says.
    let (addr, _) = serve(Arc::new(|request: &str| {
        if request.starts_with("GET /d/ ") {
            let body = b"<html><a href=\"x\">x</a></html>\n";
            vec![Step::Write(http(
                "200 OK",
                &[
                    "Content-Type: text/html",
                    &format!("Content-Length: {}", body.len()),
                ],
                body,
            ))]
        } else {
            vec![Step::Write(http("200 OK", &["Content-Length: 1"], b"x"))]
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let into = dir.path().join("m");
    let (out, _) = run(
        &[
            "get",
            &addr,
            "d/",
            "-r",
            "-o",
            into.to_str().expect("utf-8"),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listing as HTML"),
        "{out:?}"
    );
    // Nothing was fetched: the directory the run created is gone again.
    assert!(!into.exists(), "{into:?}");
}

#[tokio::test]
async fn get_against_a_server_that_greets_and_holds_fails_quickly_quoting_it() {
    // A bot that greets first (before any request), then holds the line.
    let (addr, _) = serve(Arc::new(|_: &str| {
        vec![
            Step::Write(b"Welcome to the bot \x1b[2J\n".to_vec()),
            Step::Hold,
        ]
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("f");
    let (out, took) = run(
        &["get", &addr, "f", "-o", target.to_str().expect("utf-8")],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "{addr} is not a download listener: it answered \"Welcome to the bot \\x1b[2J"
        )),
        "{out:?}"
    );
    assert_output_clean(&out);
    assert!(!target.exists());
}

#[tokio::test]
async fn send_exits_3_when_a_reply_over_tcp_or_udp_is_an_err_line() {
    let (tcp, _) = serve(Arc::new(|_: &str| {
        vec![
            Step::Write(b"fine\nERR no such thing\n".to_vec()),
            Step::FinThenDrain,
        ]
    }))
    .await;
    let (out, _) = run(&["send", &tcp, "a", "b"], b"").await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, b"fine\nERR no such thing\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 2 replies were ERR lines"),
        "{out:?}"
    );
    let udp = serve_udp(b"ERR busy\n".to_vec()).await;
    let (out, _) = run(&["send", "--udp", &udp, "a"], b"").await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, b"ERR busy\n");
}
