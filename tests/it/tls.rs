//! TLS on the listeners, against clients the project did not write:
//! `openssl s_client` (TLS 1.2 and 1.3), curl, wget, `ncat --ssl` and a
//! Python `ssl` version of the tutorial's TCP client get the right bytes
//! from every handler; mutual TLS; plaintext and TLS on one port; the
//! certificate rotated by a file change and by SIGHUP while connections
//! stay open; the handshake's timeout, its place after admission, and the
//! config's errors. A rustls client in the test reads which certificate
//! is served.
//!
//! Without openssl, curl, wget, ncat or python3 the tests that need them
//! say so and pass, unless SWITCHBOARD_REQUIRE_HTTP_CLIENTS is set (as CI
//! sets it).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use crate::certs::{Pair, Pki, client_config, leaf_of, served_leaf, tls_connect, tls_table};
use crate::common::{self, LIMIT, TestServer, connect, connect_from};
use crate::http::{have, run};
use crate::metrics::{of, scrape};

/// Sends `line` and reads one reply line over `stream`.
async fn ask_tls(stream: &mut TlsStream<tokio::net::TcpStream>, line: &str) -> String {
    stream.write_all(line.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\n") {
        let n = timeout(LIMIT, stream.read(&mut byte))
            .await
            .expect("reply timed out")
            .unwrap();
        assert!(n > 0, "closed after {reply:?}");
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap().trim_end().to_owned()
}

/// True when `tool ARG` runs (openssl has `version`, not `--version`);
/// a missing tool fails the test when `require` is set in the
/// environment (as CI sets it), and skips it otherwise.
fn have_tool(tool: &str, arg: &str, require: &str) -> bool {
    let found = Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os(require).is_some() {
        panic!("{tool} is required ({require} is set) but does not run");
    }
    if !found {
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// What the server sends until it closes or resets the connection.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(LIMIT, stream.read(&mut buf))
            .await
            .expect("never closed")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A root with a 300 KB file of varied bytes and `hello.txt`.
fn root(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    fs::create_dir_all(&root).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("big.bin"), big).unwrap();
    fs::write(root.join("hello.txt"), "hello over tls\n").unwrap();
    root
}

/// One listener of each handler, all serving `pair`: `echo`, `kw` (a
/// keyword-bot that answers `hello` with `hi there`), `rb`, `metrics`,
/// and `files` (a download of `root`).
fn every_handler(pair: &Pair, root: &Path) -> String {
    let tls = pair.tls_table("");
    [
        common::listener("echo", "echo", &tls),
        common::listener(
            "kw",
            "keyword-bot",
            &format!(
                "default_reply = \"?\"\n[[listener.rules]]\nkeywords = [\"hello\"]\nreply = \"hi there\"\n{tls}"
            ),
        ),
        common::listener("rb", "random-bot", &tls),
        common::listener("metrics", "metrics", &tls),
        common::listener("files", "download", &format!("root = '{}'\n{tls}", root.display())),
    ]
    .concat()
}

/// Runs `openssl s_client` at `version` (`-tls1_2`, `-tls1_3`) against
/// `addr`, sending `input`; returns what it printed.
async fn s_client(addr: SocketAddr, ca: &Path, version: &str, input: &str) -> Vec<u8> {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "(printf '%s' \"$INPUT\"; sleep 1) | timeout 20 openssl s_client -quiet -no_ign_eof \
         -verify_return_error -connect {addr} -servername localhost -CAfile '{}' {version} \
         2>/dev/null",
        ca.display()
    ));
    command.env("INPUT", input);
    run(command).await.stdout
}

#[tokio::test]
async fn real_tls_clients_get_the_right_bytes_from_each_handler() {
    if !(have_tool("openssl", "version", "SWITCHBOARD_REQUIRE_HTTP_CLIENTS")
        && ["curl", "wget", "python3"].iter().all(|t| have(t)))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let root = root(dir.path());
    let config = every_handler(&pair, &root);
    let server = TestServer::start(&config);
    let ca = &pki.ca_pem;

    // openssl s_client, both versions, to the echo handler.
    for version in ["-tls1_2", "-tls1_3"] {
        let out = s_client(server.addr("echo"), ca, version, "over tls\n").await;
        assert_eq!(out, b"over tls\n", "s_client {version}");
    }
    let out = s_client(server.addr("kw"), ca, "-tls1_3", "hello\n").await;
    assert_eq!(out, b"hi there\n");

    // The tutorial's TCP client, with its socket wrapped in TLS.
    let python = format!(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile="{ca}")
for port, message in (({rb}, "remember me"), ({kw}, "hello")):
    tcp_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_socket.settimeout(10)
    tcp_socket = ctx.wrap_socket(tcp_socket, server_hostname="localhost")
    tcp_socket.connect(("127.0.0.1", port))
    tcp_socket.send(message.encode())
    recv_data = tcp_socket.recv(1024)
    print(recv_data.decode().strip(), tcp_socket.version())
    tcp_socket.close()
"#,
        ca = ca.display(),
        rb = server.addr("rb").port(),
        kw = server.addr("kw").port(),
    );
    let mut command = Command::new("timeout");
    command.args(["20", "python3"]);
    command.arg("-c").arg(&python);
    let out = run(command).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "remember me TLSv1.3\nhi there TLSv1.3\n"
    );

    // curl: a file, a resumed one, and the metrics.
    let files = server.addr("files");
    let url = format!("https://localhost:{}/big.bin", files.port());
    let resolve = format!("localhost:{}:127.0.0.1", files.port());
    let saved = dir.path().join("curl.bin");
    let whole = fs::read(root.join("big.bin")).unwrap();
    fs::write(&saved, &whole[..123_457]).unwrap();
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["--resolve", &resolve, "-C", "-", "-o"])
        .arg(&saved)
        .arg(&url);
    let out = run(curl).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(&saved).unwrap() == whole, "curl -C - over HTTPS");

    let wget_saved = dir.path().join("wget.bin");
    let mut wget = Command::new("wget");
    wget.args(["-q", "--timeout=20", "--tries=1", "--ca-certificate"])
        .arg(ca)
        .arg("-O")
        .arg(&wget_saved)
        .arg(format!("https://localhost:{}/big.bin", files.port()));
    let out = run(wget).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(&wget_saved).unwrap() == whole, "wget over HTTPS");

    // The raw protocol over TLS, to the same port.
    let out = s_client(files, ca, "-tls1_2", "big.bin\n").await;
    assert!(
        out == whole,
        "raw download over s_client: {} bytes",
        out.len()
    );

    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg(format!(
            "https://localhost:{}/metrics",
            server.addr("metrics").port()
        ));
    let out = run(curl).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("switchboard_tls_handshakes_total{handler=\"download\",listener=\"files\",result=\"ok\"}"),
        "{text}"
    );
    assert!(text.contains(
        "switchboard_tls_certificate_expiry_timestamp_seconds{handler=\"echo\",listener=\"echo\"}"
    ));
}

#[tokio::test]
async fn ncat_reads_a_file_over_tls() {
    if !have("ncat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let root = root(dir.path());
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'\n{}", root.display(), pair.tls_table("")),
    ));
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "printf 'big.bin\\n' | timeout 20 ncat --ssl --ssl-trustfile '{}' localhost {}",
        pki.ca_pem.display(),
        server.addr("files").port()
    ));
    let out = run(command).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == fs::read(root.join("big.bin")).unwrap());
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_the_right_certificate_and_counts_why() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let other = Pki::new(dir.path(), "Other CA");
    let pair = pki.server("server", 30);
    let alice = pki.client("alice", "alice");
    let mallory = other.client("mallory", "mallory");
    let tls = pair.tls_table(&format!(
        "client_ca = '{}'\nclient_auth = \"required\"",
        pki.ca_pem.display()
    ));
    let server = TestServer::start(
        &[
            common::listener("echo", "echo", &tls),
            common::listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let addr = server.addr("echo");

    let mut served = tls_connect(addr, client_config(&pki.ca_pem, Some(&alice)))
        .await
        .unwrap();
    assert_eq!(
        ask_tls(&mut served, "with a certificate\n").await,
        "with a certificate"
    );

    // In TLS 1.3 the client learns of the refusal on its first read.
    for client in [None, Some(&mallory)] {
        let refused = async {
            let mut stream = tls_connect(addr, client_config(&pki.ca_pem, client)).await?;
            stream.write_all(b"let me in\n").await?;
            let mut buf = [0u8; 64];
            let n = timeout(LIMIT, stream.read(&mut buf))
                .await
                .expect("read timed out")?;
            Ok::<usize, std::io::Error>(n)
        };
        assert!(
            !matches!(refused.await, Ok(n) if n > 0),
            "a client without the right certificate was served"
        );
    }
    let figures = scrape(server.addr("metrics")).await;
    let count = |result: &str| {
        of(
            &figures,
            "switchboard_tls_handshakes_total",
            "echo",
            "echo",
            &format!(",result=\"{result}\""),
        )
    };
    assert_eq!(count("ok"), 1.0);
    assert_eq!(count("no_client_certificate"), 1.0);
    assert_eq!(count("bad_client_certificate"), 1.0);
}

#[test]
fn the_client_certificate_subject_and_the_cipher_are_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let alice = pki.client("alice", "alice");
    let config = dir.path().join("tls.toml");
    fs::write(
        &config,
        common::listener(
            "echo",
            "echo",
            &pair.tls_table(&format!("client_ca = '{}'", pki.ca_pem.display())),
        ),
    )
    .unwrap();
    let mut daemon = crate::cli::Daemon::start(&config);
    let addr = daemon.addr("echo");
    // The start's table says which listeners speak TLS, as check does.
    assert!(
        daemon.table[0].ends_with(&format!("{addr}/tls")),
        "{:?}",
        daemon.table
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut stream = tls_connect(addr, client_config(&pki.ca_pem, Some(&alice)))
            .await
            .unwrap();
        assert_eq!(ask_tls(&mut stream, "hi\n").await, "hi");
        stream.shutdown().await.unwrap();
    });
    let line = daemon.wait_for_log("closed");
    for expected in [
        "tls=TLSv1.3 TLS13_",
        "client_cert=\"CN=alice\"",
        "reason=client closed",
    ] {
        assert!(line.contains(expected), "{expected} not in {line}");
    }
}

#[tokio::test]
async fn an_optional_tls_port_serves_plaintext_and_tls() {
    if !have("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let root = root(dir.path());
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!(
            "root = '{}'\n{}",
            root.display(),
            pair.tls_table("mode = \"optional\"")
        ),
    ));
    let addr = server.addr("files");
    let whole = fs::read(root.join("big.bin")).unwrap();
    // Raw, as netcat would.
    let mut plain = connect(addr).await;
    plain.write_all(b"big.bin\n").await.unwrap();
    assert!(common::read_to_end(&mut plain).await == whole);
    // HTTP and HTTPS.
    for scheme in ["http", "https"] {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail", "--max-time", "20", "--cacert"])
            .arg(&pki.ca_pem)
            .arg(format!("{scheme}://localhost:{}/big.bin", addr.port()));
        let out = run(curl).await;
        assert!(
            out.status.success(),
            "{scheme}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == whole, "{scheme}");
    }
    // A raw name over TLS.
    let mut tls = tls_connect(addr, client_config(&pki.ca_pem, None))
        .await
        .unwrap();
    tls.write_all(b"big.bin\n").await.unwrap();
    let mut got = Vec::new();
    timeout(LIMIT, tls.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got == whole);
}

/// Writes `from`'s files over `to`'s, as a renewal would (a rename over
/// the old file, so no reader sees half a file).
fn install(from: &Pair, to: &Pair) {
    for (src, dst) in [(&from.cert, &to.cert), (&from.key, &to.key)] {
        let tmp = dst.with_extension("tmp");
        fs::copy(src, &tmp).unwrap();
        fs::rename(&tmp, dst).unwrap();
    }
}

/// Connects until the served leaf is `want`'s, within [`LIMIT`].
async fn until_served(
    addr: SocketAddr,
    ca: &Path,
    want: &Path,
) -> TlsStream<tokio::net::TcpStream> {
    let want = leaf_of(want);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let stream = tls_connect(addr, client_config(ca, None)).await.unwrap();
        if served_leaf(&stream) == want {
            return stream;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let live = pki.server("live", 30);
    let server = TestServer::start(
        &[
            common::listener(
                "echo",
                "echo",
                &live.tls_table("check_interval = \"100ms\""),
            ),
            common::listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let addr = server.addr("echo");
    let ca = &pki.ca_pem;
    let mut before = tls_connect(addr, client_config(ca, None)).await.unwrap();
    assert_eq!(ask_tls(&mut before, "one\n").await, "one");
    assert_eq!(served_leaf(&before), leaf_of(&live.cert));

    // Renewal by a file change: new handshakes get the new pair, the open
    // connection goes on.
    let renewed = pki.server("renewed", 60);
    let renewed_cert = renewed.cert.clone();
    install(&renewed, &live);
    let mut after = until_served(addr, ca, &renewed_cert).await;
    assert_eq!(ask_tls(&mut after, "two\n").await, "two");
    assert_eq!(ask_tls(&mut before, "still here\n").await, "still here");

    // A key that does not go with the certificate: the old pair stays.
    let third = pki.server("third", 90);
    fs::copy(&third.cert, &live.cert).unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    let failed = loop {
        let figures = scrape(server.addr("metrics")).await;
        let failed = of(
            &figures,
            "switchboard_tls_rotations_total",
            "echo",
            "echo",
            ",result=\"failed\"",
        );
        if failed > 0.0 || tokio::time::Instant::now() > deadline {
            break figures;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        of(
            &failed,
            "switchboard_tls_rotations_total",
            "echo",
            "echo",
            ",result=\"failed\""
        ),
        1.0
    );
    assert_eq!(
        of(
            &failed,
            "switchboard_tls_rotations_total",
            "echo",
            "echo",
            ",result=\"ok\""
        ),
        1.0
    );
    let stream = tls_connect(addr, client_config(ca, None)).await.unwrap();
    assert_eq!(
        served_leaf(&stream),
        leaf_of(&renewed_cert),
        "the broken pair was served"
    );
    // Its expiry is the renewed certificate's, 60 days from now.
    let expiry = of(
        &failed,
        "switchboard_tls_certificate_expiry_timestamp_seconds",
        "echo",
        "echo",
        "",
    );
    let in_days = (expiry
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64())
        / 86_400.0;
    assert!((59.0..=60.5).contains(&in_days), "expiry in {in_days} days");
    // The key follows: the pair is whole again.
    fs::copy(&third.key, &live.key).unwrap();
    until_served(addr, ca, &third.cert).await;
}

#[tokio::test]
async fn a_reload_rereads_an_unchanged_listeners_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let live = pki.server("live", 30);
    let config = common::listener("echo", "echo", &live.tls_table("check_interval = \"0s\""));
    let mut server = TestServer::start(&config);
    let ca = &pki.ca_pem;
    let mut open = tls_connect(server.addr("echo"), client_config(ca, None))
        .await
        .unwrap();
    let renewed = pki.server("renewed", 60);
    install(&renewed, &live);
    // No watch: still the old one until the reload.
    let stream = tls_connect(server.addr("echo"), client_config(ca, None))
        .await
        .unwrap();
    assert_ne!(served_leaf(&stream), leaf_of(&renewed.cert));
    let summary = server.reload(&config).await.unwrap();
    assert!(
        summary.is_empty(),
        "a certificate change is not a listener change: {summary}"
    );
    let stream = tls_connect(server.addr("echo"), client_config(ca, None))
        .await
        .unwrap();
    assert_eq!(served_leaf(&stream), leaf_of(&renewed.cert));
    assert_eq!(ask_tls(&mut open, "kept\n").await, "kept");
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_handshake_timeout_and_a_refused_one_costs_no_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let server = TestServer::start(
        &[
            common::listener(
                "echo",
                "echo",
                &format!(
                    "deny = [\"127.0.0.3\"]\n{}",
                    pair.tls_table("handshake_timeout = \"300ms\"")
                ),
            ),
            common::listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let addr = server.addr("echo");
    let started = tokio::time::Instant::now();
    let mut silent = connect_from(2, addr).await;
    assert!(common::read_to_end(&mut silent).await.is_empty());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let mut refused = connect_from(3, addr).await;
    refused.write_all(&[0x16, 3, 1]).await.ok();
    assert!(until_closed(&mut refused).await.len() < 64);
    // Not TLS at all on a TLS-only port.
    let mut garbage = connect_from(4, addr).await;
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = until_closed(&mut garbage).await;
    assert!(!answer.windows(4).any(|w| w == b"HTTP"), "{answer:?}");
    let figures = scrape(server.addr("metrics")).await;
    let handshakes = |r: &str| {
        of(
            &figures,
            "switchboard_tls_handshakes_total",
            "echo",
            "echo",
            &format!(",result=\"{r}\""),
        )
    };
    assert_eq!(handshakes("timeout"), 1.0);
    assert_eq!(handshakes("not_tls"), 1.0);
    assert!(
        !figures
            .keys()
            .any(|k| k.starts_with("switchboard_tls_handshakes_total")
                && k.contains("result=\"ok\"")),
        "a handshake was counted for the refused source"
    );
    assert_eq!(
        of(
            &figures,
            "switchboard_connections_refused_total",
            "echo",
            "echo",
            ",reason=\"denied\""
        ),
        1.0
    );
}

#[test]
fn config_mistakes_in_the_tls_table_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let good = pki.server("good", 30);
    let other = pki.server("other", 30);
    let garbage = dir.path().join("garbage.pem");
    fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let table: Vec<(String, &str, &str)> = vec![
        (
            common::listener(
                "u",
                "echo",
                &format!("transport = \"udp\"\n{}", good.tls_table("")),
            ),
            "listener[0].tls",
            "TLS is for TCP listeners",
        ),
        (
            common::listener("e", "echo", &tls_table(&missing, &good.key, "")),
            "listener[0].tls.cert",
            "missing.pem",
        ),
        (
            common::listener("e", "echo", &tls_table(&garbage, &good.key, "")),
            "listener[0].tls.cert",
            "no certificate in it",
        ),
        (
            common::listener("e", "echo", &tls_table(&good.cert, &garbage, "")),
            "listener[0].tls.key",
            "no private key in it",
        ),
        (
            common::listener("e", "echo", &tls_table(&good.cert, &other.key, "")),
            "listener[0].tls.key",
            "does not go with",
        ),
        (
            common::listener("e", "echo", &good.tls_table("client_ca = 'nowhere.pem'")),
            "listener[0].tls.client_ca",
            "nowhere.pem",
        ),
        (
            common::listener("e", "echo", &good.tls_table("min_version = \"1.1\"")),
            "listener[0].tls.min_version",
            "\"1.2\"",
        ),
        (
            common::listener("e", "echo", &good.tls_table("sni = true")),
            "listener[0].tls.sni",
            "unknown field `sni`",
        ),
    ];
    for (toml, key, words) in table {
        let err = switchboard::Config::from_toml(&toml, "t.toml").expect_err(&toml);
        let text = err.to_string();
        assert_eq!(
            err.key.as_deref(),
            Some(key).filter(|k| !k.is_empty()),
            "{text}"
        );
        assert!(text.starts_with("t.toml:"), "{text}");
        assert!(text.contains(words), "{words:?} not in {text}");
    }
    // Expired and soon to expire: warnings, not refusals.
    for (days, words) in [(-1, "expired on"), (5, "in less than 14 days")] {
        let cert = pki.server(&format!("d{days}"), days);
        let config = switchboard::Config::from_toml(
            &common::listener("e", "echo", &cert.tls_table("")),
            "t.toml",
        )
        .unwrap();
        let warning = config
            .warnings
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(warning.contains(words), "{warning}");
        assert!(warning.contains("listener[0].tls.cert"), "{warning}");
    }
}

/// A certificate file larger than any PEM file is refused, not read whole.
#[test]
fn an_oversized_certificate_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let good = pki.server("good", 30);
    let huge = dir.path().join("huge.pem");
    let file = fs::File::create(&huge).unwrap();
    file.set_len(64 * 1024 * 1024).unwrap();
    let toml = common::listener("e", "echo", &tls_table(&huge, &good.key, ""));
    let err = switchboard::Config::from_toml(&toml, "t.toml").unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    let _ = Stdio::null();
}

/// testssl.sh against a listener with the default TLS settings (and a
/// certificate as a CA would issue it: 90 days, a CRL location) finds
/// nothing of severity HIGH or CRITICAL. Its summary is in docs/tls.md.
#[tokio::test]
async fn testssl_finds_nothing_high_or_critical_in_the_default_settings() {
    if !have_tool("testssl", "--version", "SWITCHBOARD_REQUIRE_TESTSSL") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 90);
    let root = root(dir.path());
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'\n{}", root.display(), pair.tls_table("")),
    ));
    let report = dir.path().join("testssl.json");
    let mut command = Command::new("timeout");
    command
        .args([
            "300",
            "testssl",
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "batch",
        ])
        .arg("--add-ca")
        .arg(&pki.ca_pem)
        .args(["--severity", "HIGH", "--jsonfile"])
        .arg(&report)
        .arg(server.addr("files").to_string());
    let out = run(command).await;
    let json = fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); testssl said: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    // A flat JSON array of findings, one `"severity" : "..."` each.
    let findings: Vec<&str> = json
        .split('{')
        .filter(|f| f.contains("\"severity\""))
        .collect();
    let bad: Vec<&&str> = findings
        .iter()
        .filter(|f| {
            f.contains("\"severity\"     : \"HIGH\"")
                || f.contains("\"severity\"     : \"CRITICAL\"")
                || f.contains("\"severity\": \"HIGH\"")
                || f.contains("\"severity\": \"CRITICAL\"")
        })
        .collect();
    assert!(bad.is_empty(), "testssl found: {bad:#?}");
    // The scan ran: it reached the server and looked at its protocols.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("TLS 1.3") && stdout.contains("offered"),
        "{stdout}"
    );
}

/// contrib/certbot/switchboard-deploy-hook, run as certbot runs it (with
/// RENEWED_LINEAGE), puts a renewed pair where a running listener reads
/// it, which then serves it without a restart. Needs root (it sets the
/// files' owner); skipped otherwise.
#[tokio::test]
async fn the_certbot_deploy_hook_installs_a_renewal_that_is_then_served() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: the certbot hook sets the files' owner, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let tls_dir = dir.path().join("tls");
    let lineage = dir.path().join("live");
    fs::create_dir_all(&lineage).unwrap();
    let install = |pair: &Pair| {
        fs::copy(&pair.cert, lineage.join("fullchain.pem")).unwrap();
        fs::copy(&pair.key, lineage.join("privkey.pem")).unwrap();
        let hook =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/certbot/switchboard-deploy-hook");
        let out = Command::new(hook)
            .env("RENEWED_LINEAGE", &lineage)
            .env("SWITCHBOARD_TLS_DIR", &tls_dir)
            .env("SWITCHBOARD_TLS_GROUP", "root")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let first = pki.server("first", 30);
    install(&first);
    let served = Pair {
        cert: tls_dir.join("fullchain.pem"),
        key: tls_dir.join("privkey.pem"),
    };
    let server = TestServer::start(&common::listener(
        "echo",
        "echo",
        &served.tls_table("check_interval = \"100ms\""),
    ));
    let addr = server.addr("echo");
    let stream = tls_connect(addr, client_config(&pki.ca_pem, None))
        .await
        .unwrap();
    assert_eq!(served_leaf(&stream), leaf_of(&first.cert));
    let renewed = pki.server("renewed", 90);
    install(&renewed);
    until_served(addr, &pki.ca_pem, &renewed.cert).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&served.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the key is readable by owner and group only");
}

/// A keep-alive HTTPS response is sent whole to a client that paused
/// before reading it: the last TLS records must not wait in the session's
/// buffer for a next request that the client will not send before it has
/// the whole response (they did: a write through TLS may return with
/// records still buffered when the socket is full).
#[tokio::test]
async fn a_keep_alive_https_response_reaches_a_client_that_paused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    fs::write(root.join("big.bin"), &body).unwrap();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!(
            "root = '{}'\nsend_buffer = 65536\n{}",
            root.display(),
            pair.tls_table("")
        ),
    ));
    let mut stream = tls_connect(server.addr("files"), client_config(&pki.ca_pem, None))
        .await
        .unwrap();
    for round in 0..2 {
        stream
            .write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        // Let the server fill every buffer on the way before reading.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let head_end = loop {
            let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("round {round}: stuck after {} bytes", got.len()))
                .unwrap();
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        while got.len() < head_end + body.len() {
            let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "round {round}: the response stopped at {} of {} body bytes",
                        got.len() - head_end,
                        body.len()
                    )
                })
                .unwrap();
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got[head_end..] == body[..],
            "round {round}: the body differs"
        );
    }
}

/// A TLS download to a reader that stopped reading is reset once it falls
/// under `min_send_rate` (after its 10 s grace), as a plaintext one is,
/// not after the whole idle timeout: through TLS each write is bounded by
/// the rate's deadline too.
#[tokio::test]
async fn a_stalled_tls_download_is_reset_at_the_minimum_rate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let size = 64 * 1024 * 1024;
    fs::File::create(root.join("big.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let server = TestServer::start(&common::listener(
        "files",
        "download",
        &format!(
            "root = '{}'\nmin_send_rate = 1000000\nsend_buffer = 65536\n{}",
            root.display(),
            pair.tls_table("")
        ),
    ));
    let mut stream = tls_connect(server.addr("files"), client_config(&pki.ca_pem, None))
        .await
        .unwrap();
    stream.write_all(b"big.bin\n").await.unwrap();
    // Read a little, then stop for longer than the grace.
    let mut buf = vec![0u8; 64 * 1024];
    assert!(stream.read(&mut buf).await.unwrap() > 0, "nothing came");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut total = 0u64;
    let ended = loop {
        match timeout(LIMIT, stream.read(&mut buf))
            .await
            .expect("never ended")
        {
            Ok(0) => break Ok(()),
            Ok(n) => total += n as u64,
            Err(e) => break Err(e),
        }
    };
    assert!(
        ended.is_err(),
        "a whole file after a 12 s stall: {total} bytes, then a clean end"
    );
    assert!(total < size / 2, "{total} bytes came after the stall");
}

/// Every handler answers each of `openssl s_client`, `ncat --ssl` and the
/// tutorial's TCP client over Python's `ssl`, with the bytes it would send
/// over plaintext: echo its input, the keyword-bot its rule's reply, the
/// random-bot the message (its history's only entry), the download port a
/// file by its raw name, the metrics handler a scrape over HTTP.
#[tokio::test]
async fn every_handler_answers_s_client_ncat_and_python_over_tls() {
    if !(have_tool("openssl", "version", "SWITCHBOARD_REQUIRE_HTTP_CLIENTS")
        && have("ncat")
        && have("python3"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let root = root(dir.path());
    let config = every_handler(&pair, &root);
    let server = TestServer::start(&config);
    let ca = pki.ca_pem.display().to_string();
    // (listener, what is sent, what must be in the answer)
    let cases = [
        ("echo", "ping\n", "ping\n"),
        ("kw", "hello\n", "hi there\n"),
        ("rb", "only me\n", "only me\n"),
        ("files", "hello.txt\n", "hello over tls\n"),
        (
            "metrics",
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "switchboard_build_info",
        ),
    ];
    for (name, input, expected) in cases {
        let port = server.addr(name).port();
        let clients = [
            (
                "s_client",
                format!(
                    "(printf '%s' \"$INPUT\"; sleep 1) | timeout 20 openssl s_client -quiet -no_ign_eof \
                     -verify_return_error -connect 127.0.0.1:{port} -servername localhost -CAfile '{ca}' 2>/dev/null"
                ),
            ),
            (
                "ncat",
                format!(
                    "(printf '%s' \"$INPUT\"; sleep 1) | timeout 20 ncat --ssl --ssl-trustfile '{ca}' localhost {port}"
                ),
            ),
            (
                "python",
                format!(
                    "timeout 20 python3 -c '
import os, socket, ssl, time
ctx = ssl.create_default_context(cafile=\"{ca}\")
tcp_socket = ctx.wrap_socket(socket.create_connection((\"127.0.0.1\", {port}), 10), server_hostname=\"localhost\")
tcp_socket.send(os.environ[\"INPUT\"].encode())
got = b\"\"
deadline = time.time() + 10
while time.time() < deadline:
    tcp_socket.settimeout(max(0.1, deadline - time.time()))
    try:
        recv_data = tcp_socket.recv(4096)
    except (socket.timeout, ssl.SSLError):
        break
    if not recv_data:
        break
    got += recv_data
    if os.environ[\"EXPECTED\"].encode() in got:
        break
print(got.decode(), end=\"\")
'"
                ),
            ),
        ];
        for (client, script) in clients {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(&script)
                .env("INPUT", input)
                .env("EXPECTED", expected);
            let out = run(command).await;
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(expected),
                "{client} to {name}: {text:?} (stderr {})",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The certificate docs/tls.md's quick start makes (its own `openssl req`
/// command, read from the page) serves switchboard's own clients as well
/// as curl: `get --cacert` over HTTPS and `send --tls --cacert`.
#[tokio::test]
async fn the_quick_start_certificate_of_the_docs_works_with_our_own_clients() {
    if !(have_tool("openssl", "version", "SWITCHBOARD_REQUIRE_HTTP_CLIENTS") && have("curl")) {
        return;
    }
    let page =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tls.md")).unwrap();
    let mut command = String::new();
    for line in page
        .lines()
        .skip_while(|l| !l.starts_with("$ openssl req -x509"))
    {
        let line = line.trim_start_matches("$ ").trim();
        match line.strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(line);
                break;
            }
        }
    }
    assert!(
        command.contains("-keyout key.pem"),
        "no quick-start command in docs/tls.md: {command}"
    );
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pair = Pair {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("hello.txt"), "hello\n").unwrap();
    let tls = pair.tls_table("");
    let server = TestServer::start(
        &[
            common::listener(
                "files",
                "download",
                &format!("root = '{}'\n{tls}", root.display()),
            ),
            common::listener("echo", "echo", &tls),
        ]
        .concat(),
    );
    let files = server.addr("files").port();
    let mut get = Command::new(crate::cli::BIN);
    get.current_dir(dir.path())
        .args(["get", "--cacert", "cert.pem"])
        .arg(format!("https://localhost:{files}/hello.txt"));
    let out = run(get).await;
    assert!(
        out.status.success(),
        "get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("hello.txt")).unwrap(),
        "hello\n"
    );
    let mut send = Command::new(crate::cli::BIN);
    send.current_dir(dir.path())
        .args(["send", "--tls", "--cacert", "cert.pem"])
        .arg(format!("localhost:{}", server.addr("echo").port()))
        .arg("ping");
    let out = run(send).await;
    assert!(
        out.status.success(),
        "send: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ping\n");
}
