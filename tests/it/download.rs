//! The `download` handler over real TCP: files (with and without a newline),
//! every refusal, listings, big files, clients that vanish, descriptor leaks,
//! GBK names and over-long names.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

use crate::common::{self, LIMIT, TestServer};

/// A `root = '...'` line for `dir`, as a TOML literal string.
fn root_key(dir: &Path) -> String {
    let path = dir.to_str().expect("temp dir path is not UTF-8");
    assert!(
        !path.contains('\'') && !path.contains('\n'),
        "temp dir path {path:?} cannot be a TOML literal string"
    );
    format!("root = '{path}'")
}

/// One download listener called `name` on `root`, with `extra` keys.
fn download_listener(name: &str, root: &Path, extra: &str) -> String {
    common::listener(name, "download", &format!("{}\n{extra}", root_key(root)))
}

/// Sends `request` as is (no half-close, like the seed client) and reads until the server closes.
async fn fetch(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = common::connect(addr).await;
    timeout(LIMIT, stream.write_all(request))
        .await
        .expect("send timed out")
        .expect("send failed");
    common::read_to_end(&mut stream).await
}

/// Asserts that `reply` is exactly one `ERR <reason>` line whose reason contains `keyword`.
fn assert_refused(reply: &[u8], keyword: &str, request: &str) {
    let text = String::from_utf8_lossy(reply);
    assert!(
        text.starts_with("ERR ") && text.ends_with('\n') && text.matches('\n').count() == 1,
        "{request:?}: expected one ERR line then EOF, got {text:?}"
    );
    let reason = text["ERR ".len()..].trim_end();
    assert!(!reason.is_empty(), "{request:?}: empty reason");
    assert!(
        reason.to_lowercase().contains(keyword),
        "{request:?}: reason {reason:?} does not mention {keyword:?}"
    );
}

/// A deterministic, non-repeating byte stream (splitmix64 words).
struct Pattern {
    counter: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    fn new(seed: u64) -> Self {
        Pattern {
            counter: seed,
            word: [0; 8],
            used: 8,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            if self.used == 8 {
                self.counter = self.counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.counter;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                self.word = (z ^ (z >> 31)).to_le_bytes();
                self.used = 0;
            }
            *byte = self.word[self.used];
            self.used += 1;
        }
    }

    /// The first `len` bytes of the stream of `seed`.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0; len];
        Pattern::new(seed).fill(&mut data);
        data
    }
}

/// Writes `len` bytes of the pattern of `seed` to `path`, 1 MiB at a time.
fn write_pattern_file(path: &Path, seed: u64, len: u64) {
    let mut file = fs::File::create(path).expect("create big file");
    let mut pattern = Pattern::new(seed);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).expect("chunk fits usize");
        pattern.fill(&mut chunk[..n]);
        file.write_all(&chunk[..n]).expect("write big file");
        left -= n as u64;
    }
    file.sync_all().expect("sync big file");
}

/// Downloads `name` and checks it against the pattern of `seed` while reading,
/// without buffering the file; the whole transfer is bounded by `limit`.
async fn download_and_verify(addr: SocketAddr, name: &str, seed: u64, len: u64, limit: Duration) {
    let transfer = async {
        let mut stream = common::connect(addr).await;
        stream
            .write_all(format!("{name}\n").as_bytes())
            .await
            .expect("send failed");
        let mut expected = Pattern::new(seed);
        let mut buf = vec![0u8; 64 * 1024];
        let mut want = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = stream.read(&mut buf).await.expect("read failed");
            if n == 0 {
                break;
            }
            assert!(
                total + n as u64 <= len,
                "{name}: more than {len} bytes received"
            );
            expected.fill(&mut want[..n]);
            if buf[..n] != want[..n] {
                let at = buf[..n]
                    .iter()
                    .zip(&want[..n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                panic!("{name}: byte {} differs from the file", total + at as u64);
            }
            total += n as u64;
        }
        assert_eq!(total, len, "{name}: file cut short");
    };
    timeout(limit, transfer)
        .await
        .expect("download did not finish in time");
}

/// Connects, asks for `name`, reads a little of it and drops the socket.
async fn read_a_little_and_vanish(addr: SocketAddr, name: &str, seed: u64) {
    let mut stream = common::connect(addr).await;
    timeout(LIMIT, stream.write_all(format!("{name}\n").as_bytes()))
        .await
        .expect("send timed out")
        .expect("send failed");
    let mut head = vec![0u8; 64 * 1024];
    timeout(LIMIT, stream.read_exact(&mut head))
        .await
        .expect("no data in time")
        .expect("read failed");
    assert_eq!(
        head,
        Pattern::bytes(seed, head.len()),
        "{name}: first bytes differ"
    );
    drop(stream);
}

/// A FIFO in the root. If the server ever blocks opening it for reading (a
/// regression), the test fails on its timeout; dropping this guard then
/// opens the write side once, without blocking, so the stuck blocking-pool
/// thread returns and the runtime can shut down instead of hanging the test.
struct Fifo(PathBuf);

impl Fifo {
    fn create(path: &Path) -> Fifo {
        let status = Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("cannot run mkfifo");
        assert!(
            status.success(),
            "mkfifo {} failed: {status}",
            path.display()
        );
        Fifo(path.to_owned())
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        // ENXIO (no reader waiting) is the normal case: nothing to unblock.
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
    }
}

async fn stop(server: TestServer) {
    let report = server.shutdown().await;
    assert_eq!(report.abandoned, 0, "connections still open at shutdown");
}

#[tokio::test]
async fn file_is_identical_with_and_without_newline() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = Pattern::bytes(1, 100_003);
    fs::write(root.path().join("data.bin"), &data).expect("write");
    fs::write(root.path().join("hello.txt"), b"hello, world\n").expect("write");
    fs::write(root.path().join("empty.txt"), b"").expect("write");
    fs::create_dir(root.path().join("sub")).expect("mkdir");
    fs::write(root.path().join("sub/inner.txt"), b"inner\n").expect("write");
    let server = TestServer::start(&download_listener("dl", root.path(), "chunk_size = 1000"));
    let addr = server.addr("dl");

    assert!(
        fetch(addr, b"data.bin\n").await == data,
        "data.bin with \\n differs"
    );
    assert!(
        fetch(addr, b"data.bin\r\n").await == data,
        "data.bin with \\r\\n differs"
    );
    // The seed tutorial's client: the name, no newline, then it just reads.
    assert!(
        fetch(addr, b"data.bin").await == data,
        "data.bin without newline differs"
    );
    assert_eq!(fetch(addr, b"hello.txt").await, b"hello, world\n");
    assert_eq!(fetch(addr, b"hello.txt\n").await, b"hello, world\n");
    assert_eq!(fetch(addr, b"sub/inner.txt\n").await, b"inner\n");
    assert_eq!(fetch(addr, b"empty.txt\n").await, b"");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_one_err_line_and_the_server_goes_on() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    // A sibling whose name starts like the root's: a prefix check on strings would let it in.
    let outside = base.path().join("rootx");
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    fs::create_dir(&outside).expect("mkdir");
    fs::write(base.path().join("x"), b"SECRET-X\n").expect("write");
    fs::write(outside.join("secret.txt"), b"SECRET-OUTSIDE\n").expect("write");
    fs::write(root.join("good.txt"), b"good\n").expect("write");
    fs::write(root.join(".hidden"), b"SECRET-HIDDEN\n").expect("write");
    fs::write(root.join("sub/.hidden"), b"SECRET-SUB-HIDDEN\n").expect("write");
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("escape")).expect("symlink");
    std::os::unix::fs::symlink("../rootx/secret.txt", root.join("escape-rel")).expect("symlink");
    std::os::unix::fs::symlink(&outside, root.join("escdir")).expect("symlink");
    let _fifo = Fifo::create(&root.join("fifo"));
    let server = TestServer::start(&download_listener("dl", &root, ""));
    let addr = server.addr("dl");

    let long_name = "a".repeat(300);
    let cases: &[(&[u8], &str)] = &[
        (b"../x", ".."),
        (b"sub/../../x", ".."),
        (b"/etc/passwd", "absolute"),
        (b"good\0.txt", "nul"),
        (b".hidden", "hidden"),
        (b"sub/.hidden", "hidden"),
        (b"escape", "outside"),
        (b"escape-rel", "outside"),
        (b"escdir/secret.txt", "outside"),
        (b"fifo", "not a regular file"),
        (b"missing.txt", "not found"),
        (b"good.txt/more", "not found"),
        (b"\xff\xfe.txt", "not found"),
        (long_name.as_bytes(), "too long"),
    ];
    let root_text = root.to_str().expect("UTF-8 path");
    for (name, keyword) in cases {
        let shown = String::from_utf8_lossy(name).into_owned();
        let mut request = name.to_vec();
        request.push(b'\n');
        let reply = fetch(addr, &request).await;
        assert_refused(&reply, keyword, &shown);
        let text = String::from_utf8_lossy(&reply);
        assert!(
            !text.contains("SECRET") && !text.contains("root:"),
            "{shown:?}: leaked content {text:?}"
        );
        assert!(
            !text.contains(root_text),
            "{shown:?}: reply names the root: {text:?}"
        );
        assert_eq!(
            fetch(addr, b"good.txt\n").await,
            b"good\n",
            "not served after {shown:?}"
        );
    }
    // Seed-style (no newline) refusals behave the same.
    assert_refused(&fetch(addr, b"../x").await, "..", "../x without newline");
    assert_refused(
        &fetch(addr, b"fifo").await,
        "not a regular file",
        "fifo without newline",
    );
    assert_eq!(fetch(addr, b"good.txt").await, b"good\n");
    stop(server).await;
}

#[tokio::test]
async fn allow_hidden_and_symlinks_inside_the_root_are_served() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::write(root.path().join(".hidden"), b"hidden content\n").expect("write");
    fs::create_dir(root.path().join("sub")).expect("mkdir");
    fs::write(root.path().join("sub/target.txt"), b"target content\n").expect("write");
    fs::write(root.path().join("sub/other.txt"), b"other\n").expect("write");
    std::os::unix::fs::symlink(
        root.path().join("sub/target.txt"),
        root.path().join("link-abs"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink("sub/target.txt", root.path().join("link-rel")).expect("symlink");
    std::os::unix::fs::symlink("sub", root.path().join("link-dir")).expect("symlink");
    let toml = format!(
        "{}{}",
        download_listener("open", root.path(), "allow_hidden = true"),
        download_listener("strict", root.path(), "")
    );
    let server = TestServer::start(&toml);
    let (open, strict) = (server.addr("open"), server.addr("strict"));

    assert_eq!(fetch(open, b".hidden\n").await, b"hidden content\n");
    assert_refused(
        &fetch(strict, b".hidden\n").await,
        "hidden",
        ".hidden on the strict listener",
    );
    for addr in [open, strict] {
        assert_eq!(fetch(addr, b"link-abs\n").await, b"target content\n");
        assert_eq!(fetch(addr, b"link-rel\n").await, b"target content\n");
        assert_eq!(
            fetch(addr, b"link-dir/target.txt\n").await,
            b"target content\n"
        );
        assert_eq!(fetch(addr, b"link-dir\n").await, b"other.txt\ntarget.txt\n");
    }
    stop(server).await;
}

#[tokio::test]
async fn listing_is_sorted_marks_directories_and_hides_dot_names() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    for dir in ["sub/deeper", "alpha", ".git"] {
        fs::create_dir_all(r.join(dir)).expect("mkdir");
    }
    for file in [
        "b.txt",
        "a.txt",
        "c.txt",
        ".env",
        "sub/inner.txt",
        "sub/.secret",
        ".git/config",
    ] {
        fs::write(r.join(file), b"x").expect("write");
    }
    fs::create_dir(r.join("empty")).expect("mkdir");
    let server = TestServer::start(&download_listener("dl", r, ""));
    let addr = server.addr("dl");

    let top = b"a.txt\nalpha/\nb.txt\nc.txt\nempty/\nsub/\n";
    assert_eq!(
        String::from_utf8_lossy(&fetch(addr, b"\n").await),
        String::from_utf8_lossy(top)
    );
    // An empty line with CRLF, and ".", name the root too.
    assert_eq!(
        String::from_utf8_lossy(&fetch(addr, b"\r\n").await),
        String::from_utf8_lossy(top)
    );
    assert_eq!(
        String::from_utf8_lossy(&fetch(addr, b".\n").await),
        String::from_utf8_lossy(top)
    );
    let sub = "deeper/\ninner.txt\n";
    assert_eq!(String::from_utf8_lossy(&fetch(addr, b"sub\n").await), sub);
    assert_eq!(String::from_utf8_lossy(&fetch(addr, b"sub/\n").await), sub);
    assert_eq!(String::from_utf8_lossy(&fetch(addr, b"sub").await), sub);
    assert_eq!(fetch(addr, b"empty\n").await, b"");
    assert_refused(&fetch(addr, b".git\n").await, "hidden", ".git");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_file_arrives_byte_identical() {
    const LEN: u64 = 100 * 1024 * 1024;
    const SEED: u64 = 100;
    let root = tempfile::tempdir().expect("tempdir");
    write_pattern_file(&root.path().join("big.bin"), SEED, LEN);
    let server = TestServer::start(&download_listener("dl", root.path(), ""));
    download_and_verify(server.addr("dl"), "big.bin", SEED, LEN, LIMIT * 2).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_file_does_not_affect_the_server() {
    const LEN: u64 = 32 * 1024 * 1024;
    const SEED: u64 = 32;
    let root = tempfile::tempdir().expect("tempdir");
    write_pattern_file(&root.path().join("big.bin"), SEED, LEN);
    fs::write(root.path().join("small.txt"), b"small\n").expect("write");
    let server = TestServer::start(&download_listener("dl", root.path(), ""));
    let addr = server.addr("dl");

    for _ in 0..3 {
        read_a_little_and_vanish(addr, "big.bin", SEED).await;
    }
    assert_eq!(fetch(addr, b"small.txt\n").await, b"small\n");
    download_and_verify(addr, "big.bin", SEED, LEN, LIMIT).await;
    stop(server).await;
}

/// Descriptors of this process whose target lies under `dir` (canonical):
/// files and directories opened in a test's own temp dir, which no other
/// test running in this process can open.
fn descriptors_under(dir: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// Server-side TCP sockets of the IPv4 listener on `addr`: entries of
/// /proc/net/tcp whose local address is `addr`, except the listening socket
/// (state 0A) and TIME_WAIT (06), which owns no descriptor. A connection the
/// server forgot to close stays here (as CLOSE_WAIT once the client is gone).
fn server_sockets(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr} is not IPv4: /proc/net/tcp6 would be needed");
    };
    // /proc/net/tcp shows the address as the u32 in host byte order, in hex.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1] == local && fields[3] != "0A" && fields[3] != "06"
        })
        .count()
}

/// Polls `count` every 50 ms, up to 100 times (~5 s), until it is 0; returns the last value.
async fn settles_to_zero(mut count: impl FnMut() -> usize) -> usize {
    let mut now = count();
    for _ in 0..100 {
        if now == 0 {
            break;
        }
        sleep(Duration::from_millis(50)).await;
        now = count();
    }
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_descriptor_leaks_on_refused_served_and_abandoned_requests() {
    // Only what belongs to this test is counted, exactly: descriptors that
    // point into its temp dir, and the sockets of its listener's port. Other
    // tests running in this process at the same time do not show up.
    const BIG_LEN: u64 = 16 * 1024 * 1024;
    const SEED: u64 = 16;
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    fs::write(root.join("good.txt"), b"good\n").expect("write");
    fs::write(root.join(".hidden"), b"hidden\n").expect("write");
    fs::write(base.path().join("outside.txt"), b"outside\n").expect("write");
    std::os::unix::fs::symlink(base.path().join("outside.txt"), root.join("escape"))
        .expect("symlink");
    let _fifo = Fifo::create(&root.join("fifo"));
    write_pattern_file(&root.join("big.bin"), SEED, BIG_LEN);
    // /proc shows descriptors' canonical paths.
    let watched = fs::canonicalize(base.path()).expect("canonical temp dir");
    let server = TestServer::start(&download_listener("dl", &root, ""));
    let addr = server.addr("dl");
    // Once serving, the listener holds one handle on its root (the
    // resolver's fast path): counted out, so that a leak of any other, a
    // listing's handle on the root included, still shows.
    let canonical_root = fs::canonicalize(&root).expect("canonical root");
    let root_handles = || {
        fs::read_dir("/proc/self/fd")
            .expect("read /proc/self/fd")
            .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| *target == canonical_root)
            .count()
    };
    let files = || descriptors_under(&watched) - 1;
    let sockets = || server_sockets(addr);

    // The measurement sees something: a download held open by a client that
    // stops reading (16 MiB do not fit the socket buffers) keeps big.bin open
    // and one connection established on the server side.
    let mut held = common::connect(addr).await;
    held.write_all(b"big.bin\n").await.expect("send failed");
    let mut head = vec![0u8; 64 * 1024];
    timeout(LIMIT, held.read_exact(&mut head))
        .await
        .expect("no data in time")
        .expect("read failed");
    assert_eq!(root_handles(), 1, "the listener's handle on its root");
    assert_eq!(
        (files(), sockets()),
        (1, 1),
        "(descriptors in the root, server sockets) while one download is in flight"
    );
    drop(held);

    let refused: [(&[u8], &str); 5] = [
        (b"../x\n", ".."),
        (b".hidden\n", "hidden"),
        (b"escape\n", "outside"),
        (b"fifo\n", "not a regular file"),
        (b"missing\n", "not found"),
    ];
    for batch in 0..10 {
        let mut clients = JoinSet::new();
        for i in 0..20 {
            let (request, keyword) = refused[(batch * 20 + i) % refused.len()];
            clients.spawn(async move {
                assert_refused(&fetch(addr, request).await, keyword, "leak check")
            });
        }
        for i in 0..10 {
            let request: &[u8] = if i % 2 == 0 { b"good.txt\n" } else { b"sub\n" };
            clients.spawn(async move {
                let reply = fetch(addr, request).await;
                assert!(
                    !reply.starts_with(b"ERR"),
                    "served request refused: {:?}",
                    String::from_utf8_lossy(&reply)
                );
            });
        }
        for _ in 0..4 {
            clients.spawn(read_a_little_and_vanish(addr, "big.bin", SEED));
        }
        let joined = timeout(LIMIT, async {
            while let Some(done) = clients.join_next().await {
                done.expect("client task failed");
            }
        });
        joined.await.expect("clients did not finish in time");
    }
    assert_eq!(fetch(addr, b"good.txt\n").await, b"good\n");

    // Every client is gone: nothing of theirs may stay open on the server.
    let open_files = settles_to_zero(files).await;
    assert_eq!(
        open_files, 0,
        "descriptors still open in the root after every request"
    );
    let open_sockets = settles_to_zero(sockets).await;
    assert_eq!(
        open_sockets, 0,
        "server-side sockets of {addr} still open after every request"
    );
    stop(server).await;
}

#[tokio::test]
async fn gbk_listener_decodes_the_requested_name() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::write(root.path().join("你好.txt"), "你好, world\n").expect("write");
    let toml = format!(
        "{}{}",
        download_listener("gbk", root.path(), "encoding = \"gbk\""),
        download_listener("utf8", root.path(), "")
    );
    let server = TestServer::start(&toml);
    let (gbk, utf8) = (server.addr("gbk"), server.addr("utf8"));
    let gbk_name = encoding_rs::GBK.encode("你好.txt").0.into_owned();
    assert_eq!(gbk_name, b"\xc4\xe3\xba\xc3.txt", "test's own GBK encoding");

    let mut request = gbk_name.clone();
    request.push(b'\n');
    // The file's bytes are sent as they are on disk (UTF-8 here), not re-encoded.
    assert_eq!(fetch(gbk, &request).await, "你好, world\n".as_bytes());
    assert_eq!(fetch(gbk, &gbk_name).await, "你好, world\n".as_bytes());
    // The listing is written in the listener's encoding.
    assert_eq!(fetch(gbk, b"\n").await, b"\xc4\xe3\xba\xc3.txt\n");
    // A UTF-8 listener does not understand GBK bytes, and vice versa.
    assert_refused(
        &fetch(utf8, &request).await,
        "not found",
        "GBK name on the UTF-8 listener",
    );
    assert_refused(
        &fetch(gbk, "你好.txt\n".as_bytes()).await,
        "not found",
        "UTF-8 name on the GBK listener",
    );
    assert_eq!(
        fetch(utf8, "你好.txt\n".as_bytes()).await,
        "你好, world\n".as_bytes()
    );
    stop(server).await;
}

#[tokio::test]
async fn message_longer_than_max_message_bytes_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let longest = "n".repeat(64);
    fs::write(root.path().join(&longest), b"longest name\n").expect("write");
    let server = TestServer::start(&download_listener(
        "dl",
        root.path(),
        "max_message_bytes = 64",
    ));
    let addr = server.addr("dl");

    assert_eq!(
        fetch(addr, format!("{longest}\n").as_bytes()).await,
        b"longest name\n"
    );
    let too_long = format!("{longest}n\n");
    assert_eq!(
        fetch(addr, too_long.as_bytes()).await,
        b"ERR message too long\n"
    );
    let far_too_long = format!("{}\n", "x".repeat(10_000));
    assert_eq!(
        fetch(addr, far_too_long.as_bytes()).await,
        b"ERR message too long\n"
    );
    // Without a newline too (the framing limit, not the file system, refuses it).
    assert_eq!(
        fetch(addr, "y".repeat(200).as_bytes()).await,
        b"ERR message too long\n"
    );
    assert_eq!(
        fetch(addr, format!("{longest}\n").as_bytes()).await,
        b"longest name\n"
    );
    stop(server).await;
}

/// A sparse file of `len` bytes (zeros) at `path`: big, and free to make.
fn sparse_file(path: &Path, len: u64) {
    fs::File::create(path)
        .and_then(|f| f.set_len(len))
        .expect("make a sparse file");
}

/// A connection to `addr` with a 64 KiB receive buffer, so that a client
/// that reads slowly (or not at all) holds the server back soon.
async fn connect_small_window(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    timeout(LIMIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

#[tokio::test]
async fn a_file_that_shrinks_while_sent_ends_in_a_reset_not_a_clean_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shrinking.bin");
    let len: u64 = 64 << 20;
    sparse_file(&path, len);
    let server = TestServer::start(&download_listener("files", dir.path(), ""));
    // A small receive buffer, so that the server is still sending when the
    // file shrinks.
    let mut stream = connect_small_window(server.addr("files")).await;
    stream.write_all(b"shrinking.bin\n").await.expect("send");
    let mut head = vec![0u8; 1 << 20];
    timeout(LIMIT, stream.read_exact(&mut head))
        .await
        .expect("no data in time")
        .expect("read");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(2 << 20))
        .expect("truncate");
    let mut rest = Vec::new();
    let end = timeout(LIMIT, stream.read_to_end(&mut rest))
        .await
        .expect("the server neither finished nor reset");
    let error = end.expect_err("a clean end of a file that was cut short");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert!((head.len() + rest.len()) < len as usize);
    server.shutdown().await;
}

#[tokio::test]
async fn a_hard_link_out_of_the_root_is_refused_unless_allowed() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir(&root).expect("root");
    fs::write(base.path().join("secret"), b"SECRET").expect("secret");
    fs::hard_link(base.path().join("secret"), root.join("linked")).expect("hard link");
    let server = TestServer::start(
        &[
            download_listener("strict", &root, ""),
            download_listener("lenient", &root, "allow_hard_links = true"),
        ]
        .concat(),
    );
    assert_refused(
        &fetch(server.addr("strict"), b"linked\n").await,
        "hard-linked",
        "linked",
    );
    assert_eq!(fetch(server.addr("lenient"), b"linked\n").await, b"SECRET");
    server.shutdown().await;
}

#[tokio::test]
async fn a_download_over_max_downloads_is_told_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    sparse_file(&dir.path().join("big.bin"), 64 << 20);
    fs::write(dir.path().join("small.txt"), b"small").expect("write");
    let server = TestServer::start(&download_listener("files", dir.path(), "max_downloads = 1"));
    let addr = server.addr("files");
    // The first download stalls: its client reads only the first bytes.
    let stalled = stalled_from(1, addr).await;
    assert_refused(&fetch(addr, b"small.txt\n").await, "busy", "small.txt");
    // A listing is a send too: it takes a slot, and there is none.
    assert_refused(&fetch(addr, b"\n").await, "busy", "the listing");
    // Once the stalled one is gone, files are sent again (bounded retries
    // while the server notices the close).
    drop(stalled);
    let mut got = Vec::new();
    for _ in 0..100 {
        got = fetch(addr, b"small.txt\n").await;
        if got == b"small" {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, b"small");
    server.shutdown().await;
}

/// Sends `request` from `127.0.0.N` and reads until the server closes.
async fn fetch_from(n: u8, addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = common::connect_from(n, addr).await;
    timeout(LIMIT, stream.write_all(request))
        .await
        .expect("send timed out")
        .expect("send failed");
    common::read_to_end(&mut stream).await
}

/// A download from `127.0.0.N` of big.bin whose client reads its first
/// bytes, then nothing: it holds its slot.
async fn stalled_from(n: u8, addr: SocketAddr) -> tokio::net::TcpStream {
    let mut stalled = common::connect_from(n, addr).await;
    stalled.write_all(b"big.bin\n").await.expect("send");
    let mut first = [0u8; 1024];
    timeout(LIMIT, stalled.read_exact(&mut first))
        .await
        .expect("no data")
        .expect("read");
    stalled
}

/// `max_downloads_per_source`: a source that stalls its downloads holds
/// only its share of the slots. Its next request is told so (raw `ERR`,
/// HTTP `429` with `Retry-After`) while another source is still served;
/// the share comes back when one of its sends ends; and once the listener's
/// slots are all held (by two sources' shares) a third is told busy.
#[tokio::test]
async fn one_source_holds_only_its_share_of_the_download_slots() {
    let dir = tempfile::tempdir().expect("tempdir");
    sparse_file(&dir.path().join("big.bin"), 64 << 20);
    fs::write(dir.path().join("small.txt"), b"small").expect("write");
    let server = TestServer::start(&download_listener(
        "files",
        dir.path(),
        "max_downloads = 4\nmax_downloads_per_source = 2",
    ));
    let addr = server.addr("files");
    let mut held = vec![stalled_from(2, addr).await, stalled_from(2, addr).await];
    assert_refused(
        &fetch_from(2, addr, b"small.txt\n").await,
        "too many downloads from your address",
        "a third from 127.0.0.2",
    );
    let http = fetch_from(
        2,
        addr,
        b"GET /small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let http = String::from_utf8_lossy(&http);
    assert!(
        http.starts_with("HTTP/1.1 429 Too Many Requests\r\n")
            && http.contains("\r\nRetry-After: 1\r\n"),
        "{http}"
    );
    // A HEAD sends no body and takes no slot.
    let head = fetch_from(
        2,
        addr,
        b"HEAD /small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        head.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(fetch_from(3, addr, b"small.txt\n").await, b"small");
    // Its share comes back when one of its sends ends (bounded retries
    // while the server notices the close).
    drop(held.pop());
    let mut got = Vec::new();
    for _ in 0..100 {
        got = fetch_from(2, addr, b"small.txt\n").await;
        if got == b"small" {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, b"small");
    // Two sources' shares fill the listener's four slots: a third source
    // is told busy, not about its share.
    held.push(stalled_from(2, addr).await);
    held.push(stalled_from(3, addr).await);
    held.push(stalled_from(3, addr).await);
    assert_refused(
        &fetch_from(4, addr, b"small.txt\n").await,
        "busy",
        "from 127.0.0.4",
    );
    drop(held);
    server.shutdown().await;
}

#[tokio::test]
async fn a_reader_slower_than_min_send_rate_is_reset_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    sparse_file(&dir.path().join("big.bin"), 256 << 20);
    // 8 MiB/s: the few MiB the socket buffers take are earned within a
    // second after the 10 s grace; then the client, reading nothing, is late.
    let server = TestServer::start(&download_listener(
        "files",
        dir.path(),
        "min_send_rate = 8388608",
    ));
    stalls_then_is_reset(server.addr("files"), b"big.bin\n").await;
    server.shutdown().await;
}

/// Asks `request` through a small receive window, reads a little, then
/// nothing: the server must reset the connection within 15 s (the 10 s
/// grace of `min_send_rate`, and the second its bytes earn at 8 MiB/s).
async fn stalls_then_is_reset(addr: SocketAddr, request: &[u8]) {
    let mut stream = connect_small_window(addr).await;
    stream.write_all(request).await.expect("send");
    let started = tokio::time::Instant::now();
    let mut some = [0u8; 4096];
    timeout(LIMIT, stream.read_exact(&mut some))
        .await
        .expect("no data")
        .expect("read");
    // Now it reads nothing until the server gives up on it.
    sleep(Duration::from_secs(12)).await;
    let mut rest = Vec::new();
    let end = timeout(LIMIT, stream.read_to_end(&mut rest))
        .await
        .expect("neither reset nor finished");
    let error = end.expect_err("a stalled reader got a clean end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// The bytes queued to send (`tx_queue`) on the server's socket that
/// serves the client at local port `client_port`, from /proc/net/tcp.
fn server_send_queue(server_port: u16, client_port: u16) -> Option<u64> {
    let table = fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
        let matches = port(fields[1])? == server_port && port(fields[2])? == client_port;
        let tx = fields[4].split(':').next()?;
        matches.then(|| u64::from_str_radix(tx, 16).ok())?
    })
}

/// How much a client that reads nothing makes the server queue, once it
/// stops growing, for a download listener with `extra` settings.
async fn stalled_queue(dir: &Path, extra: &str) -> u64 {
    stalled_queue_of(dir, extra, b"big.bin\n").await
}

/// [`stalled_queue`] for any request.
async fn stalled_queue_of(dir: &Path, extra: &str, request: &[u8]) -> u64 {
    let server = TestServer::start(&download_listener("files", dir, extra));
    let addr = server.addr("files");
    let mut stream = connect_small_window(addr).await;
    let client_port = stream.local_addr().expect("local addr").port();
    stream.write_all(request).await.expect("send");
    // The largest queue seen: once the server has closed (a listing is
    // written whole), the kernel resets the orphaned socket after its
    // linger time at a zero window, and its queue reads 0 again.
    let (mut last, mut steady, mut largest) = (0, 0, 0);
    for _ in 0..200 {
        sleep(Duration::from_millis(20)).await;
        let now = server_send_queue(addr.port(), client_port).unwrap_or(0);
        steady = if now == last && now > 0 {
            steady + 1
        } else {
            0
        };
        last = now;
        largest = largest.max(now);
        if steady == 10 || (now == 0 && largest > 0) {
            break;
        }
    }
    drop(stream);
    server.shutdown().await;
    largest
}

#[tokio::test]
async fn a_stalled_download_queues_no_more_than_its_send_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    sparse_file(&dir.path().join("big.bin"), 256 << 20);
    let bounded = stalled_queue(dir.path(), "send_buffer = 65536").await;
    let autotuned = stalled_queue(dir.path(), "send_buffer = 0").await;
    // 64 KiB asked, doubled by the kernel, plus what is in flight to a
    // full 64 KiB receive window.
    assert!(
        bounded > 0 && bounded <= 512 * 1024,
        "{bounded} bytes queued"
    );
    assert!(
        autotuned > bounded,
        "autotuned {autotuned}, bounded {bounded}"
    );
    eprintln!(
        "a stalled download queued {bounded} bytes with send_buffer = 65536, {autotuned} with the kernel's autotuning"
    );
}

/// Finding 1: a listing goes out under `send_buffer` like a file: a
/// client that never reads a big raw listing (10 000 names of 240 bytes)
/// holds no more kernel memory than a stalled download.
#[tokio::test]
async fn a_stalled_listing_queues_no_more_than_its_send_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..10_000 {
        fs::write(dir.path().join(format!("{i:05}{}", "l".repeat(235))), b"").expect("write");
    }
    let bounded = stalled_queue_of(dir.path(), "send_buffer = 65536", b"\n").await;
    let autotuned = stalled_queue_of(dir.path(), "send_buffer = 0", b"\n").await;
    assert!(
        bounded > 0 && bounded <= 512 * 1024,
        "{bounded} bytes queued"
    );
    assert!(
        autotuned > bounded,
        "autotuned {autotuned}, bounded {bounded}"
    );
}

/// Finding 1: a listing is held to `min_send_rate` like a file: a client
/// that stops reading a big listing is reset after the grace, instead of
/// holding its task (and the listing) until the idle timeout.
#[tokio::test]
async fn a_stalled_listing_reader_is_reset_at_min_send_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..10_000 {
        fs::write(dir.path().join(format!("{i:05}{}", "r".repeat(235))), b"").expect("write");
    }
    // 8 MiB/s: the 2.4 MB listing is earned within a second after the
    // 10 s grace; the client, reading nothing, is then late.
    let server = TestServer::start(&download_listener(
        "files",
        dir.path(),
        "min_send_rate = 8388608\nsend_buffer = 65536",
    ));
    stalls_then_is_reset(server.addr("files"), b"\n").await;
    server.shutdown().await;
}

/// A download listener `files` on `dir` with `extra` keys, and a metrics
/// listener `metrics`.
fn with_metrics(dir: &Path, extra: &str) -> String {
    download_listener("files", dir, extra) + &common::listener("metrics", "metrics", "")
}

/// Bytes of the download listener's send budget in use now.
async fn budget_in_use(server: &TestServer) -> f64 {
    let figures = crate::metrics::scrape(server.addr("metrics")).await;
    crate::metrics::of(
        &figures,
        "switchboard_send_budget_bytes_in_use",
        "download",
        "files",
        "",
    )
}

/// Asks for big.bin and reads `bytes` of it as fast as it comes.
async fn read_fast(addr: SocketAddr, bytes: usize) -> tokio::net::TcpStream {
    let mut stream = common::connect(addr).await;
    stream.write_all(b"big.bin\n").await.expect("send");
    read_more(&mut stream, bytes).await;
    stream
}

/// Reads `bytes` more, as fast as they come.
async fn read_more(stream: &mut tokio::net::TcpStream, bytes: usize) {
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let want = left.min(buf.len());
        let n = timeout(LIMIT, stream.read(&mut buf[..want]))
            .await
            .expect("read timed out")
            .expect("read");
        assert!(n > 0, "the file ended early");
        left -= n;
    }
}

/// Waits until no connection is open (the scrapes' included).
async fn downloads_closed(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while server.handle().status().connections > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections did not close"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_fast_reader_grows_its_send_buffer_from_the_budget_and_gives_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    sparse_file(&dir.path().join("big.bin"), 1 << 30);
    let server = TestServer::start(&with_metrics(dir.path(), "send_buffer = 65536"));
    assert_eq!(budget_in_use(&server).await, 0.0);
    let stream = read_fast(server.addr("files"), 64 << 20).await;
    let grown = budget_in_use(&server).await;
    // Doubled from 64 KiB at least once, at most to 2 MiB.
    assert!(
        grown >= 65536.0 && grown <= ((2 << 20) - 65536) as f64,
        "{grown} bytes of the budget in use"
    );
    drop(stream);
    downloads_closed(&server).await;
    assert_eq!(budget_in_use(&server).await, 0.0, "the grant came back");
    server.shutdown().await;
}

#[tokio::test]
async fn a_spent_send_budget_grows_nothing_more_until_a_grant_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    sparse_file(&dir.path().join("big.bin"), 1 << 30);
    let budget = 256 * 1024;
    let server = TestServer::start(&with_metrics(
        dir.path(),
        &format!("send_buffer = 65536\nsend_budget = {budget}"),
    ));
    let addr = server.addr("files");
    // The first reader spends it all: 64 KiB doubled to 2 MiB would take
    // more than the budget.
    let mut first = read_fast(addr, 64 << 20).await;
    let mut spent = budget_in_use(&server).await;
    for _ in 0..20 {
        if spent >= budget as f64 {
            break;
        }
        read_more(&mut first, 64 << 20).await;
        spent = budget_in_use(&server).await;
    }
    assert_eq!(spent, budget as f64, "the first reader spent the budget");
    // A second fast reader still gets its file (the base buffer), and
    // the budget is never overdrawn.
    let mut second = read_fast(addr, 64 << 20).await;
    assert_eq!(budget_in_use(&server).await, budget as f64);
    // The first one leaves: its grant comes back, and the second grows.
    drop(first);
    let mut regrown = 0.0;
    for _ in 0..20 {
        read_more(&mut second, 64 << 20).await;
        regrown = budget_in_use(&server).await;
        if regrown > 0.0 {
            break;
        }
    }
    assert!(
        regrown > 0.0 && regrown <= budget as f64,
        "{regrown} bytes of the budget in use after the first reader left"
    );
    drop(second);
    downloads_closed(&server).await;
    assert_eq!(budget_in_use(&server).await, 0.0);
    server.shutdown().await;
}

/// What `readers` clients that read fast, then stop, make the server
/// queue in all, once the queues stop growing.
async fn stalled_after_fast(dir: &Path, extra: &str, readers: usize) -> u64 {
    let server = TestServer::start(&download_listener("files", dir, extra));
    let addr = server.addr("files");
    let mut streams = Vec::new();
    for _ in 0..readers {
        let mut stream = read_fast(addr, 32 << 20).await;
        read_more(&mut stream, 32 << 20).await;
        streams.push(stream);
    }
    let ports: Vec<u16> = streams
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect();
    let (mut last, mut steady) = (0, 0);
    for _ in 0..300 {
        sleep(Duration::from_millis(20)).await;
        let now: u64 = ports
            .iter()
            .map(|&p| server_send_queue(addr.port(), p).unwrap_or(0))
            .sum();
        steady = if now == last && now > 0 {
            steady + 1
        } else {
            0
        };
        last = now;
        if steady == 10 {
            break;
        }
    }
    drop(streams);
    server.shutdown().await;
    last
}

#[tokio::test]
async fn readers_that_stall_after_growing_queue_no_more_than_the_budget_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    sparse_file(&dir.path().join("big.bin"), 1 << 30);
    let readers = 6;
    let (base, budget) = (65536u64, 256 * 1024u64);
    let bounded = stalled_after_fast(
        dir.path(),
        &format!("send_buffer = {base}\nsend_budget = {budget}"),
        readers,
    )
    .await;
    let unbounded = stalled_after_fast(
        dir.path(),
        &format!("send_buffer = {base}\nsend_budget = {}", 1u64 << 30),
        readers,
    )
    .await;
    // The kernel doubles each SO_SNDBUF: every reader's base, and the
    // grants, which add up to the budget at most; and a segment of slack
    // a socket.
    let bound = 2 * (readers as u64 * base + budget) + readers as u64 * 65536;
    assert!(
        bounded > 0 && bounded <= bound,
        "{bounded} bytes queued, bound {bound}"
    );
    assert!(
        unbounded > bound,
        "with a budget of 1 GiB, {unbounded} bytes queued: the readers did not grow"
    );
    eprintln!(
        "{readers} readers stalled after growing queued {bounded} bytes with a budget of {budget}, {unbounded} with 1 GiB"
    );
}
