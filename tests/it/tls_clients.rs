//! The clients over TLS, against switchboard's own TLS listeners (started
//! in-process, with certificates from `certs.rs`): `get https://`
//! byte-exact (a file, a resume with `-c` after a cut, `-r` of a tree,
//! the raw protocol), `send --tls` and `chat --tls` to echo and a
//! keyword-bot, trust (`--cacert` with the wrong CA, `--insecure`, a name
//! that does not match, an expired certificate), mutual TLS, and `probe`'s
//! certificate expiry warning and failure. Then hostile TLS servers: one
//! that never answers the handshake, one that answers garbage, one that
//! floods `send` after the handshake, and ones that close without
//! `close_notify` (a raw download and a line reply that may be cut).

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::certs::{Pair, Pki};
use crate::cli::{switchboard, wait_output};
use crate::common::{self, LIMIT, TestServer};
use crate::deploy::{config_dir, listener_at, probe};

/// Runs `switchboard ARGS` with `stdin`, off the runtime, bounded; and how
/// long it took.
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn sha256(file: &Path) -> String {
    let bytes = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A download root: `a.txt`, a 3 MiB `big.bin`, and a `d/` tree.
fn download_root(base: &Path) -> std::path::PathBuf {
    let root = base.join("root");
    fs::create_dir_all(root.join("d/e")).unwrap();
    fs::write(root.join("a.txt"), b"hello over tls\n").unwrap();
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), big).unwrap();
    fs::write(root.join("d/b.txt"), b"bee\n").unwrap();
    fs::write(root.join("d/e/c 名.txt"), b"deep\n").unwrap();
    root
}

/// A TLS download listener `files` serving `root` with `pair`.
fn tls_download(root: &Path, pair: &Pair) -> String {
    common::listener(
        "files",
        "download",
        &format!("root = '{}'\n{}", path(root), pair.tls_table("")),
    )
}

/// Relays one connection from `front` to `back`: everything the client
/// sends, and the first `cut_after` bytes of what the server sends; then
/// closes both (a TCP close, with no TLS close_notify).
async fn cutting_relay(front: TcpListener, back: SocketAddr, cut_after: usize) {
    let (client, _) = front.accept().await.expect("accept");
    let server = TcpStream::connect(back).await.expect("connect upstream");
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut passed = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while passed < cut_after {
        let want = (cut_after - passed).min(buf.len());
        match server_read.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                passed += n;
            }
        }
    }
    let _ = client_write.shutdown().await;
    up.abort();
}

#[tokio::test]
async fn get_over_https_is_byte_exact_resumes_a_cut_download_and_mirrors_a_tree() {
    let base = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(base.path(), "Get CA");
    let pair = pki.server("server", 60);
    let root = download_root(base.path());
    let server = TestServer::start(&tls_download(&root, &pair));
    let port = server.addr("files").port();
    let ca = path(&pki.ca_pem);
    let url = |host: &str, name: &str| format!("https://{host}:{port}/{name}");

    // A file, by IP address and by name: the certificate names both.
    for host in ["127.0.0.1", "localhost"] {
        let out_file = base.path().join(format!("a-{host}.txt"));
        let (out, _) = run(
            &[
                "get",
                &url(host, "a.txt"),
                "--cacert",
                ca,
                "-o",
                path(&out_file),
            ],
            b"",
        )
        .await;
        assert!(out.status.success(), "{host}: {out:?}");
        assert_eq!(fs::read(&out_file).unwrap(), b"hello over tls\n");
    }

    // A 3 MiB file cut after about 1 MiB of TLS records: the body is short
    // of its Content-Length, so exit 4 with the .part kept; then -c
    // resumes it over TLS, byte-exact.
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = front.local_addr().unwrap().port();
    let relay = tokio::spawn(cutting_relay(front, server.addr("files"), 1024 * 1024));
    let big = base.path().join("big.bin");
    let (cut, _) = run(
        &[
            "get",
            &format!("https://127.0.0.1:{relay_port}/big.bin"),
            "--cacert",
            ca,
            "-o",
            path(&big),
        ],
        b"",
    )
    .await;
    relay.abort();
    assert_eq!(cut.status.code(), Some(4), "{cut:?}");
    let part = base.path().join("big.bin.part");
    let kept = fs::metadata(&part).expect("the .part is kept").len();
    assert!(kept > 0 && kept < 3 * 1024 * 1024, "{kept}");
    assert!(!big.exists());
    let (out, _) = run(
        &[
            "get",
            &url("localhost", "big.bin"),
            "-c",
            "--cacert",
            ca,
            "-o",
            path(&big),
        ],
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("resumed at {kept}")),
        "{out:?}"
    );
    assert_eq!(sha256(&big), sha256(&root.join("big.bin")));

    // -r of a small tree.
    let mirror = base.path().join("mirror");
    let (out, _) = run(
        &[
            "get",
            &url("127.0.0.1", "d/"),
            "-r",
            "-q",
            "--cacert",
            ca,
            "-o",
            path(&mirror),
        ],
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(mirror.join("b.txt")).unwrap(), b"bee\n");
    assert_eq!(fs::read(mirror.join("e/c 名.txt")).unwrap(), b"deep\n");

    // The raw protocol through TLS, and a name it does not have (exit 3).
    let raw = base.path().join("raw.bin");
    let (out, _) = run(
        &[
            "get",
            &url("127.0.0.1", "big.bin"),
            "--raw",
            "--cacert",
            ca,
            "-o",
            path(&raw),
        ],
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sha256(&raw), sha256(&root.join("big.bin")));
    let (out, _) = run(&["get", &url("127.0.0.1", "nope.txt"), "--cacert", ca], b"").await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    server.shutdown().await;
}

/// Line listeners over TLS: an echo and a keyword-bot.
fn tls_bots(pair: &Pair, extra: &str) -> String {
    format!(
        "{}{}",
        common::listener("echo", "echo", &pair.tls_table(extra)),
        common::listener(
            "keywords",
            "keyword-bot",
            &format!(
                "[[listener.rules]]\nkeywords = [\"hello\"]\nreply = \"hi there\"\n{}",
                pair.tls_table(extra)
            ),
        ),
    )
}

#[tokio::test]
async fn send_and_chat_over_tls_talk_to_echo_and_a_keyword_bot() {
    let base = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(base.path(), "Lines CA");
    let pair = pki.server("server", 60);
    let server = TestServer::start(&tls_bots(&pair, ""));
    let echo = server.addr("echo").to_string();
    let bot = format!("localhost:{}", server.addr("keywords").port());
    let ca = path(&pki.ca_pem);

    let (out, _) = run(&["send", "--tls", &echo, "one", "two", "--cacert", ca], b"").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    let (out, _) = run(&["send", "--tls", &bot, "--cacert", ca], b"hello\n").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hi there\n");
    let (out, _) = run(
        &["chat", "--tls", &echo, "--cacert", ca],
        b"first\nsecond\n",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "first\nsecond\n");
    let (out, _) = run(&["chat", "--tls", &bot, "--cacert", ca], b"hello\n").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hi there\n");

    // --tls is for TCP: with --udp it is a usage mistake.
    let (out, _) = run(&["send", "--tls", "--udp", &echo, "x"], b"").await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // A TLS flag without TLS is one too, and says how to turn TLS on.
    let (out, _) = run(&["send", &echo, "x", "--cacert", ca], b"").await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("add --tls"), "{out:?}");
    let (out, _) = run(&["get", &echo, "a.txt", "--insecure"], b"").await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("https://"), "{out:?}");
    server.shutdown().await;
}

/// The one line of a failed client's stderr.
fn one_line(out: &Output) -> String {
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {out:?}");
    err
}

#[tokio::test]
async fn trust_is_checked_and_each_failure_is_one_line_with_what_to_do() {
    let base = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(base.path(), "Right CA");
    let other = Pki::new(base.path(), "Other CA");
    let pair = pki.server("server", 60);
    let expired = pki.server("expired", -2);
    let root = download_root(base.path());
    let toml = format!(
        "{}{}{}{}",
        tls_download(&root, &pair),
        common::listener("plain", "echo", ""),
        common::private_listener(2, "elsewhere", "echo", &pair.tls_table("")),
        common::listener("old", "echo", &expired.tls_table("")),
    );
    let server = TestServer::start(&toml);
    let files = server.addr("files").port();
    let a_txt = format!("https://127.0.0.1:{files}/a.txt");
    let out_file = base.path().join("out.txt");

    // The wrong CA: not trusted, exit 1, nothing written.
    let (out, _) = run(
        &[
            "get",
            &a_txt,
            "--cacert",
            path(&other.ca_pem),
            "-o",
            path(&out_file),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = one_line(&out);
    assert!(
        line.contains("certificate not trusted")
            && line.contains("--cacert FILE")
            && line.contains("--insecure"),
        "{line}"
    );
    assert!(!out_file.exists() && !base.path().join("out.txt.part").exists());
    let echo = server.addr("elsewhere");

    // --insecure: it works, with one warning line.
    let (out, _) = run(
        &["get", &a_txt, "--insecure", "-q", "-o", path(&out_file)],
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(one_line(&out).contains("warning: --insecure"), "{out:?}");
    assert_eq!(fs::read(&out_file).unwrap(), b"hello over tls\n");

    // A name the certificate does not have (127.0.0.2; it names
    // localhost and 127.0.0.1).
    let (out, _) = run(
        &[
            "send",
            "--tls",
            &echo.to_string(),
            "x",
            "--cacert",
            path(&pki.ca_pem),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = one_line(&out);
    assert!(
        line.contains("not valid for the name 127.0.0.2") && line.contains("localhost"),
        "{line}"
    );

    // An expired certificate.
    let (out, _) = run(
        &[
            "chat",
            "--tls",
            &format!("localhost:{}", server.addr("old").port()),
            "--cacert",
            path(&pki.ca_pem),
        ],
        b"x\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        one_line(&out).contains("certificate has expired"),
        "{out:?}"
    );

    // A plaintext port: it did not answer TLS (an echo sends the
    // ClientHello back), and the error says what to try.
    let plain = server.addr("plain").to_string();
    let (out, _) = run(
        &["send", "--tls", &plain, "x", "--cacert", path(&pki.ca_pem)],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = one_line(&out);
    assert!(
        line.contains(&format!(
            "{plain} did not answer TLS: is it a plaintext port? try without --tls"
        )),
        "{line}"
    );
    let (out, _) = run(
        &[
            "get",
            &format!("https://{plain}/a.txt"),
            "--cacert",
            path(&pki.ca_pem),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(one_line(&out).contains("try http://"), "{out:?}");

    // Files named on the command line that cannot be used: exit 2.
    let (out, _) = run(
        &[
            "get",
            &a_txt,
            "--cacert",
            path(&base.path().join("missing.pem")),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(one_line(&out).contains("--cacert"), "{out:?}");
    let (out, _) = run(
        &[
            "get",
            &a_txt,
            "--cacert",
            path(&pki.ca_pem),
            "--cert",
            path(&pair.cert),
            "--key",
            path(&expired.key),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(one_line(&out).contains("does not go with"), "{out:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_serves_a_client_certificate_of_its_ca_and_refuses_none() {
    let base = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(base.path(), "Server CA");
    let clients = Pki::new(base.path(), "Client CA");
    let strangers = Pki::new(base.path(), "Stranger CA");
    let pair = pki.server("server", 60);
    let alice = clients.client("alice", "alice");
    let mallory = strangers.client("mallory", "mallory");
    let extra = format!(
        "client_ca = '{}'\nclient_auth = \"required\"",
        path(&clients.ca_pem)
    );
    let server = TestServer::start(&tls_bots(&pair, &extra));
    let echo = server.addr("echo").to_string();
    let ca = path(&pki.ca_pem);

    let (out, _) = run(
        &[
            "send",
            "--tls",
            &echo,
            "mutual",
            "--cacert",
            ca,
            "--cert",
            path(&alice.cert),
            "--key",
            path(&alice.key),
        ],
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "mutual\n");

    let (out, _) = run(&["send", "--tls", &echo, "anonymous", "--cacert", ca], b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        one_line(&out)
            .contains("requires a client certificate (give one with --cert FILE --key FILE)"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");

    let (out, _) = run(
        &[
            "chat",
            "--tls",
            &echo,
            "--cacert",
            ca,
            "--cert",
            path(&mallory.cert),
            "--key",
            path(&mallory.key),
        ],
        b"stranger\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        one_line(&out).contains("refused our client certificate"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn probe_over_tls_warns_of_a_certificate_within_14_days_and_fails_an_expired_one() {
    let base = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(base.path(), "Probe CA");
    let good = pki.server("good", 60);
    let soon = pki.server("soon", 5);
    let expired = pki.server("expired", -1);
    let clients = Pki::new(base.path(), "Probe Client CA");
    let root = download_root(base.path());
    let mutual = format!(
        "client_ca = '{}'\nclient_auth = \"required\"",
        path(&clients.ca_pem)
    );
    // Each listener's table, at the address the server gave it.
    let tables = |addr: &dyn Fn(&str) -> SocketAddr| {
        [
            listener_at("good", addr("good"), "echo", &good.tls_table("")),
            listener_at(
                "either",
                addr("either"),
                "keyword-bot",
                &good.tls_table("mode = \"optional\""),
            ),
            listener_at(
                "files",
                addr("files"),
                "download",
                &format!("root = '{}'\n{}", path(&root), soon.tls_table("")),
            ),
            listener_at("mutual", addr("mutual"), "echo", &good.tls_table(&mutual)),
            listener_at("old", addr("old"), "echo", &expired.tls_table("")),
        ]
        .concat()
    };
    let server = TestServer::start(&tables(&|_| "127.0.0.1:0".parse().unwrap()));
    let (_dir, config) = config_dir(&tables(&|name| server.addr(name)));
    let probed = |names: &'static [&'static str]| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || probe(&config, names))
    };

    let (code, stdout, stderr) = probed(&["good", "either", "files", "mutual"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("ok    good")
            && lines[0].contains("/tls")
            && lines[0].contains("echoed"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("ok    either") && lines[1].contains("answered"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("warn  files")
            && lines[2].contains("answered")
            && lines[2].contains("the served certificate expires on")
            && lines[2].contains("in 4 days"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("ok    mutual") && lines[3].contains("handshook"),
        "{stdout}"
    );

    let (code, stdout, stderr) = probed(&["good", "old"]).await.unwrap();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let old = stdout.lines().nth(1).unwrap_or_default();
    assert!(
        old.starts_with("FAIL  old") && old.contains("the served certificate expired on"),
        "{stdout}"
    );
    server.shutdown().await;
}

/// A rustls server config serving `pair`.
fn acceptor(pair: &Pair) -> TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(&pair.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
    #[allow(deprecated)] // ring, as the server uses (see src/tls/material.rs).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// What a hostile TLS server does with each connection.
#[derive(Clone, Copy)]
enum Hostile {
    /// Accepts TCP and never says a word.
    Silent,
    /// Answers the ClientHello with bytes that are not TLS.
    Garbage,
    /// After the handshake, sends endless bytes without a newline.
    EndlessLine,
    /// After the handshake, sends endless short lines.
    EndlessLines,
    /// The raw protocol: reads a name, sends `body`, closes TCP without
    /// close_notify.
    RawCutWithoutNotify,
    /// The same, with close_notify.
    RawWithNotify,
}

const RAW_BODY: &[u8] = b"the first part of a file";

/// Serves every connection to `listener` as `how` says.
async fn hostile(listener: TcpListener, tls: TlsAcceptor, how: Hostile) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match how {
                Hostile::Silent => {
                    let _ = tcp.read_to_end(&mut Vec::new()).await;
                }
                Hostile::Garbage => {
                    let mut hello = [0u8; 512];
                    let _ = tcp.read(&mut hello).await;
                    let _ = tcp
                        .write_all(b"HELLO THERE, THIS IS NOT TLS AT ALL\r\n")
                        .await;
                    let _ = tcp.read_to_end(&mut Vec::new()).await;
                }
                _ => {
                    let Ok(mut stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let mut request = [0u8; 1024];
                    let _ = stream.read(&mut request).await;
                    match how {
                        Hostile::EndlessLine => loop {
                            if stream.write_all(&[b'x'; 16 * 1024]).await.is_err() {
                                return;
                            }
                        },
                        Hostile::EndlessLines => loop {
                            if stream.write_all(&b"flood\n".repeat(4096)).await.is_err() {
                                return;
                            }
                        },
                        Hostile::RawCutWithoutNotify => {
                            let _ = stream.write_all(RAW_BODY).await;
                            let _ = stream.flush().await;
                            // Close the TCP connection under the session.
                            let (mut tcp, _) = stream.into_inner();
                            let _ = tcp.shutdown().await;
                        }
                        _ => {
                            let _ = stream.write_all(RAW_BODY).await;
                            let _ = stream.shutdown().await;
                        }
                    }
                }
            }
        });
    }
}

/// A hostile TLS server on a port of its own; its address.
async fn hostile_server(pair: &Pair, how: Hostile) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hostile(listener, acceptor(pair), how));
    format!("localhost:{}", addr.port())
}

#[tokio::test]
async fn against_hostile_tls_servers_the_clients_end_in_time_and_say_why() {
    let base = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(base.path(), "Hostile CA");
    let pair = pki.server("server", 60);
    let ca = path(&pki.ca_pem);

    // Silent after the TCP accept: the handshake ends within --timeout.
    let silent = hostile_server(&pair, Hostile::Silent).await;
    for command in [
        vec!["send", "--tls", &silent, "x"],
        vec!["chat", "--tls", &silent],
    ] {
        let mut args = command.clone();
        args.extend(["--cacert", ca, "--timeout", "1s"]);
        let (out, took) = run(&args, b"x\n").await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(
            one_line(&out).contains("no TLS handshake within 1s"),
            "{out:?}"
        );
    }
    let (out, took) = run(
        &[
            "get",
            &format!("https://{silent}/f"),
            "--cacert",
            ca,
            "--timeout",
            "1s",
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        one_line(&out).contains("no TLS handshake within 1s"),
        "{out:?}"
    );

    // Garbage instead of a ServerHello.
    let garbage = hostile_server(&pair, Hostile::Garbage).await;
    let (out, _) = run(&["send", "--tls", &garbage, "x", "--cacert", ca], b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(one_line(&out).contains("did not answer TLS"), "{out:?}");

    // A flood after the handshake: one endless line is cut at its cap at
    // once; endless lines end by the deadline, as over plaintext.
    let endless = hostile_server(&pair, Hostile::EndlessLine).await;
    let (out, took) = run(&["send", "--tls", &endless, "x", "--cacert", ca], b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        text(&out.stderr).contains("a reply line longer than"),
        "{out:?}"
    );
    let flood = hostile_server(&pair, Hostile::EndlessLines).await;
    let (out, took) = run(
        &[
            "send",
            "--tls",
            &flood,
            "x",
            "--cacert",
            ca,
            "--timeout",
            "2s",
        ],
        b"",
    )
    .await;
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(text(&out.stdout).starts_with("flood\n"), "{out:?}");
    assert!(
        out.stdout.len() <= 16 * 1024 * 1024 + 64 * 1024,
        "{}",
        out.stdout.len()
    );
}

#[tokio::test]
async fn a_close_without_close_notify_is_never_taken_for_a_whole_answer() {
    let base = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(base.path(), "Truncation CA");
    let pair = pki.server("server", 60);
    let ca = path(&pki.ca_pem);
    let cut = hostile_server(&pair, Hostile::RawCutWithoutNotify).await;
    let whole = hostile_server(&pair, Hostile::RawWithNotify).await;
    let out_file = base.path().join("f.bin");

    // The raw protocol has no length: its end is close_notify.
    let (out, _) = run(
        &[
            "get",
            &format!("https://{cut}/f.bin"),
            "--raw",
            "--cacert",
            ca,
            "-o",
            path(&out_file),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let line = one_line(&out);
    assert!(
        line.contains("without TLS close_notify") && line.contains("may be truncated"),
        "{line}"
    );
    assert!(!out_file.exists());
    assert_eq!(
        fs::read(base.path().join("f.bin.part")).unwrap(),
        RAW_BODY,
        "the .part keeps what came"
    );
    let (out, _) = run(
        &[
            "get",
            &format!("https://{whole}/f.bin"),
            "--raw",
            "--cacert",
            ca,
            "-o",
            path(&out_file),
        ],
        b"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(&out_file).unwrap(), RAW_BODY);

    // send: a last reply ended by a close without close_notify may be cut.
    let (out, _) = run(&["send", "--tls", &cut, "f.bin", "--cacert", ca], b"").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(one_line(&out).contains("may be truncated"), "{out:?}");
    let (out, _) = run(&["send", "--tls", &whole, "f.bin", "--cacert", ca], b"").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, [RAW_BODY, b"\n"].concat());
}

#[tokio::test]
async fn get_takes_an_http_url_as_well_as_addr_and_name() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = download_root(base.path());
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'", path(&root)),
    ));
    let addr = server.addr("files");
    let out_file = base.path().join("c.txt");
    let url = format!("http://{addr}/d/e/c%20%E5%90%8D.txt");
    let (out, _) = run(&["get", &url, "-o", path(&out_file)], b"").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(&out_file).unwrap(), b"deep\n");
    // The URL names the file, or NAME does: not both, and not neither.
    for args in [
        vec!["get".to_owned(), url.clone(), "a.txt".to_owned()],
        vec!["get".to_owned(), addr.to_string()],
        vec!["get".to_owned(), format!("ftp://{addr}/a.txt")],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, _) = run(&args, b"").await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(text(&out.stderr).lines().count(), 1, "{out:?}");
    }
    server.shutdown().await;
}
