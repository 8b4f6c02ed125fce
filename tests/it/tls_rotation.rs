//! Rotation under load (issue 22): while 8 clients run keep-alive HTTPS
//! requests and fresh handshakes in a loop against a real daemon, the
//! certificate files are replaced 10 times, 5 by a file change and 5 by
//! SIGHUP, with a broken replacement on each path. The served
//! certificate's serial is read before and after each replacement; no
//! request and no handshake fails, two downloads opened before the first
//! replacement finish byte-exact, and the daemon's metrics and log agree.
//!
//! How the replacements are made deterministic:
//!
//! - The files are replaced the way the kubelet updates a Secret volume:
//!   `cert` and `key` are `DIR/current/cert.pem` and `DIR/current/key.pem`,
//!   `current` is a symlink to a directory holding one whole pair, and a
//!   replacement makes a new symlink and renames it over `current`. Both
//!   files change in one rename, so the watch (which looks every 100 ms)
//!   never sees a new certificate with an old key: each good replacement
//!   is exactly one `ok` rotation, and the one broken pair (a certificate
//!   with a key that does not go with it) exactly one `failed`. Two
//!   renames of the files themselves would leave a window in which a look
//!   sees a mismatched pair, counted and logged as a failure.
//! - The two paths are two download listeners of the same daemon, each
//!   with its own files: `watched` has `check_interval = "100ms"` and is
//!   only ever changed by file changes; `hup` has `check_interval = "0s"`
//!   and is only changed by SIGHUP. On one listener with both, a SIGHUP
//!   after a change races the watch (whichever looks first rotates, and
//!   nothing would show that SIGHUP did it); here the test checks that
//!   `hup` still serves the old certificate after its files changed and
//!   until SIGHUP's reload is logged.
//! - A broken pair seen by the watch keeps the old certificate served and
//!   counts `switchboard_tls_rotations_total{result="failed"}` once (one
//!   log line, not one a look). A broken pair at SIGHUP makes the whole
//!   reload fail (`switchboard_reloads_total{result="failed"}`), as
//!   docs/tls.md says, and the old certificate stays served too.
//!
//! The clients disable TLS session resumption, so every handshake is a
//! full one that carries the certificate served at that moment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::certs::{Pair, Pki};
use crate::cli::Daemon;
use crate::common;
use crate::metrics::scrape;

/// Clients that run keep-alive requests and fresh handshakes.
const CLIENTS: usize = 8;
/// Replacements by each path (file change, SIGHUP).
const REPLACEMENTS: u64 = 5;
/// The small file every client requests.
const SMALL_BYTES: usize = 4096;
/// The download that stays open across every replacement.
const BIG_BYTES: usize = 8 << 20;
/// The download reads at most this much before the replacements are done.
const BIG_HELD_BACK: usize = 1 << 20;
/// Bound on any one read, write, connect or handshake.
const IO_LIMIT: Duration = Duration::from_secs(10);
/// Bound on a rotation being seen, or a figure settling.
const ROTATION_LIMIT: Duration = Duration::from_secs(5);

/// The bytes of the small and the big file.
fn content(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// A listener's certificate directory: one subdirectory per pair, and
/// `current`, the symlink the config's paths go through.
struct Site {
    name: &'static str,
    dir: PathBuf,
}

impl Site {
    fn new(root: &Path, name: &'static str) -> Site {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Site { name, dir }
    }

    /// Puts `cert` and `key` in the subdirectory `generation`.
    fn add(&self, generation: &str, cert: &Path, key: &Path) {
        let target = self.dir.join(generation);
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(cert, target.join("cert.pem")).unwrap();
        std::fs::copy(key, target.join("key.pem")).unwrap();
    }

    /// Points `current` at `generation` in one rename, as the kubelet
    /// swaps a Secret volume's `..data` symlink.
    fn point(&self, generation: &str) {
        let new = self.dir.join("current.new");
        let _ = std::fs::remove_file(&new);
        std::os::unix::fs::symlink(generation, &new).unwrap();
        std::fs::rename(&new, self.dir.join("current")).unwrap();
    }

    fn table(&self, check_interval: &str) -> String {
        format!(
            "[listener.tls]\ncert = '{}'\nkey = '{}'\ncheck_interval = \"{check_interval}\"\n",
            self.dir.join("current/cert.pem").display(),
            self.dir.join("current/key.pem").display()
        )
    }
}

/// A client config trusting `ca`, with resumption off: every handshake
/// is a full one, and shows the certificate served now.
fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut config = (*crate::certs::client_config(ca, None)).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Connects and completes a TLS handshake as `localhost`, within [`IO_LIMIT`].
async fn handshake(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from("localhost").unwrap();
    let tcp = timeout(IO_LIMIT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    timeout(
        IO_LIMIT,
        TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake: {e}"))
}

/// The serial number of the leaf certificate a connection was served.
fn served_serial(stream: &TlsStream<TcpStream>) -> u64 {
    let (_, conn) = stream.get_ref();
    let leaf = &conn.peer_certificates().expect("no certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("not X.509");
    let raw = cert.tbs_certificate.raw_serial();
    assert!(raw.len() <= 9, "serial {raw:?} is not one of ours");
    raw.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
}

/// The head of an HTTP response.
#[derive(Debug)]
struct Head {
    status: u16,
    length: usize,
    close: bool,
}

/// HTTP/1.1 over one TLS connection; bytes read past a head are kept.
struct Https {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Https {
    async fn open(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Result<Https, String> {
        Ok(Https {
            stream: handshake(addr, config).await?,
            buf: Vec::new(),
        })
    }

    async fn request(&mut self, path: &str, close: bool) -> Result<Head, String> {
        let connection = if close { "Connection: close\r\n" } else { "" };
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{connection}\r\n");
        timeout(IO_LIMIT, self.stream.write_all(request.as_bytes()))
            .await
            .map_err(|_| "request write timed out".to_owned())?
            .map_err(|e| format!("request write: {e}"))?;
        self.head().await
    }

    /// Reads up to `max` more bytes into `buf`; an error at end of stream.
    async fn fill(&mut self, max: usize) -> Result<(), String> {
        let mut chunk = vec![0u8; max];
        let n = timeout(IO_LIMIT, self.stream.read(&mut chunk))
            .await
            .map_err(|_| "read timed out".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes", self.buf.len()));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn head(&mut self) -> Result<Head, String> {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            if self.buf.len() > 16 * 1024 {
                return Err("a head over 16 KiB".into());
            }
            self.fill(16 * 1024).await?;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {text:?}"))?;
        let mut head = Head {
            status,
            length: 0,
            close: false,
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("bad header {line:?}"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                head.length = value.parse().map_err(|_| format!("bad {line:?}"))?;
            } else if name.eq_ignore_ascii_case("connection") {
                head.close = value.eq_ignore_ascii_case("close");
            }
        }
        Ok(head)
    }

    /// The next at most `max` bytes of a body.
    async fn body_part(&mut self, max: usize) -> Result<Vec<u8>, String> {
        if self.buf.is_empty() {
            self.fill(max).await?;
        }
        let n = max.min(self.buf.len());
        Ok(self.buf.drain(..n).collect())
    }

    /// GETs `path`: its head and whole body (expected to be small).
    async fn get(&mut self, path: &str, close: bool) -> Result<(Head, Vec<u8>), String> {
        let head = self.request(path, close).await?;
        let mut body = Vec::with_capacity(head.length);
        while body.len() < head.length {
            let part = self.body_part(head.length - body.len()).await?;
            body.extend_from_slice(&part);
        }
        Ok((head, body))
    }
}

/// What the clients did, and what went wrong.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    /// Completed handshakes, per listener.
    handshakes: Mutex<HashMap<&'static str, u64>>,
    failures: Mutex<Vec<String>>,
    /// Serials the fresh handshakes were served, per listener.
    serials: Mutex<HashMap<&'static str, Vec<u64>>>,
}

impl Tally {
    fn handshake(&self, listener: &'static str) {
        *self.handshakes.lock().unwrap().entry(listener).or_default() += 1;
    }

    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// GETs the small file on `conn` and checks it.
async fn small(conn: &mut Https, expected: &[u8], close: bool) -> Result<Head, String> {
    let (head, body) = conn.get("/small.bin", close).await?;
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    if body != expected {
        return Err(format!("a body of {} bytes, not the file", body.len()));
    }
    Ok(head)
}

/// One client, until `stop`: a GET on its keep-alive connection, then a
/// fresh handshake (whose served serial is noted) with a GET on it.
async fn client(
    listener: &'static str,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let expected = content(SMALL_BYTES, 1);
    let mut keep: Option<Https> = None;
    while !stop.load(Ordering::Relaxed) {
        if keep.is_none() {
            match Https::open(addr, &config).await {
                Ok(conn) => {
                    tally.handshake(listener);
                    keep = Some(conn);
                }
                Err(e) => tally.fail(format!("{listener}: keep-alive handshake: {e}")),
            }
        }
        if let Some(conn) = keep.as_mut() {
            match small(conn, &expected, false).await {
                Ok(head) => {
                    tally.requests.fetch_add(1, Ordering::Relaxed);
                    if head.close {
                        keep = None;
                    }
                }
                Err(e) => {
                    tally.fail(format!("{listener}: keep-alive request: {e}"));
                    keep = None;
                }
            }
        }
        match Https::open(addr, &config).await {
            Ok(mut fresh) => {
                tally.handshake(listener);
                let serial = served_serial(&fresh.stream);
                (tally.serials.lock().unwrap())
                    .entry(listener)
                    .or_default()
                    .push(serial);
                match small(&mut fresh, &expected, true).await {
                    Ok(_) => {
                        tally.requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tally.fail(format!("{listener}: fresh request: {e}")),
                }
            }
            Err(e) => tally.fail(format!("{listener}: fresh handshake: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Progress of a download that must stay open across the replacements.
#[derive(Default)]
struct Download {
    read: AtomicUsize,
}

/// GETs the big file before the first replacement and reads it slowly,
/// holding its last [`BIG_HELD_BACK`] bytes back until `done`; then reads
/// the rest. Checks every byte.
async fn download(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    started: tokio::sync::oneshot::Sender<()>,
    done: Arc<AtomicBool>,
    progress: Arc<Download>,
) -> Result<(), String> {
    let expected = content(BIG_BYTES, 7);
    let mut conn = Https::open(addr, &config).await?;
    let head = conn.request("/big.bin", true).await?;
    if head.status != 200 || head.length != BIG_BYTES {
        return Err(format!("{head:?}"));
    }
    let _ = started.send(());
    let mut at = 0;
    while at < BIG_BYTES {
        let held = !done.load(Ordering::Relaxed);
        if held && at >= BIG_BYTES - BIG_HELD_BACK {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let want = if held { 16 * 1024 } else { BIG_BYTES - at };
        let part = conn.body_part(want.min(BIG_BYTES - at)).await?;
        if part[..] != expected[at..at + part.len()] {
            return Err(format!("the bytes at {at} differ"));
        }
        at += part.len();
        progress.read.store(at, Ordering::Relaxed);
        if held {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// The serial `addr` serves now, read by a fresh handshake (counted).
async fn serial_now(
    site: &Site,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    tally: &Tally,
) -> u64 {
    let stream = handshake(addr, config)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", site.name));
    tally.handshake(site.name);
    served_serial(&stream)
}

/// Reads the served serial until it is `new` (every one seen must be
/// `old` or `new`), within [`ROTATION_LIMIT`].
async fn until_serial(
    site: &Site,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    tally: &Tally,
    old: u64,
    new: u64,
) {
    let deadline = Instant::now() + ROTATION_LIMIT;
    loop {
        let serial = serial_now(site, addr, config, tally).await;
        if serial == new {
            return;
        }
        assert_eq!(
            serial, old,
            "{}: neither the old nor the new serial",
            site.name
        );
        assert!(
            Instant::now() < deadline,
            "{}: serial {new} not served within {ROTATION_LIMIT:?}",
            site.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The figures of the daemon's metrics listener whose name is `name`,
/// keyed by the rest (`{labels}`).
async fn figures_of(metrics: SocketAddr, name: &str) -> HashMap<String, f64> {
    scrape(metrics)
        .await
        .into_iter()
        .filter_map(|(key, value)| Some((key.strip_prefix(name)?.to_owned(), value)))
        .filter(|(labels, _)| labels.starts_with('{'))
        .collect()
}

/// A TLS figure of `listener` (a download listener) with `result`.
fn result(figures: &HashMap<String, f64>, listener: &str, result: &str) -> f64 {
    let key = format!("{{handler=\"download\",listener=\"{listener}\",result=\"{result}\"}}");
    figures.get(&key).copied().unwrap_or(0.0)
}

/// Runs a blocking step on the daemon (its log is read with std channels).
fn on_daemon<T>(daemon: &mut Daemon, step: impl FnOnce(&mut Daemon) -> T) -> T {
    tokio::task::block_in_place(|| step(daemon))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotate_ten_times_under_load_without_a_failed_request_or_handshake() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Rotation CA");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("small.bin"), content(SMALL_BYTES, 1)).unwrap();
    std::fs::write(root.join("big.bin"), content(BIG_BYTES, 7)).unwrap();

    // Generations 0..=5 of each site (serials 100.. and 200..), and a
    // broken one: a new certificate with another pair's key.
    let sites = [
        Site::new(dir.path(), "watched"),
        Site::new(dir.path(), "hup"),
    ];
    let mut serials: HashMap<&str, Vec<u64>> = HashMap::new();
    for (base, site) in [100, 200].into_iter().zip(&sites) {
        for generation in 0..=REPLACEMENTS {
            let serial = base + generation;
            let Pair { cert, key } = pki.server_with_serial(&format!("s{serial}"), 30, serial);
            site.add(&format!("gen{generation}"), &cert, &key);
            serials.entry(site.name).or_default().push(serial);
        }
        let Pair { cert, .. } = pki.server_with_serial(&format!("s{}", base + 99), 30, base + 99);
        let other = pki.server_with_serial(&format!("s{base}-other"), 30, base + 98);
        site.add("broken", &cert, &other.key);
        site.point("gen0");
    }
    let [watched, hup] = &sites;

    let config_path = dir.path().join("rotation.toml");
    let listener_of = |site: &Site, interval: &str| {
        common::listener(
            site.name,
            "download",
            &format!("root = '{}'\n{}", root.display(), site.table(interval)),
        )
    };
    std::fs::write(
        &config_path,
        [
            "[server]\nlog_lines_per_second = 1000000\n\n".to_owned(),
            listener_of(watched, "100ms"),
            listener_of(hup, "0s"),
            common::listener("metrics", "metrics", ""),
        ]
        .concat(),
    )
    .unwrap();
    let mut daemon = on_daemon_start(&config_path);
    let addr = |site: &Site| daemon.addr(site.name);
    let (watched_addr, hup_addr, metrics_addr) = (addr(watched), addr(hup), daemon.addr("metrics"));
    let config = client_config(&pki.ca_pem);
    let tally = Arc::new(Tally::default());

    // Two downloads (one per listener), started before the first replacement.
    let done = Arc::new(AtomicBool::new(false));
    let mut downloads = Vec::new();
    for (site, site_addr) in sites.iter().zip([watched_addr, hup_addr]) {
        let (started, is_started) = tokio::sync::oneshot::channel();
        let progress = Arc::new(Download::default());
        let task = tokio::spawn(download(
            site_addr,
            config.clone(),
            started,
            done.clone(),
            progress.clone(),
        ));
        timeout(IO_LIMIT, is_started)
            .await
            .expect("the download did not start")
            .expect("the download failed before its head");
        tally.handshake(site.name);
        downloads.push((task, progress));
    }
    // The clients: half on each listener.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (name, site_addr) = if i % 2 == 0 {
                (watched.name, watched_addr)
            } else {
                (hup.name, hup_addr)
            };
            tokio::spawn(client(
                name,
                site_addr,
                config.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    // Let them warm up: every client has made requests before the first
    // replacement.
    let deadline = Instant::now() + ROTATION_LIMIT;
    while tally.requests.load(Ordering::Relaxed) < 4 * CLIENTS as u64 {
        assert!(Instant::now() < deadline, "the clients made no requests");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_first = downloads
        .iter()
        .map(|(_, p)| p.read.load(Ordering::Relaxed))
        .collect::<Vec<_>>();

    // Five replacements by file change, the broken one after the second.
    let ours = &serials[watched.name];
    for generation in 1..=REPLACEMENTS as usize {
        let (old, new) = (ours[generation - 1], ours[generation]);
        assert_eq!(
            serial_now(watched, watched_addr, &config, &tally).await,
            old
        );
        if generation == 3 {
            watched.point("broken");
            let deadline = Instant::now() + ROTATION_LIMIT;
            loop {
                let rotations = figures_of(metrics_addr, "switchboard_tls_rotations_total").await;
                if result(&rotations, watched.name, "failed") >= 1.0 {
                    break;
                }
                assert!(Instant::now() < deadline, "the broken pair was not counted");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Three more looks of the watch: still the old one, still one failure.
            tokio::time::sleep(Duration::from_millis(350)).await;
            assert_eq!(
                serial_now(watched, watched_addr, &config, &tally).await,
                old,
                "a broken pair replaced the served one"
            );
            let rotations = figures_of(metrics_addr, "switchboard_tls_rotations_total").await;
            assert_eq!(result(&rotations, watched.name, "failed"), 1.0);
        }
        watched.point(&format!("gen{generation}"));
        until_serial(watched, watched_addr, &config, &tally, old, new).await;
    }

    // Five replacements by SIGHUP, the broken one after the second.
    let ours = &serials[hup.name];
    for generation in 1..=REPLACEMENTS as usize {
        let (old, new) = (ours[generation - 1], ours[generation]);
        if generation == 3 {
            hup.point("broken");
            on_daemon(&mut daemon, |d| {
                d.signal("HUP");
                d.wait_for_log("reload failed");
            });
            assert_eq!(
                serial_now(hup, hup_addr, &config, &tally).await,
                old,
                "a broken pair replaced the served one"
            );
        }
        assert_eq!(serial_now(hup, hup_addr, &config, &tally).await, old);
        hup.point(&format!("gen{generation}"));
        // No watch on this listener: the old pair until the reload.
        assert_eq!(
            serial_now(hup, hup_addr, &config, &tally).await,
            old,
            "rotated before SIGHUP"
        );
        on_daemon(&mut daemon, |d| {
            d.signal("HUP");
            d.wait_for_log("reloaded:");
        });
        assert_eq!(serial_now(hup, hup_addr, &config, &tally).await, new);
    }
    let replaced_in = began.elapsed();

    // The downloads were open throughout; now they finish, byte-exact.
    for ((_, progress), first) in downloads.iter().zip(&at_first) {
        let now = progress.read.load(Ordering::Relaxed);
        assert!(
            now < BIG_BYTES && now > *first,
            "a download was not open and moving across the replacements: {first} then {now}"
        );
    }
    done.store(true, Ordering::Relaxed);
    for (task, _) in downloads {
        timeout(IO_LIMIT, task)
            .await
            .expect("a download did not finish")
            .unwrap()
            .unwrap_or_else(|e| panic!("a download failed: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    for task in clients {
        timeout(IO_LIMIT, task)
            .await
            .expect("a client did not stop")
            .unwrap();
    }

    let failures = tally.failures.lock().unwrap().clone();
    let requests = tally.requests.load(Ordering::Relaxed);
    let handshakes = tally.handshakes.lock().unwrap().clone();
    eprintln!(
        "{requests} requests, handshakes {handshakes:?}, replacements done in {replaced_in:?}, \
         {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Every serial a fresh handshake saw was a good one of its listener.
    for (listener, seen) in tally.serials.lock().unwrap().iter() {
        let good = &serials[listener];
        assert!(
            seen.iter().all(|s| good.contains(s)),
            "{listener} served a serial not among {good:?}"
        );
        assert!(
            seen.len() > 10,
            "{listener}: only {} handshakes",
            seen.len()
        );
    }

    // The daemon's view: every handshake ok (as many as the clients made,
    // once the last is counted), ten rotations and one failed, one failed
    // reload among six.
    let deadline = Instant::now() + ROTATION_LIMIT;
    let tls = loop {
        let tls = figures_of(metrics_addr, "switchboard_tls_handshakes_total").await;
        let settled = sites
            .iter()
            .all(|site| result(&tls, site.name, "ok") == handshakes[site.name] as f64);
        if settled || Instant::now() > deadline {
            break tls;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for site in &sites {
        assert_eq!(
            result(&tls, site.name, "ok"),
            handshakes[site.name] as f64,
            "{}: handshakes counted ok",
            site.name
        );
    }
    let not_ok: Vec<_> = (tls.iter())
        .filter(|(labels, value)| !labels.contains("result=\"ok\"") && **value > 0.0)
        .collect();
    assert!(not_ok.is_empty(), "failed handshakes: {not_ok:?}");
    let rotations = figures_of(metrics_addr, "switchboard_tls_rotations_total").await;
    assert_eq!(result(&rotations, watched.name, "ok"), REPLACEMENTS as f64);
    assert_eq!(result(&rotations, watched.name, "failed"), 1.0);
    assert_eq!(result(&rotations, hup.name, "ok"), REPLACEMENTS as f64);
    assert_eq!(result(&rotations, hup.name, "failed"), 0.0);
    let reloads = figures_of(metrics_addr, "switchboard_reloads_total").await;
    assert_eq!(reloads.get("{result=\"ok\"}"), Some(&(REPLACEMENTS as f64)));
    assert_eq!(reloads.get("{result=\"failed\"}"), Some(&1.0));
    // And its log: one line per rotation, one for the broken pair seen by the watch.
    let log = on_daemon(&mut daemon, |d| d.log_now().to_vec());
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("certificate rotated"), 2 * REPLACEMENTS as usize);
    assert_eq!(count("new certificate not loaded"), 1);
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "took {:?}",
        began.elapsed()
    );
}

/// Starts the daemon on `config` (blocking until its table is printed).
fn on_daemon_start(config: &Path) -> Daemon {
    tokio::task::block_in_place(|| Daemon::start(config))
}

/// One listener with both paths: reloads (as SIGHUP makes them,
/// in-process) run back to back for 150 ms after each replacement while
/// the watch looks every 100 ms. Each replacement is one `ok` rotation,
/// and the newest pair is served after each. (`ServedPair::reload` does
/// not serialize its load-compare-swap, so a look that loads the same new
/// pair at the same moment as a reload could count it twice; the window
/// is a load's length, and 200 replacements here did not hit it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_racing_the_watch_counts_one_rotation_per_replacement() {
    const ROUNDS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Race CA");
    let site = Site::new(dir.path(), "raced");
    for generation in 0..=ROUNDS {
        let serial = 300 + generation;
        let Pair { cert, key } = pki.server_with_serial(&format!("r{serial}"), 30, serial);
        site.add(&format!("gen{generation}"), &cert, &key);
    }
    site.point("gen0");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let toml = [
        common::listener(
            site.name,
            "download",
            &format!("root = '{}'\n{}", root.display(), site.table("100ms")),
        ),
        common::listener("metrics", "metrics", ""),
    ]
    .concat();
    let mut server = common::TestServer::start(&toml);
    let config = client_config(&pki.ca_pem);
    let tally = Tally::default();
    // The pair is loaded when the server task starts running: gen0 first.
    assert_eq!(
        serial_now(&site, server.addr(site.name), &config, &tally).await,
        300
    );
    for generation in 1..=ROUNDS {
        site.point(&format!("gen{generation}"));
        let until = Instant::now() + Duration::from_millis(150);
        while Instant::now() < until {
            server.reload(&toml).await.unwrap();
        }
        let served = serial_now(&site, server.addr(site.name), &config, &tally).await;
        assert_eq!(
            served,
            300 + generation,
            "round {generation}: a stale pair is served"
        );
    }
    let rotations = figures_of(server.addr("metrics"), "switchboard_tls_rotations_total").await;
    assert_eq!(
        result(&rotations, site.name, "ok"),
        ROUNDS as f64,
        "rotations counted for {ROUNDS} replacements"
    );
}
