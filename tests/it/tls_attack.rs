//! The TLS surface attacked: hostile certificate files (a FIFO, a device,
//! a directory put where the certificate was, at start and under the file
//! watch), a client certificate whose subject is made to break the log, a
//! ClientHello trickled a byte at a time, connections mid-handshake at
//! shutdown, and a silent client on a port with `mode = "optional"`.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::certs::{Pair, Pki, client_config, leaf_of, tls_connect, tls_table};
use crate::common::{self, TestServer, connect};
use crate::metrics::scrape;

/// The longest any wait of these tests may take: each test is bounded by
/// a few of them, well under ten seconds.
const WAIT: Duration = Duration::from_secs(5);

/// Makes a FIFO at `path` (mkfifo(1): the crate forbids unsafe code).
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Lets a reader stuck opening the FIFO at `path` go (it gets an empty
/// file), so that a failing test leaves no thread blocked for good.
fn release_fifo(path: &Path) {
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

/// Replaces `at` with a rename, so that no reader sees half a file.
fn replace(at: &Path, with: impl FnOnce(&Path)) {
    let tmp = at.with_extension("swap");
    let _ = fs::remove_file(&tmp);
    with(&tmp);
    fs::rename(&tmp, at).unwrap();
}

/// Loads a config whose certificate is `cert`, on a thread: its error, or
/// `None` if it did not answer within [`WAIT`] (it hung).
fn load_error_within_wait(cert: PathBuf, key: PathBuf) -> Option<String> {
    let toml = common::listener("e", "echo", &tls_table(&cert, &key, ""));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let loaded = switchboard::Config::from_toml(&toml, "t.toml");
        let _ = tx.send(loaded.err().map(|e| e.to_string()).unwrap_or_default());
    });
    rx.recv_timeout(WAIT).ok()
}

/// A FIFO where the certificate is, at start, used to hang the daemon
/// before it bound anything (the open waits for a writer forever); a
/// device or a directory is refused as plainly, without reading it.
#[test]
fn a_fifo_device_or_directory_named_as_the_certificate_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let good = pki.server("good", 30);
    let fifo = dir.path().join("fifo.pem");
    mkfifo(&fifo);
    let zero = dir.path().join("zero.pem");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let table = [
        (fifo.clone(), good.key.clone(), "a FIFO", "tls.cert"),
        (zero, good.key.clone(), "a character device", "tls.cert"),
        (
            dir.path().to_owned(),
            good.key.clone(),
            "a directory",
            "tls.cert",
        ),
        (good.cert.clone(), fifo.clone(), "a FIFO", "tls.key"),
    ];
    for (cert, key, what, at) in table {
        let shown = format!("{} / {}", cert.display(), key.display());
        let Some(error) = load_error_within_wait(cert, key) else {
            release_fifo(&fifo);
            panic!("loading {shown} hung");
        };
        assert!(
            error.contains("is not a regular file") && error.contains(what),
            "{shown}: {error}"
        );
        assert!(error.contains(at), "{shown}: {error}");
    }
}

/// The failed rotations counted so far on listener `echo`.
async fn failed_rotations(metrics: SocketAddr) -> f64 {
    let figures = scrape(metrics).await;
    let key =
        "switchboard_tls_rotations_total{handler=\"echo\",listener=\"echo\",result=\"failed\"}";
    figures.get(key).copied().unwrap_or(0.0)
}

/// A FIFO swapped in for the certificate used to stop the file watch for
/// good: its re-read waited for a writer forever, so a renewal after it
/// was never served. Now the FIFO is one failed rotation (counted once,
/// not at every look), and the renewal after it is served.
#[tokio::test]
async fn a_fifo_swapped_in_for_the_certificate_does_not_stop_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let live = pki.server("live", 30);
    let server = TestServer::start(
        &[
            common::listener(
                "echo",
                "echo",
                &tls_table(&live.cert, &live.key, "check_interval = \"100ms\""),
            ),
            common::listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let (addr, metrics) = (server.addr("echo"), server.addr("metrics"));
    let first = leaf_of(&live.cert);
    // Served (and watched) before the swap: the route is built at the
    // server's first poll, which reads the files too.
    tls_connect(addr, client_config(&pki.ca_pem, None))
        .await
        .unwrap();
    replace(&live.cert, mkfifo);

    let deadline = Instant::now() + WAIT;
    while failed_rotations(metrics).await < 1.0 {
        if Instant::now() > deadline {
            release_fifo(&live.cert);
            panic!("the FIFO was never reported: the watch is stuck opening it");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several looks later: still the one failure of the one change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failed_rotations(metrics).await, 1.0);
    // The old pair is served meanwhile.
    let stream = tls_connect(addr, client_config(&pki.ca_pem, None))
        .await
        .unwrap();
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(served, first);

    // The renewal comes: it is served.
    let renewed = pki.server("renewed", 60);
    replace(&live.key, |tmp| {
        fs::copy(&renewed.key, tmp).unwrap();
    });
    replace(&live.cert, |tmp| {
        fs::copy(&renewed.cert, tmp).unwrap();
    });
    let want = leaf_of(&renewed.cert);
    let deadline = Instant::now() + WAIT;
    loop {
        let stream = tls_connect(addr, client_config(&pki.ca_pem, None))
            .await
            .unwrap();
        if stream.get_ref().1.peer_certificates().unwrap()[0].as_ref() == want.as_slice() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewal after the FIFO was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client certificate's subject is the client's words (its CA signed
/// them, but nothing checks what a CN holds): newlines, quotes, terminal
/// escapes and ten kilobytes of it reach every log line of the
/// connection escaped, and cut to a bounded length.
#[test]
fn a_hostile_client_certificate_subject_is_escaped_and_bounded_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let cn = format!("evil\n\"forged=1\" \u{1b}[31mred{}", "A".repeat(10_000));
    let mallory = pki.client("mallory", &cn);
    let config = dir.path().join("tls.toml");
    fs::write(
        &config,
        common::listener(
            "echo",
            "echo",
            &tls_table(
                &pair.cert,
                &pair.key,
                &format!("client_ca = '{}'", pki.ca_pem.display()),
            ),
        ),
    )
    .unwrap();
    let mut daemon = crate::cli::Daemon::start(&config);
    let addr = daemon.addr("echo");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut stream = tls_connect(addr, client_config(&pki.ca_pem, Some(&mallory)))
            .await
            .unwrap();
        stream.write_all(b"hi\n").await.unwrap();
        let mut reply = [0u8; 3];
        timeout(WAIT, stream.read_exact(&mut reply))
            .await
            .expect("no echo")
            .unwrap();
        stream.shutdown().await.unwrap();
    });
    let line = daemon.wait_for_log("closed");
    let shown = &line[..line.floor_char_boundary(400)];
    assert!(
        line.contains("client_cert=\"CN=evil\\n\\\"forged=1\\\" \\u{1b}[31mred"),
        "{shown}"
    );
    assert!(!line.contains('\u{1b}'), "a raw escape in {shown}");
    assert!(
        line.len() < 1024,
        "a log line of {} bytes: {shown}",
        line.len()
    );
    assert!(line.contains("more bytes]"), "not cut: {shown}");
}

/// A ClientHello sent a byte at a time (each well within any read
/// timeout) still ends at `handshake_timeout`: the bound is on the whole
/// handshake, not on each read.
#[tokio::test]
async fn a_client_hello_trickled_a_byte_at_a_time_ends_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let server = TestServer::start(&common::listener(
        "echo",
        "echo",
        &tls_table(&pair.cert, &pair.key, "handshake_timeout = \"1s\""),
    ));
    let mut stream = connect(server.addr("echo")).await;
    // A record header announcing a 512-byte ClientHello, then its bytes,
    // one every 50 ms: it would take 25 s to finish.
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    hello.resize(5 + 512, 0x03);
    let started = Instant::now();
    let mut closed_after = None;
    for byte in hello {
        if stream.write_all(&[byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(50), stream.read(&mut buf)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
        assert!(started.elapsed() < WAIT, "still open after {WAIT:?}");
    }
    let took = closed_after.expect("the whole trickled hello was taken");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
}

/// Connections in the middle of a handshake do not hold up shutdown: they
/// end as soon as it begins, not at their `handshake_timeout`.
#[tokio::test]
async fn connections_mid_handshake_end_at_once_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let server = TestServer::start(&common::listener(
        "echo",
        "echo",
        &tls_table(&pair.cert, &pair.key, "handshake_timeout = \"60s\""),
    ));
    let addr = server.addr("echo");
    let mut pending = Vec::new();
    for n in 0..50u8 {
        let mut stream = common::connect_from(10 + n % 5, addr).await;
        // Half a record header: the handshake waits for the rest.
        stream.write_all(&[0x16, 0x03]).await.unwrap();
        pending.push(stream);
    }
    // Every connection is in its handshake by now.
    let deadline = Instant::now() + WAIT;
    while server.handle().status().connections < 50 {
        assert!(Instant::now() < deadline, "{:?}", server.handle().status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let report = timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown waited for the handshakes");
    assert_eq!(report.abandoned, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for mut stream in pending {
        let mut buf = [0u8; 16];
        let read = timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("left open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

/// On a port with `mode = "optional"`, a client that sends nothing must be
/// closed at `first_message_timeout`, as on a plaintext port. It was held
/// twice as long: `secure` peeked for the first byte for the whole
/// `first_message_timeout`, then handed the plaintext stream to a
/// connection whose own first-message deadline started only then (the
/// connection now counts from the accept).
#[tokio::test]
async fn a_silent_client_on_an_optional_port_is_closed_at_the_first_message_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let server = TestServer::start(&common::listener(
        "echo",
        "echo",
        &format!(
            "first_message_timeout = \"2s\"\n{}",
            tls_table(&pair.cert, &pair.key, "mode = \"optional\"")
        ),
    ));
    let mut silent = connect(server.addr("echo")).await;
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = timeout(WAIT, silent.read_to_end(&mut got))
        .await
        .expect("still open");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3000),
        "closed after {took:?}, with {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// True when a client presenting `client` is served an echo on `addr`
/// (in TLS 1.3 a refused client learns of it at its first read).
async fn served_with(addr: SocketAddr, ca: &Path, client: &Pair) -> bool {
    let exchange = async {
        let mut stream = tls_connect(addr, client_config(ca, Some(client))).await?;
        stream.write_all(b"in?\n").await?;
        let mut buf = [0u8; 4];
        let n = timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("no answer")?;
        Ok::<bool, std::io::Error>(n > 0)
    };
    exchange.await.unwrap_or(false)
}

/// A CA taken out of `client_ca` (its key leaked, say) must stop being
/// trusted at the reload that follows, as the docs say a SIGHUP re-reads
/// the files "with the rest of the config". It used to be trusted until a
/// restart: an unchanged listener's reload re-read the pair only, and the
/// verifier built at start kept the old CAs.
#[tokio::test]
async fn a_ca_removed_from_client_ca_is_not_trusted_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let leaked = Pki::new(dir.path(), "Leaked CA");
    let pair = pki.server("server", 30);
    let alice = pki.client("alice", "alice");
    let mallory = leaked.client("mallory", "mallory");
    let bundle = dir.path().join("client-cas.pem");
    let both = [&pki.ca_pem, &leaked.ca_pem]
        .map(|p| fs::read_to_string(p).unwrap())
        .concat();
    fs::write(&bundle, both).unwrap();
    let config = common::listener(
        "echo",
        "echo",
        &tls_table(
            &pair.cert,
            &pair.key,
            &format!("client_ca = '{}'", bundle.display()),
        ),
    );
    let mut server = TestServer::start(&config);
    let ca = &pki.ca_pem;
    assert!(served_with(server.addr("echo"), ca, &alice).await);
    assert!(served_with(server.addr("echo"), ca, &mallory).await);

    replace(&bundle, |tmp| {
        fs::copy(&pki.ca_pem, tmp).unwrap();
    });
    server.reload(&config).await.unwrap();
    let addr = server.addr("echo");
    assert!(served_with(addr, ca, &alice).await, "the kept CA's client");
    assert!(
        !served_with(addr, ca, &mallory).await,
        "a client of the CA taken out of client_ca was still served after the reload"
    );
}

/// A client chain of `n` bogus intermediates, all named `CN=X` and each
/// self-signed by a key of its own, under a leaf issued by the first: no
/// CA signed any of it, yet a verifier that tries every candidate issuer
/// checks a signature for each.
fn bogus_chain(dir: &Path, n: usize) -> Pair {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let named_x = || {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "X");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    };
    let issuers: Vec<CertifiedIssuer<'static, KeyPair>> = (0..n)
        .map(|_| CertifiedIssuer::self_signed(named_x(), KeyPair::generate().unwrap()).unwrap())
        .collect();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "mallory");
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuers[0]).unwrap();
    let mut pem = cert.pem();
    for issuer in &issuers {
        pem.push_str(&issuer.pem());
    }
    let pair = Pair {
        cert: dir.join("bogus-chain.pem"),
        key: dir.join("bogus-chain.key"),
    };
    fs::write(&pair.cert, pem).unwrap();
    fs::write(&pair.key, key.serialize_pem()).unwrap();
    pair
}

/// Any client of a `client_ca` listener, with no certificate anyone
/// signed, could make each handshake cost the server tens of milliseconds
/// of CPU (about 70 ms in a release build, against 0.25 ms for a whole
/// handshake) on an async worker: a chain of 100 intermediates that all
/// name the same issuer sends the verifier through a signature check for
/// each candidate. A chain longer than any real client PKI's is now
/// refused before it is looked at.
#[tokio::test]
async fn a_client_chain_of_many_bogus_intermediates_is_refused_before_it_costs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let alice = pki.client("alice", "alice");
    let bogus = bogus_chain(dir.path(), 100);
    let server = TestServer::start(
        &[
            common::listener(
                "echo",
                "echo",
                &tls_table(
                    &pair.cert,
                    &pair.key,
                    &format!("client_ca = '{}'", pki.ca_pem.display()),
                ),
            ),
            common::listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let addr = server.addr("echo");
    let ca = &pki.ca_pem;
    assert!(served_with(addr, ca, &alice).await);
    let started = Instant::now();
    for _ in 0..2 {
        assert!(
            !served_with(addr, ca, &bogus).await,
            "a bogus chain was served"
        );
    }
    let took = started.elapsed();
    let figures = scrape(server.addr("metrics")).await;
    let refused = "switchboard_tls_handshakes_total{handler=\"echo\",listener=\"echo\",result=\"bad_client_certificate\"}";
    assert_eq!(figures.get(refused).copied(), Some(2.0));
    // Each refusal is a handshake's work, not a hundred signature checks.
    assert!(
        took < Duration::from_millis(500),
        "2 bogus chains took {took:?}"
    );
}

/// A ClientHello of 40 KB that never ends: rustls would hold it (up to
/// 64 KiB a connection, 74 KiB of RSS measured) until `handshake_timeout`,
/// for any client. A handshake without client certificates now reads at
/// most 16 KiB: this one is refused at once, as not TLS.
#[tokio::test]
async fn an_endless_client_hello_is_refused_when_it_passes_what_a_handshake_needs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Test CA");
    let pair = pki.server("server", 30);
    let server = TestServer::start(
        &[
            common::listener(
                "echo",
                "echo",
                &tls_table(&pair.cert, &pair.key, "handshake_timeout = \"5s\""),
            ),
            common::listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    // A handshake message announcing 65 000 bytes, 40 000 of them sent in
    // records of 16 KiB.
    let mut body = vec![0x01, 0x00, 0xfd, 0xe8];
    body.resize(40_000, 0x03);
    let mut records = Vec::new();
    for chunk in body.chunks(16_384) {
        records.extend_from_slice(&[0x16, 0x03, 0x01]);
        records.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        records.extend_from_slice(chunk);
    }
    let mut stream = connect(server.addr("echo")).await;
    let started = Instant::now();
    let _ = stream.write_all(&records).await;
    let mut buf = [0u8; 64];
    let read = timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("still open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "held for {took:?}");
    let figures = scrape(server.addr("metrics")).await;
    let not_tls =
        "switchboard_tls_handshakes_total{handler=\"echo\",listener=\"echo\",result=\"not_tls\"}";
    assert_eq!(figures.get(not_tls).copied(), Some(1.0));
}
