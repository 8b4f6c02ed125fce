//! `switchboard get` and folders as tar streams, over real TCP: `get -r`
//! takes one connection (`NAME.tar`) and the extracted tree equals the
//! source by SHA-256, with the files' times; a real file `NAME.tar` or a
//! server without archives gets the mirror through listings; `get
//! NAME.tar` saves the archive as curl does, and `-c` completes half of
//! one byte-exact; a hostile server's archive (names leading out, links,
//! a huge pax header, a lying size, a cut, a bad checksum) is refused
//! with a clear error and nothing written outside the output directory.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{self, LIMIT, TestServer};

/// Runs `switchboard ARGS`, off the runtime, bounded.
pub(crate) async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = crate::cli::switchboard()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        drop(child.stdin.take());
        crate::cli::wait_output(child, LIMIT)
    })
    .await
    .expect("client thread")
}

/// Runs `switchboard ARGS` in the directory `cwd`, off the runtime,
/// bounded: where `get` saves without `-o`.
pub(crate) async fn run_in(cwd: &Path, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let cwd = cwd.to_owned();
    tokio::task::spawn_blocking(move || {
        let child = crate::cli::switchboard()
            .args(&args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        crate::cli::wait_output(child, LIMIT)
    })
    .await
    .expect("client thread")
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn contents(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// `base/root/photos`: nested folders, an empty one, a name over 100
/// bytes, a name that is not ASCII, sizes around the block size, and a
/// file of 3 MB; files with times in the past.
fn photos() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    let photos = root.join("photos");
    let long = "l".repeat(120);
    fs::create_dir_all(photos.join("2026/may")).unwrap();
    fs::create_dir_all(photos.join("empty")).unwrap();
    for (i, size) in [0, 1, 511, 512, 513, 3_000_000].iter().enumerate() {
        fs::write(photos.join(format!("f{i}.bin")), contents(i as u32, *size)).unwrap();
    }
    fs::write(photos.join("2026/may/cat.jpg"), contents(99, 7000)).unwrap();
    fs::write(photos.join("2026").join(&long), b"a long name").unwrap();
    fs::write(photos.join("猫 的照片.txt"), "照片".as_bytes()).unwrap();
    // A disk image: 2 MiB of zeros around a few bytes.
    let mut image = vec![0u8; 2 << 20];
    image[(1 << 20) + 7] = 9;
    fs::write(photos.join("zeros.img"), image).unwrap();
    let past = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(photos.join("f1.bin"))
        .unwrap()
        .set_modified(past)
        .unwrap();
    (base, root)
}

/// Every file (SHA-256 and mtime in seconds) and folder under `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Option<(Vec<u8>, u64)>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                found.insert(name, None);
                pending.push(path);
            } else {
                let mtime = meta
                    .modified()
                    .unwrap()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let digest = Sha256::digest(fs::read(&path).unwrap()).to_vec();
                found.insert(name, Some((digest, mtime)));
            }
        }
    }
    found
}

fn server(root: &Path) -> TestServer {
    TestServer::start(&common::listener(
        "dl",
        "download",
        &format!("root = '{}'", root.display()),
    ))
}

/// A relay in front of `back` that counts the connections it takes.
async fn counting_relay(back: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = front.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(back).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn get_r_takes_one_tar_stream_and_the_tree_equals_the_source() {
    let (base, root) = photos();
    let server = server(&root);
    let (addr, connections) = counting_relay(server.addr("dl")).await;
    let addr = addr.to_string();
    let out_dir = base.path().join("out");
    let out = run(&[
        "get",
        &addr,
        "photos/",
        "-r",
        "-o",
        out_dir.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("photos.tar: "), "{}", stderr(&out));
    assert!(stderr(&out).contains("one tar stream"), "{}", stderr(&out));
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one connection");
    // Same files, bytes and times; folders, the empty one included.
    assert_eq!(tree(&out_dir), tree(&root.join("photos")));
    // Zeros stay holes: the image takes a block or two, not 2 MiB.
    let allocated =
        std::os::unix::fs::MetadataExt::blocks(&fs::metadata(out_dir.join("zeros.img")).unwrap())
            * 512;
    assert!(allocated < 64 * 1024, "{allocated} bytes allocated");
    assert!(out_dir.join("empty").is_dir());
    let leftovers: Vec<_> = tree(&out_dir)
        .into_keys()
        .filter(|n| n.ends_with(".part") || n.ends_with(".etag"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The root too (`.tar`), and a nested folder.
    let whole = base.path().join("whole");
    let out = run(&["get", &addr, "/", "-r", "-q", "-o", whole.to_str().unwrap()]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(tree(&whole), tree(&root));
    let may = base.path().join("may");
    let out = run(&[
        "get",
        &addr,
        "photos/2026/may",
        "-r",
        "-q",
        "-o",
        may.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(tree(&may), tree(&root.join("photos/2026/may")));
    assert_eq!(connections.load(Ordering::SeqCst), 3, "one connection each");
}

#[tokio::test]
async fn a_real_file_named_like_the_archive_is_not_extracted_get_r_mirrors_instead() {
    let (base, root) = photos();
    fs::write(root.join("photos.tar"), b"not the folder").unwrap();
    let server = server(&root);
    let (addr, connections) = counting_relay(server.addr("dl")).await;
    let out_dir = base.path().join("out");
    let out = run(&[
        "get",
        &addr.to_string(),
        "photos/",
        "-r",
        "-q",
        "-o",
        out_dir.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let mut want = tree(&root.join("photos"));
    let mut got = tree(&out_dir);
    // The mirror through listings does not keep times.
    for entry in want.values_mut().chain(got.values_mut()).flatten() {
        entry.1 = 0;
    }
    assert_eq!(got, want);
    assert!(
        connections.load(Ordering::SeqCst) > 5,
        "the mirror asks a file at a time"
    );
}

/// What a fake server answers to `GET /NAME.tar` (anything else: 404).
#[derive(Clone)]
struct Answer {
    /// The archive's head says it is a switchboard folder archive.
    archive_head: bool,
    content_length: u64,
    body: Vec<u8>,
    /// After the body: write zeros until the client goes.
    then_zeros: bool,
    /// After the body: reset the connection (RST), as the server does
    /// when a file changes while it is sent.
    then_reset: bool,
}

/// A fake download server answering every request on `listener`.
async fn fake_server(listener: TcpListener, answer: Answer) {
    while let Ok((stream, _)) = listener.accept().await {
        let answer = answer.clone();
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
            let stream = stream.get_mut();
            if !target.ends_with(".tar") {
                let _ = stream
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            }
            let kind = if answer.archive_head {
                "Content-Type: application/x-tar\r\nETag: \"tar-00ff00ff\"\r\n"
            } else {
                "Content-Type: application/octet-stream\r\n"
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\n{kind}Content-Length: {}\r\nConnection: close\r\n\r\n",
                answer.content_length
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&answer.body).await;
            if answer.then_zeros {
                let zeros = vec![0u8; 64 * 1024];
                while stream.write_all(&zeros).await.is_ok() {}
            }
            if answer.then_reset {
                // Give the client the bytes before the reset.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = stream.set_zero_linger();
            }
        });
    }
}

/// A `ustar` header block: `name` (at most 100 bytes), type `flag`,
/// `size`, a link name; its checksum set.
pub(crate) fn header(name: &[u8], flag: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"14000000000\0");
    b[156] = flag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

/// A member: its header, body and padding.
pub(crate) fn member(name: &str, flag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = header(name.as_bytes(), flag, body.len() as u64, b"");
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

pub(crate) fn end() -> Vec<u8> {
    vec![0u8; 1024]
}

/// Runs `get -r top/` against a fake server giving `answer`, into
/// `base/out/mirror`; checks nothing was written outside it, and returns
/// the run's output and the output directory.
async fn against(base: &Path, answer: Answer) -> (Output, PathBuf, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(fake_server(listener, answer));
    let out_dir = base.join("out").join("mirror");
    fs::create_dir_all(&out_dir).unwrap();
    let started = Instant::now();
    let out = run(&["get", &addr, "top/", "-r", "-o", out_dir.to_str().unwrap()]).await;
    let took = started.elapsed();
    server.abort();
    assert!(!stderr(&out).contains("panicked"), "{out:?}");
    let mut stack = vec![base.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // The tree, and beside it the record of a cut stream.
            let allowed = path.starts_with(&out_dir)
                || out_dir.starts_with(&path)
                || path == base.join("out").join("mirror.get-r.resume")
                || path.starts_with(base.join("outside"));
            assert!(allowed, "{} was written", path.display());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    (out, out_dir, took)
}

fn whole(body: Vec<u8>) -> Answer {
    Answer {
        archive_head: true,
        content_length: body.len() as u64,
        body,
        then_zeros: false,
        then_reset: false,
    }
}

#[tokio::test]
async fn names_leading_out_of_the_folder_are_skipped_and_the_run_fails() {
    let base = tempfile::tempdir().unwrap();
    let absolute = format!("/tmp/switchboard-getr-{}-abs", std::process::id());
    let mut body = member("top/", b'5', b"");
    for name in [
        "top/../up1",
        absolute.as_str(),
        "top/a/../../up2",
        "../up3",
        "top//x",
        "top/./y",
        "top/bell\u{7}",
    ] {
        body.extend(member(name, b'0', b"evil"));
    }
    body.extend(member("top/ok.txt", b'0', b"fine"));
    body.extend(end());
    let (out, out_dir, _) = against(base.path(), whole(body)).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = stderr(&out);
    assert!(said.contains("skipped the member \"top/../up1\""), "{said}");
    assert!(said.contains("the mirror is incomplete"), "{said}");
    assert_eq!(fs::read(out_dir.join("ok.txt")).unwrap(), b"fine");
    assert!(!Path::new(&absolute).exists());
    for up in ["up1", "up2", "up3", "x", "y"] {
        assert!(!base.path().join(up).exists());
        assert!(!base.path().join("out").join(up).exists());
    }
}

#[tokio::test]
async fn a_symlink_member_is_skipped_and_nothing_is_written_through_one() {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), b"untouched").unwrap();
    let out_dir = base.path().join("out").join("mirror");
    fs::create_dir_all(&out_dir).unwrap();
    // Symlinks already in the output directory (a hostile earlier run, or
    // a local user): never followed.
    std::os::unix::fs::symlink(&outside, out_dir.join("evil_dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), out_dir.join("evil_file")).unwrap();
    let mut body = member("top/", b'5', b"");
    body.extend(header(
        b"top/link",
        b'2',
        0,
        outside.to_str().unwrap().as_bytes(),
    ));
    body.extend(member("top/link/x", b'0', b"through the link?"));
    body.extend(member("top/evil_dir/y", b'0', b"through the link?"));
    body.extend(member("top/evil_file", b'0', b"overwritten?"));
    body.extend(header(b"top/hard", b'1', 0, b"top/evil_file"));
    body.extend(member("top/ok.txt", b'0', b"fine"));
    body.extend(end());
    let (out, out_dir, _) = against(base.path(), whole(body)).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = stderr(&out);
    assert!(
        said.contains("a symlink; only files and directories"),
        "{said}"
    );
    assert!(said.contains("a hard link"), "{said}");
    assert!(said.contains("is a symlink; not written through"), "{said}");
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"untouched");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert!(fs::symlink_metadata(out_dir.join("link")).unwrap().is_dir());
    assert_eq!(
        fs::read(out_dir.join("link/x")).unwrap(),
        b"through the link?"
    );
    assert_eq!(fs::read(out_dir.join("ok.txt")).unwrap(), b"fine");
}

#[tokio::test]
async fn a_huge_pax_header_is_refused_at_once_without_reading_it() {
    let base = tempfile::tempdir().unwrap();
    let mut body = member("top/", b'5', b"");
    body.extend(header(b"././@PaxHeader", b'x', 1 << 30, b""));
    let answer = Answer {
        archive_head: true,
        content_length: 1 << 40,
        body,
        then_zeros: true,
        then_reset: false,
    };
    let (out, _, took) = against(base.path(), answer).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("a pax extended header of 1073741824 bytes"),
        "{out:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn a_stream_shorter_than_its_members_is_incomplete_never_a_file() {
    let base = tempfile::tempdir().unwrap();
    // A size that lies: the member says 10 MB, the response ends after 1000.
    let mut lying = member("top/", b'5', b"");
    lying.extend(header(b"top/big", b'0', 10_000_000, b""));
    lying.extend(vec![7u8; 1000]);
    let (out, out_dir, _) = against(base.path(), whole(lying)).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(stderr(&out).contains("before its end blocks"), "{out:?}");
    // The member in progress goes (it comes again whole on a resume),
    // and the record says where to resume: at its header.
    assert!(!out_dir.join("big").exists());
    assert!(!out_dir.join("big.part").exists());
    assert!(
        stderr(&out).contains("get -r -c resumes it at byte 512"),
        "{out:?}"
    );
    let record = fs::read_to_string(base.path().join("out/mirror.get-r.resume")).unwrap();
    assert!(record.contains("\nat 512\n"), "{record}");
    // Cut mid-member: the response says more than the server sends.
    let base = tempfile::tempdir().unwrap();
    let mut full = member("top/", b'5', b"");
    full.extend(member("top/big", b'0', &contents(1, 100_000)));
    full.extend(end());
    let answer = Answer {
        archive_head: true,
        content_length: full.len() as u64,
        body: full[..50_000].to_vec(),
        then_zeros: false,
        then_reset: false,
    };
    let (out, out_dir, _) = against(base.path(), answer).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(stderr(&out).contains("closed the connection"), "{out:?}");
    assert!(!out_dir.join("big").exists());
    // Reset mid-member (the server's way to end a file that changed).
    let base = tempfile::tempdir().unwrap();
    let answer = Answer {
        archive_head: true,
        content_length: full.len() as u64,
        body: full[..50_000].to_vec(),
        then_zeros: false,
        then_reset: true,
    };
    let (out, out_dir, _) = against(base.path(), answer).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(stderr(&out).contains("broke off"), "{out:?}");
    assert!(!out_dir.join("big").exists());
    assert!(!out_dir.join("big.part").exists());
    // Whole members but no end blocks: incomplete too.
    let base = tempfile::tempdir().unwrap();
    let mut endless = member("top/", b'5', b"");
    endless.extend(member("top/a", b'0', b"a"));
    let (out, out_dir, _) = against(base.path(), whole(endless)).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(out_dir.join("a").exists(), "a whole member is kept");
}

#[tokio::test]
async fn a_bad_checksum_or_a_first_member_that_is_not_the_folder_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let mut body = member("top/", b'5', b"");
    let mut bad = member("top/a", b'0', b"a");
    bad[10] ^= 1;
    body.extend(bad);
    body.extend(end());
    let (out, out_dir, _) = against(base.path(), whole(body)).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("checksum does not hold"), "{out:?}");
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);
    let base = tempfile::tempdir().unwrap();
    let mut body = member("other/", b'5', b"");
    body.extend(member("other/a", b'0', b"a"));
    body.extend(end());
    let (out, out_dir, _) = against(base.path(), whole(body)).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("is not the folder top/"), "{out:?}");
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);
}

#[tokio::test]
async fn against_a_server_without_archives_get_r_falls_back_to_the_listings() {
    let base = tempfile::tempdir().unwrap();
    // `top.tar` is a file of another kind: the fake server's listings 404.
    let answer = Answer {
        archive_head: false,
        content_length: 4,
        body: b"file".to_vec(),
        then_zeros: false,
        then_reset: false,
    };
    let (out, _, _) = against(base.path(), answer).await;
    assert_eq!(out.status.code(), Some(3), "the listing's 404: {out:?}");
    assert!(stderr(&out).contains("top/: 404"), "{out:?}");
}

#[tokio::test]
async fn get_of_name_tar_saves_curl_s_bytes_and_c_completes_half_of_it() {
    let (base, root) = photos();
    let server = server(&root);
    let addr = server.addr("dl");
    let saved = base.path().join("photos.tar");
    let out = run(&[
        "get",
        &addr.to_string(),
        "photos.tar",
        "-q",
        "-o",
        saved.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let by_curl = base.path().join("curl.tar");
    // Off the runtime: the server runs on it.
    let curl_out = by_curl.clone();
    let curl = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-fsS", "--max-time", "20", "-o", curl_out.to_str().unwrap()])
            .arg(format!("http://{addr}/photos.tar"))
            .status()
            .expect("curl")
    })
    .await
    .unwrap();
    assert!(curl.success());
    let whole = fs::read(&by_curl).unwrap();
    assert!(whole.len() > 3_000_000);
    assert_eq!(fs::read(&saved).unwrap(), whole);
    // Half of it, as an interrupted get leaves it: through a relay that
    // passes 1 MB of the answer and closes.
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut client, _) = front.accept().await.unwrap();
        let mut upstream = TcpStream::connect(addr).await.unwrap();
        let mut request = vec![0u8; 4096];
        let n = client.read(&mut request).await.unwrap();
        upstream.write_all(&request[..n]).await.unwrap();
        let mut passed = 0;
        let mut buf = vec![0u8; 16 * 1024];
        while passed < 1_000_000 {
            let want = (1_000_000 - passed).min(buf.len());
            let Ok(n) = upstream.read(&mut buf[..want]).await else {
                return;
            };
            if n == 0 || client.write_all(&buf[..n]).await.is_err() {
                return;
            }
            passed += n;
        }
    });
    let half = base.path().join("half.tar");
    let out = run(&[
        "get",
        &front_addr.to_string(),
        "photos.tar",
        "-q",
        "-o",
        half.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let part = base.path().join("half.tar.part");
    let kept = fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept < whole.len() as u64, "{kept}");
    assert!(base.path().join("half.tar.part.etag").exists());
    let out = run(&[
        "get",
        &addr.to_string(),
        "photos.tar",
        "-c",
        "-o",
        half.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains(&format!("resumed at {kept}")),
        "{out:?}"
    );
    assert_eq!(fs::read(&half).unwrap(), whole);
    assert!(!part.exists());
}

#[tokio::test]
async fn a_folder_refused_as_an_archive_says_why_and_a_deep_one_ends_in_an_error() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let mut deep = root.join("deep");
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("top.txt"), b"top").unwrap();
    for i in 0..40 {
        deep.push(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom.txt"), b"bottom").unwrap();
    let server = server(&root);
    let addr = server.addr("dl").to_string();
    let out_dir = base.path().join("out");
    let out = run(&["get", &addr, "deep", "-r", "-o", out_dir.to_str().unwrap()]).await;
    let said = stderr(&out);
    // The server's reason is quoted before the fallback to the listings,
    assert!(
        said.contains("deep.tar: the server did not send the folder as one archive (403 forbidden: folder too deep to archive)"),
        "{said}"
    );
    // which fetch what lies within the depth limit, name what does not,
    // and end in an error: the tree on disk is not the server's.
    assert_eq!(fs::read(out_dir.join("top.txt")).unwrap(), b"top");
    assert!(said.contains("deeper than 32 levels"), "{said}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        said.contains("the mirror is incomplete: 1 name(s) skipped"),
        "{said}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn get_r_of_a_file_says_so_and_leaves_no_directory_and_a_folder_s_tar_is_not_hidden() {
    let (base, root) = photos();
    let server = server(&root);
    let addr = server.addr("dl").to_string();
    let cwd = base.path().join("cwd");
    fs::create_dir(&cwd).unwrap();
    let out = run_in(&cwd, &["get", &addr, "photos/f2.bin", "-r"]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        stderr(&out).contains("if photos/f2.bin is a file, get without -r saves it"),
        "{out:?}"
    );
    assert_eq!(
        fs::read_dir(&cwd).unwrap().count(),
        0,
        "nothing left behind"
    );
    // A directory that was there before stays.
    fs::create_dir(cwd.join("f2.bin")).unwrap();
    let out = run_in(&cwd, &["get", &addr, "photos/f2.bin", "-r"]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(cwd.join("f2.bin").is_dir());
    fs::remove_dir(cwd.join("f2.bin")).unwrap();
    // A folder's own archive is saved under the folder's name; the
    // root's as download.tar.
    let out = run_in(&cwd, &["get", &addr, "photos/2026/.tar", "-q"]).await;
    assert!(out.status.success(), "{out:?}");
    let out = run_in(&cwd, &["get", &addr, "/.tar", "-q"]).await;
    assert!(out.status.success(), "{out:?}");
    let mut saved: Vec<String> = fs::read_dir(&cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    assert_eq!(saved, ["2026.tar", "download.tar"]);
    let archive = fs::read(cwd.join("2026.tar")).unwrap();
    assert_eq!(&archive[..5], b"2026/", "the folder's archive");
    server.shutdown().await;
}

/// A relay in front of `back` that passes the first `limit` bytes of the
/// server's answer on its first connection, then closes it; later
/// connections pass whole. Returns its address and the request heads
/// it saw.
async fn cutting_relay(
    back: SocketAddr,
    limit: u64,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let heads = seen.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = front.accept().await {
            let cut = std::mem::take(&mut first);
            let heads = heads.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(back).await else {
                    return;
                };
                let (mut from_server, mut to_server) = server.into_split();
                let (mut from_client, mut to_client) = client.split();
                // The request is small: read its head, keep it, pass it on.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    if from_client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                if to_server.write_all(&head).await.is_err() {
                    return;
                }
                let limit = if cut { limit } else { u64::MAX };
                let mut limited = (&mut from_server).take(limit);
                let _ = tokio::io::copy(&mut limited, &mut to_client).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn get_r_c_resumes_a_cut_tar_stream_at_its_first_member_not_yet_whole() {
    let (base, root) = photos();
    let server = server(&root);
    // Cut inside the 3 MB file, after the smaller members came whole.
    let (addr, heads) = cutting_relay(server.addr("dl"), 1_500_000).await;
    let addr = addr.to_string();
    let out_dir = base.path().join("out");
    let args = [
        "get",
        &addr,
        "photos",
        "-r",
        "-o",
        out_dir.to_str().unwrap(),
    ];
    let out = run(&args).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let said = stderr(&out);
    assert!(said.contains("get -r -c resumes it at byte"), "{said}");
    let record = base.path().join("out.get-r.resume");
    assert!(record.is_file());
    let written_before: usize = fs::read_dir(&out_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert!(written_before >= 2, "some members came whole first");
    // -c asks for the rest only, from a block boundary, and the tree
    // is the source's, with no record or .part left.
    let mut resumed = args.to_vec();
    resumed.push("-c");
    let out = run(&resumed).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("resuming at byte"),
        "{}",
        stderr(&out)
    );
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let range = heads[1]
        .lines()
        .find_map(|l| l.strip_prefix("Range: bytes="))
        .expect("a Range");
    let from: u64 = range.trim_end_matches('-').parse().unwrap();
    assert!(
        from > 0 && from.is_multiple_of(512) && from <= 1_500_000,
        "{range}"
    );
    assert!(heads[1].contains("If-Range: \"tar-"), "{}", heads[1]);
    assert!(!record.exists());
    assert_eq!(tree(&out_dir), tree(&root.join("photos")));
    // A record of a folder that changed since: fetched whole again.
    let (addr, _) = cutting_relay(server.addr("dl"), 1_500_000).await;
    let addr = addr.to_string();
    let again = base.path().join("again");
    let args = ["get", &addr, "photos", "-r", "-o", again.to_str().unwrap()];
    assert_eq!(run(&args).await.status.code(), Some(4));
    fs::write(root.join("photos/new.txt"), b"new").unwrap();
    let mut resumed = args.to_vec();
    resumed.push("-c");
    let out = run(&resumed).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("the folder changed on the server"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&again), tree(&root.join("photos")));
    server.shutdown().await;
}
