//! attack6: `get -r -c` resuming a cut tar stream, against a hostile
//! server (and a hostile local environment): a 206 that lies about what
//! it continues, a tail that names its way out of the folder, a record
//! planted by the archive itself, counts that overflow, a resume answered
//! otherwise. Every server here is fake, on 127.0.0.1 port 0, and every
//! run of the binary is bounded.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{self, LIMIT, TestServer};
use crate::get_archive::{end, header, member, run, stderr};

/// What the record's name adds to the output directory's: it sits beside
/// the tree, never in it.
const RECORD: &str = ".get-r.resume";

/// The record of a cut `get -r` into `out_dir`.
fn record_of(out_dir: &Path) -> PathBuf {
    let mut name = out_dir
        .file_name()
        .expect("a named directory")
        .to_os_string();
    name.push(RECORD);
    out_dir.with_file_name(name)
}
const ETAG: &str = "\"tar-00ff00ff\"";

fn link(name: &str, flag: u8, target: &str) -> Vec<u8> {
    header(name.as_bytes(), flag, 0, target.as_bytes())
}

/// A fake server: connection `i` gets `answers[i]` (the last one for
/// every later connection), raw, then the connection is closed. Returns
/// its address and the request heads it read.
async fn hostile(answers: Vec<Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let heads = seen.clone();
    tokio::spawn(async move {
        let mut i = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answers[i.min(answers.len() - 1)].clone();
            i += 1;
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push_str(&line);
                    if line == "\r\n" || head.len() > 16 * 1024 {
                        break;
                    }
                }
                heads.lock().unwrap().push(head);
                let stream = stream.get_mut();
                let _ = stream.write_all(&answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// A 200 of the folder's archive, `length` bytes announced, `sent` sent.
fn ok(length: usize, sent: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nETag: {ETAG}\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(sent);
    out
}

/// A 206 of the archive with the head lines `fields` (each ending in
/// CRLF) and `body`.
fn partial(fields: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Type: application/x-tar\r\n{fields}\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The honest 206 of `tail` from `at` in an archive of `at + tail.len()`.
fn honest(at: usize, tail: &[u8]) -> Vec<u8> {
    let total = at + tail.len();
    partial(
        &format!(
            "ETag: {ETAG}\r\nContent-Range: bytes {at}-{}/{total}\r\nContent-Length: {}\r\n",
            total - 1,
            tail.len()
        ),
        tail,
    )
}

/// Checks nothing was written in `base` outside `base/out`.
fn nothing_outside(base: &Path) {
    let out_dir = base.join("out");
    let mut stack = vec![base.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let allowed = path.starts_with(&out_dir) || path.starts_with(base.join("outside"));
            assert!(allowed, "{} was written", path.display());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
}

/// The first run of `get ADDR FOLDER -r -o base/out`: the server sends
/// `before` (whole members), then the first 100 bytes of `tail` (a
/// header cut) and closes; the run ends cut (4) and leaves a record at
/// `before.len()`. Returns the output directory.
async fn cut_first(base: &Path, folder: &str, before: &[u8], tail: &[u8]) -> PathBuf {
    let out_dir = base.join("out");
    let mut sent = before.to_vec();
    sent.extend_from_slice(&tail[..100]);
    let (addr, _) = hostile(vec![ok(before.len() + tail.len(), &sent)]).await;
    let out = run(&["get", &addr, folder, "-r", "-o", out_dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let record = fs::read_to_string(record_of(&out_dir)).expect("a record");
    assert!(
        record.contains(&format!("\nat {}\n", before.len())),
        "{record}"
    );
    out_dir
}

/// `get ADDR FOLDER -r -c -o out_dir` against a server answering `answer`.
async fn resume(out_dir: &Path, folder: &str, answer: Vec<u8>) -> (Output, Vec<String>) {
    let (addr, heads) = hostile(vec![answer]).await;
    let out = run(&[
        "get",
        &addr,
        folder,
        "-r",
        "-c",
        "-o",
        out_dir.to_str().unwrap(),
    ])
    .await;
    let heads = heads.lock().unwrap().clone();
    (out, heads)
}

/// `top/`, and `top/a` of 100 bytes.
fn before() -> Vec<u8> {
    let mut out = member("top/", b'5', b"");
    out.extend(member("top/a", b'0', &[b'a'; 100]));
    out
}

#[tokio::test]
async fn a_206_that_does_not_continue_the_recorded_archive_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let before = before();
    let mut tail = member("top/b", b'0', &[b'b'; 2000]);
    tail.extend(end());
    let at = before.len();
    let total = at + tail.len();
    let out_dir = cut_first(base.path(), "top", &before, &tail).await;
    let record_text = fs::read_to_string(record_of(&out_dir)).unwrap();
    let len = tail.len();
    let last = total - 1;
    let lies: Vec<(&str, Vec<u8>)> = vec![
        (
            "another ETag",
            partial(
                &format!(
                    "ETag: \"tar-11111111\"\r\nContent-Range: bytes {at}-{last}/{total}\r\n\
                     Content-Length: {len}\r\n"
                ),
                &tail,
            ),
        ),
        (
            "a range from elsewhere",
            partial(
                &format!(
                    "ETag: {ETAG}\r\nContent-Range: bytes 512-{last}/{total}\r\n\
                     Content-Length: {}\r\n",
                    total - 512
                ),
                &[&before[512..], &tail[..]].concat(),
            ),
        ),
        (
            "another total",
            partial(
                &format!(
                    "ETag: {ETAG}\r\nContent-Range: bytes {at}-{}/{}\r\nContent-Length: {}\r\n",
                    last + 512,
                    total + 512,
                    len + 512
                ),
                &[&tail[..], &[0u8; 512][..]].concat(),
            ),
        ),
        (
            "a range short of the end",
            partial(
                &format!(
                    "ETag: {ETAG}\r\nContent-Range: bytes {at}-{}/{total}\r\n\
                     Content-Length: {}\r\n",
                    last - 512,
                    len - 512
                ),
                &tail[..len - 512],
            ),
        ),
        (
            "a Content-Length not the range's",
            partial(
                &format!(
                    "ETag: {ETAG}\r\nContent-Range: bytes {at}-{last}/{total}\r\n\
                     Content-Length: {}\r\n",
                    len + 1024
                ),
                &[&tail[..], &[0u8; 1024][..]].concat(),
            ),
        ),
        (
            "chunked",
            partial(
                &format!(
                    "ETag: {ETAG}\r\nContent-Range: bytes {at}-{last}/{total}\r\n\
                     Transfer-Encoding: chunked\r\n"
                ),
                &[
                    format!("{len:x}\r\n").as_bytes(),
                    &tail[..],
                    b"\r\n0\r\n\r\n",
                ]
                .concat(),
            ),
        ),
        (
            "no Content-Range",
            partial(&format!("ETag: {ETAG}\r\nContent-Length: {len}\r\n"), &tail),
        ),
    ];
    for (what, answer) in lies {
        let (out, heads) = resume(&out_dir, "top", answer).await;
        let said = stderr(&out);
        assert!(!said.contains("panicked"), "{what}: {said}");
        assert!(!out.status.success(), "{what}: {said}");
        assert_ne!(out.status.code(), Some(4), "{what}: {said}");
        assert!(
            heads.len() == 1,
            "{what}: one request, no fallback: {heads:?}"
        );
        assert!(
            heads[0].contains(&format!("Range: bytes={at}-\r\n"))
                && heads[0].contains(&format!("If-Range: {ETAG}\r\n")),
            "{what}: {}",
            heads[0]
        );
        assert!(
            said.contains("refused the resume") || said.contains("206"),
            "{what}: {said}"
        );
        assert!(!out_dir.join("b").exists(), "{what}: b was written");
        assert_eq!(
            fs::read_to_string(record_of(&out_dir)).unwrap(),
            record_text,
            "{what}: the record is kept as it was"
        );
    }
    // The honest one completes the tree, and the record goes.
    let (out, _) = resume(&out_dir, "top", honest(at, &tail)).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(out_dir.join("b")).unwrap(), vec![b'b'; 2000]);
    assert!(!record_of(&out_dir).exists());
    // A 206 to a request without a range is refused.
    let (out, _) = resume(&out_dir, "top", honest(at, &tail)).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("a 206 to a request without a range"),
        "{out:?}"
    );
    nothing_outside(base.path());
}

#[tokio::test]
async fn a_resumed_tail_naming_its_way_out_is_still_refused() {
    let base = tempfile::tempdir().unwrap();
    fs::create_dir(base.path().join("outside")).unwrap();
    let outside = base.path().join("outside");
    let before = before();
    let mut tail = member("top/b", b'0', &[b'b'; 300]);
    tail.extend(member("../escape", b'0', b"x"));
    tail.extend(member(&format!("top/../../{}", "escape2"), b'0', b"x"));
    tail.extend(member(&format!("{}/abs", outside.display()), b'0', b"x"));
    tail.extend(member("other/x", b'0', b"x"));
    tail.extend(member("top", b'5', b""));
    tail.extend(link("top/l", b'2', outside.to_str().unwrap()));
    tail.extend(member("top/l/through", b'0', b"x"));
    tail.extend(link("top/h", b'1', "/etc/passwd"));
    tail.extend(member("top/./dot", b'0', b"x"));
    tail.extend(member("top/ok", b'0', b"fine"));
    tail.extend(end());
    let out_dir = cut_first(base.path(), "top", &before, &tail).await;
    let (out, _) = resume(&out_dir, "top", honest(before.len(), &tail)).await;
    let said = stderr(&out);
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("resuming at byte"), "{said}");
    assert!(said.contains("the mirror is incomplete"), "{said}");
    assert!(said.contains("skipped the member \"../escape\""), "{said}");
    assert!(said.contains("skipped the member \"other/x\""), "{said}");
    assert!(said.contains("a symlink"), "{said}");
    assert!(said.contains("a hard link"), "{said}");
    assert_eq!(fs::read(out_dir.join("ok")).unwrap(), b"fine");
    assert_eq!(fs::read(out_dir.join("b")).unwrap(), vec![b'b'; 300]);
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
    assert!(!fs::symlink_metadata(out_dir.join("l")).is_ok_and(|m| m.is_symlink()));
    assert!(!out_dir.join("h").exists());
    assert!(!record_of(&out_dir).exists(), "the record went");
    nothing_outside(base.path());
}

#[tokio::test]
async fn a_root_archive_resumes_under_the_recorded_top_only() {
    let base = tempfile::tempdir().unwrap();
    let mut before = member("share/", b'5', b"");
    before.extend(member("share/a", b'0', b"a"));
    let mut tail = member("share/b", b'0', &[b'b'; 300]);
    tail.extend(member("other/x", b'0', b"x"));
    tail.extend(member("../x", b'0', b"x"));
    tail.extend(end());
    let out_dir = cut_first(base.path(), "/", &before, &tail).await;
    assert!(
        fs::read_to_string(record_of(&out_dir))
            .unwrap()
            .contains("\ntop share\n")
    );
    let (out, heads) = resume(&out_dir, "/", honest(before.len(), &tail)).await;
    let said = stderr(&out);
    assert!(heads[0].starts_with("GET /.tar "), "{heads:?}");
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("skipped the member \"other/x\""), "{said}");
    assert!(said.contains("skipped the member \"../x\""), "{said}");
    assert_eq!(fs::read(out_dir.join("b")).unwrap(), vec![b'b'; 300]);
    assert!(!out_dir.join("x").exists() && !base.path().join("x").exists());
    nothing_outside(base.path());
}

#[tokio::test]
async fn a_200_to_a_resume_of_another_folder_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let before = before();
    let mut tail = member("top/b", b'0', &[b'b'; 300]);
    tail.extend(end());
    let out_dir = cut_first(base.path(), "top", &before, &tail).await;
    let mut other = member("other/", b'5', b"");
    other.extend(member("other/evil", b'0', b"x"));
    other.extend(end());
    let (out, _) = resume(&out_dir, "top", ok(other.len(), &other)).await;
    let said = stderr(&out);
    assert!(said.contains("the folder changed on the server"), "{said}");
    assert!(said.contains("is not the folder top/"), "{said}");
    assert!(!out.status.success());
    assert!(!out_dir.join("evil").exists());
    nothing_outside(base.path());
}

#[tokio::test]
async fn a_server_that_always_cuts_at_the_same_member_gets_the_same_record_each_run() {
    let base = tempfile::tempdir().unwrap();
    let before = before();
    let mut tail = member("top/b", b'0', &[b'b'; 3000]);
    tail.extend(end());
    let at = before.len();
    let out_dir = cut_first(base.path(), "top", &before, &tail).await;
    let record = fs::read_to_string(record_of(&out_dir)).unwrap();
    let total = at + tail.len();
    // 206s that always stop inside top/b.
    let cut = partial(
        &format!(
            "ETag: {ETAG}\r\nContent-Range: bytes {at}-{}/{total}\r\nContent-Length: {}\r\n",
            total - 1,
            tail.len()
        ),
        &tail[..1000],
    );
    for _ in 0..3 {
        let (out, _) = resume(&out_dir, "top", cut.clone()).await;
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        assert_eq!(fs::read_to_string(record_of(&out_dir)).unwrap(), record);
        assert!(
            !out_dir.join("b.part").exists(),
            "the cut member's .part went"
        );
        assert!(!out_dir.join("b").exists());
    }
}

#[tokio::test]
async fn a_record_that_is_a_fifo_a_directory_or_a_symlink_is_refused_without_waiting() {
    let base = tempfile::tempdir().unwrap();
    let out_dir = base.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let (addr, heads) = hostile(vec![
        b"HTTP/1.1 500 No\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ])
    .await;
    let record = record_of(&out_dir);
    let target = base.path().join("target");
    fs::write(&target, "not a record").unwrap();
    for kind in ["fifo", "dir", "symlink"] {
        let _ = fs::remove_file(&record);
        let _ = fs::remove_dir(&record);
        match kind {
            "fifo" => {
                let path = std::ffi::CString::new(record.to_str().unwrap()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
            }
            "dir" => fs::create_dir(&record).unwrap(),
            _ => std::os::unix::fs::symlink(&target, &record).unwrap(),
        }
        let started = std::time::Instant::now();
        let out = run(&[
            "get",
            &addr,
            "top",
            "-r",
            "-c",
            "-o",
            out_dir.to_str().unwrap(),
        ])
        .await;
        assert!(started.elapsed() < LIMIT / 2, "{kind}: it waited");
        assert_eq!(out.status.code(), Some(1), "{kind}: {out:?}");
        assert!(stderr(&out).contains(RECORD), "{kind}: {out:?}");
    }
    assert!(heads.lock().unwrap().is_empty(), "no request was sent");
    assert_eq!(fs::read_to_string(&target).unwrap(), "not a record");
}

/// Found by attack6, fixed since: the record's counts are not bounded when it is read, and are
/// added to the run's: `skipped 18446744073709551615` (or `members` the
/// same) overflows at the first member skipped (or read). A debug build
/// panics ("attempt to add with overflow"); a release build wraps, and
/// `skipped` wrapping to 0 turns a run that skipped a member into one
/// that exits 0, "complete"; `members` wrapping restarts the member cap.
/// (Checked by hand with the release binary: `skipped` at usize::MAX and
/// a skipped symlink in the tail end the resumed run with exit 0.) The
/// record can come from the server itself: see
/// `an_archive_cannot_plant_its_own_resume_record`.
#[tokio::test]
async fn huge_counts_in_a_record_do_not_overflow() {
    let mut failed = Vec::new();
    for field in ["skipped", "members"] {
        let base = tempfile::tempdir().unwrap();
        let before = before();
        let mut tail = member("top/b", b'0', &[b'b'; 300]);
        tail.extend(link("top/l", b'2', "/etc"));
        tail.extend(end());
        let out_dir = cut_first(base.path(), "top", &before, &tail).await;
        let record = fs::read_to_string(record_of(&out_dir)).unwrap();
        let crafted: String = record
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{field} ")) {
                    format!("{field} {}\n", usize::MAX)
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        fs::write(record_of(&out_dir), crafted).unwrap();
        let (out, _) = resume(&out_dir, "top", honest(before.len(), &tail)).await;
        let said = stderr(&out);
        // Either refused as no record (fetched whole: the server's 206 is
        // then refused) or a run that fails on the skipped symlink; never
        // a panic, never a success.
        if said.contains("panicked") || out.status.success() {
            failed.push(format!("{field}: exit {:?}: {said}", out.status.code()));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Found by attack6, fixed since: the record's name is not reserved in the tree: a member
/// `top/.switchboard-get-r.resume` is extracted to the record's path. A
/// folder that holds such a file (a folder shared after a cut `get -r`
/// into it) loses it: the run removes "the record" at its end and exits
/// 0, the mirror silently one file short.
#[tokio::test]
async fn a_file_named_like_the_record_is_kept_or_the_run_fails() {
    let base = tempfile::tempdir().unwrap();
    let out_dir = base.path().join("out");
    let mut archive = member("top/", b'5', b"");
    archive.extend(member(&format!("top/{RECORD}"), b'0', b"my notes"));
    archive.extend(member("top/x", b'0', b"x"));
    archive.extend(end());
    let (addr, _) = hostile(vec![ok(archive.len(), &archive)]).await;
    let out = run(&["get", &addr, "top", "-r", "-o", out_dir.to_str().unwrap()]).await;
    assert_eq!(fs::read(out_dir.join("x")).unwrap(), b"x");
    // The record lives beside the tree: a member of any name is a file.
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(out_dir.join(RECORD)).unwrap(), b"my notes");
    assert_eq!(
        fs::read(out_dir.join(".switchboard-get-r.resume")).ok(),
        None,
        "not in this archive"
    );
    assert!(!record_of(&out_dir).exists());
}

/// Found by attack6, fixed since: the same member plants a record of the server's choosing: the
/// archive sends `top/.switchboard-get-r.resume` holding a record, then a
/// bad header (an error that is not a cut, so the record is neither
/// rewritten nor removed). The next `get -r -c` takes the server's record
/// as its own: its offset, its ETag, its counts (here `skipped` at
/// usize::MAX, which then overflows).
#[tokio::test]
async fn an_archive_cannot_plant_its_own_resume_record() {
    let base = tempfile::tempdir().unwrap();
    let out_dir = base.path().join("out");
    let mut tail = member("top/b", b'0', b"b");
    tail.extend(link("top/l", b'2', "/etc"));
    tail.extend(end());
    let at = 4096;
    let planted = format!(
        "switchboard get -r resume 1\netag {ETAG}\nlength {}\nat {at}\ntop top\nmembers 0\n\
         dirs 0\nskipped {}\nwritten 0\n",
        at + tail.len(),
        usize::MAX
    );
    let mut archive = member("top/", b'5', b"");
    archive.extend(member(&format!("top/{RECORD}"), b'0', planted.as_bytes()));
    let mut bad = header(b"top/c", b'0', 0, b"");
    bad[148] ^= 1;
    archive.extend(bad);
    let (addr, _) = hostile(vec![ok(archive.len(), &archive)]).await;
    let out = run(&["get", &addr, "top", "-r", "-o", out_dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let left = fs::read_to_string(record_of(&out_dir)).unwrap_or_default();
    let (out, heads) = resume(&out_dir, "top", honest(at, &tail)).await;
    let said = stderr(&out);
    assert!(!said.contains("panicked"), "{said}");
    assert!(
        !heads[0].contains("Range:"),
        "the planted record was used ({left:?}): {heads:?}\n{said}"
    );
}

/// Found by attack6, fixed since: a resume answered with anything but 200 or 206 of the
/// archive (a 416, a 404, a 403, a 206 without the archive's type) falls
/// back to the listings, and the record is never removed: the tree ends
/// complete (exit 0) with the stale record in it.
#[tokio::test]
async fn a_resume_answered_otherwise_leaves_no_record_behind() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    fs::create_dir_all(root.join("photos")).unwrap();
    fs::write(root.join("photos/a"), vec![b'a'; 100_000]).unwrap();
    fs::write(root.join("photos/b"), vec![b'b'; 100_000]).unwrap();
    let server = TestServer::start(&common::listener(
        "dl",
        "download",
        &format!("root = '{}'", root.display()),
    ));
    let back = server.addr("dl");
    // A relay: the first answer cut after 150 000 bytes, a request with a
    // Range answered 416, every other passed whole.
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = front.accept().await {
            let cut = std::mem::take(&mut first);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                if String::from_utf8_lossy(&head).contains("\r\nRange:") {
                    let _ = client
                        .write_all(
                            b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\
                              Connection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let Ok(mut server) = TcpStream::connect(back).await else {
                    return;
                };
                if server.write_all(&head).await.is_err() {
                    return;
                }
                let limit = if cut { 150_000 } else { u64::MAX };
                let (mut from_server, _to) = server.split();
                let mut limited = (&mut from_server).take(limit);
                let _ = tokio::io::copy(&mut limited, &mut client).await;
            });
        }
    });
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
    assert!(record_of(&out_dir).is_file());
    let mut resumed = args.to_vec();
    resumed.push("-c");
    let out = run(&resumed).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(out_dir.join("b")).unwrap(), vec![b'b'; 100_000]);
    assert!(
        !record_of(&out_dir).exists(),
        "a complete tree keeps the stale record: {}",
        stderr(&out)
    );
    server.shutdown().await;
}

/// Found by attack6, kept as a limitation: the paths written before the
/// cut are not claimed again in the resumed run. A whole archive that sends `top/a` twice has the second
/// skipped ("another member's") and the run fails; cut between the two,
/// the resumed run overwrites the first `top/a` with the second's bytes
/// and exits 0.
#[tokio::test]
#[ignore = "attack6, a limitation kept (docs/clients.md): a resumed run does not know the paths written before the cut, so a duplicate member after it overwrites the first copy instead of failing the run"]
async fn a_duplicate_member_after_the_cut_is_refused_as_in_one_run() {
    let base = tempfile::tempdir().unwrap();
    let before = before();
    let mut tail = member("top/b", b'0', &[b'b'; 300]);
    tail.extend(member("top/a", b'0', b"evil"));
    tail.extend(end());
    // In one run: refused.
    let whole = [&before[..], &tail[..]].concat();
    let (addr, _) = hostile(vec![ok(whole.len(), &whole)]).await;
    let one = base.path().join("one");
    let out = run(&["get", &addr, "top", "-r", "-o", one.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("another member's"), "{out:?}");
    assert_eq!(fs::read(one.join("a")).unwrap(), vec![b'a'; 100]);
    // Cut between the two, then resumed.
    let out_dir = cut_first(base.path(), "top", &before, &tail).await;
    let (out, _) = resume(&out_dir, "top", honest(before.len(), &tail)).await;
    assert_eq!(
        fs::read(out_dir.join("a")).unwrap(),
        vec![b'a'; 100],
        "the first top/a was overwritten: exit {:?} {}",
        out.status.code(),
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// FINDING (same root as the planted record): a member
/// `top/.switchboard-get-r.resume/` is made a directory where the record
/// goes; the server then cuts the stream. The record cannot be written
/// (the run says the folder will be fetched again whole), and every later
/// `get -r -c` into the directory fails on "not a regular file" until
/// the user removes it: the server turns resuming off.
#[tokio::test]
async fn an_archive_cannot_make_the_record_s_path_a_directory() {
    let base = tempfile::tempdir().unwrap();
    let mut before = member("top/", b'5', b"");
    before.extend(member(&format!("top/{RECORD}/"), b'5', b""));
    let mut tail = member("top/b", b'0', &[b'b'; 300]);
    tail.extend(end());
    let out_dir = base.path().join("out");
    let mut sent = before.clone();
    sent.extend_from_slice(&tail[..100]);
    let (addr, _) = hostile(vec![ok(before.len() + tail.len(), &sent)]).await;
    let out = run(&["get", &addr, "top", "-r", "-o", out_dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let (out, _) = resume(&out_dir, "top", honest(before.len(), &tail)).await;
    assert!(
        out.status.success(),
        "the resume failed: {}; the record's path is a directory: {}",
        stderr(&out),
        record_of(&out_dir).is_dir()
    );
}

/// FINDING (low): a cut run promises "get -r -c resumes it at byte N"
/// after writing a record that the next run does not read back: an
/// archive whose `ETag` is over 256 bytes (`"tar-` and 300 hex digits,
/// which `is_folder_archive` takes) is recorded, then the record is
/// "not one" and `-c` silently fetches the whole folder again.
#[tokio::test]
async fn a_promised_resume_is_one() {
    let base = tempfile::tempdir().unwrap();
    let out_dir = base.path().join("out");
    let etag = format!("\"tar-{}\"", "ab".repeat(150));
    let before = before();
    let mut tail = member("top/b", b'0', &[b'b'; 300]);
    tail.extend(end());
    let mut cut = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nETag: {etag}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        before.len() + tail.len()
    )
    .into_bytes();
    cut.extend_from_slice(&before);
    cut.extend_from_slice(&tail[..100]);
    let (addr, heads) = hostile(vec![cut]).await;
    let args = ["get", &addr, "top", "-r", "-o", out_dir.to_str().unwrap()];
    let out = run(&args).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let promised = stderr(&out).contains("get -r -c resumes it at byte");
    let mut resumed = args.to_vec();
    resumed.push("-c");
    let _ = run(&resumed).await;
    let heads = heads.lock().unwrap().clone();
    let ranged = heads.get(1).is_some_and(|h| h.contains("Range:"));
    assert!(
        !promised || ranged,
        "promised a resume, then asked for the whole archive: {heads:?}"
    );
}

/// The directory cap holds across a cut: 6000 directories before it and
/// 6000 after make more than 10 000 in the run that resumes, which stops
/// there (the record carries the count).
#[tokio::test]
async fn the_directory_cap_holds_across_a_resume() {
    let base = tempfile::tempdir().unwrap();
    let mut before = member("top/", b'5', b"");
    for i in 0..6000 {
        before.extend(member(&format!("top/d{i}/"), b'5', b""));
    }
    let mut tail = Vec::new();
    for i in 0..6000 {
        tail.extend(member(&format!("top/e{i}/"), b'5', b""));
    }
    tail.extend(end());
    let out_dir = cut_first(base.path(), "top", &before, &tail).await;
    assert!(
        fs::read_to_string(record_of(&out_dir))
            .unwrap()
            .contains("\ndirs 6000\n")
    );
    let (out, _) = resume(&out_dir, "top", honest(before.len(), &tail)).await;
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("more than 10000 directories"), "{said}");
    let made = fs::read_dir(&out_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(made, 10_000);
}
