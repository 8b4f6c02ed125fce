//! The random-bot's history in SQLite and Redis, end to end: the real
//! binary killed with `kill -9` keeps every acknowledged message, a second
//! process on one SQLite file is refused, a reload that changes the backend
//! starts from the new backend's history, two processes on one Redis key
//! share a history, and Redis lost, slow or back is answered with
//! `ERR history unavailable` (not stored) or `ERR history timeout` (taken,
//! fate unknown) and then normal service, also when Redis was down or
//! refused the password at the first message. A SQLite file deleted under the
//! daemon is replaced at its path, and no Redis password is ever shown. (Two replicas behind
//! HAProxy: `scale_out.rs`.)
//!
//! The Redis tests need Debian's `redis-server`; without it they say so and
//! pass, unless SWITCHBOARD_REQUIRE_REDIS is set (as CI sets it).

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader as StdBufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::net::TcpStream;

use crate::cli::{Daemon, output, switchboard};
use crate::common::{LIMIT, TestServer, ask, connect, connect_lines, listener};

/// True when `redis-server` is here; panics when it is required and not.
pub(crate) fn have_redis() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("SWITCHBOARD_REQUIRE_REDIS").is_some() {
        panic!(
            "redis-server is required (SWITCHBOARD_REQUIRE_REDIS is set) but is not usable here"
        );
    }
    if !found {
        eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

/// A real redis-server on a free loopback port, without persistence;
/// killed when dropped.
pub(crate) struct Redis {
    child: Option<Child>,
    pub(crate) port: u16,
    extra: Vec<String>,
}

impl Redis {
    /// Starts one; `extra` are more `redis-server` arguments.
    pub(crate) fn start(extra: &[&str]) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis {
            child: None,
            port,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        redis.restart();
        redis
    }

    /// Kills it at once (SIGKILL).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub(crate) fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--enable-debug-command", "yes"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + LIMIT;
        while self.command("PING").as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server never answered PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one inline command (no auth needed for PING) and returns the
    /// first line of the answer.
    pub(crate) fn command(&self, command: &str) -> Option<String> {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        conn.set_read_timeout(Some(LIMIT)).ok()?;
        conn.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut line = String::new();
        StdBufReader::new(conn).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }

    /// Makes it sleep `secs` seconds without answering anyone.
    pub(crate) fn stall(&self, secs: u32) -> std::net::TcpStream {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        conn.write_all(format!("DEBUG SLEEP {secs}\r\n").as_bytes())
            .expect("send DEBUG SLEEP");
        conn
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A config file with one random-bot listener called `bot`.
pub(crate) fn bot_config(
    dir: &Path,
    file: &str,
    bind: &str,
    extra: &str,
    history: &str,
) -> PathBuf {
    let path = dir.join(file);
    fs::write(
        &path,
        format!(
            "[[listener]]\nname = \"bot\"\nbind = \"{bind}\"\nhandler = \"random-bot\"\n{extra}\n\
             [listener.history]\n{history}\n"
        ),
    )
    .expect("write config");
    path
}

/// `switchboard history -c CONFIG bot ARGS...`: its stdout, which must succeed.
pub(crate) fn history_cli(config: &Path, args: &[&str]) -> String {
    let out = output(
        switchboard()
            .arg("history")
            .arg("-c")
            .arg(config)
            .arg("bot")
            .args(args),
    );
    assert!(
        out.status.success(),
        "switchboard history failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The number of messages `switchboard history --count` reports.
pub(crate) fn stored(config: &Path) -> u64 {
    let text = history_cli(config, &["--count"]);
    text.trim_end()
        .parse()
        .unwrap_or_else(|_| panic!("--count printed {text:?}, not a bare number"))
}

/// Sends `messages` on one connection to `addr`; returns the replies.
pub(crate) async fn chat(addr: SocketAddr, messages: &[String]) -> Vec<String> {
    let mut conn = connect_lines(addr).await;
    let mut replies = Vec::with_capacity(messages.len());
    for message in messages {
        replies.push(ask(&mut conn, &format!("{message}\n")).await);
    }
    replies
}

fn messages(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Panics unless every reply is one of the messages sent.
pub(crate) fn all_sent<'a>(replies: &[String], sent: impl IntoIterator<Item = &'a String>) {
    let sent: HashSet<&String> = sent.into_iter().collect();
    for reply in replies {
        assert!(sent.contains(reply), "reply {reply:?} was never sent");
    }
}

/// Sends `message` on `conn` every 100 ms while the answer is `ERR history
/// unavailable` or `ERR history timeout` (for [`LIMIT`] at most); returns
/// the first other answer.
pub(crate) async fn ask_until_served(conn: &mut BufReader<TcpStream>, message: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let reply = ask(conn, &format!("{message}\n")).await;
        let failed = reply == "ERR history unavailable" || reply == "ERR history timeout";
        if !failed || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_acknowledged_message_survives_kill_9_of_a_sqlite_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let config = bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "history_limit = 150",
        &format!("backend = \"sqlite\"\npath = \"{}\"", db.display()),
    );
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("bot");
    // 4 clients at once, 30 messages each: every reply read is an
    // acknowledged message, and each reply is one of the messages sent.
    let mut clients = Vec::new();
    for c in 0..4 {
        clients.push(tokio::spawn(async move {
            let sent = messages(&format!("c{c}"), 30);
            (chat(addr, &sent).await, sent)
        }));
    }
    let mut sent_all = HashSet::new();
    let mut replies_all = Vec::new();
    for client in clients {
        let (replies, sent) = client.await.expect("client task");
        sent_all.extend(sent);
        replies_all.extend(replies);
    }
    all_sent(&replies_all, &sent_all);
    daemon.child.kill().expect("kill -9");
    daemon.child.wait().expect("wait");
    assert_eq!(stored(&config), 120, "messages acknowledged before kill -9");
    let tail = history_cli(&config, &["--tail", "200"]);
    let kept: HashSet<String> = tail.lines().map(str::to_owned).collect();
    assert_eq!(kept, sent_all, "--tail shows every message kept");

    // Restarted, the history goes on from the file, and is trimmed to its limit.
    let mut daemon = Daemon::start(&config);
    let later = messages("later", 100);
    let replies = chat(daemon.addr("bot"), &later).await;
    all_sent(&replies, sent_all.iter().chain(&later));
    assert!(
        replies.iter().any(|r| sent_all.contains(r)),
        "after the restart, no reply came from the messages before it"
    );
    assert_eq!(stored(&config), 150, "trimmed to history_limit");
    let newest = history_cli(&config, &["--tail", "1"]);
    assert_eq!(newest, "later-99\n");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

#[tokio::test]
async fn a_second_process_on_one_sqlite_file_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let history = format!("backend = \"sqlite\"\npath = \"{}\"", db.display());
    let first = bot_config(dir.path(), "first.toml", "127.0.0.1:0", "", &history);
    let second = bot_config(dir.path(), "second.toml", "127.0.0.1:0", "", &history);
    let _daemon = Daemon::start(&first);
    let out = output(switchboard().arg("-c").arg(&second));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another switchboard process")
            && stderr.contains(&db.display().to_string())
            && stderr.contains("listener \"bot\""),
        "{stderr}"
    );
    // The admin view reads it beside the writer.
    assert_eq!(stored(&first), 0);
}

#[tokio::test]
async fn a_reload_that_changes_the_backend_starts_from_the_new_backends_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let memory = listener("bot", "random-bot", "");
    let sqlite = format!(
        "{memory}[listener.history]\nbackend = \"sqlite\"\npath = \"{}\"\n",
        db.display()
    );
    let mut server = TestServer::start(&memory);
    let before = chat(server.addr("bot"), &messages("memory", 5)).await;
    assert_eq!(before[0], "memory-0");

    // To SQLite: the memory history is not copied, so the first message
    // is the only one the new history holds, and comes back as itself.
    let summary = server.reload(&sqlite).await.expect("reload to sqlite");
    assert_eq!(summary.changed, ["bot"]);
    let after = chat(server.addr("bot"), &messages("sqlite", 3)).await;
    assert_eq!(after[0], "sqlite-0");
    for reply in &after {
        assert!(
            reply.starts_with("sqlite-"),
            "{reply:?} came from the memory history"
        );
    }
    // A reload that keeps the backend keeps the history.
    let tighter = sqlite.replace(
        "handler = \"random-bot\"",
        "handler = \"random-bot\"\nhistory_limit = 2",
    );
    server.reload(&tighter).await.expect("reload, same file");
    let kept = chat(server.addr("bot"), &messages("kept", 1)).await;
    assert!(
        kept[0] == "kept-0" || kept[0] == "sqlite-2",
        "{kept:?}: not from the last two messages"
    );

    // Back to memory: a new, empty memory history (not the one before).
    server.reload(&memory).await.expect("reload to memory");
    let back = chat(server.addr("bot"), &messages("back", 1)).await;
    assert_eq!(back, ["back-0"]);

    // A file another server holds cannot be opened: that reload is
    // refused, naming it, and the bot goes on with its history.
    let other_db = dir.path().join("other.db");
    let other = format!(
        "{memory}[listener.history]\nbackend = \"sqlite\"\npath = \"{}\"\n",
        other_db.display()
    );
    let holder = TestServer::start(&other);
    let err = server.reload(&other).await.expect_err("the file is in use");
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(
        err.contains("in use by another switchboard process") && err.contains("other.db"),
        "{err}"
    );
    let still = chat(server.addr("bot"), &messages("still", 1)).await;
    assert!(still[0] == "still-0" || still[0] == "back-0", "{still:?}");
    holder.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn two_processes_on_one_redis_key_share_one_history_with_a_password_never_logged() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start(&["--user", "app", "on", ">s3cret-pw", "~*", "&*", "+@all"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let history = format!(
        "backend = \"redis\"\nurl = \"redis://app:s3cret-pw@127.0.0.1:{}/0\"\nkey = \"test:shared\"",
        redis.port
    );
    let a = bot_config(dir.path(), "a.toml", "127.0.0.1:0", "", &history);
    let b = bot_config(dir.path(), "b.toml", "127.0.0.1:0", "", &history);
    let check = output(switchboard().arg("check").arg("-c").arg(&a));
    let check = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.contains("history=redis:redis://app:***@127.0.0.1"),
        "{check}"
    );
    let mut first = Daemon::start(&a);
    let mut second = Daemon::start(&b);
    let from_a = messages("a", 20);
    chat(first.addr("bot"), &from_a).await;
    let from_b = messages("b", 30);
    let replies = chat(second.addr("bot"), &from_b).await;
    all_sent(&replies, from_a.iter().chain(&from_b));
    // Each reply is drawn from at least 21 messages, 20 of them A's: B
    // answering only from its own would have a chance below 1e-20.
    assert!(
        replies.iter().any(|r| r.starts_with("a-")),
        "B never answered with a message sent to A: {replies:?}"
    );
    assert_eq!(stored(&a), 50);
    assert_eq!(stored(&b), 50);
    assert_eq!(history_cli(&b, &["--tail", "2"]), "b-28\nb-29\n");
    // A wrong password: every message gets the error, the log names the
    // history without the password, and neither is ever shown.
    let wrong = bot_config(
        dir.path(),
        "wrong.toml",
        "127.0.0.1:0",
        "",
        &history.replace("s3cret-pw", "not-the-pw"),
    );
    let mut third = Daemon::start(&wrong);
    let replies = chat(third.addr("bot"), &messages("w", 2)).await;
    assert_eq!(
        replies,
        ["ERR history unavailable", "ERR history unavailable"]
    );
    let line = third.wait_for_log("history unavailable");
    assert!(line.contains("app:***@127.0.0.1"), "{line}");
    for daemon in [&mut first, &mut second, &mut third] {
        daemon.signal("TERM");
        daemon.wait_exit(LIMIT);
        for line in daemon.log_now() {
            assert!(
                !line.contains("s3cret-pw") && !line.contains("not-the-pw"),
                "a password in the log: {line}"
            );
        }
    }
}

#[tokio::test]
async fn redis_lost_slow_and_back_gives_err_lines_then_service_on_the_same_connection() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "",
        &format!(
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\ntimeout = \"300ms\"",
            redis.port
        ),
    );
    let mut daemon = Daemon::start(&config);
    let mut conn: BufReader<TcpStream> = BufReader::new(connect(daemon.addr("bot")).await);
    assert_eq!(ask(&mut conn, "first\n").await, "first");

    // Slow: a Redis that answers nobody for 1 s; the reply comes at the
    // timeout, not when Redis wakes, and says the message's fate is
    // unknown: Redis has it, and stores it when it wakes.
    let _sleeper = redis.stall(1);
    std::thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    assert_eq!(ask(&mut conn, "slow\n").await, "ERR history timeout");
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "the error took {:?}",
        asked.elapsed()
    );
    let deadline = Instant::now() + LIMIT;
    loop {
        let tail = output(
            switchboard()
                .args(["history", "-c"])
                .arg(&config)
                .args(["bot", "--tail", "5"]),
        );
        if tail.status.success() {
            assert_eq!(String::from_utf8_lossy(&tail.stdout), "first\nslow\n");
            break;
        }
        assert!(Instant::now() < deadline, "Redis never woke");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Lost: every message gets the error, on the same connection, and the
    // log says so once. The first may have gone out on the connection
    // Redis broke (its fate unknown to the client); the others find the
    // connection refused: not stored.
    redis.kill();
    let first_lost = ask(&mut conn, "lost-0\n").await;
    assert!(
        first_lost == "ERR history unavailable" || first_lost == "ERR history timeout",
        "{first_lost}"
    );
    for i in 1..5 {
        assert_eq!(
            ask(&mut conn, &format!("lost-{i}\n")).await,
            "ERR history unavailable"
        );
    }
    // Back: service resumes by itself (a new Redis is empty, so the first
    // message stored comes back as itself).
    redis.restart();
    assert_eq!(ask_until_served(&mut conn, "back").await, "back");
    daemon.wait_for_log("history available again");
    let unavailable = daemon
        .log_now()
        .iter()
        .filter(|l| l.contains("history unavailable:"))
        .count();
    assert_eq!(
        unavailable, 1,
        "one outage (slow, then lost) was logged {unavailable} times"
    );
    drop(conn);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

#[tokio::test]
async fn a_redis_history_keeps_both_limits() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("url = \"redis://127.0.0.1:{}/0\"", redis.port);
    // 5 messages at most.
    let by_count = bot_config(
        dir.path(),
        "count.toml",
        "127.0.0.1:0",
        "history_limit = 5",
        &format!("backend = \"redis\"\n{url}\nkey = \"test:count\""),
    );
    let mut daemon = Daemon::start(&by_count);
    let sent = messages("n", 20);
    let replies = chat(daemon.addr("bot"), &sent).await;
    for (i, reply) in replies.iter().enumerate() {
        let at: usize = reply
            .trim_start_matches("n-")
            .parse()
            .expect("a sent message");
        assert!(
            at <= i && at + 5 > i,
            "reply {reply:?} to n-{i}: not among the last 5"
        );
    }
    assert_eq!(stored(&by_count), 5);
    assert_eq!(
        history_cli(&by_count, &["--tail", "9"]),
        "n-15\nn-16\nn-17\nn-18\nn-19\n"
    );
    daemon.signal("TERM");
    daemon.wait_exit(LIMIT);
    // Bytes: each 100-byte message counts 180; 1000 bytes keep 5 of them.
    // (The floor of history_bytes is one max_message_bytes: lowered here.)
    let by_bytes = bot_config(
        dir.path(),
        "bytes.toml",
        "127.0.0.1:0",
        "history_bytes = 1000\nmax_message_bytes = 200",
        &format!("backend = \"redis\"\n{url}\nkey = \"test:bytes\""),
    );
    let mut daemon = Daemon::start(&by_bytes);
    let long: Vec<String> = (0..12).map(|i| format!("{i:0>100}")).collect();
    chat(daemon.addr("bot"), &long).await;
    assert_eq!(stored(&by_bytes), 5, "5 x (100 + 80) <= 1000 < 6 x 180");
    daemon.signal("TERM");
    daemon.wait_exit(LIMIT);
}

/// Many connections at once, so that a script call carries many messages:
/// every pick is a message sent (the answer's framing holds for any batch),
/// and the picks spread over the history, within a batch too (one draw of
/// the seeded generator a pick, not one for the batch).
#[tokio::test]
async fn redis_picks_in_full_batches_spread_over_the_whole_history() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = bot_config(
        dir.path(),
        "spread.toml",
        "127.0.0.1:0",
        "history_limit = 200",
        &format!(
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\nkey = \"test:spread\"",
            redis.port
        ),
    );
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("bot");
    let mut sent = messages("f", 200);
    chat(addr, &sent).await;
    let clients: Vec<_> = (0..40)
        .map(|k| {
            let mine = messages(&format!("c{k}"), 10);
            sent.extend(mine.iter().cloned());
            tokio::spawn(async move { chat(addr, &mine).await })
        })
        .collect();
    let mut replies = Vec::new();
    for client in clients {
        replies.extend(client.await.expect("a client"));
    }
    assert_eq!(replies.len(), 400);
    all_sent(&replies, &sent);
    // 400 uniform picks from a window of 200 (sliding over 600) hit about
    // 200 distinct messages; one pick repeated through a batch would hit
    // about one per batch.
    let distinct: HashSet<&String> = replies.iter().collect();
    assert!(
        distinct.len() >= 100,
        "{} distinct picks of 400: {:?}",
        distinct.len(),
        &replies[..20]
    );
    daemon.signal("TERM");
    daemon.wait_exit(LIMIT);
}

/// A tmpfs of `size` mounted on `dir` (root only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a small tmpfs to fill needs root");
            return None;
        }
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            // Root without CAP_SYS_ADMIN (a container): the unit tests of
            // src/history/sqlite.rs fill a capped database instead.
            eprintln!("skipped: mount -t tmpfs is not allowed here");
            return None;
        }
        Some(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_gives_err_history_unavailable_and_service_returns_with_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk");
    fs::create_dir(&disk).expect("mkdir");
    let Some(_mounted) = Tmpfs::mount(&disk, "1m") else {
        return;
    };
    let config = bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "",
        &format!(
            "backend = \"sqlite\"\npath = \"{}\"",
            disk.join("h.db").display()
        ),
    );
    let mut daemon = Daemon::start(&config);
    let mut conn: BufReader<TcpStream> = BufReader::new(connect(daemon.addr("bot")).await);
    assert_eq!(ask(&mut conn, "small\n").await, "small");
    // Most of the room taken by another file, then 60 KiB messages until
    // the history cannot grow.
    fs::write(disk.join("filler"), vec![0u8; 700 * 1024]).expect("filler");
    let big = format!("{}\n", "x".repeat(60 * 1024));
    let mut full = false;
    for _ in 0..40 {
        let reply = ask(&mut conn, &big).await;
        if reply == "ERR history unavailable" {
            full = true;
            break;
        }
    }
    assert!(full, "a 1 MiB file system never filled up");
    let line = daemon.wait_for_log("history unavailable:");
    assert!(line.contains("full"), "{line}");
    // Room again: the same connection is served.
    fs::remove_file(disk.join("filler")).expect("remove filler");
    let reply = ask(&mut conn, "room\n").await;
    assert!(
        reply == "room" || reply == "small" || reply == big.trim_end(),
        "after room was made: {}",
        &reply[..reply.len().min(80)]
    );
    daemon.wait_for_log("history available again");
}

#[test]
fn the_history_command_says_what_it_cannot_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("switchboard.toml");
    fs::write(
        &config,
        format!(
            "{}{}",
            listener("bot", "random-bot", ""),
            listener("echo", "echo", "")
        ),
    )
    .expect("write config");
    let run = |name: &str| {
        let out = output(
            switchboard()
                .arg("history")
                .arg("-c")
                .arg(&config)
                .arg(name)
                .arg("--count"),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("nope");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no listener \"nope\"") && err.contains("bot, echo"),
        "{err}"
    );
    let (code, err) = run("echo");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("runs the echo handler, which keeps no history"),
        "{err}"
    );
    let (code, err) = run("bot");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in the daemon's memory"), "{err}");
    // --count or --tail is required.
    let out = output(
        switchboard()
            .arg("history")
            .arg("-c")
            .arg(&config)
            .arg("bot"),
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Sends one datagram to `addr` and returns the reply, within [`LIMIT`].
async fn ask_udp(socket: &tokio::net::UdpSocket, addr: SocketAddr, message: &str) -> String {
    socket
        .send_to(message.as_bytes(), addr)
        .await
        .expect("send");
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(LIMIT, socket.recv_from(&mut buf))
        .await
        .expect("no reply in time")
        .expect("receive");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
}

/// Holds the write lock of the SQLite file at `db` (as another program
/// with the file open might) until dropped: the daemon's writer waits.
fn hold_write_lock(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("open the history file");
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    conn
}

#[tokio::test]
async fn a_message_past_its_deadline_gets_timeout_if_the_writer_took_it_and_unavailable_if_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    // A TCP and a UDP random-bot on one SQLite history.
    let history = format!(
        "[listener.history]\nbackend = \"sqlite\"\npath = \"{}\"\ntimeout = \"600ms\"\n",
        db.display()
    );
    let config = dir.path().join("switchboard.toml");
    fs::write(
        &config,
        format!(
            "{}{history}{}{history}",
            listener("bot", "random-bot", ""),
            listener("udp", "random-bot", "transport = \"udp\""),
        ),
    )
    .expect("write config");
    let mut daemon = Daemon::start(&config);
    let mut conn: BufReader<TcpStream> = BufReader::new(connect(daemon.addr("bot")).await);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let udp_addr = daemon.addr("udp");
    assert_eq!(ask(&mut conn, "first\n").await, "first");

    // The writer stalls on the lock with the first message in its commit
    // (told "timeout": it is stored once the lock goes); the second waits
    // behind it and is never taken (told "unavailable": it never is).
    // Over TCP then UDP, and the other way round.
    let stalled = hold_write_lock(&db);
    let (taken, behind) = tokio::join!(ask(&mut conn, "tcp-taken\n"), async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        ask_udp(&udp, udp_addr, "udp-behind\n").await
    });
    assert_eq!(taken, "ERR history timeout");
    assert_eq!(behind, "ERR history unavailable");
    drop(stalled);
    ask(&mut conn, "after\n").await;

    let stalled = hold_write_lock(&db);
    let (taken, behind) = tokio::join!(ask_udp(&udp, udp_addr, "udp-taken\n"), async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        ask(&mut conn, "tcp-behind\n").await
    });
    assert_eq!(taken, "ERR history timeout");
    assert_eq!(behind, "ERR history unavailable");
    drop(stalled);
    ask(&mut conn, "after-2\n").await;

    // Each reply said the truth: the writer commits in order, so once
    // `after-2` is answered, every message taken before it is stored.
    assert_eq!(
        history_cli(&config, &["--tail", "10"]),
        "first\ntcp-taken\nafter\nudp-taken\nafter-2\n"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

#[tokio::test]
async fn a_sqlite_file_deleted_while_clients_chat_is_made_again_at_its_path_with_one_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let config = bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "",
        &format!("backend = \"sqlite\"\npath = \"{}\"", db.display()),
    );
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("bot");
    let mut conn = connect_lines(addr).await;
    let before = messages("before", 5);
    for message in &before {
        ask(&mut conn, &format!("{message}\n")).await;
    }
    assert_eq!(stored(&config), 5);

    // Deleted as `rm` would (its -wal and -shm left): the next messages,
    // on the open connection and on a new one, go to a new file at the
    // path, and only what the deleted file held is lost.
    fs::remove_file(&db).expect("delete the history file");
    let after = messages("after", 4);
    let mut replies = Vec::new();
    for message in &after[..2] {
        replies.push(ask(&mut conn, &format!("{message}\n")).await);
    }
    replies.extend(chat(addr, &after[2..]).await);
    all_sent(&replies, &after);
    assert_eq!(stored(&config), 4, "the messages after the deletion");
    assert_eq!(
        history_cli(&config, &["--tail", "10"]),
        "after-0\nafter-1\nafter-2\nafter-3\n"
    );
    let line = daemon.wait_for_log("history file was deleted");
    assert!(
        line.contains("ERROR") && line.contains("history.db"),
        "{line}"
    );
    drop(conn);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
    let errors: Vec<&String> = (daemon.log_now().iter())
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

/// A port on 127.0.0.1 where nothing listens (bound, then let go).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A password must show nowhere: neither as written nor decoded.
fn assert_no_password(text: &str, passwords: &[&str]) {
    for password in passwords {
        assert!(
            !text.contains(password),
            "the password {password:?} is shown:\n{text}"
        );
    }
}

#[test]
fn switchboard_check_shows_no_redis_password_in_any_form_of_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (url, the password as written and decoded, what `check` shows)
    let usable: &[(&str, &[&str], &str)] = &[
        (
            "redis://:pw-one@127.0.0.1:6379/0",
            &["pw-one"],
            "redis://:***@127.0.0.1:6379/0",
        ),
        (
            "redis://app:pw-two@127.0.0.1:6379/0",
            &["pw-two"],
            "redis://app:***@127.0.0.1:6379/0",
        ),
        (
            "redis://app:pw%40three@127.0.0.1/0",
            &["pw%40three", "pw@three", "three"],
            "redis://app:***@127.0.0.1/0",
        ),
        (
            "redis+unix:///run/redis.sock?pass=pw-four",
            &["pw-four"],
            "redis+unix:///run/redis.sock?pass=***",
        ),
        (
            "redis+unix:///run/redis.sock?db=1&p%61ss=pw-five&user=app",
            &["pw-five"],
            "redis+unix:///run/redis.sock?db=1&p%61ss=***&user=app",
        ),
        (
            "unix:///run/redis.sock?pass=pw%26six",
            &["pw%26six", "pw&six", "six"],
            "unix:///run/redis.sock?pass=***",
        ),
        (
            "valkey://:pw-seven@127.0.0.1",
            &["pw-seven"],
            "valkey://:***@127.0.0.1",
        ),
        // Query keys the client does not read: every value masked, whatever
        // the key's name, but those of the harmless keys it reads.
        (
            "redis://127.0.0.1/0?apikey=k-1&api_key=k-2&credential=k-3&credentials=k-4&key=k-5",
            &["k-1", "k-2", "k-3", "k-4", "k-5"],
            "redis://127.0.0.1/0?apikey=***&api_key=***&credential=***&credentials=***&key=***",
        ),
        (
            "redis+unix:///run/redis.sock?db=2&pw=k-6&private=k-7&sessionid=k-8&user=app&x=k-9",
            &["k-6", "k-7", "k-8", "k-9"],
            "redis+unix:///run/redis.sock?db=2&pw=***&private=***&sessionid=***&user=app&x=***",
        ),
    ];
    for (i, (url, passwords, shown)) in usable.iter().enumerate() {
        let config = bot_config(
            dir.path(),
            &format!("usable-{i}.toml"),
            "127.0.0.1:0",
            "",
            &format!("backend = \"redis\"\nurl = \"{url}\""),
        );
        let out = output(switchboard().arg("check").arg("-c").arg(&config));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{url}: {text}");
        assert!(text.contains(shown), "{url}: {text}");
        assert_no_password(&text, passwords);
    }
    // Refused (TLS, a bad port, no host, a slash in the password): the
    // error never quotes the URL.
    let refused: &[(&str, &[&str])] = &[
        ("rediss://app:pw-eight@10.0.0.1:6380/0", &["pw-eight"]),
        ("redis://app:pw-nine@h:notaport/0", &["pw-nine"]),
        ("redis:pw-ten@h", &["pw-ten"]),
        ("redis://:pw/eleven@h/0", &["pw/eleven", "eleven"]),
        ("redis://:pw-twelve@0.0.0.0/0", &["pw-twelve"]),
    ];
    for (i, (url, passwords)) in refused.iter().enumerate() {
        let config = bot_config(
            dir.path(),
            &format!("refused-{i}.toml"),
            "127.0.0.1:0",
            "",
            &format!("backend = \"redis\"\nurl = \"{url}\""),
        );
        let out = output(switchboard().arg("check").arg("-c").arg(&config));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{url}: {text}");
        assert!(text.contains("history.url"), "{url}: {text}");
        assert_no_password(&text, passwords);
    }
}

#[tokio::test]
async fn the_outage_log_shows_no_redis_password_in_any_form_of_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let down = closed_port();
    let urls = [
        format!("redis://:pw-one@127.0.0.1:{down}/0"),
        format!("redis://app:pw-two@127.0.0.1:{down}/0"),
        format!("redis://app:pw%40three@127.0.0.1:{down}/0"),
        "redis+unix:///nonexistent/redis.sock?pass=pw-four".to_owned(),
        "unix:///nonexistent/redis.sock?db=1&pass=pw%26five".to_owned(),
    ];
    let passwords = [
        "pw-one",
        "pw-two",
        "pw%40three",
        "pw@three",
        "pw-four",
        "pw%26five",
        "pw&five",
    ];
    let mut text = String::new();
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&listener(&format!("bot{i}"), "random-bot", ""));
        text.push_str(&format!(
            "[listener.history]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout = \"500ms\"\n"
        ));
    }
    let config = dir.path().join("switchboard.toml");
    fs::write(&config, text).expect("write config");
    let mut daemon = Daemon::start(&config);
    for (i, url) in urls.iter().enumerate() {
        let replies = chat(daemon.addr(&format!("bot{i}")), &messages("m", 1)).await;
        assert_eq!(replies, ["ERR history unavailable"], "{url}");
    }
    for _ in 0..urls.len() {
        daemon.wait_for_log("history unavailable:");
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
    let log = daemon.log_now().join("\n");
    assert_eq!(
        log.matches("history unavailable:").count(),
        urls.len(),
        "{log}"
    );
    assert!(
        log.contains("redis+unix:///nonexistent/redis.sock?pass=***"),
        "{log}"
    );
    assert_no_password(&log, &passwords);
}

/// Sends `message` on `conn` every 100 ms while the answer is `ERR history
/// unavailable`, for `within` at most; returns the last answer and when it
/// came.
async fn ask_while_unavailable(
    conn: &mut BufReader<TcpStream>,
    message: &str,
    within: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let reply = ask(conn, &format!("{message}\n")).await;
        if reply != "ERR history unavailable" || started.elapsed() > within {
            return (reply, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks until served (a few seconds at most) and checks the log said the
/// outage once, and its end.
async fn served_again_within_seconds(daemon: &mut Daemon, conn: &mut BufReader<TcpStream>) {
    let (reply, after) = ask_while_unavailable(conn, "back", Duration::from_secs(6)).await;
    assert_eq!(reply, "back", "still not served after {after:?}");
    daemon.wait_for_log("history available again");
    let unavailable = daemon
        .log_now()
        .iter()
        .filter(|l| l.contains("history unavailable:"))
        .count();
    assert_eq!(unavailable, 1, "the outage was logged {unavailable} times");
}

#[tokio::test]
async fn a_redis_history_whose_first_connection_is_refused_connects_once_redis_is_up() {
    if !have_redis() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = Redis {
        child: None,
        port: closed_port(),
        extra: Vec::new(),
    };
    let config = bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "",
        &format!(
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\ntimeout = \"500ms\"",
            redis.port
        ),
    );
    let mut daemon = Daemon::start(&config);
    let mut conn: BufReader<TcpStream> = BufReader::new(connect(daemon.addr("bot")).await);
    for i in 0..3 {
        assert_eq!(
            ask(&mut conn, &format!("down-{i}\n")).await,
            "ERR history unavailable"
        );
    }
    redis.restart();
    served_again_within_seconds(&mut daemon, &mut conn).await;
    drop(conn);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

#[tokio::test]
async fn a_redis_history_refused_for_its_password_at_first_connects_once_the_acl_is_fixed() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start(&["--user", "app", "on", ">old-pw", "~*", "&*", "+@all"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "",
        &format!(
            "backend = \"redis\"\nurl = \"redis://app:new-pw@127.0.0.1:{}/0\"\ntimeout = \"500ms\"",
            redis.port
        ),
    );
    let mut daemon = Daemon::start(&config);
    let mut conn: BufReader<TcpStream> = BufReader::new(connect(daemon.addr("bot")).await);
    for i in 0..3 {
        assert_eq!(
            ask(&mut conn, &format!("refused-{i}\n")).await,
            "ERR history unavailable"
        );
    }
    assert_eq!(
        redis
            .command("ACL SETUSER app resetpass >new-pw")
            .as_deref(),
        Some("+OK")
    );
    served_again_within_seconds(&mut daemon, &mut conn).await;
    drop(conn);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
    assert_no_password(&daemon.log_now().join("\n"), &["new-pw", "old-pw"]);
}

#[tokio::test]
async fn a_redis_history_that_reconnects_into_a_wrong_password_connects_once_the_acl_is_fixed() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start(&["--user", "app", "on", ">the-pw", "~*", "&*", "+@all"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "",
        &format!(
            "backend = \"redis\"\nurl = \"redis://app:the-pw@127.0.0.1:{}/0\"\ntimeout = \"500ms\"",
            redis.port
        ),
    );
    let mut daemon = Daemon::start(&config);
    let mut conn: BufReader<TcpStream> = BufReader::new(connect(daemon.addr("bot")).await);
    assert_eq!(ask(&mut conn, "first\n").await, "first");
    // Redis comes back with another password for the user: the client's
    // reconnection is refused, not for I/O.
    redis.extra = ["--user", "app", "on", ">other-pw", "~*", "&*", "+@all"]
        .map(String::from)
        .to_vec();
    redis.restart();
    // The first may have gone out on the connection Redis broke.
    let reply = ask(&mut conn, "refused\n").await;
    assert!(
        reply == "ERR history unavailable" || reply == "ERR history timeout",
        "{reply}"
    );
    for i in 0..3 {
        assert_eq!(
            ask(&mut conn, &format!("refused-{i}\n")).await,
            "ERR history unavailable"
        );
    }
    assert_eq!(
        redis
            .command("ACL SETUSER app resetpass >the-pw")
            .as_deref(),
        Some("+OK")
    );
    // After a quiet second (the most a failed connection is kept), the
    // very next message finds a fresh connection.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(ask(&mut conn, "back\n").await, "back");
    daemon.wait_for_log("history available again");
    let unavailable = daemon
        .log_now()
        .iter()
        .filter(|l| l.contains("history unavailable:"))
        .count();
    assert_eq!(unavailable, 1, "the outage was logged {unavailable} times");
    drop(conn);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
    assert_no_password(&daemon.log_now().join("\n"), &["the-pw", "other-pw"]);
}
