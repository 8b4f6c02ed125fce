//! Directory listings over HTTP, as people and their tools meet them: an
//! HTML page by default (a table with sizes and UTC times, directories
//! first, an inline style), text when `Accept` ranks `text/plain` first,
//! the raw protocol unchanged, a 301 to the slashed name of a directory
//! (never to `//host`), and `wget -r -np` and headless Chromium against
//! the real thing.
//!
//! Without wget the mirror test says so and passes, unless
//! SWITCHBOARD_REQUIRE_HTTP_CLIENTS is set; without Chromium the browser
//! test does, unless SWITCHBOARD_REQUIRE_CHROMIUM is set (CI sets both).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{self, TestServer};
use crate::http::{exchange, have, header, run};

/// 2021-03-04T05:06:07Z, the time every entry of the tree is given.
const WHEN: u64 = 1_614_834_367;
const WHEN_RFC3339: &str = "2021-03-04T05:06:07Z";

/// A CJK directory name and a Japanese file name with a space and
/// characters HTML must escape.
const CJK_DIR: &str = "中文目录";
const ODD_FILE: &str = "日本 <b>&'.txt";

/// A tree with nested directories, a 300 000-byte file of varied bytes,
/// names with spaces, non-ASCII and HTML characters, an empty directory
/// and a hidden file (never listed); every entry dated [`WHEN`].
fn tree() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    for dir in ["docs/nested", "with space", "empty", CJK_DIR, ".hidden-dir"] {
        fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let files: [(&str, &[u8]); 8] = [
        ("a.txt", b"hello\n"),
        ("big.bin", &big),
        ("zeta.md", &[b'z'; 1536]),
        ("docs/readme.txt", b"docs\n"),
        ("docs/nested/deep.txt", b"deep\n"),
        ("with space/a b.txt", b"a space\n"),
        (".secret", b"SECRET\n"),
        ("empty-file", b""),
    ];
    for (name, bytes) in files {
        fs::write(root.join(name), bytes).expect("write");
    }
    fs::write(root.join(CJK_DIR).join(ODD_FILE), "日本語\n").expect("write");
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(WHEN);
    // Files first, then directories, deepest first: dating an entry dates
    // nothing else, but creating one changes its directory's time.
    let mut all = walk(&root);
    all.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (path, _) in all.iter().chain([(root.clone(), true)].iter()) {
        fs::File::open(path)
            .expect("open")
            .set_modified(when)
            .expect("set mtime");
    }
    (base, root)
}

/// Every entry under `dir`, recursively, with whether it is a directory.
fn walk(dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        let is_dir = path.is_dir();
        out.push((path.clone(), is_dir));
        if is_dir {
            out.extend(walk(&path));
        }
    }
    out
}

fn server(root: &Path) -> TestServer {
    TestServer::start(&common::listener(
        "files",
        "download",
        &format!("root = '{}'", root.display()),
    ))
}

/// The body of a response (after its head).
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

async fn get(addr: SocketAddr, target: &str, fields: &str) -> String {
    exchange(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test]
async fn an_html_listing_has_sizes_dates_style_and_directories_first() {
    let (_base, root) = tree();
    let server = server(&root);
    let addr = server.addr("files");
    // No `Accept`, `*/*` (curl, wget), a browser's: all get the page.
    for accept in ["", "Accept: */*\r\n", "Accept: text/html,*/*;q=0.8\r\n"] {
        let page = get(addr, "/", accept).await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert_eq!(
            header(&page, "Content-Type"),
            Some("text/html; charset=utf-8"),
            "{accept}"
        );
        assert_eq!(header(&page, "Vary"), Some("Accept"));
        let html = body(&page);
        for part in [
            "<meta charset=\"utf-8\">",
            "<meta name=\"viewport\"",
            "<style>",
            "<th>Name</th><th class=\"s\">Size</th><th class=\"m\">Modified (UTC)</th>",
            "<td class=\"s\" title=\"300000 bytes\">293 KiB</td>",
            "<td class=\"s\" title=\"1536 bytes\">1.5 KiB</td>",
            "<td class=\"s\" title=\"6 bytes\">6 B</td>",
            "<td class=\"s\" title=\"0 bytes\">0 B</td>",
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        let dated = format!("<time datetime=\"{WHEN_RFC3339}\">2021-03-04 05:06</time>");
        // Every entry is dated: 4 directories, 4 files (the hidden ones not).
        assert_eq!(html.matches(&dated).count(), 8, "{html}");
        assert!(
            !html.contains("secret") && !html.contains("hidden"),
            "{html}"
        );
        assert!(!html.contains("../"), "no parent row at the root: {html}");
        // Directories first, each group by name.
        let order: Vec<usize> = [
            ">docs/<",
            ">empty/<",
            ">with space/<",
            &format!(">{CJK_DIR}/<"),
            ">a.txt<",
            ">big.bin<",
            ">empty-file<",
            ">zeta.md<",
        ]
        .iter()
        .map(|name| {
            html.find(name)
                .unwrap_or_else(|| panic!("{name} not in {html}"))
        })
        .collect();
        assert!(order.is_sorted(), "{order:?} in {html}");
    }
    // Below the root: a parent row, and names escaped and encoded.
    let page = get(addr, &format!("/{CJK_DIR}/"), "").await;
    let html = body(&page);
    assert!(
        html.contains("<title>Index of /中文目录/</title>"),
        "{html}"
    );
    assert!(html.contains("<a href=\"../\">../</a>"), "{html}");
    assert!(
        html.contains(
            "<a href=\"/%E4%B8%AD%E6%96%87%E7%9B%AE%E5%BD%95/%E6%97%A5%E6%9C%AC%20%3Cb%3E%26%27.txt\">\
             日本 &lt;b&gt;&amp;&#39;.txt</a>"
        ),
        "{html}"
    );
    assert!(!html.contains("<b>"), "an unescaped name: {html}");
    server.shutdown().await;
}

#[tokio::test]
async fn text_when_accept_prefers_it_and_the_raw_protocol_is_unchanged() {
    let (_base, root) = tree();
    let server = server(&root);
    let addr = server.addr("files");
    let top = "a.txt\nbig.bin\ndocs/\nempty-file\nempty/\nwith space/\nzeta.md\n中文目录/\n";
    for accept in [
        "text/plain",
        "text/plain, */*;q=0.9",
        "text/html;q=0.5, text/plain",
    ] {
        let text = get(addr, "/", &format!("Accept: {accept}\r\n")).await;
        assert_eq!(
            header(&text, "Content-Type"),
            Some("text/plain; charset=utf-8"),
            "{accept}"
        );
        assert_eq!(header(&text, "Vary"), Some("Accept"));
        assert_eq!(body(&text), top, "{accept}");
    }
    // A tie is HTML.
    let tie = get(addr, "/", "Accept: text/plain, text/html\r\n").await;
    assert_eq!(
        header(&tie, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    // The raw protocol: text, and a directory without its slash is listed.
    let raw = exchange(addr, b"\n").await;
    assert_eq!(raw, top);
    let docs = exchange(addr, b"docs\n").await;
    assert_eq!(docs, "nested/\nreadme.txt\n");
    server.shutdown().await;
}

#[tokio::test]
async fn a_directory_without_its_slash_is_moved_permanently() {
    let (_base, root) = tree();
    fs::create_dir(root.join("evil.example")).expect("mkdir");
    let server = server(&root);
    let addr = server.addr("files");
    let cases = [
        ("/docs", "/docs/"),
        ("/docs?x=1&y=%zz", "/docs/"),
        ("/docs/nested", "/docs/nested/"),
        ("/with%20space", "/with%20space/"),
        (
            "/%E4%B8%AD%E6%96%87%E7%9B%AE%E5%BD%95",
            "/%E4%B8%AD%E6%96%87%E7%9B%AE%E5%BD%95/",
        ),
        // A request that would make `//evil.example/` a Location: a
        // protocol-relative address, another host. Never.
        ("//evil.example", "/evil.example/"),
        ("///evil.example", "/evil.example/"),
        ("/%2F%2Fevil.example", "/evil.example/"),
        ("/%2Fevil.example", "/evil.example/"),
        ("http://x//evil.example", "/evil.example/"),
        ("/./docs", "/docs/"),
    ];
    for (target, location) in cases {
        let moved = get(addr, target, "").await;
        assert!(
            moved.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
            "{target}: {moved}"
        );
        assert_eq!(header(&moved, "Location"), Some(location), "{target}");
        assert!(!location.starts_with("//"));
        assert_eq!(
            header(&moved, "Content-Type"),
            Some("text/html; charset=utf-8")
        );
        let page = body(&moved);
        assert!(
            page.contains(&format!("<a href=\"{location}\">")),
            "{target}: {page}"
        );
        assert_eq!(
            header(&moved, "Content-Length"),
            Some(&*page.len().to_string())
        );
        // HEAD: the same head, no body.
        let head = exchange(
            addr,
            format!("HEAD {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 301 "), "{target}: {head}");
        assert_eq!(header(&head, "Location"), Some(location));
        assert_eq!(
            header(&head, "Content-Length"),
            Some(&*page.len().to_string())
        );
        assert!(head.ends_with("\r\n\r\n"), "a HEAD has no body: {head}");
        // And the slashed name is the listing.
        let listing = get(addr, location, "").await;
        assert!(
            listing.starts_with("HTTP/1.1 200 OK"),
            "{location}: {listing}"
        );
    }
    // The root has its slash; a file has none: neither moves.
    assert!(get(addr, "/", "").await.starts_with("HTTP/1.1 200 "));
    assert!(get(addr, "/a.txt", "").await.starts_with("HTTP/1.1 200 "));
    // A file named as a directory is not found; so is what is not there.
    for target in ["/a.txt/", "/docs/readme.txt/", "/missing", "/missing/"] {
        let got = get(addr, target, "").await;
        assert!(got.starts_with("HTTP/1.1 404 "), "{target}: {got}");
    }
    server.shutdown().await;
}

/// Every file under `dir` (relative path, bytes).
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .filter(|(_, is_dir)| !is_dir)
        .map(|(path, _)| {
            let bytes = fs::read(&path).expect("read");
            (path.strip_prefix(dir).expect("inside").to_owned(), bytes)
        })
        .collect()
}

/// The directories under `dir`, relative, with `dir` itself as "".
fn dirs_under(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|(_, is_dir)| *is_dir)
        .map(|(path, _)| path.strip_prefix(dir).expect("inside").to_owned())
        .collect();
    dirs.push(PathBuf::new());
    dirs.sort();
    dirs
}

/// The issue's first finding: `wget -r -np http://host:port/`, as typed
/// (no `--header`), mirrors the tree byte for byte: every file, every
/// directory (its listing saved as its `index.html`), nothing else.
#[tokio::test]
async fn wget_mirrors_a_nested_tree_as_typed() {
    if !have("wget") {
        return;
    }
    let (base, root) = tree();
    let server = server(&root);
    let addr = server.addr("files");
    let into = base.path().join("mirror");
    fs::create_dir(&into).expect("mkdir");
    let mut wget = Command::new("wget");
    // Only bounds besides `-r -np`: quiet, one try, 20 s a read.
    wget.args(["-r", "-np", "-q", "--tries=1", "--timeout=20"])
        .arg(format!("http://{addr}/"))
        .current_dir(&into);
    let out = run(wget).await;
    assert!(out.status.success(), "wget: {out:?}");
    let mirror = into.join(addr.to_string());
    let mut expected: BTreeMap<PathBuf, Vec<u8>> = files_under(&root)
        .into_iter()
        .filter(|(path, _)| !path.to_string_lossy().contains(".secret"))
        .collect();
    let served_dirs: Vec<PathBuf> = dirs_under(&root)
        .into_iter()
        .filter(|dir| !dir.to_string_lossy().contains(".hidden"))
        .collect();
    let mut got = files_under(&mirror);
    // Each directory's listing became its index.html: an HTML page.
    for dir in &served_dirs {
        let index = dir.join("index.html");
        let page = got
            .remove(&index)
            .unwrap_or_else(|| panic!("no {index:?} in {:?}", got.keys()));
        assert!(page.starts_with(b"<!DOCTYPE html>"), "{index:?}");
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the files mirrored"
    );
    for (path, bytes) in got {
        let want = expected.remove(&path).expect("listed above");
        assert!(bytes == want, "{path:?} differs ({} bytes)", bytes.len());
    }
    assert_eq!(dirs_under(&mirror), served_dirs, "the directories mirrored");
    server.shutdown().await;
}

/// True when Chromium runs; panics without it when the environment asks
/// for it (SWITCHBOARD_REQUIRE_CHROMIUM, as CI sets).
fn have_chromium() -> bool {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("SWITCHBOARD_REQUIRE_CHROMIUM").is_some() {
        panic!("chromium is required (SWITCHBOARD_REQUIRE_CHROMIUM is set) but does not run");
    }
    if !found {
        eprintln!("skipped: chromium is not installed");
    }
    found
}

/// A browser run, in a process group of its own. Dropped before it was
/// seen to exit (a timeout, a failed assertion), the group is killed:
/// the browser and its renderer, GPU and zygote processes. (Its process
/// is not reaped until then, so the group's id is still its own.)
struct Browser {
    child: Child,
    exited: bool,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// The DOM of `url` as headless Chromium builds it, within `limit`.
fn dump_dom(url: &str, profile: &Path, limit: Duration) -> String {
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut browser = Browser {
        child: command.spawn().expect("start chromium"),
        exited: false,
    };
    let mut stdout = browser.child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut dom = Vec::new();
        let read = stdout.read_to_end(&mut dom);
        let _ = tx.send(read.map(|_| dom));
    });
    let started = Instant::now();
    let dom = rx
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("chromium gave no DOM within {limit:?}"))
        .expect("read chromium's output");
    let status = loop {
        if let Some(status) = browser.child.try_wait().expect("wait") {
            browser.exited = true;
            break status;
        }
        assert!(started.elapsed() < limit, "chromium did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "chromium: {status:?}");
    String::from_utf8(dom).expect("a UTF-8 DOM")
}

/// The page as a browser builds it: a table, sizes, `<time>` dates, the
/// CJK name as text and in its link, directories first.
#[tokio::test]
async fn chromium_renders_the_listing_with_sizes_dates_and_a_cjk_name() {
    if !have_chromium() {
        return;
    }
    let (base, root) = tree();
    let server = server(&root);
    let addr = server.addr("files");
    let profile = base.path().join("chromium-profile");
    fs::create_dir(&profile).expect("mkdir");
    let url = format!("http://{addr}/");
    let dom =
        tokio::task::spawn_blocking(move || dump_dom(&url, &profile, Duration::from_secs(90)))
            .await
            .expect("chromium thread");
    for part in [
        "<table>",
        "<th>Name</th>",
        "Modified (UTC)",
        "title=\"300000 bytes\">293 KiB</td>",
        "title=\"1536 bytes\">1.5 KiB</td>",
        &format!("<time datetime=\"{WHEN_RFC3339}\">2021-03-04 05:06</time>"),
        &format!("<a href=\"/%E4%B8%AD%E6%96%87%E7%9B%AE%E5%BD%95/\">{CJK_DIR}/</a>"),
    ] {
        assert!(dom.contains(part), "{part} not in {dom}");
    }
    // Directories first, each group by name.
    let order: Vec<usize> = [
        ">docs/</a>",
        ">empty/</a>",
        ">with space/</a>",
        ">中文目录/</a>",
        ">a.txt</a>",
        ">big.bin</a>",
        ">empty-file</a>",
        ">zeta.md</a>",
    ]
    .iter()
    .map(|name| {
        dom.find(name)
            .unwrap_or_else(|| panic!("{name} not in {dom}"))
    })
    .collect();
    assert!(order.is_sorted(), "{order:?} in {dom}");
    assert_eq!(
        dom.matches("<tr").count(),
        9,
        "a head row and 8 entries: {dom}"
    );
    // Through the 301 too: the slashless name ends at the listing.
    let profile = base.path().join("chromium-profile-2");
    fs::create_dir(&profile).expect("mkdir");
    let url = format!("http://{addr}/{CJK_DIR}");
    let dom =
        tokio::task::spawn_blocking(move || dump_dom(&url, &profile, Duration::from_secs(90)))
            .await
            .expect("chromium thread");
    assert!(dom.contains("Index of /中文目录/"), "{dom}");
    assert!(dom.contains("日本 &lt;b&gt;&amp;'.txt</a>"), "{dom}");
    server.shutdown().await;
}
