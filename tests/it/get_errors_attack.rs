//! attack5: `get`'s reading of an error body (`error_words`), the warning
//! before the fall back from a refused `NAME.tar`, the removal of the
//! output directory a failed `get -r` created, the default name of
//! `NAME/.tar`; and the server's `403` that says why. Hostile servers
//! are written here (127.0.0.1, port 0); the real binary runs bounded.
//! Each finding of the pass is a test here, fixed since: a dripped error
//! body, the parents and empty folders a failed run left, a hidden
//! `..tar`, a bidi override shown raw.

use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::{switchboard, wait_output};
use crate::common::{self, LIMIT, TestServer};

/// What a hostile server does after reading a request.
#[derive(Clone, Debug)]
enum Step {
    /// Writes these bytes.
    Write(Vec<u8>),
    /// Writes these bytes one at a time, `Duration` apart.
    Drip(Vec<u8>, Duration),
    /// Keeps the connection open, writing nothing, until the client
    /// closes it (or [`LIMIT`]).
    Hold,
}

/// The answer of a hostile server to one request line.
type Respond = Arc<dyn Fn(&str) -> Vec<Step> + Send + Sync>;

/// Most connections a hostile server here accepts.
const MAX_CONNECTIONS: usize = 256;

async fn play(mut stream: TcpStream, steps: Vec<Step>) {
    for step in steps {
        match step {
            Step::Write(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Step::Drip(bytes, every) => {
                for b in bytes {
                    tokio::time::sleep(every).await;
                    if stream.write_all(&[b]).await.is_err() {
                        return;
                    }
                }
            }
            Step::Hold => {
                let mut buf = [0u8; 1024];
                let drain = async {
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(LIMIT, drain).await;
                return;
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Reads an HTTP request head (at most 16 KiB, within [`LIMIT`]); returns
/// its request line.
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
            if request.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LIMIT, read).await;
    let text = String::from_utf8_lossy(&request).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

/// A hostile HTTP server; returns its address.
async fn serve(respond: Respond) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let respond = respond.clone();
            tokio::spawn(async move {
                let line = read_request(&mut stream).await;
                let steps = respond(&line);
                play(stream, steps).await;
            });
        }
    });
    addr
}

/// Runs `switchboard ARGS` in `cwd` (the crate root when `None`), off the
/// runtime, bounded by [`LIMIT`]; returns its output and how long it ran.
async fn run_in(cwd: Option<&Path>, args: &[&str]) -> (Output, Duration) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let cwd = cwd.map(Path::to_owned);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut command = switchboard();
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let out = wait_output(child, LIMIT);
        (out, started.elapsed())
    })
    .await
    .expect("client thread")
}

async fn run(args: &[&str]) -> (Output, Duration) {
    run_in(None, args).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics if `bytes` hold anything a terminal would act on: a C0 control
/// but tab and newline, DEL, a C1 control, or a byte that is not UTF-8.
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{what} is not UTF-8 ({e}): {bytes:?}"));
    let bad = text.chars().find(|&c| {
        (c.is_control() && c != '\t' && c != '\n') || ('\u{80}'..='\u{9f}').contains(&c)
    });
    assert_eq!(bad, None, "{what} holds a control character: {text:?}");
}

/// An error head: `status`, `text/plain`, and these fields.
fn error_head(status: &str, fields: &[&str]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for field in fields {
        head.push_str(field);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A `403` in `text/plain` with this body, framed by its length.
fn forbidden(body: &[u8]) -> Vec<u8> {
    let mut bytes = error_head(
        "403 Forbidden",
        &[
            "Content-Type: text/plain; charset=utf-8",
            &format!("Content-Length: {}", body.len()),
        ],
    );
    bytes.extend_from_slice(body);
    bytes
}

/// A `200` with this body (a file, or a text listing).
fn ok(body: &[u8]) -> Vec<u8> {
    let mut bytes = error_head(
        "200 OK",
        &[
            "Content-Type: text/plain; charset=utf-8",
            &format!("Content-Length: {}", body.len()),
        ],
    );
    bytes.extend_from_slice(body);
    bytes
}

/// A `404` with a short text body.
fn not_found() -> Vec<u8> {
    let mut bytes = error_head(
        "404 Not Found",
        &["Content-Type: text/plain", "Content-Length: 14"],
    );
    bytes.extend_from_slice(b"404 not found\n");
    bytes
}

/// A `403` whose text body of `len` bytes comes a byte every `every`:
/// each byte well within `--timeout`, the whole far past it.
fn dripped_forbidden(len: usize, every: Duration) -> Vec<Step> {
    let head = error_head(
        "403 Forbidden",
        &[
            "Content-Type: text/plain",
            &format!("Content-Length: {len}"),
        ],
    );
    let mut body = vec![b'x'; len - 1];
    body.push(b'\n');
    vec![Step::Write(head), Step::Drip(body, every)]
}

// --- findings -------------------------------------------------------------

/// An error body is read a byte at a time with a fresh `--timeout` for
/// each read (`error_words` calls `run.wait_until()` in its loop), where a
/// response head and a listing are bounded by one timeout as a whole. A
/// server that drips the 512 bytes a read under the timeout holds `get`
/// for 512 timeouts (4 h 16 min at the default 30 s) before it says "403".
#[tokio::test]
async fn a_dripped_error_body_is_bounded_by_one_timeout_as_a_whole() {
    let every = Duration::from_millis(150);
    let addr = serve(Arc::new(move |_: &str| dripped_forbidden(40, every))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("f");
    let (out, took) = run(&[
        "get",
        &addr,
        "f",
        "--timeout",
        "500ms",
        "-o",
        target.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // The head in one timeout, the body in one more, and slack: never
    // the 40 x 150 ms = 6 s the drip takes.
    assert!(
        took < Duration::from_secs(3),
        "a 40-byte error body dripped under --timeout 500ms held get for {took:?}"
    );
    // `get -r`: the refused NAME.tar, then the listing, each dripped.
    let target = dir.path().join("d");
    let (out, took) = run(&[
        "get",
        &addr,
        "d",
        "-r",
        "--timeout",
        "500ms",
        "-o",
        target.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        took < Duration::from_secs(4),
        "two dripped error bodies held get -r for {took:?}"
    );
}

/// `get -r -o NEW/DEEPER/OUT` creates NEW and NEW/DEEPER with
/// `create_dir_all`, and a failed run removes OUT alone: the run leaves
/// the empty NEW/DEEPER behind, where the commit says "leaves no empty
/// directory".
#[tokio::test]
async fn a_failed_get_r_removes_the_parents_it_created_for_o() {
    let addr = serve(Arc::new(|_: &str| vec![Step::Write(not_found())])).await;
    let base = tempfile::tempdir().expect("tempdir");
    let target = base.path().join("new").join("deeper").join("out");
    let (out, _) = run(&["get", &addr, "d", "-r", "-o", target.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(!target.exists(), "the output directory is removed");
    let left: Vec<_> = fs::read_dir(base.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A failed `get -r` whose listing named a folder that then fails (a
/// `404` to its listing ends the whole run) leaves OUT/sub, empty: OUT is
/// then not empty and `remove_dir` keeps it. Nothing came, yet a tree of
/// empty folders stays.
#[tokio::test]
async fn a_failed_get_r_leaves_no_skeleton_of_empty_folders() {
    let addr = serve(Arc::new(|line: &str| {
        if line.starts_with("GET /d/ ") {
            vec![Step::Write(ok(b"sub/\n"))]
        } else {
            vec![Step::Write(not_found())]
        }
    }))
    .await;
    let base = tempfile::tempdir().expect("tempdir");
    let target = base.path().join("out");
    let (out, _) = run(&["get", &addr, "d", "-r", "-o", target.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        !target.exists(),
        "left behind: {:?}",
        fs::read_dir(&target).map(|d| d.count())
    );
}

/// The default name of a folder's own archive is "never a hidden .tar",
/// but `default_output` takes the component before `.tar` as it is: `.`
/// and `..` give `..tar` and `...tar`, hidden files (and `docs//.tar`
/// gives `download.tar`, not `docs.tar`).
#[tokio::test]
async fn a_folder_s_archive_is_never_saved_under_a_hidden_name() {
    let addr = serve(Arc::new(|_: &str| vec![Step::Write(ok(b"tar"))])).await;
    let cwd = tempfile::tempdir().expect("tempdir");
    for name in ["docs/./.tar", "./.tar", "a/../.tar", "docs//.tar"] {
        let (out, _) = run_in(Some(cwd.path()), &["get", &addr, name, "-q"]).await;
        assert!(out.status.success(), "{name}: {out:?}");
    }
    let mut saved: Vec<String> = fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    let hidden: Vec<&String> = saved.iter().filter(|n| n.starts_with('.')).collect();
    assert!(hidden.is_empty(), "saved as hidden files: {saved:?}");
    assert!(saved.contains(&"docs.tar".to_owned()), "{saved:?}");
}

/// An error body is shown, not obeyed, for C0 and C1 controls; but a
/// bidirectional override (U+202E) or isolate is printed as it is, and a
/// terminal that does bidi shows the rest of the line reversed: a server
/// can make its quoted reason read as something else.
#[tokio::test]
async fn a_bidi_override_in_an_error_body_is_shown_not_obeyed() {
    let addr = serve(Arc::new(|_: &str| {
        vec![Step::Write(forbidden(
            "403 forbidden: \u{202e}txt.exe\u{2066}x\u{2069}\n".as_bytes(),
        ))]
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("f");
    let (out, _) = run(&["get", &addr, "f", "-o", target.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let said = stderr(&out);
    assert!(said.contains("403 forbidden"), "{said}");
    let raw: Vec<char> = said
        .chars()
        .filter(|c| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .collect();
    assert!(raw.is_empty(), "bidi controls printed raw: {said:?}");
}

// --- what held -------------------------------------------------------------

/// An error body that lies about its length (and the connection held
/// open), one over 512 bytes, a chunked one, one not in text/plain, an
/// empty one: each ends within about one timeout in the status and reason
/// phrase, never a hang and never the body's half.
#[tokio::test]
async fn an_error_body_that_lies_or_is_not_short_text_ends_in_its_status() {
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "a length past what is sent, then held",
            vec![
                Step::Write(error_head(
                    "403 Forbidden",
                    &["Content-Type: text/plain", "Content-Length: 400"],
                )),
                Step::Write(b"403 forbidden: half".to_vec()),
                Step::Hold,
            ],
        ),
        (
            "a length over 512, held",
            vec![
                Step::Write(error_head(
                    "403 Forbidden",
                    &["Content-Type: text/plain", "Content-Length: 99999999999"],
                )),
                Step::Hold,
            ],
        ),
        (
            "chunked, never ending",
            vec![
                Step::Write(error_head(
                    "403 Forbidden",
                    &["Content-Type: text/plain", "Transfer-Encoding: chunked"],
                )),
                Step::Write(b"5\r\nhello\r\n".to_vec()),
                Step::Hold,
            ],
        ),
        (
            "html",
            vec![
                Step::Write(error_head(
                    "403 Forbidden",
                    &["Content-Type: text/html", "Content-Length: 8"],
                )),
                Step::Write(b"<b>x</b>".to_vec()),
            ],
        ),
        ("empty", vec![Step::Write(forbidden(b""))]),
        (
            "a blank first line",
            vec![Step::Write(forbidden(b"\r\nsecond line\n"))],
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("f");
    for (what, steps) in cases {
        let addr = serve(Arc::new(move |_: &str| steps.clone())).await;
        let (out, took) = run(&[
            "get",
            &addr,
            "f",
            "--timeout",
            "500ms",
            "-o",
            target.to_str().unwrap(),
        ])
        .await;
        assert_eq!(out.status.code(), Some(3), "{what}: {out:?}");
        let said = stderr(&out);
        assert!(said.contains("f: 403 Forbidden"), "{what}: {said}");
        assert!(
            !said.contains("half") && !said.contains("second"),
            "{what}: {said}"
        );
        assert!(took < Duration::from_secs(3), "{what}: took {took:?}");
        assert!(!target.exists(), "{what}");
    }
}

/// An error body full of what a terminal acts on (ESC sequences, an OSC
/// title, C1 as UTF-8 and as a raw byte, NUL, DEL, CR), or one long line:
/// quoted escaped, one line, bounded; the same in the warning before the
/// fall back from a refused NAME.tar, which then completes the tree.
#[tokio::test]
async fn an_error_body_s_hostile_bytes_are_escaped_and_bounded_in_the_error_and_the_warning() {
    let hostile: &[u8] =
        b"403 forbidden: \x1b[2J\x1b]0;pwned\x07 \xc2\x9b31m \x9b \x00 \x7f a\rb\nsecond line\n";
    let long = [vec![b'L'; 511], b"\n".to_vec()].concat();
    let dir = tempfile::tempdir().expect("tempdir");
    for (what, body) in [("hostile", hostile.to_vec()), ("long", long)] {
        let file = forbidden(&body);
        let tar = file.clone();
        let addr = serve(Arc::new(move |line: &str| {
            let answer = if line.starts_with("GET /d.tar ") {
                tar.clone()
            } else if line.starts_with("GET /d/ ") {
                ok(b"f\n")
            } else if line.starts_with("GET /d/f ") {
                ok(b"abc")
            } else {
                file.clone()
            };
            vec![Step::Write(answer)]
        }))
        .await;
        let target = dir.path().join(format!("{what}-file"));
        let (out, _) = run(&["get", &addr, "x", "-o", target.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(3), "{what}: {out:?}");
        assert_clean(what, &out.stderr);
        let said = stderr(&out);
        assert!(said.len() < 1024, "{what}: {} bytes: {said}", said.len());
        assert!(!said.contains("second line"), "{what}: {said}");
        if what == "hostile" {
            assert!(said.contains("\\x1b[2J"), "{said}");
            assert!(said.contains("\\u{9b}31m"), "{said}");
            assert!(said.contains("\\x9b"), "{said}");
        } else {
            assert!(said.contains("LLL..."), "cut, and says so: {said}");
        }
        let tree = dir.path().join(format!("{what}-tree"));
        let (out, _) = run(&["get", &addr, "d", "-r", "-o", tree.to_str().unwrap()]).await;
        assert!(out.status.success(), "{what}: {out:?}");
        assert_clean(what, &out.stderr);
        let said = stderr(&out);
        assert!(
            said.contains("the server did not send the folder as one archive"),
            "{what}: {said}"
        );
        assert!(said.len() < 2048, "{what}: {} bytes: {said}", said.len());
        assert_eq!(fs::read(tree.join("f")).unwrap(), b"abc", "{what}");
    }
}

/// A refused NAME.tar whose error body lies about its length and holds
/// the connection costs one timeout, then the listings fetch the tree.
#[tokio::test]
async fn a_held_403_to_name_tar_falls_back_after_one_timeout() {
    let addr = serve(Arc::new(|line: &str| {
        if line.starts_with("GET /d.tar ") {
            vec![
                Step::Write(error_head(
                    "503 Service Unavailable",
                    &["Content-Type: text/plain", "Content-Length: 300"],
                )),
                Step::Write(b"busy".to_vec()),
                Step::Hold,
            ]
        } else if line.starts_with("GET /d/ ") {
            vec![Step::Write(ok(b"f\n"))]
        } else {
            vec![Step::Write(ok(b"abc"))]
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    let (out, took) = run(&[
        "get",
        &addr,
        "d",
        "-r",
        "--timeout",
        "500ms",
        "-o",
        tree.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let said = stderr(&out);
    assert!(
        said.contains("one archive (503 Service Unavailable)"),
        "{said}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(fs::read(tree.join("f")).unwrap(), b"abc");
}

/// `get -r -o LINK`, a symbolic link to an empty folder that was there
/// before, or to nowhere: refused before a request, and neither the link
/// nor its folder is removed or made (the cleanup never meets a link).
#[tokio::test]
async fn get_r_into_a_link_is_refused_and_removes_neither_the_link_nor_its_folder() {
    let addr = serve(Arc::new(|_: &str| vec![Step::Write(not_found())])).await;
    let base = tempfile::tempdir().expect("tempdir");
    let real = base.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (out, _) = run(&["get", &addr, "d", "-r", "-o", link.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("is not a directory"), "{out:?}");
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(real.is_dir());
    // A link to nowhere is not made a directory, and stays as it was.
    let dangling = base.path().join("dangling");
    std::os::unix::fs::symlink(base.path().join("nowhere"), &dangling).unwrap();
    let (out, _) = run(&["get", &addr, "d", "-r", "-o", dangling.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(fs::symlink_metadata(&dangling).unwrap().is_symlink());
    assert!(!base.path().join("nowhere").exists());
}

/// Sends `request` to `addr` and reads the whole answer (bounded).
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = common::connect(addr).await;
    stream.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while answer.len() < 1 << 20 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("answer in time");
    answer
}

/// The server's side, against a hostile client: a hidden folder's tar
/// stream is a `403` whose body is the raw protocol's short reason, the
/// same for a name near the request's limit (the body never quotes the
/// name); a HEAD says the body's length and sends none; the server keeps
/// serving.
#[tokio::test]
async fn a_refused_archive_s_403_is_short_whatever_the_name_and_a_head_has_no_body() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir_all(root.join(".secret")).unwrap();
    fs::write(root.join(".secret").join("k"), b"key").unwrap();
    fs::write(root.join("ok.txt"), b"fine").unwrap();
    let server = TestServer::start(&common::listener(
        "dl",
        "download",
        &format!("root = '{}'", root.display()),
    ));
    let addr = server.addr("dl");
    let reason = "403 forbidden: hidden files are not served\n";
    let answer = exchange(
        addr,
        b"GET /.secret.tar HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.ends_with(&format!("\r\n\r\n{reason}")), "{text}");
    let answer = exchange(
        addr,
        b"HEAD /.secret.tar HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("content-length: {}\r\n", reason.len())),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"), "a HEAD has no body: {text}");
    // A long hidden folder name, escapes in it: the body stays short.
    let long = format!(".{}%1b%5b2J%0a", "a".repeat(3000));
    let answer = exchange(
        addr,
        format!("GET /{long}.tar HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(answer.len() < 1024, "{} bytes: {text}", answer.len());
    assert!(!text.contains("aaaa"), "{text}");
    let answer = exchange(
        addr,
        b"GET /ok.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with(b"fine"), "still serving");
    server.shutdown().await;
}

/// The daemon's "archive refused" line, against a client that names a
/// long hidden folder with escapes in it: the folder is quoted escaped
/// and cut (`quote` at 256 bytes), the line stays short; the access log's
/// line for it too.
#[tokio::test]
async fn the_archive_refused_log_line_is_bounded_and_escaped() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let config = base.path().join("switchboard.toml");
    fs::write(
        &config,
        common::listener("dl", "download", &format!("root = '{}'", root.display())),
    )
    .unwrap();
    let mut daemon = tokio::task::spawn_blocking(move || crate::cli::Daemon::start(&config))
        .await
        .expect("daemon thread");
    let addr = daemon.addr("dl");
    let short = exchange(
        addr,
        b"GET /.x%1b%5b2J%07y.tar HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(short.starts_with(b"HTTP/1.1 403"), "{short:?}");
    let name = format!(".{}%1b%5b2J%07", "a".repeat(3000));
    let answer = exchange(
        addr,
        format!("GET /{name}.tar HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    let (line, log) = tokio::task::spawn_blocking(move || {
        let first = daemon.wait_for_log("archive refused");
        // Escaped by `quote`, and its backslash once more by the log's
        // quoting of a string field: shown, never a raw ESC or BEL.
        assert!(
            first.contains(r"u{1b}[2J") && first.contains(r"u{7}y"),
            "{first}"
        );
        let line = daemon.wait_for_log("archive refused");
        let log = daemon.log_now().to_vec();
        daemon.signal("TERM");
        daemon.wait_exit(LIMIT);
        (line, log)
    })
    .await
    .expect("daemon thread");
    assert!(line.len() < 1024, "{} bytes: {line}", line.len());
    assert!(line.contains("hidden files are not served"), "{line}");
    for line in &log {
        assert!(line.len() < 2048, "{} bytes: {line}", line.len());
        assert!(
            !line.contains('\u{1b}') && !line.contains('\u{7}'),
            "{line:?}"
        );
    }
}
