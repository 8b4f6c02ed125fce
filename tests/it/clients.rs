//! The clients in the binary, end to end: `send` and `chat` against echo,
//! keyword-bot and random-bot in UTF-8 and GBK; `get` downloading,
//! refusing, resuming after the server was killed mid-transfer and
//! restarted, mirroring a tree, falling back to the raw protocol against a
//! server of the tutorial's kind, and never writing outside its output
//! directory whatever a hostile server's listing says.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::{Daemon, switchboard};
use crate::common::{self, LIMIT, TestServer};

/// Runs `switchboard ARGS` with `stdin`, off the runtime, bounded.
async fn run(args: Vec<String>, stdin: &[u8]) -> Output {
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = switchboard()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(&stdin).expect("write stdin");
        drop(input);
        crate::cli::wait_output(child, LIMIT)
    })
    .await
    .expect("client thread")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bots(encoding: &str) -> String {
    format!(
        "{}{}{}",
        common::listener("echo", "echo", &format!("encoding = \"{encoding}\"")),
        common::listener(
            "keywords",
            "keyword-bot",
            &format!(
                "encoding = \"{encoding}\"\n[[listener.rules]]\nkeywords = [\"你好\", \"hello\"]\nreply = \"你好呀\"\n"
            ),
        ),
        common::listener(
            "random",
            "random-bot",
            &format!("encoding = \"{encoding}\"")
        ),
    )
}

#[tokio::test]
async fn send_and_chat_talk_to_every_line_handler_in_utf8_and_gbk() {
    for encoding in ["utf-8", "gbk"] {
        let server = TestServer::start(&bots(encoding));
        let at = |name: &str| server.addr(name).to_string();
        let enc = ["--encoding", encoding];
        // send: messages on the command line, then from stdin.
        let mut a = args(&["send", &at("keywords"), "你好", "hello"]);
        a.extend(args(&enc));
        let out = run(a, b"").await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text(&out.stdout), "你好呀\n你好呀\n", "{encoding}");
        let mut a = args(&["send", &at("echo")]);
        a.extend(args(&enc));
        let out = run(a, "一\ntwo\n".as_bytes()).await;
        assert_eq!(text(&out.stdout), "一\ntwo\n", "{encoding}");
        // chat: the random-bot answers from its history, and its farewell
        // ends the chat with the goodbye.
        let mut a = args(&["chat", &at("random")]);
        a.extend(args(&enc));
        let out = run(a, "第一\n第一\nbye\n".as_bytes()).await;
        assert!(out.status.success(), "{out:?}");
        let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
        assert_eq!(lines[..2], ["第一", "第一"], "{encoding}: {lines:?}");
        assert!(
            lines
                .last()
                .is_some_and(|l| l == "(the server closed the connection)" || l == "bye"),
            "{lines:?}"
        );
        // chat with the keyword-bot; an empty line ends it.
        let mut a = args(&["chat", &at("keywords")]);
        a.extend(args(&enc));
        let out = run(a, "hello\n\nnot sent\n".as_bytes()).await;
        assert_eq!(text(&out.stdout), "你好呀\n", "{encoding}");
    }
}

#[tokio::test]
async fn send_and_chat_with_udp_talk_to_every_udp_line_handler_in_utf8_and_gbk() {
    for encoding in ["utf-8", "gbk"] {
        let udp = bots(encoding).replace("handler = ", "transport = \"udp\"\nhandler = ");
        let server = TestServer::start(&udp);
        let at = |name: &str| server.addr(name).to_string();
        let with = |list: &[&str]| {
            let mut a = args(list);
            a.extend(args(&["--udp", "--encoding", encoding]));
            a
        };
        let out = run(with(&["send", &at("keywords"), "你好", "hello"]), b"").await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text(&out.stdout), "你好呀\n你好呀\n", "{encoding}");
        // Each line of stdin is a datagram; echo sends each back as it came.
        let out = run(with(&["send", &at("echo")]), "一\ntwo\n".as_bytes()).await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text(&out.stdout), "一\ntwo\n", "{encoding}");
        let out = run(with(&["chat", &at("random")]), "第一\n第一\n\n".as_bytes()).await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text(&out.stdout), "第一\n第一\n", "{encoding}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn send_and_chat_with_udp_to_a_closed_port_say_nothing_listens_and_fail_with_status_1() {
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port");
    let out = run(args(&["send", "--udp", &addr.to_string(), "x"]), b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("nothing listens on UDP"),
        "{out:?}"
    );
    // chat too, when the "port unreachable" comes back after the last line.
    for input in ["x\n\n", "x\n", "x\ny\n"] {
        let out = run(
            args(&["chat", "--udp", &addr.to_string()]),
            input.as_bytes(),
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{input:?}: {out:?}");
        assert!(
            text(&out.stderr).contains("nothing listens on UDP"),
            "{input:?}: {out:?}"
        );
    }
}

#[tokio::test]
async fn send_to_a_closed_port_fails_with_status_1() {
    let addr = crate::deploy::free_addr();
    let out = run(args(&["send", &addr.to_string(), "x"]), b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).starts_with("switchboard send: "),
        "{out:?}"
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256(path: &Path) -> String {
    hex_sha256(&fs::read(path).expect("read"))
}

#[tokio::test]
async fn get_downloads_refuses_with_3_and_mirrors_a_tree() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir_all(root.join("d/e")).unwrap();
    fs::write(root.join("a.txt"), b"hello\n").unwrap();
    fs::write(root.join("d/b.bin"), vec![7u8; 300_000]).unwrap();
    fs::write(root.join("d/e/c 名.txt"), b"deep\n").unwrap();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'", root.display()),
    ));
    let addr = server.addr("files").to_string();
    let out_file = base.path().join("got.txt");
    let out = run(
        args(&["get", &addr, "a.txt", "-o", out_file.to_str().unwrap()]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(&out_file).unwrap(), b"hello\n");
    let missing = run(
        args(&["get", &addr, "nope", "-o", out_file.to_str().unwrap()]),
        b"",
    )
    .await;
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");
    let escape = run(
        args(&["get", &addr, "../secret", "-o", out_file.to_str().unwrap()]),
        b"",
    )
    .await;
    assert_eq!(escape.status.code(), Some(3), "{escape:?}");
    let mirror = base.path().join("mirror");
    let out = run(
        args(&[
            "get",
            &addr,
            "d/",
            "-r",
            "-q",
            "-o",
            mirror.to_str().unwrap(),
        ]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sha256(&mirror.join("b.bin")), sha256(&root.join("d/b.bin")));
    assert_eq!(fs::read(mirror.join("e/c 名.txt")).unwrap(), b"deep\n");
    // The raw protocol on the same port.
    let raw = base.path().join("raw.bin");
    let out = run(
        args(&[
            "get",
            &addr,
            "d/b.bin",
            "--raw",
            "-o",
            raw.to_str().unwrap(),
        ]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sha256(&raw), sha256(&root.join("d/b.bin")));
}

/// What a relay does after its first bytes.
#[derive(Clone, Copy)]
enum AfterCut {
    /// Reads the server's rest away: the client sees the end when the server dies.
    EndWithServer,
    /// Keeps both connections as they are, until the relay is aborted.
    Hold,
}

/// Forwards one connection from `front` to `back`, passing only the first
/// `cut_after` bytes of the answer, then does `after`.
async fn throttled_relay(front: TcpListener, back: SocketAddr, cut_after: usize, after: AfterCut) {
    let (mut client, _) = front.accept().await.expect("accept");
    let mut server = TcpStream::connect(back).await.expect("connect upstream");
    let mut request = vec![0u8; 4096];
    let n = client.read(&mut request).await.expect("request");
    server
        .write_all(&request[..n])
        .await
        .expect("forward request");
    let mut passed = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while passed < cut_after {
        let Ok(n) = server
            .read(&mut buf[..(cut_after - passed).min(16 * 1024)])
            .await
        else {
            return;
        };
        if n == 0 || client.write_all(&buf[..n]).await.is_err() {
            return;
        }
        passed += n;
    }
    match after {
        AfterCut::EndWithServer => {
            let _ = server.read_to_end(&mut Vec::new()).await;
        }
        AfterCut::Hold => std::future::pending::<()>().await,
    }
}

#[tokio::test]
async fn get_resumes_after_the_server_is_killed_mid_transfer_and_restarted() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let big: Vec<u8> = (0..8_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    fs::write(root.join("big.bin"), &big).unwrap();
    let addr = crate::deploy::free_addr();
    let config = base.path().join("c.toml");
    fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"files\"\nbind = \"{addr}\"\nhandler = \"download\"\nroot = '{}'\n",
            root.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config);
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let front_addr = front.local_addr().unwrap();
    let relay = tokio::spawn(throttled_relay(
        front,
        addr,
        3_000_000,
        AfterCut::EndWithServer,
    ));
    let out_file = base.path().join("big.bin");
    let cut = tokio::spawn(run(
        args(&[
            "get",
            &front_addr.to_string(),
            "big.bin",
            "-o",
            out_file.to_str().unwrap(),
        ]),
        b"",
    ));
    // The first 3 MB are through: the client holds them in its .part.
    let part = base.path().join("big.bin.part");
    for _ in 0..2000 {
        if fs::metadata(&part).is_ok_and(|m| m.len() > 2_000_000) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    daemon.signal("KILL");
    let _ = daemon.wait_exit(LIMIT);
    let cut = cut.await.expect("client");
    assert_eq!(cut.status.code(), Some(4), "incomplete: {cut:?}");
    assert!(text(&cut.stderr).contains("-c"), "{cut:?}");
    let kept = fs::metadata(&part).expect("the .part is kept").len();
    assert!(kept > 0 && kept < big.len() as u64, "{kept}");
    relay.abort();
    // Restarted on the same port; `-c` fetches the rest.
    let _daemon = Daemon::start(&config);
    let out = run(
        args(&[
            "get",
            &addr.to_string(),
            "big.bin",
            "-c",
            "-o",
            out_file.to_str().unwrap(),
        ]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("resumed at {kept}")),
        "{out:?}"
    );
    assert_eq!(sha256(&out_file), hex_sha256(&big));
    assert!(!part.exists(), "the .part is gone once complete");
}

/// A hostile "download server": an HTTP listing full of escape attempts,
/// and a file for every name asked.
async fn hostile_server(listener: TcpListener) {
    for _ in 0..64 {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            let mut request_line = String::new();
            if stream.read_line(&mut request_line).await.is_err() {
                return;
            }
            loop {
                let mut line = String::new();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let target = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
            let body: Vec<u8> = if target == "/sub/" {
                "../../up.txt\nok.txt\n../\n".into()
            } else if target.ends_with('/') {
                "../escaped.txt\n/tmp/absolute.txt\nsub/\n..\\win.txt\nbell\u{7}.txt\nok.txt\n./\n../\n"
                    .into()
            } else {
                format!("content of {target}\n").into()
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let stream = stream.get_mut();
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        });
    }
}

#[tokio::test]
async fn a_hostile_listing_cannot_make_get_write_outside_its_output_directory() {
    let base = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(hostile_server(listener));
    let out_dir = base.path().join("out").join("mirror");
    fs::create_dir_all(out_dir.parent().unwrap()).unwrap();
    let out = run(
        args(&["get", &addr, "/", "-r", "-o", out_dir.to_str().unwrap()]),
        b"",
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr.contains("skipped the name"), "{stderr}");
    // Only ok.txt and sub/ok.txt were written, inside the output directory.
    assert_eq!(
        fs::read(out_dir.join("ok.txt")).unwrap(),
        b"content of /ok.txt\n"
    );
    assert!(out_dir.join("sub/ok.txt").exists());
    for outside in [
        base.path().join("out/up.txt"),
        base.path().join("up.txt"),
        base.path().join("out/escaped.txt"),
        base.path().join("escaped.txt"),
        Path::new("/tmp/absolute.txt").to_owned(),
    ] {
        assert!(!outside.exists(), "{} was written", outside.display());
    }
    let mut stack = vec![base.path().to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert!(
                path.starts_with(&out_dir) || out_dir.starts_with(&path),
                "{}",
                path.display()
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
}

/// The tutorial's download server, in spirit: reads a name, sends the
/// file's bytes (or, for a name it does not have, a line saying so) and
/// closes.
async fn tutorial_server(listener: TcpListener, content: Vec<u8>) {
    for _ in 0..4 {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut name = vec![0u8; 1024];
        let n = stream.read(&mut name).await.unwrap_or(0);
        if name[..n].starts_with(b"file.bin") {
            let _ = stream.write_all(&content).await;
        } else {
            let _ = stream.write_all(b"no such file\n").await;
        }
    }
}

#[tokio::test]
async fn against_a_server_of_the_tutorials_kind_get_falls_back_to_the_raw_protocol() {
    let base = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    tokio::spawn(tutorial_server(listener, content.clone()));
    let out_file = base.path().join("file.bin");
    // A validator left by an earlier HTTP download (no -c): it does not
    // name what the raw protocol writes, so it goes.
    let stale = base.path().join("file.bin.part.etag");
    fs::write(&stale, "\"v0\"\n5\n").unwrap();
    let out = run(
        args(&["get", &addr, "file.bin", "-o", out_file.to_str().unwrap()]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("does not speak HTTP"), "{out:?}");
    assert_eq!(fs::read(&out_file).unwrap(), content);
    assert!(!stale.exists());
}

/// True when tmux runs here (required when SWITCHBOARD_REQUIRE_TMUX is set).
fn have_tmux() -> bool {
    let found = std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("SWITCHBOARD_REQUIRE_TMUX").is_some() {
        panic!("tmux is required (SWITCHBOARD_REQUIRE_TMUX is set) but does not run");
    }
    if !found {
        eprintln!("skipped: tmux is not installed");
    }
    found
}

#[tokio::test]
async fn on_a_terminal_get_shows_a_progress_bar_with_bytes_rate_and_eta() {
    if !have_tmux() {
        return;
    }
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("big.bin"), vec![1u8; 8_000_000]).unwrap();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'", root.display()),
    ));
    // The transfer stops after 3 MB (and is held there) while the screen is read.
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let front_addr = front.local_addr().unwrap();
    let relay = tokio::spawn(throttled_relay(
        front,
        server.addr("files"),
        3_000_000,
        AfterCut::Hold,
    ));
    let session = format!("switchboard-test-{}", std::process::id());
    // The pane stays a while after the command, so that an error shows.
    let command = format!(
        "{} get {front_addr} big.bin -o {}; sleep 20",
        crate::cli::BIN,
        base.path().join("out.bin").display()
    );
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(args)
            .output()
            .expect("run tmux")
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "10",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let mut screen = String::new();
    for _ in 0..400 {
        let captured = tmux(&["capture-pane", "-p", "-t", &session]);
        screen = text(&captured.stdout);
        if screen.contains("ETA") && screen.contains("MiB") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let _ = tmux(&["kill-session", "-t", &session]);
    relay.abort();
    let bar = screen
        .lines()
        .find(|l| l.contains("ETA"))
        .unwrap_or_default();
    // "big.bin [=======>    ] 2.86 MiB/7.63 MiB 12.3 MiB/s ETA 0s"
    assert!(
        bar.starts_with("big.bin ["),
        "no progress bar on the screen:\n{screen}"
    );
    assert!(bar.contains("/7.63 MiB"), "no total in {bar:?}");
    assert!(bar.contains("/s"), "no rate in {bar:?}");
}

/// A download listener serving `root`, with `docs/a.txt` in it.
fn docs_server(base: &Path) -> TestServer {
    let root = base.join("root");
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::write(root.join("docs").join("a.txt"), b"alpha\n").unwrap();
    TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'", root.display()),
    ))
}

#[tokio::test]
async fn get_of_a_directory_without_r_fails_with_2_and_says_to_use_r() {
    let base = tempfile::tempdir().expect("tempdir");
    let server = docs_server(base.path());
    let addr = server.addr("files").to_string();
    let out_dir = base.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    // Without its slash (the server's answer tells), and with it.
    for name in ["docs", "docs/", "/"] {
        let target = out_dir.join("docs");
        let out = run(
            args(&["get", &addr, name, "-o", target.to_str().unwrap()]),
            b"",
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        let shown = if name == "/" { "/" } else { name };
        assert!(
            text(&out.stderr).contains(&format!(
                "{shown} is a directory on the server; use get -r {shown}"
            )),
            "{name}: {out:?}"
        );
        assert!(!target.exists(), "{name}: the listing was saved as a file");
        assert!(!out_dir.join("docs.part").exists(), "{name}");
    }
    // As it says: -r fetches the tree.
    let tree = out_dir.join("tree");
    let out = run(
        args(&["get", &addr, "docs", "-r", "-o", tree.to_str().unwrap()]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(tree.join("a.txt")).unwrap(), b"alpha\n");
}

#[tokio::test]
async fn get_errors_name_the_path_or_the_server_and_say_what_to_do() {
    let base = tempfile::tempdir().expect("tempdir");
    let server = docs_server(base.path());
    let addr = server.addr("files").to_string();
    // A file where -r would put the tree.
    let in_the_way = base.path().join("docs");
    fs::write(&in_the_way, b"an earlier download").unwrap();
    let out = run(
        args(&[
            "get",
            &addr,
            "docs",
            "-r",
            "-o",
            in_the_way.to_str().unwrap(),
        ]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} exists and is not a directory",
            in_the_way.display()
        )) && stderr.contains("remove it")
            && stderr.contains("-o DIR"),
        "{out:?}"
    );
    assert_eq!(fs::read(&in_the_way).unwrap(), b"an earlier download");
    // A port where nothing listens: the address is named.
    let closed = crate::deploy::free_addr().to_string();
    for command in [
        args(&[
            "get",
            &closed,
            "a.txt",
            "-o",
            base.path().join("x").to_str().unwrap(),
        ]),
        args(&["send", &closed, "x"]),
    ] {
        let out = run(command.clone(), b"").await;
        assert_eq!(out.status.code(), Some(1), "{command:?}: {out:?}");
        assert!(
            text(&out.stderr).contains(&format!("cannot connect to {closed}")),
            "{command:?}: {out:?}"
        );
    }
}

#[tokio::test]
async fn get_without_c_next_to_a_part_says_it_starts_over_even_with_q() {
    let base = tempfile::tempdir().expect("tempdir");
    let server = docs_server(base.path());
    let addr = server.addr("files").to_string();
    let target = base.path().join("a.txt");
    let part = base.path().join("a.txt.part");
    fs::write(&part, b"alp").unwrap();
    let out = run(
        args(&[
            "get",
            &addr,
            "docs/a.txt",
            "-q",
            "-o",
            target.to_str().unwrap(),
        ]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!(
            "{} is left from an earlier download; starting over (use -c to resume it)",
            part.display()
        )),
        "{out:?}"
    );
    assert_eq!(fs::read(&target).unwrap(), b"alpha\n");
    assert!(!part.exists());
    // No .part: nothing to say.
    let out = run(
        args(&[
            "get",
            &addr,
            "docs/a.txt",
            "-q",
            "-o",
            target.to_str().unwrap(),
        ]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[tokio::test]
async fn get_pointed_at_a_bot_says_it_is_not_a_download_listener_within_seconds() {
    let server = TestServer::start(&bots("utf-8"));
    let base = tempfile::tempdir().expect("tempdir");
    for bot in ["keywords", "random"] {
        let addr = server.addr(bot).to_string();
        let target = base.path().join(bot);
        let started = std::time::Instant::now();
        let out = run(
            args(&["get", &addr, "a.txt", "-o", target.to_str().unwrap()]),
            b"",
        )
        .await;
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{bot}: {out:?}");
        assert!(
            took < std::time::Duration::from_secs(6),
            "{bot}: took {took:?}"
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{addr} is not a download listener: it answered \""
            )),
            "{bot}: {out:?}"
        );
        assert!(!target.exists(), "{bot}");
        assert!(!base.path().join(format!("{bot}.part")).exists(), "{bot}");
    }
    // The keyword-bot's answer is quoted, bounded.
    let addr = server.addr("keywords").to_string();
    let out = run(args(&["get", &addr, "a.txt", "-o", "/nonexistent/x"]), b"").await;
    let stderr = text(&out.stderr);
    assert!(stderr.contains("我不能明白您的意思"), "{out:?}");
    assert!(stderr.len() < 1024, "{stderr}");
}

/// Runs `switchboard ARGS`, writing `stdin` but keeping it open, as a
/// person at a terminal does: the command must end on its own.
async fn run_stdin_open(args: Vec<String>, stdin: &[u8]) -> Output {
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = switchboard()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(&stdin).expect("write stdin");
        input.flush().expect("flush stdin");
        let out = crate::cli::wait_output(child, std::time::Duration::from_secs(10));
        drop(input);
        out
    })
    .await
    .expect("client thread")
}

#[tokio::test]
async fn chat_over_udp_ends_after_the_reply_to_the_farewell_as_over_tcp() {
    let toml = format!(
        "{}{}",
        common::listener("random", "random-bot", ""),
        common::listener(
            "ciao",
            "random-bot",
            "farewell = [\"ciao\"]\ngoodbye_reply = \"a presto\""
        ),
    )
    .replace("handler = ", "transport = \"udp\"\nhandler = ");
    let server = TestServer::start(&toml);
    let random = server.addr("random").to_string();
    let out = run_stdin_open(args(&["chat", "--udp", &random]), b"hello\nbye\n").await;
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "hello");
    // The farewell word is the server's to choose: --farewell follows it.
    let ciao = server.addr("ciao").to_string();
    let out = run_stdin_open(
        args(&["chat", "--udp", &ciao, "--farewell", "ciao"]),
        b"Ciao\n",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "a presto\n");
    server.shutdown().await;
}

/// Over TCP a bot's close after its goodbye is the end of the chat, not
/// news: nothing is said of it, as when the user's Ctrl-D came first (the
/// docs' chat example once got either output by the race). Any other
/// close is said.
#[tokio::test]
async fn chat_over_tcp_ends_quietly_when_the_server_closes_after_a_farewell() {
    let server = TestServer::start(&common::listener("random", "random-bot", ""));
    let random = server.addr("random").to_string();
    let out = run_stdin_open(args(&["chat", &random]), b"first\nbye\n").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "first\nbye\n");
    // A close that follows no farewell is said.
    let out = run_stdin_open(args(&["chat", &random, "--farewell", "ciao"]), b"bye\n").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "bye\n(the server closed the connection)\n"
    );
    server.shutdown().await;
}

/// A GBK listener's words, read as UTF-8, are escapes: `send` says once
/// that `--encoding gbk` would show them, and says nothing with it.
#[tokio::test]
async fn a_gbk_reply_read_as_utf8_gets_a_hint_to_use_encoding_gbk() {
    let server = TestServer::start(&bots("gbk"));
    let at = server.addr("keywords").to_string();
    let out = run(args(&["send", &at, "hello", "hello"]), b"").await;
    assert!(out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("add --encoding gbk").count(), 1, "{stderr}");
    let out = run(args(&["send", &at, "hello", "--encoding", "gbk"]), b"").await;
    assert_eq!(text(&out.stdout), "你好呀\n");
    assert_eq!(text(&out.stderr), "", "{out:?}");
    server.shutdown().await;
}

/// The usual slips in ADDR (no port, a URL) say what to write, over TCP
/// and UDP, instead of the resolver's "invalid socket address" (`get`
/// takes a URL: `tls_clients.rs`).
#[tokio::test]
async fn an_address_without_a_port_or_written_as_a_url_says_what_to_write() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["send", "127.0.0.1", "hi"],
            "ADDR is HOST:PORT: 127.0.0.1 has no port",
        ),
        (&["send", "--udp", "127.0.0.1", "hi"], "has no port"),
        (&["chat", "localhost"], "has no port"),
        (
            &["send", "http://127.0.0.1:1111", "hello.txt"],
            "not a URL: write 127.0.0.1:1111",
        ),
        (
            &["chat", "https://127.0.0.1:1111/"],
            "not a URL: write 127.0.0.1:1111 with --tls",
        ),
    ];
    for (command, says) in cases {
        let out = run(args(command), b"").await;
        assert_eq!(out.status.code(), Some(1), "{command:?}: {out:?}");
        assert!(text(&out.stderr).contains(says), "{command:?}: {out:?}");
    }
}

#[tokio::test]
async fn send_exits_3_when_a_reply_is_an_err_line() {
    let base = tempfile::tempdir().expect("tempdir");
    let server = docs_server(base.path());
    // The download listener's raw protocol refuses a name it does not have
    // with an ERR line.
    let addr = server.addr("files").to_string();
    let out = run(args(&["send", &addr, "no-such-file"]), b"").await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stdout).starts_with("ERR "), "{out:?}");
    assert!(
        text(&out.stderr).contains("1 of 1 replies were ERR lines"),
        "{out:?}"
    );
    // Replies that are not ERR lines: 0.
    let bots = TestServer::start(&bots("utf-8"));
    let out = run(
        args(&["send", &bots.addr("echo").to_string(), "ERROR is fine"]),
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
}
